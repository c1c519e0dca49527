"""Payouts: a hold, then the provider settles it (paid) or voids it.

``request_payout`` moves the diamonds from the creator's earnings into a hold in
one transaction (so held diamonds cannot be spent twice), within the minimum and
the daily maximum, at the rate card's cash value (rounded down to the cent).
``request_brand_payout`` (an admin's) does the same with a brand's revenue coins, at
``brand_payout_cash_minor_per_100_coins`` (rounded down to the cent). The provider
then reports by signed webhook: *paid* retires what was held, *failed* returns it.
Settling twice, concurrently or not, changes nothing the second time.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import total
from app.errors import BusinessRefusal, DomainError, ErrorCode
from app.ledger import (
    AccountRef,
    Currency,
    Leg,
    lock_account,
    lock_accounts,
    post_transaction,
    run_idempotent,
    system_account,
)
from app.ledger.idempotency import check_key
from app.models import Brand, Payout
from app.payments import PayoutOrder, PayoutProvider, PayoutRejected, WebhookRejected
from app.services import event_log
from app.services.brands import PAYOUT_HOLD, brand_account, brand_by_slug, check_coins
from app.services.brands import revenue_account as brand_revenue_account
from app.services.rates import current_rate_card
from app.services.users import diamond_account, payout_hold_account
from app.settings import Settings

PENDING, PAID, FAILED = "pending", "paid", "failed"
CLAIM_PREFIX = "submitting:"  # provider_payout_id while a hand-over is in flight
logger = logging.getLogger(__name__)


class WebhookError(Exception):
    """A webhook the core refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True, slots=True)
class PayoutResult:
    payout: Payout
    replayed: bool


async def request_payout(sessions: async_sessionmaker[AsyncSession],
                         providers: Mapping[str, PayoutProvider], settings: Settings, *,
                         creator_id: int, diamonds: int, idempotency_key: str) -> PayoutResult:
    check_key(idempotency_key)
    minimum, maximum = settings.payout_minimum_diamonds, settings.payout_daily_maximum_diamonds
    if type(diamonds) is not int or diamonds < minimum:
        raise DomainError(ErrorCode.PAYOUT_BELOW_MINIMUM,
                          f"A payout must be at least {minimum:,} diamonds.", "diamonds")
    provider = _provider(providers, settings)

    async def hold(session: AsyncSession) -> dict[str, int]:
        earnings = await diamond_account(session, creator_id)
        # Lock the earnings row: one creator's payout requests are counted one at a time.
        await lock_account(session, earnings)
        midnight = datetime.combine(datetime.now(UTC).date(), datetime.min.time(), tzinfo=UTC)
        today = await session.scalar(select(total(Payout.diamonds)).where(
            Payout.creator_id == creator_id, Payout.created_at >= midnight,
            Payout.status != FAILED))
        if today + diamonds > maximum:
            raise DomainError(ErrorCode.PAYOUT_ABOVE_DAILY_MAXIMUM,
                              f"Payouts are limited to {maximum:,} diamonds a day; "
                              f"{max(maximum - today, 0):,} remain today.", "diamonds")
        card = await current_rate_card(session)
        cash = diamonds * card.cash_minor_per_100_diamonds // 100
        transaction_id = await post_transaction(session, kind="payout_hold", legs=[
            Leg(earnings, -diamonds), Leg(await payout_hold_account(session, creator_id),
                                          diamonds)])
        return await _pending(session, provider, card, cash, transaction_id,
                              creator_id=creator_id, diamonds=diamonds)

    outcome = await run_idempotent(
        sessions, scope=f"user:{creator_id}", key=idempotency_key, operation="request_payout",
        request={"diamonds": diamonds}, action=hold)
    return await _handed_over(sessions, provider, outcome)


