"""GraphQL for webhooks: subscribing an endpoint to events, its deliveries, enabling it
again, sending a delivery again. Creators, brand partners and admins only, each to what
their role may see (see :mod:`app.services.webhooks`)."""

from __future__ import annotations

import json
from datetime import datetime
from enum import Enum

import strawberry
from strawberry import relay
from strawberry.types import Info

from app import models
from app.auth import Role
from app.errors import DomainError, ErrorCode
from app.graphql.common import UserError, connection, cursor_id, decode_id, page_size
from app.graphql.context import ClientError
from app.graphql.types import ctx
from app.services import webhooks
from app.services.webhooks import Owner
from app.settings import Environment


@strawberry.enum(description="Whether a webhook subscription is being delivered to.")
class WebhookStatus(Enum):
    ACTIVE = "active"
    DISABLED = "disabled"


@strawberry.type(description="One event sent (or to send) to a webhook subscription.")
class WebhookDelivery:
    id: strawberry.ID = strawberry.field(description=(
        "The message id, sent as the Livegifts-Message-Id header: the same on every retry, "
        "so the receiver can drop a repeat."))
    event_type: str
    stream: str = strawberry.field(description="session:<id> or brand:<slug>.")
    sequence: int = strawberry.field(description="The event's number in its stream.")
    status: str = strawberry.field(description="pending or delivered.")
    attempts: int
    last_status: int | None = strawberry.field(description="The last response's HTTP status.")
    last_response: str | None = strawberry.field(description="Its first 500 characters.")
    last_error: str | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, row: models.WebhookDelivery) -> WebhookDelivery:
        return cls(id=strawberry.ID(str(row.id)), event_type=row.type, stream=row.stream,
                   sequence=row.seq, status=row.status, attempts=row.attempts,
                   last_status=row.last_status, last_response=row.last_response,
                   last_error=row.last_error, last_attempt_at=row.last_attempt_at,
                   delivered_at=row.delivered_at, created_at=row.created_at)


@strawberry.type(description="An endpoint receiving events, signed, in order, at least once.")
class WebhookSubscription:
    id: relay.GlobalID
    url: str
    event_types: list[str]
    status: WebhookStatus
    disabled_reason: str | None
    failures_in_a_row: int
    next_attempt_at: datetime
    created_at: datetime
    row_id: strawberry.Private[int]

    @classmethod
    def of(cls, row: models.WebhookSubscription) -> WebhookSubscription:
        assert row.id is not None
        return cls(id=relay.GlobalID("WebhookSubscription", str(row.id)), url=row.url,
                   event_types=json.loads(row.event_types), status=WebhookStatus(row.status),
                   disabled_reason=row.disabled_reason, failures_in_a_row=row.failures_in_a_row,
                   next_attempt_at=row.next_attempt_at, created_at=row.created_at,
                   row_id=row.id)

    @strawberry.field(description="Its deliveries, newest first: status, attempts and the "
                                  "last response of each.")
    async def deliveries(self, info: Info, first: int | None = None, after: str | None = None
                         ) -> relay.Connection[WebhookDelivery]:
        limit, before = page_size(first), cursor_id(after)
        async with ctx(info).runtime.reads() as session:
            rows = await webhooks.deliveries_of(session, await _owner(info), self.row_id,
                                                limit=limit + 1, before_id=before)
        return connection(rows, limit, WebhookDelivery.of, lambda row: row.id)


async def _owner(info: Info) -> Owner:
    """Whose subscriptions the caller makes and sees, by the token's role."""
    context = ctx(info)
    principal = context.require()
    if principal.has(Role.ADMIN):
        return Owner("admin")
    if principal.has(Role.BRAND):
        return Owner("brand", brand=principal.brand)
    if principal.has(Role.CREATOR):
        return Owner("creator", user_id=await context.user_id())
    raise ClientError("Forbidden: webhooks need the creator, brand or admin role.", "FORBIDDEN")


@strawberry.input(description="An endpoint and the event types to send it.")
class CreateWebhookSubscriptionInput:
    url: str = strawberry.field(description=(
        "https:// (http:// too in development). It must answer a challenge request: see the "
        "API guide's webhooks section."))
    event_types: list[str] = strawberry.field(description=(
        "Creators: SessionStarted, GiftSent, ComboEnded, ViewerCountChanged, "
        "TopGiftersChanged, GoalProgress, GoalReached, MatchInvited, MatchDeclined, "
        "MatchStarted, MatchScore, MatchEnded, SessionEnded of their sessions, "
        "and PayoutSettled of their "
        "payouts. Brand partners: BrandGiftSent, BrandBudgetLow and PayoutSettled of their "
        "brand. Admins: "
        "all of them, everywhere."))


