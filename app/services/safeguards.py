"""Protecting viewers: age rules, spending caps and cool-off.

* Buying coins, sending gifts and receiving them need a birthdate showing the
  configured minimum age (18 by default).
* A viewer's daily and monthly caps (in coins spent on gifts, UTC days and months)
  and a cool-off (no gifting until a time) take effect at once when tightened and
  24 hours later when loosened; a later change supersedes a pending one. The
  platform's default caps are upper bounds no viewer can exceed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Query, among
from app.errors import DomainError, ErrorCode
from app.models import LimitChange, Profile, ViewerSpend
from app.settings import Settings

LOOSENING_DELAY = timedelta(hours=24)
MAX_CAP = 100_000_000
MAX_COOLOFF_DAYS = 3650
DAILY, MONTHLY, COOLOFF = "daily_cap", "monthly_cap", "cooloff"
DAY, MONTH = "day", "month"  # the periods of ViewerSpend


@dataclass(frozen=True, slots=True)
class Limits:
    daily_cap: int | None
    monthly_cap: int | None
    cooloff_until: datetime | None


def age_on(birthdate: date, today: date) -> int:
    return today.year - birthdate.year - ((today.month, today.day) <
                                          (birthdate.month, birthdate.day))


async def set_birthdate(session: AsyncSession, user_id: int, birthdate: date) -> None:
    today = datetime.now(UTC).date()
    if not date(1900, 1, 1) <= birthdate <= today:
        raise DomainError(ErrorCode.INVALID_INPUT, "birthdate must be a real date in the past.",
                          "birthdate")
    profile = await session.get(Profile, user_id)
    if profile is None:
        session.add(Profile(user_id=user_id, birthdate=birthdate))
    elif profile.birthdate != birthdate:
        raise DomainError(ErrorCode.INVALID_INPUT, "Your birthdate is already on file; contact "
                          "support to correct it.", "birthdate")
    await session.flush()


async def require_age(session: AsyncSession, settings: Settings, user_id: int, *,
                      doing: str, whose: str = "Your") -> None:
    """Refuse unless the user's birthdate shows the minimum age."""
    birthdate = await session.scalar(select(Profile.birthdate).where(Profile.user_id == user_id))
    check_age(settings, birthdate, doing=doing, whose=whose)


def check_age(settings: Settings, birthdate: date | None, *, doing: str,
              whose: str = "Your", today: date | None = None) -> None:
    """Refuse unless ``birthdate`` (None: not on file) shows the minimum age ``today``."""
    if birthdate is None:
        raise DomainError(ErrorCode.BIRTHDATE_REQUIRED, f"{whose} birthdate is needed before "
                          f"{doing}; add it with updateProfile.", None)
    if age_on(birthdate, today or datetime.now(UTC).date()) < settings.minimum_age:
        raise DomainError(ErrorCode.AGE_RESTRICTED, f"{doing.capitalize()} needs "
                          f"{'you' if whose == 'Your' else 'the creator'} to be at least "
                          f"{settings.minimum_age}.", None)


async def own_limits(session: AsyncSession, user_id: int, at: datetime) -> Limits:
    """The limits the viewer set that are in force at ``at`` (without platform defaults)."""
    return (await _own_limits_of(session, [user_id], at))[user_id]


async def _own_limits_of(session: AsyncSession, user_ids: Iterable[int], at: datetime
                         ) -> dict[int, Limits]:
    ids = set(user_ids)
    latest: dict[int, dict[str, tuple[int | None, datetime | None]]] = {
        user_id: {} for user_id in ids}
    for user_id, kind, amount, until in await _LIMIT_CHANGES.rows(session, ids=sorted(ids),
                                                                  at=at):
        latest[user_id][kind] = (amount, until)  # the last one of each kind wins
    limits = {}
    for user_id, changes in latest.items():
        daily, monthly, cooloff = (changes.get(kind) for kind in (DAILY, MONTHLY, COOLOFF))
        limits[user_id] = Limits(daily_cap=daily[0] if daily else None,
                                 monthly_cap=monthly[0] if monthly else None,
                                 cooloff_until=cooloff[1] if cooloff else None)
    return limits


_LIMIT_CHANGES = Query(lambda dialect: select(
    LimitChange.user_id, LimitChange.kind, LimitChange.amount, LimitChange.until)
    .where(among(dialect, LimitChange.user_id, "ids"), LimitChange.effective_at <= bindparam("at"))
    .order_by(LimitChange.id))


async def pending_changes(session: AsyncSession, user_id: int, at: datetime
                          ) -> list[LimitChange]:
    """Loosenings not yet in force and not superseded by a later change."""
    rows = (await session.scalars(select(LimitChange).where(
        LimitChange.user_id == user_id).order_by(LimitChange.id))).all()
    latest = {row.kind: row for row in rows}
    return [row for row in latest.values() if row.effective_at > at]