async def request_brand_payout(sessions: async_sessionmaker[AsyncSession],
                               providers: Mapping[str, PayoutProvider], settings: Settings, *,
                               admin_id: int, slug: str, coins: int,
                               idempotency_key: str) -> PayoutResult:
    """Pay ``coins`` of a brand's revenue out to its partner through the payout provider:
    the coins are held now, retired when the provider reports the cash paid, returned to
    the revenue if it fails."""
    check_key(idempotency_key)
    check_coins(coins)
    cash = coins * settings.brand_payout_cash_minor_per_100_coins // 100
    if cash < 1:
        raise DomainError(ErrorCode.INVALID_AMOUNT, "This payout is worth less than one cent "
                          "at the brand payout rate; pay out more coins at once.", "coins")
    provider = _provider(providers, settings)
    if not getattr(provider, "pays_brands", False):
        raise DomainError(ErrorCode.INVALID_INPUT, f"The payout provider {provider.name!r} "
                          "does not pay brands; settle the revenue against the budget "
                          "instead.", "brand")

    async def hold(session: AsyncSession) -> dict[str, int]:
        brand = await brand_by_slug(session, slug)
        revenue = await brand_revenue_account(session, slug)
        earned = (await lock_accounts(session, [revenue]))[revenue.id]
        if earned < coins:
            raise BusinessRefusal(ErrorCode.INSUFFICIENT_COINS, f"The brand's revenue is "
                                  f"{earned} coins: it cannot pay out {coins}.", "coins")
        card = await current_rate_card(session)
        transaction_id = await post_transaction(
            session, kind="brand_payout_hold", memo=f"{slug}: paid out through "
            f"{provider.name}", legs=[Leg(revenue, -coins),
                                      Leg(await _brand_hold(session, slug), coins)])
        return await _pending(session, provider, card, cash, transaction_id,
                              brand_id=brand.id, coins=coins)

    outcome = await run_idempotent(
        sessions, scope=f"user:{admin_id}", key=idempotency_key,
        operation="request_brand_payout", request={"brand": slug, "coins": coins},
        action=hold)
    return await _handed_over(sessions, provider, outcome)


async def _pending(session: AsyncSession, provider: PayoutProvider, card: Any, cash: int,
                   hold_transaction_id: int, **payee: int) -> dict[str, int]:
    """Record a payout just held, for ``payee`` (a creator's diamonds or a brand's coins)."""
    payout = Payout(**payee, cash_minor=cash, currency=card.cash_currency,
                    rate_card_version=card.version, status=PENDING, provider=provider.name,
                    hold_transaction_id=hold_transaction_id)
    session.add(payout)
    await session.flush()
    return {"payout_id": payout.id}


def _provider(providers: Mapping[str, PayoutProvider], settings: Settings) -> PayoutProvider:
    provider = providers.get(settings.payout_provider)
    if provider is None:
        raise RuntimeError(f"payout provider {settings.payout_provider!r} is not installed")
    return provider


async def _brand_hold(session: AsyncSession, slug: str) -> AccountRef:
    """A brand's revenue coins on their way out as cash."""
    return await brand_account(session, slug, PAYOUT_HOLD)


async def _handed_over(sessions: async_sessionmaker[AsyncSession], provider: PayoutProvider,
                       outcome: dict[str, Any]) -> PayoutResult:
    """Hand a payout just held to its provider (not a replayed one: it was then)."""
    payout_id = outcome["payout_id"]
    if not outcome["replayed"]:
        await _submit(sessions, provider, payout_id)
    async with sessions() as session:
        payout = await session.get(Payout, payout_id)
    assert payout is not None
    return PayoutResult(payout=payout, replayed=outcome["replayed"])