@strawberry.type
class CreateWebhookSubscriptionPayload:
    webhook_subscription: WebhookSubscription | None
    secret: str | None = strawberry.field(description=(
        "Signs every request (Livegifts-Signature). Shown this once: keep it."))
    user_errors: list[UserError]


@strawberry.input
class WebhookSubscriptionInput:
    id: strawberry.ID


@strawberry.type
class WebhookSubscriptionPayload:
    webhook_subscription: WebhookSubscription | None
    user_errors: list[UserError]


@strawberry.type
class DeleteWebhookSubscriptionPayload:
    deleted_id: strawberry.ID | None
    user_errors: list[UserError]


@strawberry.input
class RedeliverWebhookInput:
    delivery_id: strawberry.ID


@strawberry.type
class RedeliverWebhookPayload:
    delivery: WebhookDelivery | None
    user_errors: list[UserError]


def _delivery_id(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 2**63:
        raise DomainError(ErrorCode.INVALID_ID, "deliveryId is not a webhook "
                          "delivery ID.", "deliveryId")
    return int(value)


@strawberry.type
class WebhookQuery:
    @strawberry.field(description="Creators, brand partners, admins: your webhook "
                                  "subscriptions (an admin's: everyone's).")
    async def webhook_subscriptions(self, info: Info) -> list[WebhookSubscription]:
        owner = await _owner(info)
        async with ctx(info).runtime.reads() as session:
            rows = await webhooks.subscriptions_of(session, owner)
        return [WebhookSubscription.of(row) for row in rows]


@strawberry.type
class WebhookMutation:
    @strawberry.mutation(description=(
        "Subscribe an endpoint to event types. The endpoint is sent a challenge first and "
        "must echo it; the answer carries the signing secret, shown once."))
    async def create_webhook_subscription(self, info: Info,
                                          input: CreateWebhookSubscriptionInput
                                          ) -> CreateWebhookSubscriptionPayload:
        owner, runtime = await _owner(info), ctx(info).runtime
        try:
            row, secret = await webhooks.subscribe(
                runtime.sessions, runtime.http, owner, url=input.url,
                event_types=input.event_types,
                development=runtime.settings.environment is Environment.DEVELOPMENT)
        except DomainError as error:
            return CreateWebhookSubscriptionPayload(webhook_subscription=None, secret=None,
                                                    user_errors=[UserError.of(error)])
        return CreateWebhookSubscriptionPayload(
            webhook_subscription=WebhookSubscription.of(row), secret=secret, user_errors=[])

    @strawberry.mutation(description="Delete a webhook subscription and its delivery log.")
    async def delete_webhook_subscription(self, info: Info, input: WebhookSubscriptionInput
                                          ) -> DeleteWebhookSubscriptionPayload:
        owner = await _owner(info)
        try:
            number = decode_id(input.id, "WebhookSubscription", "id")
            async with ctx(info).runtime.sessions() as session, session.begin():
                await webhooks.unsubscribe(session, owner, number)
        except DomainError as error:
            return DeleteWebhookSubscriptionPayload(deleted_id=None,
                                                    user_errors=[UserError.of(error)])
        return DeleteWebhookSubscriptionPayload(deleted_id=input.id, user_errors=[])

    @strawberry.mutation(description="Deliver again to a disabled subscription, from its "
                                     "oldest undelivered event.")
    async def enable_webhook_subscription(self, info: Info, input: WebhookSubscriptionInput
                                          ) -> WebhookSubscriptionPayload:
        owner = await _owner(info)
        try:
            number = decode_id(input.id, "WebhookSubscription", "id")
            async with ctx(info).runtime.sessions() as session, session.begin():
                row = await webhooks.enable(session, owner, number)
        except DomainError as error:
            return WebhookSubscriptionPayload(webhook_subscription=None,
                                              user_errors=[UserError.of(error)])
        return WebhookSubscriptionPayload(webhook_subscription=WebhookSubscription.of(row),
                                          user_errors=[])

    @strawberry.mutation(description="Send a delivery again, with the same message id, in "
                                     "its place in the subscription's order.")
    async def redeliver_webhook(self, info: Info, input: RedeliverWebhookInput
                                ) -> RedeliverWebhookPayload:
        owner = await _owner(info)
        try:
            number = _delivery_id(str(input.delivery_id))
            async with ctx(info).runtime.sessions() as session, session.begin():
                row = await webhooks.redeliver(session, owner, number)
        except DomainError as error:
            return RedeliverWebhookPayload(delivery=None, user_errors=[UserError.of(error)])
        return RedeliverWebhookPayload(delivery=WebhookDelivery.of(row), user_errors=[])
