"""What a user holds and how it got there: balances and the transaction history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.ledger import Currency
from app.models import Account, Entry, LedgerTransaction


@dataclass(frozen=True, slots=True)
class Wallet:
    coins: int
    diamonds: int


async def wallet(session: AsyncSession, user_id: int) -> Wallet:
    rows = await session.execute(
        select(Account.currency, Account.balance).where(Account.owner_user_id == user_id,
                                                        Account.limited)
    )
    balances: dict[str, int] = {}
    for currency, balance in rows:
        balances[currency] = balances.get(currency, 0) + balance
    return Wallet(coins=balances.get(Currency.COIN, 0),
                  diamonds=balances.get(Currency.DIAMOND, 0))


async def transactions_of(session: AsyncSession, user_id: int, *, limit: int,
                          before_id: int | None = None) -> list[LedgerTransaction]:
    """The user's transactions, newest first, for keyset pagination by id."""
    touching = (
        select(Entry.transaction_id)
        .join(Account, Account.id == Entry.account_id)
        .where(Account.owner_user_id == user_id)
    )
    query = select(LedgerTransaction).where(LedgerTransaction.id.in_(touching))
    if before_id is not None:
        query = query.where(LedgerTransaction.id < before_id)
    query = query.order_by(LedgerTransaction.id.desc()).limit(limit)
    return list((await session.scalars(query)).all())


async def transaction_visible_to(session: AsyncSession, transaction_id: int,
                                 user_id: int) -> bool:
    return await session.scalar(
        select(Entry.id).join(Account, Account.id == Entry.account_id)
        .where(Entry.transaction_id == transaction_id, Account.owner_user_id == user_id)
        .limit(1)
    ) is not None


async def entries_of(session: AsyncSession, transaction_ids: Sequence[int]
                     ) -> dict[int, list[tuple[Entry, Account]]]:
    rows = await session.execute(
        select(Entry, Account).join(Account, Account.id == Entry.account_id)
        .where(Entry.transaction_id.in_(transaction_ids)).order_by(Entry.id)
    )
    grouped: dict[int, list[tuple[Entry, Account]]] = {tid: [] for tid in transaction_ids}
    for entry, account in rows:
        grouped[entry.transaction_id].append((entry, account))
    return grouped