def _tighter(kind: str, new: LimitChange, current: Limits, now: datetime) -> bool:
    if kind == COOLOFF:
        in_force = current.cooloff_until if current.cooloff_until and \
            current.cooloff_until > now else None
        return new.until is not None and (in_force is None or new.until >= in_force)
    old = current.daily_cap if kind == DAILY else current.monthly_cap
    return new.amount is not None and (old is None or new.amount <= old)


async def change_limit(session: AsyncSession, user_id: int, kind: str, *,
                       amount: int | None = None, cooloff_days: int | None = None
                       ) -> LimitChange:
    """Record a change; it is in force now if it tightens, in 24 hours if it loosens."""
    now = datetime.now(UTC)
    field = {DAILY: "dailyCapCoins", MONTHLY: "monthlyCapCoins", COOLOFF: "coolOffDays"}[kind]
    if kind == COOLOFF:
        if cooloff_days is not None and not 0 <= cooloff_days <= MAX_COOLOFF_DAYS:
            raise DomainError(ErrorCode.INVALID_INPUT, f"{field} must be between 0 and "
                              f"{MAX_COOLOFF_DAYS}.", field)
        until = now + timedelta(days=cooloff_days) if cooloff_days else None
        change = LimitChange(user_id=user_id, kind=kind, until=until, effective_at=now)
    else:
        if amount is not None and not 0 <= amount <= MAX_CAP:
            raise DomainError(ErrorCode.INVALID_AMOUNT, f"{field} must be between 0 and "
                              f"{MAX_CAP:,} coins, or null for no cap.", field)
        change = LimitChange(user_id=user_id, kind=kind, amount=amount, effective_at=now)
    if not _tighter(kind, change, await own_limits(session, user_id, now), now):
        change.effective_at = now + LOOSENING_DELAY
    session.add(change)
    await session.flush()
    return change


@dataclass(slots=True)
class Spending:
    """A viewer's own limits in force and what they spent on gifts today and this month."""

    limits: Limits
    today: int
    this_month: int

    def add(self, coins: int) -> None:
        self.today += coins
        self.this_month += coins


async def spending_of(session: AsyncSession, user_ids: Iterable[int], now: datetime
                      ) -> dict[int, Spending]:
    """Each viewer's spending (the caller holds their wallet locks, so concurrent sends
    are counted exactly), in two queries however many viewers and gifts."""
    limits = await _own_limits_of(session, user_ids, now)
    today, month = now.date(), now.date().replace(day=1)
    spent = {(sender_id, period): coins for sender_id, period, coins in
             await _SPENT.rows(session, ids=sorted(limits), day=DAY, today=today, month=MONTH,
                               this_month=month)}
    return {user_id: Spending(own, spent.get((user_id, DAY), 0), spent.get((user_id, MONTH), 0))
            for user_id, own in limits.items()}


_SPENT = Query(lambda dialect: select(ViewerSpend.sender_id, ViewerSpend.period,
                                      ViewerSpend.coins).where(
    among(dialect, ViewerSpend.sender_id, "ids"),
    or_(and_(ViewerSpend.period == bindparam("day"),
             ViewerSpend.period_start == bindparam("today")),
        and_(ViewerSpend.period == bindparam("month"),
             ViewerSpend.period_start == bindparam("this_month")))))


def spend_rows(sender_id: int, coins: int, now: datetime) -> list[dict[str, Any]]:
    """The ``ViewerSpend`` rows a gift of ``coins`` adds to (see :func:`app.db.add_to_counters`)."""
    return [{"sender_id": sender_id, "period": DAY, "period_start": now.date(), "coins": coins},
            {"sender_id": sender_id, "period": MONTH, "period_start": now.date().replace(day=1),
             "coins": coins}]


def check_spending(settings: Settings, spending: Spending, coins: int, now: datetime) -> None:
    """Refuse a send of ``coins`` that breaks a cool-off or a cap."""
    limits = spending.limits
    if limits.cooloff_until and limits.cooloff_until > now:
        raise DomainError(ErrorCode.COOLING_OFF, "You chose a break from gifting until "
                          f"{limits.cooloff_until:%Y-%m-%d %H:%M} UTC.", None)
    for cap, default, spent, code, label in [
        (limits.daily_cap, settings.default_daily_cap_coins, spending.today,
         ErrorCode.DAILY_CAP_REACHED, "daily"),
        (limits.monthly_cap, settings.default_monthly_cap_coins, spending.this_month,
         ErrorCode.MONTHLY_CAP_REACHED, "monthly"),
    ]:
        limit = default if cap is None else min(cap, default)
        if spent + coins > limit:
            raise DomainError(code, f"This gift costs {coins} coins and would pass your "
                              f"{label} limit of {limit} (spent so far: {spent}).", None)
