"""Leaderboards, read from the totals every gift maintains (:mod:`app.models.recognition`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import CreatorTotal, SessionGifterTotal, SupporterTotal, User
from app.services.gifting import period_starts


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    ALL = "all"


@dataclass(frozen=True, slots=True)
class Ranked:
    rank: int
    user_id: int
    name: str
    coins: int
    diamonds: int
    gifts: int


def _ranked(rows: list, offset: int) -> list[Ranked]:
    return [Ranked(rank=offset + n + 1, user_id=r.user_id, name=r.name, coins=r.coins,
                   diamonds=r.diamonds, gifts=r.gifts) for n, r in enumerate(rows)]


def current_period_start(period: Period):
    return period_starts(datetime.now(UTC).date())[period.value]


async def top_gifters(session: AsyncSession, session_id: int, *, limit: int, offset: int
                      ) -> list[Ranked]:
    t = SessionGifterTotal
    rows = (await session.execute(
        select(t.sender_id.label("user_id"), User.name, t.coins, t.diamonds, t.gifts)
        .join(User, User.id == t.sender_id).where(t.session_id == session_id)
        .order_by(t.coins.desc(), t.sender_id.desc()).limit(limit).offset(offset))).all()
    return _ranked(rows, offset)


async def top_supporters(session: AsyncSession, creator_id: int, period: Period, *,
                         limit: int, offset: int) -> list[Ranked]:
    t = SupporterTotal
    rows = (await session.execute(
        select(t.sender_id.label("user_id"), User.name, t.coins, t.diamonds, t.gifts)
        .join(User, User.id == t.sender_id)
        .where(t.creator_id == creator_id, t.period == period.value,
               t.period_start == current_period_start(period))
        .order_by(t.coins.desc(), t.sender_id.desc()).limit(limit).offset(offset))).all()
    return _ranked(rows, offset)


async def top_creators(session: AsyncSession, period: Period, *, limit: int, offset: int
                       ) -> list[Ranked]:
    t = CreatorTotal
    rows = (await session.execute(
        select(t.creator_id.label("user_id"), User.name, t.coins, t.diamonds, t.gifts)
        .join(User, User.id == t.creator_id)
        .where(t.period == period.value, t.period_start == current_period_start(period))
        .order_by(t.diamonds.desc(), t.creator_id.desc()).limit(limit).offset(offset))).all()
    return _ranked(rows, offset)