async def _submit(sessions: async_sessionmaker[AsyncSession], provider: PayoutProvider,
                  payout_id: int, claimed_as: str | None = None) -> None:
    """Hand the committed payout to the provider, once: the payout is claimed first, so
    neither a second process nor a cancellation can act on it meanwhile. A definite
    refusal releases the hold; any other error leaves it pending for a later hand-over."""
    claim = f"{CLAIM_PREFIX}{secrets.token_hex(8)}"
    async with sessions() as session, session.begin():
        previous = Payout.provider_payout_id.is_(None) if claimed_as is None \
            else Payout.provider_payout_id == claimed_as
        claimed = await session.execute(
            update(Payout).where(Payout.id == payout_id, Payout.status == PENDING, previous)
            .values(provider_payout_id=claim).execution_options(synchronize_session=False))
        payout = await session.get(Payout, payout_id)
    if claimed.rowcount != 1:
        return  # another process has it, or it was settled meanwhile
    assert payout is not None
    try:
        reference = await provider.submit(PayoutOrder(
            payout.id, payout.creator_id, payout.cash_minor, payout.currency,
            brand=await _brand_slug(sessions, payout.brand_id)))
    except PayoutRejected as exc:
        try:
            await _finish(sessions, payout_id, paid=False,
                          reason=f"the payout provider refused it: {exc}")
        except WebhookError:
            pass  # settled meanwhile by the provider's own webhook
        return
    except Exception:
        logger.exception("handing payout %s to %s failed; it stays pending", payout_id,
                         provider.name)
        return
    async with sessions() as session, session.begin():
        await session.execute(update(Payout).where(Payout.id == payout_id,
                                                   Payout.provider_payout_id == claim)
                              .values(provider_payout_id=reference))


async def submit_stranded(sessions: async_sessionmaker[AsyncSession],
                          providers: Mapping[str, PayoutProvider], *,
                          older_than: timedelta = timedelta(minutes=1)) -> int:
    """Hand the provider any pending payout it never received (the server stopped between
    the hold and the hand-over); return how many were handed over or released."""
    cutoff = datetime.now(UTC) - older_than
    async with sessions() as session:
        stranded = (await session.execute(
            select(Payout.id, Payout.provider, Payout.provider_payout_id).where(
                Payout.status == PENDING, Payout.created_at < cutoff,
                Payout.provider_payout_id.is_(None) |
                Payout.provider_payout_id.startswith(CLAIM_PREFIX)))).all()
    for payout_id, name, claimed_as in stranded:
        provider = providers.get(name)
        if provider is not None:
            await _submit(sessions, provider, payout_id, claimed_as)
    return len(stranded)


async def _finish(sessions: async_sessionmaker[AsyncSession], payout_id: int, *, paid: bool,
                  reason: str | None, unsubmitted_only: bool = False) -> tuple[Payout, bool]:
    """Settle (post) or void a pending payout; return it and whether this call changed it."""
    target = PAID if paid else FAILED
    async with sessions() as session, session.begin():
        payout = await session.get(Payout, payout_id, with_for_update=True)
        assert payout is not None
        if unsubmitted_only and payout.status == PENDING and \
                payout.provider_payout_id is not None:
            raise DomainError(ErrorCode.PAYOUT_NOT_PENDING, "This payout is already with the "
                              "payout provider; it can no longer be cancelled.", "payoutId")
        if payout.status == target:
            return payout, False
        if payout.status != PENDING:
            raise WebhookError(409, f"payout {payout.provider_payout_id} is already "
                                    f"{payout.status}; it cannot become {target}")
        slug = await _brand_slug(sessions, payout.brand_id, session)
        if slug is None:
            assert payout.creator_id is not None
            held, amount = await payout_hold_account(session, payout.creator_id), payout.diamonds
            redeemed = await system_account(session, "diamond_redemption", Currency.DIAMOND)
            back_to = await diamond_account(session, payout.creator_id)
            cash_to, stream = "creator_payouts", event_log.creator_stream(payout.creator_id)
        else:
            held, amount = await _brand_hold(session, slug), payout.coins
            redeemed = await system_account(session, "brand_revenue_redemption", Currency.COIN)
            back_to = await brand_revenue_account(session, slug)
            cash_to, stream = "brand_payouts", event_log.brand_stream(slug)
        legs = [Leg(held, -amount), Leg(redeemed, amount),
                Leg(await system_account(session, cash_to, payout.currency),
                    payout.cash_minor),
                Leg(await system_account(session, f"payout_clearing:{payout.provider}",
                                         payout.currency), -payout.cash_minor)] \
            if paid else [Leg(held, -amount), Leg(back_to, amount)]
        transaction_id = await post_transaction(
            session, kind=f"{'brand_' if slug else ''}payout_{target}",
            reverses_id=None if paid else payout.hold_transaction_id,
            legs=[leg for leg in legs if leg.amount])
        payout.status, payout.settle_transaction_id = target, transaction_id
        payout.settled_at, payout.failure_reason = datetime.now(UTC), reason
        await session.flush()
        await event_log.append(session, [(stream, {
            "type": "PayoutSettled", "payout_id": payout.id, "status": target,
            "diamonds": payout.diamonds, "coins": payout.coins, "brand": slug,
            "cash_minor": payout.cash_minor, "currency": payout.currency,
            "failure_reason": reason, "settled_at": payout.settled_at.isoformat()})])
        return payout, True


