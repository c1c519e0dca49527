"""Brands: sponsored gifts in the catalogue, sponsorship budgets and campaign reports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import insert_ignoring_conflict, total
from app.errors import DomainError, ErrorCode
from app.ledger import AccountRef, Currency, Leg, post_transaction, run_idempotent, system_account
from app.ledger.accounts import open_account
from app.ledger.idempotency import check_key
from app.models import Account, Brand, Gift, GiftSend, User
from app.plugins import PluginHost, Sponsor

MAX_FUNDING = 1_000_000_000


async def budget_account(session: AsyncSession, slug: str) -> AccountRef:
    """Coins a brand set aside to subsidise its gifts; never negative."""
    return await open_account(session, f"brand:{slug}:budget", Currency.COIN, cached=True,
                              limited=True)


async def revenue_account(session: AsyncSession, slug: str) -> AccountRef:
    """Coins a brand earns as its revenue share of its gifts."""
    return await open_account(session, f"brand:{slug}:revenue", Currency.COIN, cached=True,
                              limited=True)


async def sync_sponsored_catalogue(session: AsyncSession, host: PluginHost) -> None:
    """Bring the brands and sponsored gifts the plugins declare into the catalogue."""
    brand_ids: dict[str, int] = {}
    for slug, (plugin, brand) in host.brands.items():
        await session.execute(insert_ignoring_conflict(
            session, Brand, {"slug": slug, "name": brand.name, "plugin": plugin}, ["slug"]))
        owner = await session.scalar(select(Brand.plugin).where(Brand.slug == slug))
        if owner != plugin:  # a brand and its budget are never taken over by another plugin
            host.records[plugin].error = f"brand {slug!r} already belongs to plugin {owner!r}"
            continue
        await session.execute(update(Brand).where(Brand.slug == slug).values(name=brand.name))
        brand_ids[slug] = await session.scalar(select(Brand.id).where(Brand.slug == slug))
    for sku, (plugin, gift) in host.gifts.items():
        if gift.brand not in brand_ids:
            continue
        values = dict(name=gift.name, coin_price=gift.coin_price, image_url=gift.image_url,
                      animation_url=gift.animation_url, category=gift.category,
                      available_from=gift.available_from, available_until=gift.available_until,
                      sort_order=gift.sort_order, brand_id=brand_ids[gift.brand], plugin=plugin)
        await session.execute(insert_ignoring_conflict(session, Gift, {"sku": sku, **values},
                                                       ["sku"]))
        gift_id, owner = (await session.execute(
            select(Gift.id, Gift.plugin).where(Gift.sku == sku))).one()
        if owner != plugin:  # a core gift or another plugin's: never taken over
            record = host.records[plugin]
            record.error = f"gift sku {sku!r} already belongs to {owner or 'the core catalogue'}"
            continue
        await session.execute(update(Gift).where(Gift.sku == sku).values(**values))
        host.sponsored[gift_id] = Sponsor(plugin, gift.name)


async def brand_by_slug(session: AsyncSession, slug: str) -> Brand:
    brand = await session.scalar(select(Brand).where(Brand.slug == slug))
    if brand is None:
        raise DomainError(ErrorCode.NOT_FOUND, f"No brand {slug!r} is installed.", "brand")
    return brand


async def fund_budget(sessions: async_sessionmaker[AsyncSession], *, admin_id: int, slug: str,
                      coins: int, idempotency_key: str) -> int:
    """Add coins to a brand's sponsorship budget; return the budget afterwards."""
    check_key(idempotency_key)
    if type(coins) is not int or not 1 <= coins <= MAX_FUNDING:
        raise DomainError(ErrorCode.INVALID_AMOUNT,
                          f"coins must be between 1 and {MAX_FUNDING:,}.", "coins")

    async def fund(session: AsyncSession) -> dict[str, int]:
        await brand_by_slug(session, slug)
        budget = await budget_account(session, slug)
        transaction_id = await post_transaction(session, kind="brand_funding", memo=slug, legs=[
            Leg(await system_account(session, "sponsorship_funding", Currency.COIN), -coins),
            Leg(budget, coins)])
        return {"transaction_id": transaction_id}

    await run_idempotent(sessions, scope=f"user:{admin_id}", key=idempotency_key,
                         operation="fund_brand_budget", request={"brand": slug, "coins": coins},
                         action=fund)
    async with sessions() as session:
        return await budget_balance(session, slug)


async def budget_balance(session: AsyncSession, slug: str) -> int:
    return await session.scalar(select(Account.balance).where(
        Account.code == f"brand:{slug}:budget")) or 0


@dataclass(frozen=True, slots=True)
class ReportLine:
    key: str  # a creator's name or an ISO day
    sends: int
    quantity: int
    coins: int
    viewer_coins: int
    subsidy: int
    brand_coins: int


@dataclass(frozen=True, slots=True)
class CampaignReport:
    brand: Brand
    budget_left: int
    total: ReportLine
    by_creator: list[ReportLine]
    by_day: list[ReportLine]


async def campaign_report(session: AsyncSession, slug: str) -> CampaignReport:
    """What was sent of a brand's gifts: overall, by creator and by day (UTC)."""
    brand = await brand_by_slug(session, slug)
    measures = (func.count(GiftSend.id), total(GiftSend.quantity),
                total(GiftSend.coins_paid + GiftSend.brand_subsidy),
                total(GiftSend.coins_paid),
                total(GiftSend.brand_subsidy),
                total(GiftSend.brand_coins))
    base = select().select_from(GiftSend).join(Gift, Gift.id == GiftSend.gift_id) \
        .where(Gift.brand_id == brand.id)
    overall = (await session.execute(base.add_columns(*measures))).one()
    creators = await session.execute(
        base.join(User, User.id == GiftSend.creator_id).add_columns(User.name, *measures)
        .group_by(User.name).order_by(User.name))
    day = func.date(GiftSend.created_at)
    days = await session.execute(base.add_columns(day, *measures).group_by(day).order_by(day))
    return CampaignReport(
        brand=brand, budget_left=await budget_balance(session, slug),
        total=ReportLine("total", *overall),
        by_creator=[ReportLine(row[0], *row[1:]) for row in creators],
        by_day=[ReportLine(_iso(row[0]), *row[1:]) for row in days])


def _iso(day: date | str) -> str:
    return day if isinstance(day, str) else day.isoformat()
