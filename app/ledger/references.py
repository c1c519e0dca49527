"""The rows a ledger entry and a gift receipt name exist: the references the database does
not check itself (revision 0021 dropped their foreign keys, which cost every gift seventeen
locked lookups). The ledger audit runs :func:`check` over each table's ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.ledger.audit import AuditFinding
from app.models import (
    Account,
    Entry,
    Gift,
    GiftCombo,
    GiftSend,
    LedgerTransaction,
    LiveSession,
    RateCard,
    User,
)

CHECK = "reference"


@dataclass(frozen=True, slots=True)
class Referring:
    """A table whose rows name other rows: what a row is called in a finding, and each
    column with the column it names."""

    table: Any
    called: str
    columns: tuple[tuple[Any, Any, str], ...]  # (column, the column it names, its row's name)


REFERRING = (
    Referring(Entry, "ledger entry", (
        (Entry.transaction_id, LedgerTransaction.id, "ledger transaction"),
        (Entry.account_id, Account.id, "ledger account"))),
    Referring(GiftSend, "gift receipt", (
        (GiftSend.session_id, LiveSession.id, "live session"),
        (GiftSend.gift_id, Gift.id, "gift"),
        (GiftSend.sender_id, User.id, "user"),
        (GiftSend.creator_id, User.id, "user"),
        (GiftSend.rate_card_version, RateCard.version, "rate card"),
        (GiftSend.transaction_id, LedgerTransaction.id, "ledger transaction"),
        (GiftSend.combo_id, GiftCombo.id, "gift combo"))),
)


async def last_id(session: AsyncSession, referring: Referring) -> int:
    return await session.scalar(select(func.max(referring.table.id))) or 0


async def check(session: AsyncSession, referring: Referring, start: int, end: int
                ) -> list[AuditFinding]:
    """A finding for each row with an id in (start, end] that names a row which does not
    exist, in id order."""
    table = referring.table
    findings: list[tuple[int, AuditFinding]] = []
    for column, named, name in referring.columns:
        for row_id, value in await session.execute(
                select(table.id, column).where(table.id > start, table.id <= end,
                                               ~exists().where(named == column))):
            findings.append((row_id, AuditFinding(
                CHECK, f"{referring.called} {row_id}",
                f"its {column.key} is {value}, and no {name} has it")))
    return [finding for _, finding in sorted(findings, key=lambda found: found[0])]
