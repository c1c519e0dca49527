"""Checkpoints of the journal kept outside the database, on SQLite and PostgreSQL: a chain
rewritten and re-sealed end to end passes the audit but not its checkpoints, which name the
first seal that differs; forged lines, deleted seals and missing keys are named too."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine

from app.ledger import checkpoints, journal
from app.models import Entry, LedgerSeal, LedgerTransaction
from app.testing import audit
from tests.support import livegifts_cli as livegifts
from tests.test_ledger import balance, fund, make_user, seal_now

KEY = b"a checkpoint key of 32 bytes, ok"
OTHER_KEY = b"another key, also 32 bytes long!"
DIFFERS = "differs from the checkpoint written at "


async def three_seals(runtime) -> int:
    """Alice funded four times, sealed as transactions 1..2, 3 and 4; returns her id."""
    alice = await make_user(runtime, "alice")
    for coins in (100, 200):
        await fund(runtime, alice, coins)
    await seal_now(runtime)
    for coins in (300, 400):
        await fund(runtime, alice, coins)
        await seal_now(runtime)
    return alice


async def write(runtime, path, key=KEY) -> int:
    async with runtime.sessions() as session:
        return await checkpoints.append(session, path, key)


async def check(runtime, path, key=KEY) -> list[str]:
    async with runtime.sessions() as session:
        return [str(finding) for finding in await checkpoints.verify(session, path, key)]


async def plain_audit(runtime) -> list[str]:
    async with runtime.sessions() as session:
        return [str(finding) for finding in await audit(session)]


async def as_intruder(runtime, *statements: str) -> None:
    """Run ``statements`` around the ledger's triggers, as the database's owner could."""
    url = runtime.settings.database_url
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            if url.startswith("postgresql"):  # triggers off, for this transaction only
                await connection.execute(text("SET LOCAL session_replication_role = replica"))
            else:  # each test has its own copy of the SQLite database
                for table in ("ledger_entry", "ledger_transaction", "ledger_seal"):
                    for action in ("update", "delete"):
                        await connection.execute(text(f"DROP TRIGGER {table}_no_{action}"))
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def rewrite(runtime, transaction_id: int, coins: int) -> None:
    """Make a sealed funding say it moved ``coins``, end to end: its entries, the cached
    balances, its digest and every seal's chain, so the audit finds nothing."""
    async with runtime.sessions() as session:
        posted = await session.get(LedgerTransaction, transaction_id)
        entries = (await session.scalars(
            select(Entry).where(Entry.transaction_id == transaction_id))).all()
        digests = dict((await session.execute(
            select(LedgerTransaction.id, LedgerTransaction.digest))).all())
        seals = (await session.execute(select(LedgerSeal.id, LedgerSeal.through_transaction_id)
                                       .order_by(LedgerSeal.id))).all()
    statements, legs = [], []
    for entry in entries:
        amount = coins if entry.amount > 0 else -coins
        legs.append((entry.account_id, entry.currency, amount))
        statements += [f"UPDATE ledger_entry SET amount = {amount} WHERE id = {entry.id}",
                       f"UPDATE ledger_account SET balance = balance + {amount - entry.amount} "
                       f"WHERE id = {entry.account_id} AND cached"]
    digests[transaction_id] = journal.digest(posted.kind, posted.memo, posted.reverses_id,
                                             posted.created_at, legs)
    statements.append(f"UPDATE ledger_transaction SET digest = '{digests[transaction_id]}' "
                      f"WHERE id = {transaction_id}")
    chain, start = journal.GENESIS, 0
    for seal_id, through in seals:
        chain = journal._chain(chain, (digests[t] for t in sorted(digests) if start < t <= through))
        statements.append(f"UPDATE ledger_seal SET chain = '{chain}' WHERE id = {seal_id}")
        start = through
    await as_intruder(runtime, *statements)


async def test_checkpoints_of_an_intact_journal_verify_clean(runtime, tmp_path):
    alice = await three_seals(runtime)
    path = tmp_path / "checkpoints.jsonl"
    assert await check(runtime, path) == []  # no file yet: nothing recorded
    assert await write(runtime, path) == 3
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(line["seal"], line["through"]) for line in lines] == [(1, 2), (2, 3), (3, 4)]
    assert all(line["signature"].startswith("hmac-sha256:") for line in lines)
    assert await check(runtime, path) == []
    assert await write(runtime, path) == 0  # no seal since

    await fund(runtime, alice, 500)
    await seal_now(runtime)
    assert await write(runtime, path) == 1
    assert len(path.read_text().splitlines()) == 4
    assert await check(runtime, path) == []


