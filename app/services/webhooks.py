"""Webhooks: creators, brand partners and admins receive the events they may see at an
HTTPS endpoint, signed, at least once and in order.

A subscription is verified when it is made: the endpoint must echo a challenge. Each event
relayed (:mod:`app.relay`) becomes one delivery per matching subscription, in the same
transaction that moves its stream's relay position over it, so every event is queued
exactly once whichever process relays it, and a stream's events are queued in order.
Every server process delivers: it claims one due subscription at a time (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, and a lease), sends its pending deliveries in event order and stops
at the first failure, which waits (exponential backoff) before the subscription is tried
again; a subscription failing for ``webhook_give_up_hours`` is disabled with the reason.

A brand's plugin that implements ``gift_sent`` is delivered to the same way: a subscription
of scope ``plugin`` to its brand's ``BrandGiftSent`` events, its "URL" ``plugin:<name>``,
delivered by calling the hook behind the plugin's bulkhead in the processes that load it.

Each request is signed as Stripe's are: ``Livegifts-Signature: t=<unix time>,v1=<hex
HMAC-SHA256 of "<t>.<body>" with the subscription's secret>``; ``Livegifts-Message-Id`` is
the delivery's id, the same on every retry, for the receiver to drop repeats.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import SessionFactory, insert_rows
from app.errors import DomainError, ErrorCode
from app.models import LiveSession, WebhookDelivery, WebhookSubscription
from app.models.base import utcnow
from app.observability import REQUEST_ID
from app.plugins import PluginCallFailed, PluginHost
from app.services import event_log
from app.sponsorship import SentGift

SESSION_EVENTS = ("SessionStarted", "GiftSent", "ComboEnded", "ViewerCountChanged",
                  "TopGiftersChanged", "GoalProgress", "GoalReached", "MatchInvited",
                  "MatchDeclined", "MatchStarted", "MatchScore", "MatchEnded", "SessionEnded")
CREATOR_EVENTS = ("PayoutSettled",)
BRAND_EVENTS = ("BrandGiftSent", "BrandBudgetLow", "PayoutSettled")
EVENTS_OF_SCOPE = {"creator": SESSION_EVENTS + CREATOR_EVENTS, "brand": BRAND_EVENTS,
                   "admin": tuple(dict.fromkeys(SESSION_EVENTS + CREATOR_EVENTS
                                                + BRAND_EVENTS))}
PLUGIN = "plugin:"  # the URL of a subscription delivered to a plugin's gift_sent
ACTIVE, DISABLED = "active", "disabled"
PENDING, DELIVERED = "pending", "delivered"
MAX_SUBSCRIPTIONS = 20  # per owner
MAX_URL = 2000
SENT_PER_CLAIM = 20  # deliveries one claim may send before others get their turn
REQUEST_TIMEOUT = 10.0
# A claim lasts this long, renewed after every request (which takes at most REQUEST_TIMEOUT):
# a process killed while delivering holds its subscription no longer than this.
LEASE = timedelta(seconds=3 * REQUEST_TIMEOUT)
MAX_BACKOFF = timedelta(hours=1)
KEPT_RESPONSE = 500  # characters of a response body kept in the delivery log
RECORDED = ("status", "attempts", "last_status", "last_response", "last_error",
            "last_attempt_at", "delivered_at")  # what an attempt changes on a delivery


@dataclass(frozen=True, slots=True)
class Owner:
    """Who makes and reads subscriptions: a creator (their sessions' events), a brand
    partner (their brand's) or an admin (every event)."""

    scope: str
    user_id: int | None = None
    brand: str | None = None

    def owns(self, subscription: WebhookSubscription) -> bool:
        if self.scope == "admin":
            return True
        return (subscription.scope, subscription.owner_user_id, subscription.owner_brand) == \
            (self.scope, self.user_id, self.brand)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Livegifts-Signature`` header of a request body sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def _headers(secret: str, message_id: str, body: bytes, now: datetime) -> dict[str, str]:
    return {"content-type": "application/json", "user-agent": "livegifts-webhooks",
            "livegifts-message-id": message_id,
            "livegifts-signature": sign(secret, int(now.timestamp()), body)}


def _not_found() -> DomainError:
    return DomainError(ErrorCode.NOT_FOUND, "No webhook subscription of yours has this ID.",
                       "id")


def check_url(url: str, development: bool) -> None:
    """An https URL (http too in development); outside development, not one naming this
    machine or a private network by address, which the server could reach for a caller."""
    parts = urlsplit(url)
    schemes = ("https", "http") if development else ("https",)
    if len(url) > MAX_URL or parts.scheme not in schemes or not parts.hostname:
        raise DomainError(ErrorCode.INVALID_INPUT, (
            "url must be an https:// URL" + (" (or http:// in development)" if development
                                              else "") + f" of at most {MAX_URL} characters."),
            "url")
    if not development and _internal(parts.hostname):
        raise DomainError(ErrorCode.INVALID_INPUT, "url must not name this machine or a "
                          "private network.", "url")


def _internal(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address.is_global


def check_event_types(scope: str, event_types: list[str]) -> list[str]:
    allowed = EVENTS_OF_SCOPE[scope]
    unknown = sorted(set(event_types) - set(allowed))
    if not event_types or unknown:
        raise DomainError(ErrorCode.INVALID_INPUT, (
            f"eventTypes must name one or more of {', '.join(allowed)}"
            + (f"; not {', '.join(unknown)}." if unknown else ".")), "eventTypes")
    return sorted(set(event_types))


async def subscribe(sessions: SessionFactory, client: httpx.AsyncClient, owner: Owner, *,
                    url: str, event_types: list[str], development: bool
                    ) -> tuple[WebhookSubscription, str]:
    """Verify the endpoint with a challenge, then save the subscription; it and its
    secret (shown to the owner this once)."""
    check_url(url, development)
    types = check_event_types(owner.scope, event_types)
    async with sessions() as session:
        count = await session.scalar(select(func.count()).select_from(WebhookSubscription)
                                     .where(*_owned_by(owner)))
    if count >= MAX_SUBSCRIPTIONS:
        raise DomainError(ErrorCode.INVALID_INPUT, f"You have {MAX_SUBSCRIPTIONS} webhook "
                          "subscriptions, the most allowed; delete one first.", None)
    secret = "whsec_" + secrets.token_urlsafe(32)
    await _verify(client, url, secret)
    now = utcnow()
    subscription = WebhookSubscription(
        scope=owner.scope, owner_user_id=owner.user_id, owner_brand=owner.brand, url=url,
        secret=secret, event_types=json.dumps(types), status=ACTIVE, next_attempt_at=now)
    async with sessions() as session, session.begin():
        session.add(subscription)
    return subscription, secret


async def _verify(client: httpx.AsyncClient, url: str, secret: str) -> None:
    """The endpoint must answer 2xx echoing the challenge (as the body, or as the
    ``challenge`` of a JSON body), as Twitch EventSub asks."""
    challenge = secrets.token_urlsafe(24)
    body = json.dumps({"type": "webhook.challenge", "challenge": challenge}).encode()
    why = None
    try:
        response = await client.post(url, content=body, timeout=REQUEST_TIMEOUT,
                                     headers=_headers(secret, "challenge", body, utcnow()))
    except httpx.HTTPError as error:
        why = f"it could not be reached ({type(error).__name__})"
    else:
        echoed = response.text.strip()
        try:
            echoed = str(json.loads(echoed).get("challenge", ""))
        except (ValueError, AttributeError):
            pass
        if not response.is_success:
            why = f"it answered HTTP {response.status_code}"
        elif echoed != challenge:
            why = "its answer did not echo the challenge"
    if why:
        raise DomainError(ErrorCode.WEBHOOK_NOT_VERIFIED, f"The URL was not subscribed: {why}. "
                          "It must answer the challenge request with 2xx and the challenge "
                          "(see the webhooks section of the API guide).", "url")


def _owned_by(owner: Owner) -> list[Any]:
    if owner.scope == "admin":
        return []
    return [WebhookSubscription.scope == owner.scope,
            WebhookSubscription.owner_user_id.is_(None) if owner.user_id is None
            else WebhookSubscription.owner_user_id == owner.user_id,
            WebhookSubscription.owner_brand.is_(None) if owner.brand is None
            else WebhookSubscription.owner_brand == owner.brand]


async def subscriptions_of(session: AsyncSession, owner: Owner) -> list[WebhookSubscription]:
    return list((await session.scalars(select(WebhookSubscription).where(*_owned_by(owner))
                                       .order_by(WebhookSubscription.id))).all())


async def _owned(session: AsyncSession, owner: Owner, subscription_id: int
                 ) -> WebhookSubscription:
    found = await session.get(WebhookSubscription, subscription_id, with_for_update=True)
    if found is None or not owner.owns(found):
        raise _not_found()
    return found


async def unsubscribe(session: AsyncSession, owner: Owner, subscription_id: int) -> None:
    """Delete a subscription and its delivery log."""
    subscription = await _owned(session, owner, subscription_id)
    await session.execute(WebhookDelivery.__table__.delete().where(
        WebhookDelivery.subscription_id == subscription.id))
    await session.delete(subscription)


async def enable(session: AsyncSession, owner: Owner, subscription_id: int
                 ) -> WebhookSubscription:
    """Deliver again to a disabled subscription, from its oldest pending delivery."""
    subscription = await _owned(session, owner, subscription_id)
    subscription.status, subscription.disabled_reason = ACTIVE, None
    subscription.failures_in_a_row, subscription.failing_since = 0, None
    subscription.next_attempt_at = utcnow()
    return subscription


async def deliveries_of(session: AsyncSession, owner: Owner, subscription_id: int, *,
                        limit: int, before_id: int | None) -> list[WebhookDelivery]:
    """The subscription's deliveries, newest first."""
    await _owned(session, owner, subscription_id)
    query = select(WebhookDelivery).where(WebhookDelivery.subscription_id == subscription_id)
    if before_id is not None:
        query = query.where(WebhookDelivery.id < before_id)
    return list((await session.scalars(query.order_by(WebhookDelivery.id.desc())
                                       .limit(limit))).all())


async def redeliver(session: AsyncSession, owner: Owner, delivery_id: int) -> WebhookDelivery:
    """Send a delivery again (same message id), in its place in the subscription's order."""
    delivery = await session.get(WebhookDelivery, delivery_id)
    subscription = None if delivery is None else \
        await session.get(WebhookSubscription, delivery.subscription_id)
    if delivery is None or subscription is None or not owner.owns(subscription):
        raise DomainError(ErrorCode.NOT_FOUND, "No webhook delivery of yours has this ID.",
                          "deliveryId")
    delivery.status = PENDING
    subscription.next_attempt_at = min(subscription.next_attempt_at, utcnow())
    return delivery


# Queueing: one delivery per event and matching subscription -------------------------------


async def enqueue(session: AsyncSession, spans: list[event_log.Span]) -> int:
    """Queue the events of the spans just relayed for the active subscriptions that match
    them; how many deliveries. (The events are read only when a subscription matches.)"""
    if not spans:
        return 0
    keys = [span.stream.split(":", 1) for span in spans]
    sessions_ = {int(key) for kind, key in keys if kind == "session"}
    brands = {key for kind, key in keys if kind == "brand"}
    payees = {int(key) for kind, key in keys if kind == "creator"}
    matching = [WebhookSubscription.scope == "admin"]
    if payees:
        matching.append((WebhookSubscription.scope == "creator")
                        & WebhookSubscription.owner_user_id.in_(payees))
    if sessions_:
        matching.append((WebhookSubscription.scope == "creator")
                        & WebhookSubscription.owner_user_id.in_(
                            select(LiveSession.creator_id)
                            .where(LiveSession.id.in_(sessions_)).scalar_subquery()))
    if brands:
        matching.append(WebhookSubscription.scope.in_(("brand", "plugin"))
                        & WebhookSubscription.owner_brand.in_(brands))
    subscriptions = (await session.execute(  # one query, and usually nothing found
        select(WebhookSubscription.id, WebhookSubscription.scope,
               WebhookSubscription.owner_user_id, WebhookSubscription.owner_brand,
               WebhookSubscription.event_types)
        .where(WebhookSubscription.status == ACTIVE, or_(*matching)))).all()
    if not subscriptions:
        return 0
    creators = dict((await session.execute(select(LiveSession.id, LiveSession.creator_id)
                                           .where(LiveSession.id.in_(sessions_))
                                           )).all()) \
        if sessions_ and any(s.scope == "creator" for s in subscriptions) else {}
    now, rows = utcnow(), []
    for event in await event_log.read_spans(session, spans):
        kind, key = event.stream.split(":", 1)
        for subscription in subscriptions:
            if event.type not in json.loads(subscription.event_types):
                continue
            if subscription.scope == "creator" and not (
                    kind == "session" and creators.get(int(key)) == subscription.owner_user_id
                    or kind == "creator" and int(key) == subscription.owner_user_id):
                continue
            if subscription.scope in ("brand", "plugin") and not (
                    kind == "brand" and key == subscription.owner_brand):
                continue
            rows.append({"subscription_id": subscription.id, "event_id": event.id,
                         "stream": event.stream, "seq": event.seq, "type": event.type,
                         "body": event.body, "status": PENDING, "attempts": 0,
                         "created_at": now})
    if rows:
        await insert_rows(session, WebhookDelivery.__table__, rows)
    return len(rows)


# Delivering: claimed subscriptions, their deliveries in order -----------------------------


@dataclass(frozen=True, slots=True)
class Policy:
    retry_base: timedelta  # the wait after a first failure; doubled after each further one
    give_up_after: timedelta  # failing this long disables the subscription


def backoff(policy: Policy, failures_in_a_row: int) -> timedelta:
    return min(policy.retry_base * 2 ** (failures_in_a_row - 1), MAX_BACKOFF)


@dataclass(frozen=True, slots=True)
class Targets:
    """Where deliveries go: HTTP endpoints, and the plugins loaded in this process."""

    http: httpx.AsyncClient
    plugins: PluginHost | None = None

    def here(self) -> list[str]:
        """The plugin URLs this process can deliver to."""
        if self.plugins is None:
            return []
        return [PLUGIN + name for name in self.plugins.records
                if self.plugins.is_active(name)]


async def deliver_due(sessions: SessionFactory, targets: Targets, policy: Policy,
                      now: Callable[[], datetime] = utcnow) -> int:
    """Deliver for every subscription due now, one claimed at a time, until none has
    more to send now (one held back by an event not queued yet waits for the next pass);
    requests sent."""
    sent, served = 0, set()
    while (claimed := await _claim(sessions, now(), targets.here(), served)) is not None:
        count = await _deliver(sessions, targets, policy, claimed, now)
        if count < SENT_PER_CLAIM:  # all it had, a failure, or held back: done this pass
            served.add(claimed.id)
        sent += count
    return sent


async def _claim(sessions: SessionFactory, now: datetime, plugins_here: list[str],
                 served: set[int | None]) -> WebhookSubscription | None:
    """Lease one active subscription with pending deliveries whose next attempt is due (a
    plugin's only where it is loaded); no other process takes it until the lease ends or
    is released."""
    table = WebhookSubscription
    due = select(table.id).where(
        table.status == ACTIVE, table.next_attempt_at <= now,
        or_(table.scope != "plugin", table.url.in_(plugins_here)), table.id.not_in(served),
        or_(table.lease_until.is_(None), table.lease_until < now),
        select(WebhookDelivery.id).where(WebhookDelivery.subscription_id == table.id,
                                         WebhookDelivery.status == PENDING).exists(),
    ).order_by(table.next_attempt_at, table.id).limit(1).with_for_update(skip_locked=True)
    async with sessions() as session, session.begin():
        claimed = (await session.execute(
            update(table).where(table.id == due.scalar_subquery())
            .values(lease_until=now + LEASE).returning(table.id))).scalar()
        return None if claimed is None else await session.get(table, claimed)


async def _deliver(sessions: SessionFactory, targets: Targets, policy: Policy,
                   subscription: WebhookSubscription, now: Callable[[], datetime]) -> int:
    """Send the subscription's pending deliveries in order until one fails; release it."""
    async with sessions() as session:
        pending = (await session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.subscription_id == subscription.id,
                                          WebhookDelivery.status == PENDING)
            .order_by(WebhookDelivery.event_id).limit(SENT_PER_CLAIM))).all()
    sent, failed = 0, None
    for delivery in pending:
        failed = await _tell(targets.plugins, subscription, delivery, now()) \
            if subscription.scope == "plugin" else \
            await _send(targets.http, subscription, delivery, now())
        sent += 1
        async with sessions() as session, session.begin():
            await session.execute(update(WebhookDelivery).where(
                WebhookDelivery.id == delivery.id).values(**{
                    name: getattr(delivery, name) for name in RECORDED}))
            await session.execute(update(WebhookSubscription)
                                  .where(WebhookSubscription.id == subscription.id)
                                  .values(lease_until=now() + LEASE))
        if failed:
            break
    async with sessions() as session, session.begin():
        row = await session.get(WebhookSubscription, subscription.id, with_for_update=True)
        if row is None:  # deleted meanwhile
            return sent
        row.lease_until = None
        if failed is None and sent:
            row.failures_in_a_row, row.failing_since = 0, None
        elif failed is not None:
            at = now()
            row.failures_in_a_row += 1
            row.failing_since = row.failing_since or at
            row.next_attempt_at = at + backoff(policy, row.failures_in_a_row)
            if at - row.failing_since >= policy.give_up_after:
                row.status = DISABLED
                row.disabled_reason = (
                    f"Deliveries failed for {policy.give_up_after} since "
                    f"{row.failing_since.isoformat()}; the last: {failed}. Enable it again "
                    "once the endpoint answers.")
    return sent


def message(delivery: WebhookDelivery) -> bytes:
    """A delivery's request body."""
    data = json.loads(delivery.body)
    for internal in ("stream", "seq", "event_id"):
        data.pop(internal, None)
    return json.dumps({"id": str(delivery.id), "type": delivery.type,
                       "stream": delivery.stream, "sequence": delivery.seq,
                       "eventId": delivery.event_id, "data": data},
                      separators=(",", ":")).encode()


async def _tell(plugins: PluginHost | None, subscription: WebhookSubscription,
                delivery: WebhookDelivery, now: datetime) -> str | None:
    """Call the brand's plugin's ``gift_sent`` with one delivery; None if it answered, else
    why not (recorded on the delivery as an HTTP one's would be)."""
    assert plugins is not None
    data = json.loads(delivery.body)
    gift = SentGift(receipt_id=data["receipt_id"], gift_sku=data["sku"], brand=data["brand"],
                    quantity=data["quantity"], viewer_id=data["viewer_id"],
                    creator_id=data["creator_id"], session_id=data["session_id"],
                    viewer_paid=data["viewer_paid"], brand_subsidy=data["brand_subsidy"],
                    brand_coins=data["brand_coins"], at=datetime.fromisoformat(data["at"]),
                    delivery_id=str(delivery.id))
    delivery.attempts += 1
    delivery.last_attempt_at = now
    sender_request = REQUEST_ID.set(data.get("request_id"))  # failures logged under its id
    try:
        await plugins.call_owner(subscription.url.removeprefix(PLUGIN), "gift_sent", gift=gift)
    except PluginCallFailed as failed:
        delivery.last_error = str(failed)[:KEPT_RESPONSE]
        return delivery.last_error
    finally:
        REQUEST_ID.reset(sender_request)
    delivery.status, delivery.delivered_at, delivery.last_error = DELIVERED, now, None
    return None


async def ensure_plugin_subscriptions(session: AsyncSession, listeners: dict[str, str]) -> None:
    """Subscribe each brand's plugin that listens to ``gift_sent`` (``{slug: plugin}``) to
    the brand's sends, once; a brand that changed plugin is delivered to the new one."""
    existing = {row.owner_brand: row for row in await session.scalars(
        select(WebhookSubscription).where(WebhookSubscription.scope == "plugin"))}
    for slug, plugin in listeners.items():
        row = existing.get(slug)
        if row is None:
            session.add(WebhookSubscription(
                scope="plugin", owner_brand=slug, url=PLUGIN + plugin, secret="",
                event_types=json.dumps(["BrandGiftSent"]), status=ACTIVE,
                next_attempt_at=utcnow()))
        elif row.url != PLUGIN + plugin:
            row.url = PLUGIN + plugin
    await session.flush()


async def _send(client: httpx.AsyncClient, subscription: WebhookSubscription,
                delivery: WebhookDelivery, now: datetime) -> str | None:
    """POST one delivery and record the outcome on it; None if the endpoint took it, else
    why not."""
    body = message(delivery)
    delivery.attempts += 1
    delivery.last_attempt_at = now
    try:
        response = await client.post(subscription.url, content=body, timeout=REQUEST_TIMEOUT,
                                     headers=_headers(subscription.secret, str(delivery.id),
                                                      body, now))
    except httpx.HTTPError as error:
        delivery.last_status, delivery.last_response = None, None
        delivery.last_error = f"{type(error).__name__}: {error}"[:KEPT_RESPONSE]
        return delivery.last_error
    delivery.last_status = response.status_code
    delivery.last_response = response.text[:KEPT_RESPONSE]
    if response.is_success:
        delivery.status, delivery.delivered_at, delivery.last_error = DELIVERED, now, None
        return None
    delivery.last_error = f"HTTP {response.status_code}"
    return delivery.last_error
