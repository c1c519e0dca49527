"""The ledger audit: proofs that no coin was lost or created, run by ``livegifts audit``.

Besides the ledger's own invariants it checks every transaction against the record it was
posted for (:mod:`app.services.provenance`), and that every row an entry or a gift receipt
names exists (:mod:`app.ledger.references`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Account, Entry

# Told (check, done, total) as the audit goes, so a long audit can show its progress.
AuditProgress = Callable[[str, int, int], None]
BATCH = 50_000  # transaction, account, entry or receipt ids per query


@dataclass(frozen=True, slots=True)
class AuditFinding:
    check: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: {self.subject}: {self.detail}"


async def audit(session: AsyncSession, progress: AuditProgress | None = None, *,
                test_grants: bool = False) -> list[AuditFinding]:
    """Return every violation of the ledger's invariants; an empty list means the books hold.

    Transactions and accounts are checked in batches of ids, each batch reported to
    ``progress``. ``test_grants`` accepts the test kit's grants, which have no source
    record (:func:`app.testing.audit` passes it; a production ledger holds none).
    """
    from app.ledger import journal, references
    from app.services import provenance

    report = progress or (lambda check, done, total: None)
    findings: list[AuditFinding] = await journal.verify(
        session, lambda done, total: report("journal", done, total), batch=BATCH)

    per_currency = await session.execute(
        select(Entry.currency, func.sum(Entry.amount)).group_by(Entry.currency)
        .having(func.sum(Entry.amount) != 0)
    )
    for currency, total in per_currency:
        findings.append(AuditFinding("conservation", currency,
                                     f"entries sum to {total}, expected 0"))

    last = await session.scalar(select(func.max(Entry.transaction_id))) or 0
    report("balanced transactions", 0, last)
    for start in range(0, last, BATCH):
        end = min(start + BATCH, last)
        per_transaction = await session.execute(
            select(Entry.transaction_id, Entry.currency, func.sum(Entry.amount))
            .where(Entry.transaction_id > start, Entry.transaction_id <= end)
            .group_by(Entry.transaction_id, Entry.currency).having(func.sum(Entry.amount) != 0)
        )
        for transaction_id, currency, total in per_transaction:
            findings.append(AuditFinding("balanced transaction", f"transaction {transaction_id}",
                                         f"{currency} entries sum to {total}, expected 0"))
        report("balanced transactions", end, last)

    report("source records", 0, last)
    for start in range(0, last, BATCH):
        end = min(start + BATCH, last)
        findings.extend(await provenance.check(session, start, end, test_grants=test_grants))
        report("source records", end, last)

    last = await session.scalar(select(func.max(Account.id))) or 0
    report("accounts", 0, last)
    for start in range(0, last, BATCH):
        end = min(start + BATCH, last)
        findings.extend(await _check_accounts(session, start, end))
        report("accounts", end, last)

    for referring in references.REFERRING:
        last = await references.last_id(session, referring)
        name = f"{referring.called} references"
        report(name, 0, last)
        for start in range(0, last, BATCH):
            end = min(start + BATCH, last)
            findings.extend(await references.check(session, referring, start, end))
            report(name, end, last)
    return findings


async def _check_accounts(session: AsyncSession, start: int, end: int) -> list[AuditFinding]:
    """Cached balances and limits of the accounts with ids in (start, end]."""
    findings: list[AuditFinding] = []
    sums = (
        select(Entry.account_id, func.sum(Entry.amount).label("total"))
        .where(Entry.account_id > start, Entry.account_id <= end)
        .group_by(Entry.account_id).subquery()
    )
    accounts = await session.execute(
        select(Account.code, Account.cached, Account.limited, Account.balance,
               func.coalesce(sums.c.total, 0))
        .outerjoin(sums, sums.c.account_id == Account.id)
        .where(Account.id > start, Account.id <= end)
        .order_by(Account.id)
    )
    for code, cached, limited, balance, total in accounts:
        if cached and balance != total:
            findings.append(AuditFinding("cached balance", code,
                                         f"balance {balance} but entries sum to {total}"))
        if limited and min(balance, total) < 0:
            findings.append(AuditFinding("negative balance", code,
                                         f"limited account at {min(balance, total)}"))
    return findings