@pytest.mark.parametrize("transaction, seal, transactions", [
    (1, 1, "1..2"),  # the first seal: every seal differs, the first is named
    (3, 2, "3..3"),
    (4, 3, "4..4"),
])
async def test_a_chain_rewritten_end_to_end_passes_the_audit_but_not_its_checkpoints(
        runtime, tmp_path, transaction, seal, transactions):
    alice = await three_seals(runtime)
    path = tmp_path / "checkpoints.jsonl"
    await write(runtime, path)
    written = path.read_bytes()

    await rewrite(runtime, transaction, coins=1_000)
    # Alice was funded 1,000 in all; one of her fundings (100 times its id) now says 1,000.
    assert await balance(runtime, f"user:{alice}:wallet") == 2_000 - 100 * transaction
    assert await plain_audit(runtime) == []  # nothing in the database shows it

    [finding] = await check(runtime, path)
    assert finding.startswith(f"checkpoint: seal {seal}: {DIFFERS}")
    assert finding.endswith(f": it, or transactions {transactions} under it, were rewritten "
                            "since")
    async with runtime.sessions() as session:
        with pytest.raises(checkpoints.CheckpointDiffers) as refused:
            await checkpoints.append(session, path, KEY)
    assert [str(f) for f in refused.value.findings] == [finding]
    assert path.read_bytes() == written  # the rewritten chain is not anchored


async def test_an_edited_or_forged_checkpoint_line_is_named(runtime, tmp_path):
    await three_seals(runtime)
    path = tmp_path / "checkpoints.jsonl"
    await write(runtime, path)
    lines = path.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["through"] = 2  # the signature of the original line kept
    forged = checkpoints.Checkpoint(4, 5, "0" * 64, "2026-01-01T00:00:00+00:00")
    path.write_text("\n".join([lines[0], json.dumps(edited), lines[2], "",
                               forged.line(OTHER_KEY).decode().strip(), "{not json"]) + "\n")

    assert await check(runtime, path) == [
        f"checkpoint: {path} line 2: its signature does not match: the line was edited or "
        "forged, or signed with another key",
        f"checkpoint: {path} line 5: its signature does not match: the line was edited or "
        "forged, or signed with another key",
        f"checkpoint: {path} line 6: not a checkpoint line (a JSON object of seal, through, "
        "chain, at and signature)",
    ]  # lines 1 and 3 still match their seals; the blank line 4 is no line
    async with runtime.sessions() as session:
        with pytest.raises(checkpoints.CheckpointDiffers):
            await checkpoints.append(session, path, KEY)


async def test_a_file_read_with_another_key_is_named_once(runtime, tmp_path):
    await three_seals(runtime)
    path = tmp_path / "checkpoints.jsonl"
    await write(runtime, path)
    assert await check(runtime, path, OTHER_KEY) == [
        f"checkpoint: {path}: none of its 3 lines has a signature this key makes: is it the "
        "key the file was written with?"]


async def test_deleted_seals_are_named_from_the_first(runtime, tmp_path):
    await three_seals(runtime)
    path = tmp_path / "checkpoints.jsonl"
    await write(runtime, path)
    await as_intruder(runtime, "DELETE FROM ledger_seal WHERE id >= 2")
    assert await plain_audit(runtime) == []  # transactions 3 and 4 merely look unsealed
    [finding] = await check(runtime, path)
    assert finding.startswith("checkpoint: seal 2: missing: the checkpoint written at ")
    assert finding.endswith(" records it, through transaction 3; it was deleted, or the "
                            "database restored to an earlier moment")


async def test_a_file_that_cannot_be_opened_is_refused(runtime, tmp_path):
    async with runtime.sessions() as session:
        with pytest.raises(checkpoints.CheckpointError, match=(
                f"cannot open the checkpoint file {tmp_path}: Is a directory")):
            await checkpoints.verify(session, tmp_path, KEY)


