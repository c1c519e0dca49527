"""GraphQL for brand partners and plugin operators: brands, budgets, reports, plugins."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry import relay
from strawberry.types import Info

from app import models
from app.auth import Role
from app.errors import DomainError
from app.graphql.common import Long, UserError, connection, cursor_id, page_size
from app.graphql.context import ClientError, Context
from app.graphql.types import _rows_by_id, ctx
from app.plugins import PluginRecord
from app.services import brands, payouts, plugin_health, statements
from app.services.plugin_health import FleetHealth

if TYPE_CHECKING:
    from app.graphql.money import Payout, Statement


def _may_see_brand(context: Context, slug: str) -> None:
    principal = context.require(Role.BRAND)
    if not context.is_admin() and principal.brand != slug:
        raise ClientError("Forbidden: a brand partner token sees only its own brand.",
                          "FORBIDDEN")


@strawberry.type(description="A brand that sponsors gifts through its plugin.")
class Brand(relay.Node):
    id: relay.NodeID[int]
    slug: str
    name: str

    @classmethod
    def of(cls, row: models.Brand) -> Brand:
        return cls(id=row.id, slug=row.slug, name=row.name)

    @strawberry.field(description="The plugin that runs the brand's gifts and how it is "
                                  "doing. The brand's partners and admins only; null when its "
                                  "plugin is not installed on this server.")
    async def plugin(self, info: Info) -> PluginInfo | None:
        context = ctx(info)
        _may_see_brand(context, self.slug)
        owner = context.runtime.plugins.brands.get(self.slug)
        if owner is None:
            return None
        async with context.runtime.reads() as session:
            fleet = await plugin_health.fleet(session)
        return PluginInfo.of(context.runtime.plugins.records[owner[0]], fleet.get(owner[0]))

    @strawberry.field(description="Coins left in the sponsorship budget. The brand's partners "
                                  "and admins only.")
    async def budget(self, info: Info) -> Long:
        _may_see_brand(ctx(info), self.slug)
        async with ctx(info).runtime.reads() as session:
            return await brands.budget_balance(session, self.slug)

    @strawberry.field(description="Coins the brand earned from its revenue share and has not "
                                  "been settled yet. The brand's partners and admins only.")
    async def revenue(self, info: Info) -> Long:
        _may_see_brand(ctx(info), self.slug)
        async with ctx(info).runtime.reads() as session:
            return await brands.revenue_balance(session, self.slug)

    @strawberry.field(description="The brand's revenue for a month (e.g. \"2026-12\"): the "
                                  "opening balance, what it earned and what was settled each "
                                  "day (UTC), the closing balance. The brand's partners and "
                                  "admins only.")
    async def statement(self, info: Info, month: str) -> Annotated[
            Statement, strawberry.lazy("app.graphql.money")]:
        from app.graphql.money import Statement  # money's types name Brand: imported late

        _may_see_brand(ctx(info), self.slug)
        try:
            async with ctx(info).runtime.reads() as session:
                result = await statements.brand_statement(session, self.slug, month)
        except DomainError as error:
            raise ClientError(error.message, "BAD_USER_INPUT") from None
        return Statement.of(result, f"/brands/{self.slug}/statements/{month}.csv")

    @strawberry.field(description="Cash-outs of the brand's revenue, newest first. The "
                                  "brand's partners and admins only.")
    async def payouts(self, info: Info, first: int | None = None, after: str | None = None
                      ) -> relay.Connection[Annotated[Payout, strawberry.lazy(
                          "app.graphql.money")]]:
        from app.graphql.money import Payout

        _may_see_brand(ctx(info), self.slug)
        limit = page_size(first)
        async with ctx(info).runtime.reads() as session:
            rows = await payouts.payouts_of(session, brand_id=self.id, limit=limit + 1,
                                            before_id=cursor_id(after))
        return connection(rows, limit, lambda row: Payout.of(row, self.slug),
                          key=lambda row: row.id)

    @classmethod
    async def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str],
                            required: bool = False) -> list[Brand | None]:
        return [cls.of(r) if r else None for r in await _rows_by_id(info, models.Brand, node_ids)]


@strawberry.type(description="An installed plugin and how it is doing.")
class PluginInfo:
    name: str
    version: str
    status: str = strawberry.field(description="active, failed, blocked or not allowed.")
    hooks: list[str]
    gifts: list[str] = strawberry.field(description="Skus of the sponsored gifts it declares.")
    brands: list[str]
    error: str | None
    failures: int = strawberry.field(description="Calls that raised, timed out or answered "
                                                 "nonsense, over every server process since "
                                                 "each started.")
    timeouts: int = strawberry.field(description="Of the failures, calls that did not answer "
                                                 "within the time limit.")
    breaker: str = strawberry.field(description="closed (calls go through), open (its gifts "
                                                "are refused at once, in at least one server "
                                                "process) or half-open (one probe call "
                                                "decides).")
    breaker_open_in: int = strawberry.field(description="Server processes whose breaker for "
                                                        "it is not closed.")
    last_failure: str | None = strawberry.field(description="The hook and reason of its last "
                                                            "failure, on any server process.")

    @classmethod
    def of(cls, record: PluginRecord, fleet: FleetHealth | None) -> PluginInfo:
        """The plugin as this process loaded it, with its health over the fleet (this
        process's own until it has written it)."""
        return cls(name=record.name, version=record.version, status=record.status,
                   hooks=record.hooks, gifts=record.gifts, brands=record.brands,
                   error=record.error,
                   failures=fleet.failures if fleet else record.failures,
                   timeouts=fleet.timeouts if fleet else record.timeouts,
                   breaker=fleet.breaker if fleet else record.breaker,
                   breaker_open_in=fleet.open_in if fleet else int(record.breaker != "closed"),
                   last_failure=fleet.last_failure if fleet else record.last_failure)


@strawberry.type(description="Sends of a brand's gifts, summed.")
class CampaignLine:
    key: str = strawberry.field(description="The creator's name or the day (UTC), or 'total'.")
    sends: Long
    quantity: Long
    coins: Long = strawberry.field(description="Value of the gifts, in coins.")
    viewer_coins: Long = strawberry.field(description="Coins the viewers paid.")
    subsidy_spent: Long = strawberry.field(description="Coins drawn from the brand's budget.")
    brand_coins: Long = strawberry.field(description="The brand's revenue share.")

    @classmethod
    def of(cls, line: brands.ReportLine) -> CampaignLine:
        return cls(key=line.key, sends=line.sends, quantity=line.quantity, coins=line.coins,
                   viewer_coins=line.viewer_coins, subsidy_spent=line.subsidy,
                   brand_coins=line.brand_coins)


@strawberry.type(description="One send of a brand's gift, as its plugin's gift_sent was told "
                              "of it, for reconciling: the ids are the same internal integers.")
class CampaignSend:
    receipt_id: Long = strawberry.field(description="gift_sent's receipt_id.")
    at: datetime
    gift_sku: str
    quantity: int
    viewer_id: Long
    creator_id: Long
    session_id: Long
    viewer_paid: Long = strawberry.field(description="Coins the viewer paid.")
    brand_subsidy: Long = strawberry.field(description="Coins drawn from the brand's budget.")
    brand_coins: Long = strawberry.field(description="The brand's revenue share.")


@strawberry.type(description="What was sent of a brand's sponsored gifts.")
class CampaignReport:
    brand: Brand
    budget_left: Long
    total: CampaignLine
    by_creator: list[CampaignLine]
    by_day: list[CampaignLine]


@strawberry.input(description="Add coins to a brand's sponsorship budget.")
class FundBrandBudgetInput:
    brand: str = strawberry.field(description="The brand's slug.")
    coins: Long
    idempotency_key: str


@strawberry.type
class FundBrandBudgetPayload:
    budget: Long | None = strawberry.field(description="The budget afterwards.")
    user_errors: list[UserError]


@strawberry.input(description="Settle a brand's revenue by netting it against its "
                              "sponsorship budget.")
class SettleBrandRevenueInput:
    brand: str = strawberry.field(description="The brand's slug.")
    coins: Long
    idempotency_key: str


@strawberry.type
class SettleBrandRevenuePayload:
    revenue: Long | None = strawberry.field(description="The revenue left afterwards.")
    budget: Long | None = strawberry.field(description="The budget afterwards.")
    user_errors: list[UserError]


@strawberry.type
class BrandQuery:
    @strawberry.field(description="Brands that sponsor gifts. Public; a brand partner's token "
                                  "lists its own brand only, so that it may ask for the "
                                  "fields only partners see.")
    async def brands(self, info: Info) -> list[Brand]:
        from sqlalchemy import select

        context = ctx(info)
        principal = context.principal()
        query = select(models.Brand).order_by(models.Brand.slug)
        if principal is not None and principal.has(Role.BRAND) and not context.is_admin():
            query = query.where(models.Brand.slug == principal.brand)
        async with context.runtime.reads() as session:
            rows = (await session.scalars(query)).all()
        return [Brand.of(row) for row in rows]

    @strawberry.field(description="Admin: installed plugins, their hooks, gifts and health "
                                  "over every server process.")
    async def plugins(self, info: Info) -> list[PluginInfo]:
        context = ctx(info)
        context.require(Role.ADMIN)
        async with context.runtime.reads() as session:
            fleet = await plugin_health.fleet(session)
        return [PluginInfo.of(r, fleet.get(r.name))
                for r in context.runtime.plugins.records.values()]

    @strawberry.field(description="A brand's campaign report: sends, coins and subsidy spent, "
                                  "by creator and by day. A brand partner sees only its own "
                                  "brand (the argument may be omitted); admins name one.")
    async def campaign_report(self, info: Info, brand: str | None = None) -> CampaignReport:
        context = ctx(info)
        principal = context.require(Role.BRAND)
        slug = brand or principal.brand
        if slug is None:
            raise ClientError('Name the brand: campaignReport(brand: "slug").',
                              "BAD_USER_INPUT")
        _may_see_brand(context, slug)
        try:
            async with context.runtime.reads() as session:
                report = await brands.campaign_report(session, slug)
        except DomainError as error:
            raise ClientError(error.message, "NOT_FOUND") from None
        return CampaignReport(brand=Brand.of(report.brand), budget_left=report.budget_left,
                              total=CampaignLine.of(report.total),
                              by_creator=[CampaignLine.of(line) for line in report.by_creator],
                              by_day=[CampaignLine.of(line) for line in report.by_day])


    @strawberry.field(description="A brand's sends, oldest first, to reconcile against "
                                  "gift_sent: page with after (the endCursor), or ask for a "
                                  "window of days (UTC, to exclusive). A brand partner sees "
                                  "its own brand only (the argument may be omitted); admins "
                                  "name one. The same as CSV: /brands/<slug>/sends.csv"
                                  "?from=&to=.")
    async def campaign_sends(
            self, info: Info, brand: str | None = None, first: int | None = None,
            after: str | None = None,
            from_: Annotated[date | None, strawberry.argument(name="from")] = None,
            to: date | None = None) -> relay.Connection[CampaignSend]:
        context = ctx(info)
        principal = context.require(Role.BRAND)
        slug = brand or principal.brand
        if slug is None:
            raise ClientError('Name the brand: campaignSends(brand: "slug").',
                              "BAD_USER_INPUT")
        _may_see_brand(context, slug)
        limit = page_size(first)
        try:
            async with context.runtime.reads() as session:
                rows = await brands.campaign_sends(
                    session, slug, limit=limit + 1, after_id=cursor_id(after),
                    since=_midnight(from_), until=_midnight(to))
        except DomainError as error:
            raise ClientError(error.message, "NOT_FOUND") from None
        return connection(rows, limit, lambda row: CampaignSend(**{
            name: getattr(row, name) for name in brands.CampaignSend.CSV_COLUMNS}),
            key=lambda row: row.receipt_id)


def _midnight(day: date | None) -> datetime | None:
    return None if day is None else datetime.combine(day, datetime.min.time(), tzinfo=UTC)


@strawberry.type
class BrandMutation:
    @strawberry.mutation(description="Admin: add coins to a brand's sponsorship budget, from "
                                     "which its gifts' subsidies are drawn.")
    async def fund_brand_budget(self, info: Info, input: FundBrandBudgetInput
                                ) -> FundBrandBudgetPayload:
        context = ctx(info)
        context.require(Role.ADMIN)
        try:
            budget = await brands.fund_budget(context.runtime.sessions,
                                              admin_id=await context.user_id(),
                                              slug=input.brand, coins=input.coins,
                                              idempotency_key=input.idempotency_key)
        except DomainError as error:
            return FundBrandBudgetPayload(budget=None, user_errors=[UserError.of(error)])
        return FundBrandBudgetPayload(budget=budget, user_errors=[])

    @strawberry.mutation(description="Admin: settle coins of a brand's revenue by netting them "
                                     "against its sponsorship budget, in one ledger "
                                     "transaction.")
    async def settle_brand_revenue(self, info: Info, input: SettleBrandRevenueInput
                                   ) -> SettleBrandRevenuePayload:
        context = ctx(info)
        context.require(Role.ADMIN)
        try:
            revenue, budget = await brands.settle_revenue(
                context.runtime.sessions, admin_id=await context.user_id(), slug=input.brand,
                coins=input.coins, idempotency_key=input.idempotency_key)
        except DomainError as error:
            return SettleBrandRevenuePayload(revenue=None, budget=None,
                                             user_errors=[UserError.of(error)])
        return SettleBrandRevenuePayload(revenue=revenue, budget=budget, user_errors=[])
