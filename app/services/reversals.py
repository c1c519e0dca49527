"""Refunds and chargebacks of coin purchases, reported by the store's signed webhook.

The purchase is reversed by a new transaction linked to it: the coins still in the
wallet are removed; coins already spent become a debt (a negative balance on the
user's debt account) that later purchases settle first. The wallet never goes
negative. A chargeback also claws back the diamonds creators earned from the
viewer's gifts since the purchase, newest first, up to the coins spent, as far as
the creators still hold them; each clawback is recorded with its reason.
A purchase is reversed at most once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import total
from app.ledger import Currency, Leg, lock_account, post_transaction, system_account
from app.models import Clawback, GiftSend, Purchase, PurchaseReversal, User
from app.payments import PaymentProvider, WebhookRejected
from app.services.payouts import WebhookError
from app.services.users import coin_account, debt_account, diamond_account


@dataclass(frozen=True, slots=True)
class ReversalResult:
    reversal: PurchaseReversal
    clawed_diamonds: int


async def reverse_from_webhook(sessions: async_sessionmaker[AsyncSession],
                               providers: Mapping[str, PaymentProvider], provider_name: str,
                               body: bytes, signature: str) -> ReversalResult:
    provider = providers.get(provider_name)
    if provider is None:
        raise WebhookError(404, f"no payment provider {provider_name!r} is installed")
    try:
        event = provider.verify_webhook(body, signature)
    except WebhookRejected as exc:
        raise WebhookError(400, f"webhook rejected: {exc}") from exc
    try:
        async with sessions() as session, session.begin():
            return await _reverse(session, provider_name, event.transaction_id, event.kind)
    except IntegrityError:  # the same purchase reversed concurrently
        raise _already() from None


def _already() -> WebhookError:
    return WebhookError(409, "this purchase was already reversed; nothing was changed")


async def _reverse(session: AsyncSession, provider: str, transaction_id: str, kind: str
                   ) -> ReversalResult:
    purchase = await session.scalar(select(Purchase).where(
        Purchase.provider == provider, Purchase.provider_transaction_id == transaction_id)
        .with_for_update())
    if purchase is None:
        raise WebhookError(404, f"unknown purchase {transaction_id!r}")
    if await session.scalar(select(PurchaseReversal.id).where(
            PurchaseReversal.purchase_id == purchase.id)):
        raise _already()
    wallet = await coin_account(session, purchase.user_id)
    held = await lock_account(session, wallet)
    removed = min(held, purchase.coins)
    debt = purchase.coins - removed
    legs = [
        Leg(wallet, -removed),
        Leg(await debt_account(session, purchase.user_id), -debt),
        Leg(await system_account(session, "coin_issuance", Currency.COIN), purchase.coins),
        Leg(await system_account(session, f"receivable:{provider}", purchase.currency),
            -purchase.price_minor),
        Leg(await system_account(session, "coin_sales", purchase.currency),
            purchase.price_minor),
    ]
    transaction_id = await post_transaction(
        session, kind=f"purchase_{kind}", memo=f"{provider}:{transaction_id}",
        reverses_id=purchase.transaction_id, legs=[leg for leg in legs if leg.amount])
    reversal = PurchaseReversal(purchase_id=purchase.id, kind=kind, coins_removed=removed,
                                debt_recorded=debt, transaction_id=transaction_id)
    session.add(reversal)
    await session.flush()
    clawed = 0
    if kind == "chargeback" and debt:
        clawed = await _claw_back(session, purchase, reversal, debt)
    return ReversalResult(reversal=reversal, clawed_diamonds=clawed)


async def _claw_back(session: AsyncSession, purchase: Purchase, reversal: PurchaseReversal,
                     spent: int) -> int:
    viewer = await session.scalar(select(User.name).where(User.id == purchase.user_id))
    sends = (await session.scalars(
        select(GiftSend).where(GiftSend.sender_id == purchase.user_id,
                               GiftSend.created_at >= purchase.created_at,
                               GiftSend.creator_diamonds > 0)
        .order_by(GiftSend.id.desc()))).all()
    already = dict((await session.execute(
        select(Clawback.gift_send_id, total(Clawback.diamonds))
        .where(Clawback.gift_send_id.in_([s.id for s in sends]))
        .group_by(Clawback.gift_send_id))).all())
    # Lock every creator's earnings in id order first: concurrent chargebacks cannot deadlock.
    earnings = {creator: await diamond_account(session, creator)
                for creator in {send.creator_id for send in sends}}
    balances = {}
    for account in sorted(earnings.values(), key=lambda a: a.id):
        balances[account.id] = await lock_account(session, account)
    remaining, clawed = spent, 0
    for send in sends:
        if remaining <= 0:
            break
        covered = min(remaining, send.coins_paid)
        remaining -= covered
        # A gift is clawed back at most once in full, whatever number of chargebacks.
        wanted = min(send.creator_diamonds * covered // send.coins_paid,
                     send.creator_diamonds - already.get(send.id, 0))
        account = earnings[send.creator_id]
        taken = min(wanted, balances[account.id])
        if taken <= 0:
            continue
        balances[account.id] -= taken
        transaction_id = await post_transaction(session, kind="clawback", legs=[
            Leg(account, -taken),
            Leg(await system_account(session, "diamond_clawback", Currency.DIAMOND), taken)],
            reverses_id=send.transaction_id)
        session.add(Clawback(
            creator_id=send.creator_id, gift_send_id=send.id, reversal_id=reversal.id,
            diamonds=taken, transaction_id=transaction_id,
            reason=f"Chargeback: the coins {viewer} paid for this gift were charged back "
                   f"by the store ({purchase.provider}, {purchase.created_at:%Y-%m-%d})."))
        clawed += taken
    await session.flush()
    return clawed
