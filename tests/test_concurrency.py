"""Real concurrency on PostgreSQL: debits racing on one wallet, receipts and keys racing."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from app.errors import BusinessRefusal, DomainError, ErrorCode
from app.ledger import audit, run_idempotent
from app.models import CoinPackage, LedgerTransaction, Purchase
from app.services.coins import purchase_coins, seed_default_packages
from app.services.users import ensure_user
from tests.support import sandbox
from tests.test_ledger import balance, debit, fund, make_user


@pytest.mark.parametrize("holding, price", [(1000, 37), (500, 10), (49, 50)])
async def test_fifty_concurrent_debits_never_overdraw(pg_runtime, holding, price):
    alice = await make_user(pg_runtime, "alice")
    await fund(pg_runtime, alice, holding)

    async def attempt(n: int) -> bool:
        try:
            await run_idempotent(pg_runtime.sessions, scope=f"user:{alice}", key=f"debit-{n}",
                                 operation="debit", request={"amount": price},
                                 action=debit(pg_runtime, alice, price))
            return True
        except BusinessRefusal as refusal:
            assert refusal.code is ErrorCode.INSUFFICIENT_COINS
            return False

    results = await asyncio.gather(*(attempt(n) for n in range(50)))
    assert sum(results) == min(50, holding // price)
    assert await balance(pg_runtime, f"user:{alice}:wallet") == holding - sum(results) * price
    if holding // price < 50:
        assert await balance(pg_runtime, f"user:{alice}:wallet") == holding % price
    async with pg_runtime.sessions() as session:
        assert await audit(session) == []


async def test_fifty_identical_requests_post_one_transaction(pg_runtime):
    alice = await make_user(pg_runtime, "alice")
    await fund(pg_runtime, alice, 1000)
    results = await asyncio.gather(*(
        run_idempotent(pg_runtime.sessions, scope=f"user:{alice}", key="same",
                       operation="debit", request={"amount": 7},
                       action=debit(pg_runtime, alice, 7))
        for _ in range(50)))
    assert len({r["transaction_id"] for r in results}) == 1
    assert sum(not r["replayed"] for r in results) == 1
    assert await balance(pg_runtime, f"user:{alice}:wallet") == 993


async def test_one_receipt_sent_concurrently_under_many_keys_and_users_credits_once(pg_runtime):
    async with pg_runtime.sessions() as session, session.begin():
        await seed_default_packages(session)
        users = [(await ensure_user(session, f"buyer{n}")).id for n in range(5)]
        package = await session.scalar(select(CoinPackage).where(CoinPackage.sku == "coins-350"))
    receipt = sandbox().make_receipt(package.sku, package.price_minor, transaction_id="store-1")

    async def buy(n: int):
        try:
            return await purchase_coins(
                pg_runtime.sessions, pg_runtime.payment_providers, user_id=users[n % 5],
                package_id=package.id, provider="sandbox", receipt=receipt,
                idempotency_key=f"key-{n}")
        except DomainError as error:
            assert error.code is ErrorCode.RECEIPT_ALREADY_REDEEMED
            return None

    results = await asyncio.gather(*(buy(n) for n in range(30)))
    assert sum(r is not None for r in results) == 1
    async with pg_runtime.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Purchase)) == 1
        assert await session.scalar(select(func.count()).select_from(LedgerTransaction)) == 1
        assert await audit(session) == []
