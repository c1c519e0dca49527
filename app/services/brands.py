"""Brands: sponsored gifts in the catalogue, sponsorship budgets and campaign reports."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import media
from app.db import insert_ignoring_conflict, total
from app.errors import BusinessRefusal, DomainError, ErrorCode
from app.ledger import (
    AccountRef,
    Currency,
    Leg,
    lock_accounts,
    post_transaction,
    run_idempotent,
    system_account,
)
from app.ledger.accounts import open_account
from app.ledger.idempotency import check_key
from app.models import (
    Account,
    Brand,
    BrandOwner,
    BrandShareCarry,
    BrandTransfer,
    Gift,
    GiftSend,
    User,
)
from app.plugins import DISTRIBUTION, PluginHost, Sponsor, normalised_distribution
from app.services.catalogue import DEFAULT_GIFTS
from app.services.webhooks import ensure_plugin_subscriptions
from app.sponsorship import SLUG

MAX_FUNDING = 1_000_000_000


def check_coins(coins: object) -> None:
    """Coins an admin moves for a brand (funded, settled or paid out): 1 to MAX_FUNDING."""
    if type(coins) is not int or not 1 <= coins <= MAX_FUNDING:
        raise DomainError(ErrorCode.INVALID_AMOUNT,
                          f"coins must be between 1 and {MAX_FUNDING:,}.", "coins")


BUDGET, REVENUE, PAYOUT_HOLD = "budget", "revenue", "payout_hold"


def brand_code(slug: str, purpose: str) -> str:
    """The ledger code of a brand's account: its ``BUDGET``, ``REVENUE`` or ``PAYOUT_HOLD``."""
    return f"brand:{slug}:{purpose}"


async def brand_account(session: AsyncSession, slug: str, purpose: str) -> AccountRef:
    return await open_account(session, brand_code(slug, purpose), Currency.COIN, cached=True,
                              limited=True)


async def budget_account(session: AsyncSession, slug: str) -> AccountRef:
    """Coins a brand set aside to subsidise its gifts; never negative."""
    return await brand_account(session, slug, BUDGET)


async def revenue_account(session: AsyncSession, slug: str) -> AccountRef:
    """Coins a brand earns as its revenue share of its gifts."""
    return await brand_account(session, slug, REVENUE)


async def sync_sponsored_catalogue(session: AsyncSession, host: PluginHost,
                                   auto_approve: bool) -> None:
    """Settle which plugin owns each declared brand from the bindings kept in the
    database (recording new ones: approved at once if ``auto_approve``), then bring the
    approved brands and their sponsored gifts into the catalogue."""
    host.sponsored.clear()
    owners = {row.slug: row for row in await session.scalars(select(BrandOwner))}
    now = datetime.now(UTC)
    for slug, distribution in host.settle({s: o.distribution for s, o in owners.items()},
                                          await _named(session)).items():
        if slug in owners:  # a brand from before bindings: bound to its plugin now
            owners[slug].distribution = distribution
            continue
        await session.execute(insert_ignoring_conflict(session, BrandOwner, {
            "slug": slug, "distribution": distribution, "bound_at": now,
            "approved_at": now if auto_approve else None}, ["slug"]))
        owners[slug] = await session.get(BrandOwner, slug)  # type: ignore[assignment]
    await session.flush()
    host.check_strict()
    brand_ids: dict[str, int] = {}
    for slug, (plugin, brand) in host.brands.items():
        if owners[slug].approved_at is None:
            host.records[plugin].pending.append(slug)
            continue
        await session.execute(insert_ignoring_conflict(
            session, Brand, {"slug": slug, "name": brand.name, "plugin": plugin}, ["slug"]))
        await session.execute(update(Brand).where(Brand.slug == slug)
                              .values(name=brand.name, plugin=plugin))
        brand_ids[slug] = await session.scalar(select(Brand.id).where(Brand.slug == slug))
        # Its share carry exists before its first send, so sends only ever lock and update it.
        await session.execute(insert_ignoring_conflict(
            session, BrandShareCarry, {"brand_id": brand_ids[slug], "carry": 0}, ["brand_id"]))
    core = {sku for sku, *_ in DEFAULT_GIFTS}
    for sku, (plugin, gift) in host.gifts.items():
        if gift.brand not in brand_ids:
            continue
        if sku in core:  # the core catalogue's skus are its own, seeded yet or not
            host.records[plugin].error = f"gift sku {sku!r} already belongs to the core catalogue"
            continue
        image = gift.image_url if gift.image_file is None else \
            media.brand_image(sku, gift.image_file)
        values = dict(name=gift.name, coin_price=gift.coin_price, image_url=image,
                      animation_url=gift.animation_url, category=gift.category,
                      available_from=gift.available_from, available_until=gift.available_until,
                      sort_order=gift.sort_order, brand_id=brand_ids[gift.brand], plugin=plugin)
        await session.execute(insert_ignoring_conflict(session, Gift, {"sku": sku, **values},
                                                       ["sku"]))
        gift_id, brand_id = (await session.execute(
            select(Gift.id, Gift.brand_id).where(Gift.sku == sku))).one()
        if brand_id != brand_ids[gift.brand]:  # a core gift or another brand's: never taken
            record = host.records[plugin]
            record.error = f"gift sku {sku!r} already belongs to " + (
                "the core catalogue" if brand_id is None else "another brand")
            continue
        await session.execute(update(Gift).where(Gift.sku == sku).values(**values))
        host.sponsored[gift_id] = Sponsor(plugin, gift.name)
    # Each live brand's plugin that listens is told of its sends from the event log.
    await ensure_plugin_subscriptions(session, {
        slug: plugin for slug, (plugin, _) in host.brands.items()
        if slug in brand_ids and host.implements(plugin, "gift_sent")})


