"""Helpers for payout, refund and safeguard tests."""

from __future__ import annotations

import json

from sqlalchemy import select

from app.models import CoinPackage
from app.services import coins, payouts, reversals
from app.services.coins import seed_default_packages
from app.testing import give_coins
from tests.support import sandbox


async def earn_diamonds(runtime, creator_id: int, diamonds: int) -> None:
    """Credit diamonds as gifts would (balanced against the diamond issuance account)."""
    from app.ledger import Currency, Leg, post_transaction, system_account
    from app.services.users import diamond_account

    async with runtime.sessions() as session, session.begin():
        await post_transaction(session, kind="test_earnings", legs=[
            Leg(await system_account(session, "diamond_issuance", Currency.DIAMOND), -diamonds),
            Leg(await diamond_account(session, creator_id), diamonds)])


async def request(runtime, creator_id: int, diamonds: int, key: str):
    return await payouts.request_payout(runtime.sessions, runtime.payout_providers,
                                        runtime.settings, creator_id=creator_id,
                                        diamonds=diamonds, idempotency_key=key)


def signed(body: dict) -> tuple[bytes, str]:
    raw = json.dumps(body).encode()
    return raw, sandbox().sign_webhook(raw)


async def payout_webhook(runtime, provider_payout_id: str, status: str):
    raw, signature = signed({"payout_id": provider_payout_id, "status": status})
    return await payouts.settle_from_webhook(runtime.sessions, runtime.payout_providers,
                                             "sandbox", raw, signature)


async def buy(runtime, user_id: int, sku: str = "coins-700", txn: str | None = None):
    async with runtime.sessions() as session, session.begin():
        await seed_default_packages(session)
    async with runtime.sessions() as session:
        package = await session.scalar(select(CoinPackage).where(CoinPackage.sku == sku))
    receipt = sandbox().make_receipt(sku, package.price_minor, transaction_id=txn)
    return await coins.purchase_coins(runtime.sessions, runtime.payment_providers,
                                      runtime.settings, user_id=user_id, package_id=package.id,
                                      provider="sandbox", receipt=receipt,
                                      idempotency_key=receipt[-20:])


async def store_webhook(runtime, kind: str, transaction_id: str):
    raw, signature = signed({"type": kind, "transaction_id": transaction_id})
    return await reversals.reverse_from_webhook(runtime.sessions, runtime.payment_providers,
                                                "sandbox", raw, signature)


__all__ = ["buy", "earn_diamonds", "give_coins", "payout_webhook", "request", "signed",
           "store_webhook"]
