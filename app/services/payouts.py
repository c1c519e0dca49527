"""Creator payouts: a hold on diamonds, then the provider settles it (paid) or voids it.

``request_payout`` moves the diamonds from the creator's earnings into a hold in
one transaction (so held diamonds cannot be spent twice), within the minimum and
the daily maximum, at the rate card's cash value (rounded down to the cent). The
provider then reports by signed webhook: *paid* retires the held diamonds, *failed*
returns them. Settling twice, concurrently or not, changes nothing the second time.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import total
from app.errors import DomainError, ErrorCode
from app.ledger import (
    Currency,
    Leg,
    lock_account,
    post_transaction,
    run_idempotent,
    system_account,
)
from app.ledger.idempotency import check_key
from app.models import Payout
from app.payments import PayoutOrder, PayoutProvider, PayoutRejected, WebhookRejected
from app.services import event_log
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
    provider = providers.get(settings.payout_provider)
    if provider is None:
        raise RuntimeError(f"payout provider {settings.payout_provider!r} is not installed")

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
        payout = Payout(creator_id=creator_id, diamonds=diamonds, cash_minor=cash,
                        currency=card.cash_currency, rate_card_version=card.version,
                        status=PENDING, provider=provider.name,
                        hold_transaction_id=transaction_id)
        session.add(payout)
        await session.flush()
        return {"payout_id": payout.id}

    outcome = await run_idempotent(
        sessions, scope=f"user:{creator_id}", key=idempotency_key, operation="request_payout",
        request={"diamonds": diamonds}, action=hold)
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
        reference = await provider.submit(PayoutOrder(payout.id, payout.creator_id,
                                                      payout.cash_minor, payout.currency))
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
        hold = await payout_hold_account(session, payout.creator_id)
        if paid:
            legs = [Leg(hold, -payout.diamonds),
                    Leg(await system_account(session, "diamond_redemption", Currency.DIAMOND),
                        payout.diamonds),
                    Leg(await system_account(session, "creator_payouts", payout.currency),
                        payout.cash_minor),
                    Leg(await system_account(session, f"payout_clearing:{payout.provider}",
                                             payout.currency), -payout.cash_minor)]
        else:
            legs = [Leg(hold, -payout.diamonds),
                    Leg(await diamond_account(session, payout.creator_id), payout.diamonds)]
        transaction_id = await post_transaction(
            session, kind=f"payout_{target}", reverses_id=None if paid else
            payout.hold_transaction_id, legs=[leg for leg in legs if leg.amount])
        payout.status, payout.settle_transaction_id = target, transaction_id
        payout.settled_at, payout.failure_reason = datetime.now(UTC), reason
        await session.flush()
        await event_log.append(session, [(event_log.creator_stream(payout.creator_id), {
            "type": "PayoutSettled", "payout_id": payout.id, "status": target,
            "diamonds": payout.diamonds, "cash_minor": payout.cash_minor,
            "currency": payout.currency, "failure_reason": reason,
            "settled_at": payout.settled_at.isoformat()})])
        return payout, True


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


async def payouts_of(session: AsyncSession, creator_id: int, *, limit: int,
                     before_id: int | None) -> list[Payout]:
    query = select(Payout).where(Payout.creator_id == creator_id) \
        .order_by(Payout.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(Payout.id < before_id)
    return list((await session.scalars(query)).all())
