"""Opening and finding ledger accounts by their stable code."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import insert_ignoring_conflict
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


async def open_account(session: AsyncSession, code: str, currency: str, *, cached: bool,
                       limited: bool, owner_user_id: int | None = None) -> AccountRef:
    """Return the account with this code, creating it on first use (safe under races)."""
    found = await session.scalar(select(Account).where(Account.code == code))
    if found is None:
        await session.execute(insert_ignoring_conflict(
            session, Account,
            dict(code=code, currency=currency, cached=cached, limited=limited,
                 owner_user_id=owner_user_id, balance=0),
            ["code"],
        ))
        found = await session.scalar(select(Account).where(Account.code == code))
    assert found is not None
    if found.currency != currency:
        raise ValueError(f"account {code} holds {found.currency}, not {currency}")
    return _ref(found)


async def system_account(session: AsyncSession, name: str, currency: str) -> AccountRef:
    """A platform account (issuance, revenue, clearing): derived balance, may go negative."""
    return await open_account(session, f"system:{name}:{currency}", currency,
                              cached=False, limited=False)


async def user_account(session: AsyncSession, user_id: int, purpose: str,
                       currency: str) -> AccountRef:
    """A user's own account (wallet coins, earned diamonds): cached and never negative."""
    return await open_account(session, f"user:{user_id}:{purpose}", currency,
                              cached=True, limited=True, owner_user_id=user_id)