async def _brand_slug(sessions: async_sessionmaker[AsyncSession], brand_id: int | None,
                      session: AsyncSession | None = None) -> str | None:
    """The slug of a brand payout's brand; None for a creator's payout."""
    if brand_id is None:
        return None
    if session is not None:
        return await session.scalar(select(Brand.slug).where(Brand.id == brand_id))
    async with sessions() as own:
        return await own.scalar(select(Brand.slug).where(Brand.id == brand_id))


async def settle_from_webhook(sessions: async_sessionmaker[AsyncSession],
                              providers: Mapping[str, PayoutProvider], provider_name: str,
                              body: bytes, signature: str) -> tuple[Payout, bool]:
    provider = providers.get(provider_name)
    if provider is None:
        raise WebhookError(404, f"no payout provider {provider_name!r} is installed")
    try:
        outcome = provider.verify_webhook(body, signature)
    except WebhookRejected as exc:
        raise WebhookError(400, f"webhook rejected: {exc}") from exc
    async with sessions() as session:
        payout_id = await session.scalar(select(Payout.id).where(
            Payout.provider == provider_name,
            Payout.provider_payout_id == outcome.provider_payout_id))
    if payout_id is None:
        raise WebhookError(404, f"unknown payout {outcome.provider_payout_id!r}")
    return await _finish(sessions, payout_id, paid=outcome.paid, reason=outcome.reason)


async def cancel_payout(sessions: async_sessionmaker[AsyncSession], *, creator_id: int,
                        payout_id: int) -> Payout:
    """A creator takes back a payout not yet handed to the provider; the diamonds return."""
    async with sessions() as session:
        payout = await session.get(Payout, payout_id)
    if payout is None or payout.creator_id != creator_id:
        raise DomainError(ErrorCode.NOT_FOUND, "No payout of yours has this ID.", "payoutId")
    try:
        cancelled, changed = await _finish(sessions, payout_id, paid=False,
                                           reason="cancelled by the creator",
                                           unsubmitted_only=True)
    except WebhookError:
        changed = False
    if not changed:
        raise DomainError(ErrorCode.PAYOUT_NOT_PENDING, "Only a pending payout can be "
                          "cancelled; this one is already settled.", "payoutId")
    return cancelled


async def brand_slugs(session: AsyncSession, rows: list[Payout]) -> dict[int, str]:
    """The brand of each brand payout among ``rows``: {payout id: slug}."""
    brand_ids = {row.brand_id for row in rows if row.brand_id is not None}
    if not brand_ids:
        return {}
    slugs = dict((await session.execute(select(Brand.id, Brand.slug)
                                        .where(Brand.id.in_(brand_ids)))).all())
    return {row.id: slugs[row.brand_id] for row in rows if row.brand_id is not None}


async def payouts_of(session: AsyncSession, creator_id: int | None = None, *, limit: int,
                     before_id: int | None, brand_id: int | None = None) -> list[Payout]:
    """A creator's payouts, or a brand's, newest first."""
    payee = Payout.creator_id == creator_id if brand_id is None else Payout.brand_id == brand_id
    query = select(Payout).where(payee).order_by(Payout.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(Payout.id < before_id)
    return list((await session.scalars(query)).all())
