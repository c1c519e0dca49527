"""The rate card and the one rule that splits a gift's coins.

A gift worth ``V`` coins is split by integer arithmetic: the creator's part is
``floor(V * creator_share_bps / 10000)`` coins, converted to diamonds at
``diamonds_per_coin``; any brand's part is what its plugin says; the platform
gets the rest, so the remainder of every division goes to the platform and the
parts always sum exactly to ``V``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import Query, all_loaded
from app.errors import DomainError, ErrorCode
from app.models import RateCard
from app.sponsorship import RateCardTerms

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_RATE_CARD = {
    "version": 1, "creator_share_bps": 5000, "diamonds_per_coin": 1,
    "cash_minor_per_100_diamonds": 50, "cash_currency": "USD", "effective_from": EPOCH,
    "note": "Launch rate card", "created_at": EPOCH,
}
MAX_DIAMONDS_PER_COIN = 1000
MAX_CASH_PER_100_DIAMONDS = 100_000


@dataclass(frozen=True, slots=True)
class GiftSplit:
    """Where every coin of one gift goes. ``coins_paid + brand_subsidy`` = the gift's value."""

    value: int
    coins_paid: int
    brand_subsidy: int
    creator_coins: int
    platform_coins: int
    brand_coins: int
    creator_diamonds: int
    # A brand share the core applies with its carry when the send is written (BrandShare).
    brand_platform_bps: int | None = None


def split_gift(value: int, card: RateCard | RateCardTerms, *, brand_coins: int = 0,
               brand_subsidy: int = 0) -> GiftSplit:
    """Split ``value`` coins per the rate card; the platform takes the remainder."""
    if value <= 0 or not 0 <= brand_coins <= value or not 0 <= brand_subsidy < value:
        raise ValueError(f"cannot split value={value} brand={brand_coins} "
                         f"subsidy={brand_subsidy}")
    creator = value * card.creator_share_bps // 10_000
    platform = value - creator - brand_coins
    if platform < 0:
        raise ValueError("creator and brand shares exceed the gift's value")
    return GiftSplit(value=value, coins_paid=value - brand_subsidy, brand_subsidy=brand_subsidy,
                     creator_coins=creator, platform_coins=platform, brand_coins=brand_coins,
                     creator_diamonds=creator * card.diamonds_per_coin)


async def current_rate_card(session: AsyncSession, at: datetime | None = None) -> RateCard:
    at = at or datetime.now(UTC)
    rows = await _IN_FORCE.rows(session, at=at)
    if not rows:
        raise RuntimeError("no rate card is in force; run 'livegifts migrate'")
    return all_loaded(RateCard, rows)[0]


_IN_FORCE = Query(lambda dialect: select(*RateCard.__table__.c)
                  .where(RateCard.__table__.c.effective_from <= bindparam("at"))
                  .order_by(RateCard.__table__.c.version.desc()).limit(1))


async def rate_cards(session: AsyncSession) -> list[RateCard]:
    return list((await session.scalars(select(RateCard).order_by(RateCard.version.desc()))).all())


async def ensure_default_rate_card(session: AsyncSession) -> None:
    if await session.scalar(select(func.count()).select_from(RateCard)) == 0:
        session.add(RateCard(**DEFAULT_RATE_CARD))
        await session.flush()


async def publish_rate_card(session: AsyncSession, *, creator_share_bps: int,
                            diamonds_per_coin: int, cash_minor_per_100_diamonds: int,
                            effective_from: datetime, note: str = "") -> RateCard:
    """Publish the next version. It cannot start in the past: history is never rewritten."""
    now = datetime.now(UTC)
    if not 0 <= creator_share_bps <= 10_000:
        raise DomainError(ErrorCode.INVALID_INPUT, "creatorShareBps must be between 0 and "
                          "10000 (hundredths of a percent).", "creatorShareBps")
    if not 1 <= diamonds_per_coin <= MAX_DIAMONDS_PER_COIN:
        raise DomainError(ErrorCode.INVALID_AMOUNT, "diamondsPerCoin must be between 1 and "
                          f"{MAX_DIAMONDS_PER_COIN}.", "diamondsPerCoin")
    if not 1 <= cash_minor_per_100_diamonds <= MAX_CASH_PER_100_DIAMONDS:
        raise DomainError(ErrorCode.INVALID_AMOUNT, "cashMinorPer100Diamonds must be between 1 "
                          f"and {MAX_CASH_PER_100_DIAMONDS:,}.", "cashMinorPer100Diamonds")
    if effective_from.tzinfo is None:
        raise DomainError(ErrorCode.INVALID_INPUT, "effectiveFrom needs a time zone.",
                          "effectiveFrom")
    if effective_from < now:
        raise DomainError(ErrorCode.INVALID_INPUT, "effectiveFrom cannot be in the past.",
                          "effectiveFrom")
    latest = await session.scalar(select(RateCard).order_by(RateCard.version.desc()).limit(1)
                                  .with_for_update())
    if latest is not None and effective_from < latest.effective_from:
        raise DomainError(ErrorCode.INVALID_INPUT, "effectiveFrom must not be before the latest "
                          f"version's ({latest.effective_from.isoformat()}).", "effectiveFrom")
    card = RateCard(version=(latest.version if latest else 0) + 1,
                    creator_share_bps=creator_share_bps, diamonds_per_coin=diamonds_per_coin,
                    cash_minor_per_100_diamonds=cash_minor_per_100_diamonds,
                    cash_currency="USD", effective_from=effective_from, note=note[:300])
    session.add(card)
    await session.flush()
    return card