async def _named(session: AsyncSession) -> dict[str, str]:
    """Each brand row's plugin name: the owner of a brand from before bindings."""
    return dict((await session.execute(select(Brand.slug, Brand.plugin))).all())


async def settle_as_bound(session: AsyncSession, host: PluginHost) -> None:
    """Settle the host's brands by the bindings in the database, writing nothing (for
    reports: :func:`sync_sponsored_catalogue` is what a starting server runs)."""
    owners = dict((await session.execute(select(BrandOwner.slug,
                                                BrandOwner.distribution))).all())
    host.settle(owners, await _named(session))


@dataclass(frozen=True, slots=True)
class Binding:
    """A brand slug's owner (the distribution whose plugin may declare it) and approval."""

    slug: str
    distribution: str | None  # None: bound at its plugin's next start (an older brand)
    approved: bool
    bound_at: datetime

    @classmethod
    def of(cls, row: BrandOwner) -> Binding:
        return cls(row.slug, row.distribution, row.approved_at is not None, row.bound_at)


async def bindings(session: AsyncSession) -> list[Binding]:
    return [Binding.of(row) for row in await session.scalars(
        select(BrandOwner).order_by(BrandOwner.slug))]


async def bind_brand(sessions: async_sessionmaker[AsyncSession], slug: str,
                     distribution: str) -> Binding:
    """Bind ``slug`` to ``distribution`` (a package name), before any plugin declares it
    or to move it to another package; its approval is kept. Takes effect as each server
    process next starts."""
    if not SLUG.match(slug):
        raise DomainError(ErrorCode.INVALID_INPUT, f"{slug!r} is not a brand slug (lowercase "
                          "letters, digits and '-', at most 40).", "slug")
    name = normalised_distribution(distribution)
    if not DISTRIBUTION.match(name):
        raise DomainError(ErrorCode.INVALID_INPUT, f"{distribution!r} is not a package name.",
                          "distribution")
    async with sessions() as session, session.begin():
        row = await session.get(BrandOwner, slug, with_for_update=True)
        if row is None:
            row = BrandOwner(slug=slug, distribution=name)
            session.add(row)
        row.distribution, row.bound_at = name, datetime.now(UTC)
        await session.flush()
        return Binding.of(row)


async def approve_brand(sessions: async_sessionmaker[AsyncSession], slug: str) -> Binding:
    """Let a brand's gifts go live (at once if it is approved already)."""
    async with sessions() as session, session.begin():
        row = await session.get(BrandOwner, slug, with_for_update=True)
        if row is None:
            raise DomainError(ErrorCode.NOT_FOUND, f"No plugin has declared brand {slug!r} "
                              "and none is bound to it: nothing to approve.", "slug")
        if row.approved_at is None:
            row.approved_at = datetime.now(UTC)
        await session.flush()
        return Binding.of(row)


async def brand_by_slug(session: AsyncSession, slug: str) -> Brand:
    brand = await session.scalar(select(Brand).where(Brand.slug == slug))
    if brand is None:
        raise DomainError(ErrorCode.NOT_FOUND, f"No brand {slug!r} is installed.", "brand")
    return brand


