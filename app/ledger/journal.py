"""The tamper-evident journal: a digest per transaction and a hash chain of seals.

Each transaction stores the SHA-256 digest of its content (kind, memo, link, time
and its entries) when it is posted, so no row is shared by concurrent posts. A
sealer appends seals: each covers the next run of transactions in id order and
chains their digests onto the previous seal. ``livegifts audit`` recomputes every
digest from the rows as they are now and every seal from the digests, so an edited,
inserted or deleted row in a sealed range is reported. The database itself also
refuses to update or delete entries and transactions (triggers, migration 0005).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.ledger.audit import AuditFinding
from app.models import Entry, LedgerSeal, LedgerTransaction

GENESIS = "0" * 64
SEAL_LOCK = 7_114_500_001  # the advisory lock that serialises sealers on PostgreSQL
# Only transactions this old are sealed, so one still committing is never skipped.
SEAL_DELAY = timedelta(seconds=30)


def digest(kind: str, memo: str, reverses_id: int | None, created_at: datetime,
           legs: Iterable[tuple[int, str, int]]) -> str:
    """The digest of a transaction's content; legs are (account id, currency, amount)."""
    content = {"kind": kind, "memo": memo, "reverses": reverses_id,
               "at": created_at.astimezone(UTC).isoformat(timespec="microseconds"),
               "legs": sorted([int(a), c, int(n)] for a, c, n in legs)}
    return hashlib.sha256(json.dumps(content, separators=(",", ":")).encode()).hexdigest()


def _chain(previous: str, digests: Iterable[str]) -> str:
    chained = hashlib.sha256(previous.encode())
    for value in digests:
        chained.update(value.encode())
    return chained.hexdigest()


async def seal(session: AsyncSession, *, now: datetime | None = None) -> LedgerSeal | None:
    """Append a seal over the transactions posted since the last one (older than the delay)."""
    if session.get_bind().dialect.name == "postgresql":  # one sealer at a time, everywhere
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SEAL_LOCK})
    last = await session.scalar(select(LedgerSeal).order_by(LedgerSeal.id.desc()).limit(1)
                                .with_for_update())
    start = last.through_transaction_id if last else 0
    cutoff = (now or datetime.now(UTC)) - SEAL_DELAY
    rows = (await session.execute(
        select(LedgerTransaction.id, LedgerTransaction.digest)
        .where(LedgerTransaction.id > start, LedgerTransaction.created_at <= cutoff)
        .order_by(LedgerTransaction.id))).all()
    if not rows:
        return None
    sealed = LedgerSeal(through_transaction_id=rows[-1].id,
                        chain=_chain(last.chain if last else GENESIS, (r.digest for r in rows)))
    session.add(sealed)
    await session.flush()
    return sealed


async def verify(session: AsyncSession) -> list[AuditFinding]:
    """Recompute every digest and every seal; report what no longer matches."""
    findings: list[AuditFinding] = []
    entries: dict[int, list[tuple[int, str, int]]] = {}
    for entry in (await session.scalars(select(Entry))).all():
        entries.setdefault(entry.transaction_id, []).append(
            (entry.account_id, entry.currency, entry.amount))
    stored: dict[int, str] = {}
    for txn in (await session.scalars(select(LedgerTransaction)
                                      .order_by(LedgerTransaction.id))).all():
        stored[txn.id] = txn.digest
        expected = digest(txn.kind, txn.memo, txn.reverses_id, txn.created_at,
                          entries.get(txn.id, []))
        if expected != txn.digest:
            findings.append(AuditFinding("journal digest", f"transaction {txn.id}",
                                         "its rows no longer match the digest taken when it "
                                         "was posted"))
    previous, start = GENESIS, 0
    ids = sorted(stored)
    for seal_row in (await session.scalars(select(LedgerSeal).order_by(LedgerSeal.id))).all():
        covered = [stored[i] for i in ids if start < i <= seal_row.through_transaction_id]
        if _chain(previous, covered) != seal_row.chain:
            findings.append(AuditFinding(
                "journal chain", f"seal {seal_row.id}",
                f"transactions {start + 1}..{seal_row.through_transaction_id} were edited, "
                "inserted or deleted after they were sealed"))
        previous, start = seal_row.chain, seal_row.through_transaction_id
    return findings
