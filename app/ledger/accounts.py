"""Opening and finding ledger accounts by their stable code."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Query, among, insert_ignoring_conflict, one_of
from app.models import Account


class Currency(StrEnum):
    COIN = "COIN"
    DIAMOND = "DIAMOND"
    USD = "USD"


@dataclass(frozen=True, slots=True)
class AccountRef:
    id: int
    code: str
    currency: str
    cached: bool
    limited: bool


def _ref(account: Account) -> AccountRef:
    assert account.id is not None
    return AccountRef(account.id, account.code, account.currency, account.cached, account.limited)


# Accounts are never deleted or renumbered, so once a row is known to be committed its
# reference can be reused by every later transaction on the same engine.
_known: weakref.WeakKeyDictionary[Any, dict[str, AccountRef]] = weakref.WeakKeyDictionary()


async def open_account(session: AsyncSession, code: str, currency: str, *, cached: bool,
                       limited: bool, owner_user_id: int | None = None) -> AccountRef:
    """Return the account with this code, creating it on first use (safe under races)."""
    known = _known.setdefault(session.get_bind(), {})
    if code in known:
        return _same_currency(known[code], currency)
    opened_here: set[str] = session.info.setdefault("opened_accounts", set())
    found = await session.scalar(select(Account).where(Account.code == code))
    if found is not None and code not in opened_here:
        known[code] = _ref(found)  # it existed before this session: committed
    if found is None:
        opened_here.add(code)
        await session.execute(insert_ignoring_conflict(
            session, Account,
            dict(code=code, currency=currency, cached=cached, limited=limited,
                 owner_user_id=owner_user_id, balance=0),
            ["code"],
        ))
        found = await session.scalar(select(Account).where(Account.code == code))
    assert found is not None
    return _same_currency(_ref(found), currency)


def _same_currency(account: AccountRef, currency: str) -> AccountRef:
    if account.currency != currency:
        raise ValueError(f"account {account.code} holds {account.currency}, not {currency}")
    return account


def system_code(name: str, currency: str) -> str:
    return f"system:{name}:{currency}"


def user_code(user_id: int, purpose: str) -> str:
    return f"user:{user_id}:{purpose}"


async def system_account(session: AsyncSession, name: str, currency: str) -> AccountRef:
    """A platform account (issuance, revenue, clearing): derived balance, may go negative."""
    return await open_account(session, system_code(name, currency), currency,
                              cached=False, limited=False)


async def user_account(session: AsyncSession, user_id: int, purpose: str,
                       currency: str) -> AccountRef:
    """A user's own account (wallet coins, earned diamonds): cached and never negative."""
    return await open_account(session, user_code(user_id, purpose), currency,
                              cached=True, limited=True, owner_user_id=user_id)


async def user_accounts(session: AsyncSession, user_ids: Iterable[int], purpose: str,
                        currency: str) -> dict[int, AccountRef]:
    """Many users' accounts of one purpose: those not known yet are read in one query."""
    codes = {user_id: user_code(user_id, purpose) for user_id in user_ids}
    known = _known.setdefault(session.get_bind(), {})
    unknown = [code for code in codes.values() if code not in known]
    if unknown:
        opened_here: set[str] = session.info.get("opened_accounts", set())
        for account in await session.scalars(select(Account).where(
                one_of(session, Account.code, unknown))):
            if account.code not in opened_here:
                known[account.code] = _ref(account)
    return {user_id: await user_account(session, user_id, purpose, currency)
            for user_id in codes}


async def lock_account(session: AsyncSession, account: AccountRef) -> int:
    """Lock the account's row until the end of the transaction; return its cached balance."""
    return (await lock_accounts(session, [account]))[account.id]


async def lock_accounts(session: AsyncSession, accounts: Iterable[AccountRef]) -> dict[int, int]:
    """Lock the accounts' rows in id order until the end of the transaction; return their
    cached balances by id.

    The lock is ``FOR NO KEY UPDATE``, the lock an UPDATE of the balance takes itself.
    Unlike ``FOR UPDATE`` it does not wait for key-share locks (a foreign key's check
    from another table's insert, should one refer to accounts), so a writer holding such
    a lock can never deadlock with a writer waiting here. Id order is every writer's lock
    order.
    """
    ids = sorted({account.id for account in accounts})
    balances = dict(await _LOCK.rows(session, ids=ids))
    assert len(balances) == len(ids)
    return balances


_LOCK = Query(lambda dialect: select(Account.id, Account.balance)
              .where(among(dialect, Account.id, "ids"))
              .order_by(Account.id).with_for_update(key_share=True))