async def fund_budget(sessions: async_sessionmaker[AsyncSession], *, admin_id: int, slug: str,
                      coins: int, idempotency_key: str) -> int:
    """Add coins to a brand's sponsorship budget; return the budget afterwards."""
    check_key(idempotency_key)
    check_coins(coins)

    async def fund(session: AsyncSession) -> dict[str, int]:
        brand = await brand_by_slug(session, slug)
        budget = await budget_account(session, slug)
        transaction_id = await post_transaction(session, kind="brand_funding", memo=slug, legs=[
            Leg(await system_account(session, "sponsorship_funding", Currency.COIN), -coins),
            Leg(budget, coins)])
        session.add(BrandTransfer(brand_id=brand.id, kind="funding", coins=coins,
                                  admin_id=admin_id, transaction_id=transaction_id))
        return {"transaction_id": transaction_id}

    await run_idempotent(sessions, scope=f"user:{admin_id}", key=idempotency_key,
                         operation="fund_brand_budget", request={"brand": slug, "coins": coins},
                         action=fund)
    async with sessions() as session:
        return await budget_balance(session, slug)


async def budget_balance(session: AsyncSession, slug: str) -> int:
    return await session.scalar(select(Account.balance).where(
        Account.code == brand_code(slug, BUDGET))) or 0


async def revenue_balance(session: AsyncSession, slug: str) -> int:
    """Coins the brand earned from its revenue share and has not been settled yet."""
    return await session.scalar(select(Account.balance).where(
        Account.code == brand_code(slug, REVENUE))) or 0


async def settle_revenue(sessions: async_sessionmaker[AsyncSession], *, admin_id: int,
                         slug: str, coins: int, idempotency_key: str) -> tuple[int, int]:
    """Settle ``coins`` of a brand's revenue by netting them against its sponsorship budget
    (one balanced ledger transaction: revenue down, budget up). Returns the revenue and
    the budget afterwards."""
    check_key(idempotency_key)
    check_coins(coins)

    async def settle(session: AsyncSession) -> dict[str, int]:
        brand = await brand_by_slug(session, slug)
        revenue, budget = await revenue_account(session, slug), await budget_account(session, slug)
        earned = (await lock_accounts(session, [revenue]))[revenue.id]
        if earned < coins:
            raise BusinessRefusal(ErrorCode.INSUFFICIENT_COINS, f"The brand's revenue is "
                                  f"{earned} coins: it cannot settle {coins}.", "coins")
        transaction_id = await post_transaction(
            session, kind="brand_settlement", memo=f"{slug}: netted against the budget",
            legs=[Leg(revenue, -coins), Leg(budget, coins)])
        session.add(BrandTransfer(brand_id=brand.id, kind="settlement", coins=coins,
                                  admin_id=admin_id, transaction_id=transaction_id))
        return {"transaction_id": transaction_id}

    await run_idempotent(sessions, scope=f"user:{admin_id}", key=idempotency_key,
                         operation="settle_brand_revenue",
                         request={"brand": slug, "coins": coins}, action=settle)
    async with sessions() as session:
        return await revenue_balance(session, slug), await budget_balance(session, slug)


@dataclass(frozen=True, slots=True)
class CampaignSend:
    """One send of a brand's gift, as its plugin's ``gift_sent`` was told of it: the ids
    are the same internal integers as :class:`app.sponsorship.SentGift`'s."""

    receipt_id: int
    at: datetime
    gift_sku: str
    quantity: int
    viewer_id: int
    creator_id: int
    session_id: int
    viewer_paid: int
    brand_subsidy: int
    brand_coins: int

    CSV_COLUMNS = ("receipt_id", "at", "gift_sku", "quantity", "viewer_id", "creator_id",
                   "session_id", "viewer_paid", "brand_subsidy", "brand_coins")


async def campaign_sends(session: AsyncSession, slug: str, *, limit: int,
                         after_id: int | None = None, since: datetime | None = None,
                         until: datetime | None = None) -> list[CampaignSend]:
    """A brand's sends in the order they were written (receipt id), after ``after_id``,
    from ``since`` up to ``until`` (exclusive): what a partner reconciles against."""
    brand = await brand_by_slug(session, slug)
    query = select(GiftSend.id, GiftSend.created_at, Gift.sku, GiftSend.quantity,
                   GiftSend.sender_id, GiftSend.creator_id, GiftSend.session_id,
                   GiftSend.coins_paid, GiftSend.brand_subsidy, GiftSend.brand_coins) \
        .join(Gift, Gift.id == GiftSend.gift_id).where(Gift.brand_id == brand.id) \
        .order_by(GiftSend.id).limit(limit)
    if after_id is not None:
        query = query.where(GiftSend.id > after_id)
    if since is not None:
        query = query.where(GiftSend.created_at >= since)
    if until is not None:
        query = query.where(GiftSend.created_at < until)
    return [CampaignSend(*row) for row in await session.execute(query)]


def sends_csv(sends: list[CampaignSend]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CampaignSend.CSV_COLUMNS)
    for send in sends:
        writer.writerow([send.at.isoformat() if name == "at" else getattr(send, name)
                         for name in CampaignSend.CSV_COLUMNS])
    return out.getvalue()


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
