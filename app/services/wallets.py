"""What a user holds and how it got there: balances and the transaction history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db import Query
from app.models import Account, Entry, LedgerTransaction
from app.services.users import COIN_DEBT, EARNINGS, PAYOUT_HOLD, WALLET


@dataclass(frozen=True, slots=True)
class Wallet:
    coins: int  # spendable
    diamonds: int  # earned and available to cash out
    diamonds_on_hold: int = 0  # in pending payouts
    coins_owed: int = 0  # debt from refunded or charged-back coins already spent


# Read on every wallet query.
_BALANCES = Query(lambda dialect: select(Account.code, Account.balance).where(
    Account.owner_user_id == bindparam("user_id")))


async def wallet(session: AsyncSession, user_id: int) -> Wallet:
    """What the user holds, in the session's transaction."""
    return _held(await _BALANCES.rows(session, user_id=user_id))


async def current_wallet(engine: AsyncEngine, user_id: int) -> Wallet:
    """What the user holds now, read outside any transaction."""
    return _held(await _BALANCES.read(engine, user_id=user_id))


def _held(rows: Sequence[tuple[str, int]]) -> Wallet:
    balances = {code.rsplit(":", 1)[-1]: balance for code, balance in rows}
    return Wallet(coins=balances.get(WALLET, 0), diamonds=balances.get(EARNINGS, 0),
                  diamonds_on_hold=balances.get(PAYOUT_HOLD, 0),
                  coins_owed=-balances.get(COIN_DEBT, 0))


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
