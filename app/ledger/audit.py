"""The ledger audit: proofs that no coin was lost or created, run by ``livegifts audit``."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Account, Entry


@dataclass(frozen=True, slots=True)
class AuditFinding:
    check: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: {self.subject}: {self.detail}"


async def audit(session: AsyncSession) -> list[AuditFinding]:
    """Return every violation of the ledger's invariants; an empty list means the books hold."""
    from app.ledger import journal

    findings: list[AuditFinding] = await journal.verify(session)

    per_currency = await session.execute(
        select(Entry.currency, func.sum(Entry.amount)).group_by(Entry.currency)
        .having(func.sum(Entry.amount) != 0)
    )
    for currency, total in per_currency:
        findings.append(AuditFinding("conservation", currency,
                                     f"entries sum to {total}, expected 0"))

    per_transaction = await session.execute(
        select(Entry.transaction_id, Entry.currency, func.sum(Entry.amount))
        .group_by(Entry.transaction_id, Entry.currency).having(func.sum(Entry.amount) != 0)
    )
    for transaction_id, currency, total in per_transaction:
        findings.append(AuditFinding("balanced transaction", f"transaction {transaction_id}",
                                     f"{currency} entries sum to {total}, expected 0"))

    sums = (
        select(Entry.account_id, func.sum(Entry.amount).label("total"))
        .group_by(Entry.account_id).subquery()
    )
    accounts = await session.execute(
        select(Account.code, Account.cached, Account.limited, Account.balance,
               func.coalesce(sums.c.total, 0))
        .outerjoin(sums, sums.c.account_id == Account.id)
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