async def test_the_key_comes_from_a_file_or_the_environment(tmp_path, monkeypatch):
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY + b"\n")
    monkeypatch.setenv(checkpoints.KEY_VARIABLE, OTHER_KEY.decode())
    assert checkpoints.load_key(key_file) == KEY  # the file, when given, wins
    assert checkpoints.load_key(None) == OTHER_KEY
    monkeypatch.setenv(checkpoints.KEY_VARIABLE, "short")
    with pytest.raises(checkpoints.CheckpointError, match=(
            "the checkpoint key in LIVEGIFTS_CHECKPOINT_KEY is 5 bytes; it needs at least 32 "
            r"\(make one with: openssl rand -hex 32\)")):
        checkpoints.load_key(None)


# The command ----------------------------------------------------------------------------

@pytest.mark.parametrize("args, environment, message", [
    (["--checkpoint", "{dir}/c.jsonl"], {},
     "checkpoints are signed with a key the database does not hold: give its file with "
     "--checkpoint-key FILE or set LIVEGIFTS_CHECKPOINT_KEY"),
    (["--checkpoint", "{dir}/c.jsonl"], {"LIVEGIFTS_CHECKPOINT_KEY": "short"},
     "the checkpoint key in LIVEGIFTS_CHECKPOINT_KEY is 5 bytes; it needs at least 32"),
    (["--checkpoint", "{dir}/c.jsonl", "--checkpoint-key", "{dir}/short"], {},
     "the checkpoint key in the key file {dir}/short is 5 bytes; it needs at least 32"),
    (["--checkpoint", "{dir}/c.jsonl", "--checkpoint-key", "{dir}/nowhere"], {},
     "Invalid value for '--checkpoint-key': File '{dir}/nowhere' does not exist."),
    (["--checkpoint-key", "{dir}/short"], {},
     "--checkpoint-key signs a checkpoint file: give --checkpoint FILE"),
    (["--checkpoint", "{dir}/nowhere/c.jsonl"], {"LIVEGIFTS_CHECKPOINT_KEY": KEY.decode()},
     "Invalid value for --checkpoint: the directory {dir}/nowhere does not exist"),
    (["--checkpoint", "{dir}"], {"LIVEGIFTS_CHECKPOINT_KEY": KEY.decode()},
     "Invalid value for '--checkpoint': File '{dir}' is a directory."),
])
def test_audit_refuses_a_checkpoint_it_cannot_sign_or_write(tmp_path, monkeypatch, args,
                                                            environment, message):
    (tmp_path / "short").write_text("short\n")
    monkeypatch.delenv(checkpoints.KEY_VARIABLE, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    done = livegifts("sqlite+aiosqlite:///unused.db", "audit",
                     *[arg.format(dir=tmp_path) for arg in args])
    assert done.returncode == 2, done.stderr
    assert message.format(dir=tmp_path) in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "c.jsonl").exists()


async def test_audit_writes_checkpoints_then_verifies_them(runtime, tmp_path, monkeypatch):
    url = runtime.settings.database_url
    assert livegifts(url, "seed").returncode == 0  # purchases with their source records
    await seal_now(runtime)
    path, key_file = tmp_path / "checkpoints.jsonl", tmp_path / "key"
    key_file.write_bytes(KEY)
    monkeypatch.delenv(checkpoints.KEY_VARIABLE, raising=False)

    first = livegifts(url, "audit", "--checkpoint", str(path), "--checkpoint-key", str(key_file))
    assert first.returncode == 0, first.stderr
    assert f"checkpoints: the seals in {path} match the database; 1 new seal(s) recorded" \
        in first.stdout
    written = path.read_bytes()
    assert json.loads(written)["seal"] == 1

    monkeypatch.setenv(checkpoints.KEY_VARIABLE, KEY.decode())  # the same key, from there
    second = livegifts(url, "audit", "--checkpoint", str(path))
    assert second.returncode == 0, second.stderr
    assert "match the database; 0 new seal(s) recorded" in second.stdout
    assert path.read_bytes() == written

    await as_intruder(runtime, "DELETE FROM ledger_seal")
    third = livegifts(url, "audit", "--checkpoint", str(path))
    assert third.returncode == 1
    assert "FAIL checkpoint: seal 1: missing: the checkpoint written at " in third.stderr
    assert f"nothing was written to {path}" in third.stderr
    assert "Traceback" not in third.stderr
    assert path.read_bytes() == written
