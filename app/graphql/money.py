"""GraphQL for money leaving and protecting viewers: payouts, clawbacks, statements, limits."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from enum import Enum
from typing import Annotated

import strawberry
from strawberry import relay
from strawberry.types import Info

from app import models
from app.auth import Role
from app.errors import DomainError
from app.graphql.common import Long, UserError, connection, cursor_id, decode_id, page_size
from app.graphql.context import ClientError
from app.graphql.gifting import GiftReceipt
from app.graphql.types import Money, _rows_by_id, ctx
from app.services import payouts, safeguards, statements


@strawberry.enum(description="Where a payout stands.")
class PayoutStatus(Enum):
    PENDING = "pending"
    PAID = "paid"
    FAILED = "failed"


@strawberry.type(description="A cash-out: a creator's diamonds, or a brand's revenue coins. "
                              "Pending payouts hold them.")
class Payout(relay.Node):
    id: relay.NodeID[int]
    diamonds: Long = strawberry.field(description="Diamonds cashed out (a creator's payout; "
                                                  "0 for a brand's).")
    coins: Long = strawberry.field(description="Revenue coins cashed out (a brand's payout; "
                                               "0 for a creator's).")
    brand_slug: str | None = strawberry.field(description="The brand paid (a brand's "
                                                          "payout), else null.")
    cash: Money = strawberry.field(description="A creator's at the rate card's value, a "
                                               "brand's at the brand payout rate, rounded "
                                               "down to the cent.")
    rate_card_version: int
    status: PayoutStatus
    provider: str
    provider_payout_id: str | None
    failure_reason: str | None
    created_at: datetime
    settled_at: datetime | None
    creator_id: strawberry.Private[int | None] = None

    @classmethod
    def of(cls, row: models.Payout, brand_slug: str | None = None) -> Payout:
        return cls(id=row.id, diamonds=row.diamonds, coins=row.coins, brand_slug=brand_slug,
                   creator_id=row.creator_id,
                   cash=Money(amount=row.cash_minor, currency=row.currency),
                   rate_card_version=row.rate_card_version, status=PayoutStatus(row.status),
                   provider=row.provider, provider_payout_id=row.provider_payout_id,
                   failure_reason=row.failure_reason, created_at=row.created_at,
                   settled_at=row.settled_at)

    @classmethod
    async def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str],
                            required: bool = False) -> list[Payout | None]:
        context = ctx(info)
        rows = await _rows_by_id(info, models.Payout, node_ids)
        async with context.runtime.reads() as session:
            slugs = await payouts.brand_slugs(session, [r for r in rows if r])
        user_id, brand = await context.user_id(), context.require().brand
        return [cls.of(r, slugs.get(r.id)) if r and (
            context.is_admin() or r.creator_id is not None and r.creator_id == user_id
            or slugs.get(r.id) is not None and slugs.get(r.id) == brand) else None
            for r in rows]


@strawberry.type(description="Diamonds taken back from you, and why.")
class Clawback:
    diamonds: Long
    reason: str
    created_at: datetime
    gift_send_id: strawberry.Private[int]

    @strawberry.field(description="The gift whose earnings were taken back.")
    async def receipt(self, info: Info) -> GiftReceipt:
        [row] = await _rows_by_id(info, models.GiftSend, [str(self.gift_send_id)])
        return GiftReceipt.of(row)


@strawberry.type(description="One line of a statement.")
class StatementLine:
    section: str = strawberry.field(description="e.g. purchase, gifts to creator, refund, "
                                                "chargeback, by session, by gift, by brand, "
                                                "by day, clawback.")
    label: str
    count: Long = strawberry.field(description="How many records the line sums: purchases, "
                                               "sends (a send of 5 roses counts once), "
                                               "refunds... For the number of gifts "
                                               "(quantity), see a leaderboard's gifts.")
    coins: Long
    diamonds: Long
    money: Money | None
    at: datetime | None


@strawberry.type
class Statement:
    title: str
    from_: date = strawberry.field(name="from")
    to: date = strawberry.field(description="Exclusive.")
    lines: list[StatementLine]
    csv_url: str = strawberry.field(description="The same statement as CSV (send the same "
                                                "bearer token).")

    @classmethod
    def of(cls, statement: statements.Statement, csv_url: str) -> Statement:
        return cls(title=statement.title, from_=statement.start, to=statement.end,
                   csv_url=csv_url, lines=[StatementLine(
                       section=line.section, label=line.label, count=line.count,
                       coins=line.coins, diamonds=line.diamonds,
                       money=Money(amount=line.money_minor, currency=line.currency)
                       if line.currency else None, at=line.at) for line in statement.lines])


@strawberry.type(description="A limit change that is not in force yet (loosening waits 24 h).")
class PendingLimit:
    kind: str
    coins: Long | None
    until: datetime | None
    effective_at: datetime


@strawberry.type(description="Your spending protections. Caps count coins spent on gifts "
                             "per UTC day and month.")
class SpendingLimits:
    daily_cap_coins: Long | None = strawberry.field(description="Yours, if set.")
    monthly_cap_coins: Long | None
    cool_off_until: datetime | None
    platform_daily_cap_coins: Long = strawberry.field(description="No one may exceed it.")
    platform_monthly_cap_coins: Long
    pending: list[PendingLimit]


async def limits_of(info: Info, user_id: int) -> SpendingLimits:
    context = ctx(info)
    now = datetime.now(UTC)
    settings = context.runtime.settings
    async with context.runtime.reads() as session:
        own = await safeguards.own_limits(session, user_id, now)
        pending = await safeguards.pending_changes(session, user_id, now)
    return SpendingLimits(
        daily_cap_coins=own.daily_cap, monthly_cap_coins=own.monthly_cap,
        cool_off_until=own.cooloff_until if own.cooloff_until and own.cooloff_until > now
        else None,
        platform_daily_cap_coins=settings.default_daily_cap_coins,
        platform_monthly_cap_coins=settings.default_monthly_cap_coins,
        pending=[PendingLimit(kind=p.kind, coins=p.amount, until=p.until,
                              effective_at=p.effective_at) for p in pending])


@strawberry.type
class ViewerMoneyFields:
    """Fields of ``Viewer`` about payouts, statements and limits (inherited by it)."""

    user_id: strawberry.Private[int]

    @strawberry.field(description="Your payouts, newest first (creators).")
    async def payouts(self, info: Info, first: int | None = None, after: str | None = None
                      ) -> relay.Connection[Payout]:
        limit = page_size(first)
        async with ctx(info).runtime.reads() as session:
            rows = await payouts.payouts_of(session, self.user_id, limit=limit + 1,
                                            before_id=cursor_id(after))
        return connection(rows, limit, Payout.of, key=lambda row: row.id)

    @strawberry.field(description="Earnings taken back from you because the coins behind "
                                  "them were charged back, newest first.")
    async def clawbacks(self, info: Info, first: int | None = None, after: str | None = None
                        ) -> relay.Connection[Clawback]:
        limit = page_size(first)
        async with ctx(info).runtime.reads() as session:
            rows = await statements.clawbacks_of(session, self.user_id, limit=limit + 1,
                                                 before_id=cursor_id(after))
        return connection(rows, limit, lambda r: Clawback(
            diamonds=r.diamonds, reason=r.reason, created_at=r.created_at,
            gift_send_id=r.gift_send_id), key=lambda row: row.id)

    @strawberry.field(description="Your statement for a month (e.g. \"2026-11\"): purchases, "
                                  "gifts by creator, refunds and chargebacks.")
    async def statement(self, info: Info, month: str) -> Statement:
        try:
            async with ctx(info).runtime.reads() as session:
                result = await statements.viewer_statement(session, self.user_id, month)
        except DomainError as error:
            raise ClientError(error.message, "BAD_USER_INPUT") from None
        return Statement.of(result, f"/statements/{month}.csv")

    @strawberry.field(description="What you earned between two days (to exclusive), by "
                                  "session, gift, brand and day, with clawbacks (creators).")
    async def earnings(self, info: Info,
                       from_: Annotated[date, strawberry.argument(name="from")],
                       to: date | None = None) -> Statement:
        try:
            async with ctx(info).runtime.reads() as session:
                result = await statements.creator_earnings(session, self.user_id, from_, to)
        except DomainError as error:
            raise ClientError(error.message, "BAD_USER_INPUT") from None
        return Statement.of(result, f"/earnings.csv?from={result.start}&to={result.end}")

    @strawberry.field(description="Your spending caps and cool-off.")
    async def spending_limits(self, info: Info) -> SpendingLimits:
        return await limits_of(info, self.user_id)

    @strawberry.field(description="Your birthdate, if on file.")
    async def birthdate(self, info: Info) -> date | None:
        async with ctx(info).runtime.reads() as session:
            profile = await session.get(models.Profile, self.user_id)
        return profile.birthdate if profile else None


@strawberry.input
class RequestPayoutInput:
    diamonds: Long
    idempotency_key: str


@strawberry.type
class PayoutPayload:
    payout: Payout | None
    replayed: bool = False
    user_errors: list[UserError]


@strawberry.input(description="Pay coins of a brand's revenue out to its partner as cash.")
class PayBrandRevenueInput:
    brand: str = strawberry.field(description="The brand's slug.")
    coins: Long
    idempotency_key: str


@strawberry.input
class CancelPayoutInput:
    payout_id: strawberry.ID


@strawberry.input
class UpdateProfileInput:
    birthdate: date


@strawberry.type
class ProfilePayload:
    birthdate: date | None
    user_errors: list[UserError]


@strawberry.input(description="Omit a field to leave it; null removes a cap or ends a "
                              "cool-off. Tightening applies at once, loosening after 24 hours.")
class SetSpendingLimitsInput:
    daily_cap_coins: Long | None = strawberry.UNSET
    monthly_cap_coins: Long | None = strawberry.UNSET
    cool_off_days: int | None = strawberry.UNSET


@strawberry.type
class SpendingLimitsPayload:
    spending_limits: SpendingLimits | None
    user_errors: list[UserError]


@strawberry.type
class MoneyMutation:
    @strawberry.mutation(description="Creator: cash out diamonds. Places a hold at once; the "
                                     "payout provider settles it later.")
    async def request_payout(self, info: Info, input: RequestPayoutInput) -> PayoutPayload:
        context = ctx(info)
        context.require(Role.CREATOR)
        runtime = context.runtime
        try:
            result = await payouts.request_payout(
                runtime.sessions, runtime.payout_providers, runtime.settings,
                creator_id=await context.user_id(), diamonds=input.diamonds,
                idempotency_key=input.idempotency_key)
        except DomainError as error:
            return PayoutPayload(payout=None, user_errors=[UserError.of(error)])
        return PayoutPayload(payout=Payout.of(result.payout), replayed=result.replayed,
                             user_errors=[])

    @strawberry.mutation(description="Admin: pay coins of a brand's revenue out to its "
                                     "partner through the payout provider. Holds the coins "
                                     "at once; the provider settles it later (paid: the "
                                     "coins are retired; failed: they return to the "
                                     "revenue).")
    async def pay_brand_revenue(self, info: Info, input: PayBrandRevenueInput
                                ) -> PayoutPayload:
        context = ctx(info)
        context.require(Role.ADMIN)
        runtime = context.runtime
        try:
            result = await payouts.request_brand_payout(
                runtime.sessions, runtime.payout_providers, runtime.settings,
                admin_id=await context.user_id(), slug=input.brand, coins=input.coins,
                idempotency_key=input.idempotency_key)
        except DomainError as error:
            return PayoutPayload(payout=None, user_errors=[UserError.of(error)])
        return PayoutPayload(payout=Payout.of(result.payout, input.brand),
                             replayed=result.replayed, user_errors=[])

    @strawberry.mutation(description="Creator: cancel a pending payout; its diamonds return.")
    async def cancel_payout(self, info: Info, input: CancelPayoutInput) -> PayoutPayload:
        context = ctx(info)
        context.require(Role.CREATOR)
        try:
            row = await payouts.cancel_payout(
                context.runtime.sessions, creator_id=await context.user_id(),
                payout_id=decode_id(input.payout_id, "Payout", "payoutId"))
        except DomainError as error:
            return PayoutPayload(payout=None, user_errors=[UserError.of(error)])
        return PayoutPayload(payout=Payout.of(row), user_errors=[])

    @strawberry.mutation(description="Put your birthdate on file (once).")
    async def update_profile(self, info: Info, input: UpdateProfileInput) -> ProfilePayload:
        context = ctx(info)
        user_id = await context.user_id()
        try:
            async with context.runtime.sessions() as session, session.begin():
                await safeguards.set_birthdate(session, user_id, input.birthdate)
        except DomainError as error:
            return ProfilePayload(birthdate=None, user_errors=[UserError.of(error)])
        return ProfilePayload(birthdate=input.birthdate, user_errors=[])

    @strawberry.mutation(description="Set your daily and monthly caps and a cool-off.")
    async def set_spending_limits(self, info: Info, input: SetSpendingLimitsInput
                                  ) -> SpendingLimitsPayload:
        context = ctx(info)
        user_id = await context.user_id()
        changes = [(kind, value) for kind, value in [
            (safeguards.DAILY, input.daily_cap_coins),
            (safeguards.MONTHLY, input.monthly_cap_coins),
            (safeguards.COOLOFF, input.cool_off_days)] if value is not strawberry.UNSET]
        try:
            async with context.runtime.sessions() as session, session.begin():
                for kind, value in changes:
                    if kind == safeguards.COOLOFF:
                        await safeguards.change_limit(session, user_id, kind, cooloff_days=value)
                    else:
                        await safeguards.change_limit(session, user_id, kind, amount=value)
        except DomainError as error:
            return SpendingLimitsPayload(spending_limits=None, user_errors=[UserError.of(error)])
        return SpendingLimitsPayload(spending_limits=await limits_of(info, user_id),
                                     user_errors=[])
