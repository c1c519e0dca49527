"""Users and their own accounts: a user appears the first time a valid token names them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import insert_ignoring_conflict
from app.ledger import AccountRef, Currency, user_account
from app.models import User

WALLET = "wallet"
EARNINGS = "earnings"


async def ensure_user(session: AsyncSession, name: str) -> User:
    """Return the user with this name, creating the user and their accounts on first sight."""
    user = await session.scalar(select(User).where(User.name == name))
    if user is None:
        await session.execute(insert_ignoring_conflict(session, User, {"name": name}, ["name"]))
        user = await session.scalar(select(User).where(User.name == name))
        assert user is not None and user.id is not None
        await coin_account(session, user.id)
        await diamond_account(session, user.id)
    return user


async def coin_account(session: AsyncSession, user_id: int) -> AccountRef:
    return await user_account(session, user_id, WALLET, Currency.COIN)


async def diamond_account(session: AsyncSession, user_id: int) -> AccountRef:
    return await user_account(session, user_id, EARNINGS, Currency.DIAMOND)
