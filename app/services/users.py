"""Users and their own accounts: a user appears the first time a valid token names them."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Query, among, insert_ignoring_conflict
from app.ledger import (
    AccountRef,
    Currency,
    open_account,
    user_account,
    user_accounts,
    user_code,
)
from app.models import Profile, User

logger = logging.getLogger(__name__)

WALLET = "wallet"
EARNINGS = "earnings"
PAYOUT_HOLD = "payout_hold"
COIN_DEBT = "coin_debt"


class KnownUsers(dict[tuple[str, date | None], int]):
    """Ids of committed users by (name, birthdate claim): a token seen before needs no
    query. Users are never renamed or removed and a birthdate is recorded once, so an
    entry never goes stale; the map is cleared when it reaches ``LIMIT`` entries."""

    LIMIT = 100_000

    def remember(self, key: tuple[str, date | None], user_id: int) -> None:
        if len(self) >= self.LIMIT:
            self.clear()
        self[key] = user_id


async def ensure_user(session: AsyncSession, name: str, birthdate: date | None = None) -> User:
    """Return the user with this name, creating the user and their accounts on first sight.

    A ``birthdate`` vouched for by the identity provider (the token) is recorded once.
    """
    found = (await session.execute(
        select(User, Profile.vouched, Profile.birthdate)
        .outerjoin(Profile, Profile.user_id == User.id).where(User.name == name))).first()
    user = None if found is None else found[0]
    if found is not None and (birthdate is None or (found[1] and found[2] == birthdate)):
        return user  # known, and nothing new to record: one query
    if user is None:
        await session.execute(insert_ignoring_conflict(session, User, {"name": name}, ["name"]))
        user = await session.scalar(select(User).where(User.name == name))
        assert user is not None and user.id is not None
        await coin_account(session, user.id)
        await diamond_account(session, user.id)
    if birthdate is not None:
        await _vouched(session, user.id, birthdate)
    return user


async def _vouched(session: AsyncSession, user_id: int, birthdate: date) -> None:
    """Record a birthdate the identity provider vouches for: it wins over a declared one,
    which is kept beside it with the time of the conflict."""
    await session.execute(insert_ignoring_conflict(session, Profile, {
        "user_id": user_id, "birthdate": birthdate, "vouched": True}, ["user_id"]))
    profile = await session.get(Profile, user_id, with_for_update=True)
    assert profile is not None
    if profile.vouched and profile.birthdate == birthdate:
        return
    if not profile.vouched and profile.birthdate is not None and profile.birthdate != birthdate:
        profile.declared_birthdate, profile.conflict_at = profile.birthdate, datetime.now(UTC)
        logger.warning("user %s declared the birthdate %s; the identity provider vouches for "
                       "%s, which the age rules now follow", user_id, profile.birthdate,
                       birthdate, extra={"user_id": user_id})
    profile.birthdate, profile.vouched = birthdate, True
    await session.flush()


async def names_and_birthdates(session: AsyncSession, user_ids: list[int]
                               ) -> dict[int, tuple[str, date | None]]:
    """Each user's name and birthdate (None when not on file), in one query."""
    return {user_id: (name, birthdate) for user_id, name, birthdate in
            await _NAMES_AND_BIRTHDATES.rows(session, ids=list(user_ids))}


_NAMES_AND_BIRTHDATES = Query(lambda dialect: select(User.id, User.name, Profile.birthdate)
                              .outerjoin(Profile, Profile.user_id == User.id)
                              .where(among(dialect, User.id, "ids")))


async def coin_account(session: AsyncSession, user_id: int) -> AccountRef:
    return await user_account(session, user_id, WALLET, Currency.COIN)


async def diamond_account(session: AsyncSession, user_id: int) -> AccountRef:
    return await user_account(session, user_id, EARNINGS, Currency.DIAMOND)


async def coin_accounts(session: AsyncSession, user_ids: Iterable[int]) -> dict[int, AccountRef]:
    return await user_accounts(session, user_ids, WALLET, Currency.COIN)


async def diamond_accounts(session: AsyncSession, user_ids: Iterable[int]
                           ) -> dict[int, AccountRef]:
    return await user_accounts(session, user_ids, EARNINGS, Currency.DIAMOND)


async def payout_hold_account(session: AsyncSession, user_id: int) -> AccountRef:
    """Diamonds held for payouts the provider has not settled yet."""
    return await user_account(session, user_id, PAYOUT_HOLD, Currency.DIAMOND)


async def debt_account(session: AsyncSession, user_id: int) -> AccountRef:
    """Coins the user owes after a refund or chargeback of coins already spent: a negative
    balance, settled first by later purchases. The wallet itself never goes negative."""
    return await open_account(session, user_code(user_id, COIN_DEBT), Currency.COIN,
                              cached=True, limited=False, owner_user_id=user_id)
