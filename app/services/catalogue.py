"""The gift catalogue: what can be sent, at what price, when."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import DomainError, ErrorCode
from app.media import built_in_image
from app.models import Gift

MAX_GIFT_PRICE = 1_000_000
SKU = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
CATEGORY = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
URL = re.compile(r"^https?://\S{1,490}$")

# (sku, name, coins, category): from a 1-coin Rose to the 44,999-coin Universe.
DEFAULT_GIFTS = [
    ("rose", "Rose", 1, "classic"),
    ("tiktok", "TikTok", 1, "classic"),
    ("finger-heart", "Finger Heart", 5, "classic"),
    ("perfume", "Perfume", 20, "classic"),
    ("doughnut", "Doughnut", 30, "classic"),
    ("hand-hearts", "Hand Hearts", 100, "classic"),
    ("corgi", "Corgi", 299, "animals"),
    ("money-gun", "Money Gun", 500, "premium"),
    ("galaxy", "Galaxy", 1_000, "premium"),
    ("sports-car", "Sports Car", 7_000, "premium"),
    ("interstellar", "Interstellar", 10_000, "premium"),
    ("lion", "Lion", 29_999, "animals"),
    ("universe", "Universe", 44_999, "premium"),
]


@dataclass(frozen=True, slots=True)
class GiftFields:
    """Admin input for a gift; ``None`` leaves a field as it is on update."""

    name: str | None = None
    coin_price: int | None = None
    image_url: str | None = None
    animation_url: str | None = None
    category: str | None = None
    available_from: datetime | None = None
    available_until: datetime | None = None
    sort_order: int | None = None
    active: bool | None = None


def is_available(gift: Gift, at: datetime) -> bool:
    return gift.active and (gift.available_from is None or gift.available_from <= at) and (
        gift.available_until is None or at < gift.available_until)


def _check(fields: GiftFields) -> None:
    if fields.name is not None and not 1 <= len(fields.name.strip()) <= 80:
        raise DomainError(ErrorCode.INVALID_INPUT, "name must be 1 to 80 characters.", "name")
    if fields.coin_price is not None and not 1 <= fields.coin_price <= MAX_GIFT_PRICE:
        raise DomainError(ErrorCode.INVALID_AMOUNT,
                          f"coinPrice must be between 1 and {MAX_GIFT_PRICE:,}.", "coinPrice")
    for name in ("image_url", "animation_url"):
        value = getattr(fields, name)
        if value is not None and not URL.match(value):
            camel = name.replace("_url", "Url")
            raise DomainError(ErrorCode.INVALID_INPUT, f"{camel} must be an http(s) URL.", camel)
    if fields.category is not None and not CATEGORY.match(fields.category):
        raise DomainError(ErrorCode.INVALID_INPUT, "category must be 1-40 lowercase letters, "
                          "digits, '_' or '-'.", "category")
    for name in ("available_from", "available_until"):
        value = getattr(fields, name)
        if value is not None and value.tzinfo is None:
            camel = name.replace("_f", "F").replace("_u", "U")
            raise DomainError(ErrorCode.INVALID_INPUT, f"{camel} needs a time zone.", camel)


def _check_window(gift: Gift) -> None:
    if gift.available_from and gift.available_until and \
            gift.available_until <= gift.available_from:
        raise DomainError(ErrorCode.INVALID_INPUT, "availableUntil must be after availableFrom.",
                          "availableUntil")


async def list_gifts(session: AsyncSession, *, category: str | None, limit: int,
                     after: tuple[int, int] | None, include_unavailable: bool = False
                     ) -> list[Gift]:
    """Gifts in display order (sort order, then id); ``after`` is the last (sort_order, id)."""
    query = select(Gift).order_by(Gift.sort_order, Gift.id).limit(limit)
    if category is not None:
        query = query.where(Gift.category == category)
    if after is not None:
        query = query.where(tuple_(Gift.sort_order, Gift.id) > after)
    if not include_unavailable:
        now = datetime.now(UTC)
        query = query.where(Gift.active,
                            or_(Gift.available_from.is_(None), Gift.available_from <= now),
                            or_(Gift.available_until.is_(None), Gift.available_until > now))
    return list((await session.scalars(query)).all())


async def create_gift(session: AsyncSession, sku: str, fields: GiftFields) -> Gift:
    if not SKU.match(sku):
        raise DomainError(ErrorCode.INVALID_INPUT, "sku must be 1-64 lowercase letters, digits, "
                          "'.', '_' or '-'.", "sku")
    missing = [n for n in ("name", "coin_price", "image_url", "category")
               if getattr(fields, n) is None]
    if missing:
        raise DomainError(ErrorCode.INVALID_INPUT, f"{missing[0]} is required.", missing[0])
    _check(fields)
    if await session.scalar(select(Gift.id).where(Gift.sku == sku)):
        raise DomainError(ErrorCode.INVALID_INPUT, f"A gift with sku {sku!r} exists.", "sku")
    values = {k: v for k, v in vars_of(fields).items() if v is not None}
    gift = Gift(sku=sku, **values)
    _check_window(gift)
    session.add(gift)
    await session.flush()
    return gift


async def update_gift(session: AsyncSession, gift_id: int, fields: GiftFields) -> Gift:
    gift = await session.get(Gift, gift_id)
    if gift is None:
        raise DomainError(ErrorCode.NOT_FOUND, "No gift has this ID.", "id")
    _check(fields)
    for name, value in vars_of(fields).items():
        if value is not None:
            setattr(gift, name, value.strip() if name == "name" else value)
    _check_window(gift)
    await session.flush()
    return gift


def vars_of(fields: GiftFields) -> dict[str, object]:
    return {name: getattr(fields, name) for name in GiftFields.__slots__}


async def seed_default_gifts(session: AsyncSession) -> int:
    existing = set((await session.scalars(select(Gift.sku))).all())
    created = 0
    for order, (sku, name, coins, category) in enumerate(DEFAULT_GIFTS):
        if sku not in existing:
            session.add(Gift(sku=sku, name=name, coin_price=coins, category=category,
                             image_url=built_in_image(sku),
                             sort_order=order * 10))
            created += 1
    await session.flush()
    return created
