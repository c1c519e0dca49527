"""The tamper-evident journal: a digest per transaction and a hash chain of seals.

Each transaction stores the SHA-256 digest of its content (kind, memo, link, time
and its entries) when it is posted, so no row is shared by concurrent posts. A
sealer appends seals: each covers the next run of transactions in id order and
chains their digests onto the previous seal. ``livegifts audit`` recomputes every
digest from the rows as they are now and every seal from the digests, so an edited,
inserted or deleted row in a sealed range is reported. The database itself also
refuses to update or delete entries and transactions (triggers, migration 0005).
Someone who can set those aside can also re-seal a rewritten chain: checkpoints kept
outside the database (:mod:`app.ledger.checkpoints`) show that.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
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


async def head(session: AsyncSession) -> int:
    """The id of the last seal; 0 before the first."""
    return await session.scalar(select(func.max(LedgerSeal.id))) or 0


async def verify(session: AsyncSession, progress: Callable[[int, int], None] | None = None,
                 batch: int = 50_000) -> list[AuditFinding]:
    """Recompute every digest and every seal; report what no longer matches.

    Transactions are read in batches of ``batch`` ids (memory stays flat however long
    the ledger); the seals' chain is recomputed in the same pass. ``progress`` is told
    (transactions checked up to, last transaction id) after each batch.
    """
    findings: list[AuditFinding] = []
    seals = list((await session.execute(
        select(LedgerSeal.id, LedgerSeal.through_transaction_id, LedgerSeal.chain)
        .order_by(LedgerSeal.id))).all())
    last = await session.scalar(select(func.max(LedgerTransaction.id))) or 0
    chain = _Chain(seals, findings)
    for start in range(0, last, batch):
        end = min(start + batch, last)
        entries: dict[int, list[tuple[int, str, int]]] = defaultdict(list)
        for row in await session.execute(
                select(Entry.transaction_id, Entry.account_id, Entry.currency, Entry.amount)
                .where(Entry.transaction_id > start, Entry.transaction_id <= end)):
            entries[row.transaction_id].append((row.account_id, row.currency, row.amount))
        for txn in await session.execute(
                select(LedgerTransaction.id, LedgerTransaction.kind, LedgerTransaction.memo,
                       LedgerTransaction.reverses_id, LedgerTransaction.created_at,
                       LedgerTransaction.digest)
                .where(LedgerTransaction.id > start, LedgerTransaction.id <= end)
                .order_by(LedgerTransaction.id)):
            expected = digest(txn.kind, txn.memo, txn.reverses_id, txn.created_at,
                              entries.get(txn.id, []))
            if expected != txn.digest:
                findings.append(AuditFinding("journal digest", f"transaction {txn.id}",
                                             "its rows no longer match the digest taken when "
                                             "it was posted"))
            chain.add(txn.id, txn.digest)
        if progress:
            progress(end, last)
    chain.finish()
    return findings


class _Chain:
    """Recomputes the seals' hash chain from digests fed in transaction id order."""

    def __init__(self, seals: list[Any], findings: list[AuditFinding]) -> None:
        self.seals, self.findings, self.next = seals, findings, 0
        self.previous, self.start = GENESIS, 0
        self.hasher = hashlib.sha256(GENESIS.encode())

    def add(self, transaction_id: int, value: str) -> None:
        while self.next < len(self.seals) and \
                transaction_id > self.seals[self.next].through_transaction_id:
            self._close()
        if self.next < len(self.seals):
            self.hasher.update(value.encode())

    def finish(self) -> None:
        while self.next < len(self.seals):
            self._close()

    def _close(self) -> None:
        sealed = self.seals[self.next]
        if self.hasher.hexdigest() != sealed.chain:
            self.findings.append(AuditFinding(
                "journal chain", f"seal {sealed.id}",
                f"transactions {self.start + 1}..{sealed.through_transaction_id} were edited, "
                "inserted or deleted after they were sealed"))
        self.previous, self.start = sealed.chain, sealed.through_transaction_id
        self.hasher = hashlib.sha256(self.previous.encode())
        self.next += 1
