"""Concurrency within one process on PostgreSQL: ledger debits racing on one wallet over
separate connections, receipts, keys and webhooks racing, and gifts racing into one
process's batching writer (which checks them in order, in one transaction: the writer's
own checks are what those tests prove). Writers in separate processes contending in the
database are ``tests/test_races.py``."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from app.errors import BusinessRefusal, DomainError, ErrorCode
from app.ledger import run_idempotent
from app.models import Account, CoinPackage, LedgerTransaction, Purchase
from app.services import live, wallets
from app.services.coins import purchase_coins, seed_default_packages
from app.services.users import ensure_user
from app.testing import audit
from tests.gifting_support import new_viewer, send, stage
from tests.support import ADULT, sandbox
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
        users = [(await ensure_user(session, f"buyer{n}", ADULT)).id for n in range(5)]
        package = await session.scalar(select(CoinPackage).where(CoinPackage.sku == "coins-350"))
    receipt = sandbox().make_receipt(package.sku, package.price_minor, transaction_id="store-1")

    async def buy(n: int):
        try:
            return await purchase_coins(
                pg_runtime.sessions, pg_runtime.payment_providers, pg_runtime.settings,
                user_id=users[n % 5],
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


async def test_two_hundred_concurrent_gifts_into_one_writer_from_a_wallet_that_affords_37(
        pg_runtime):
    where = await stage(pg_runtime)
    fan = await new_viewer(pg_runtime, "fan", 37 * 30 + 29)  # 37 Doughnuts of 30 coins, +29

    async def attempt(n: int) -> str:
        try:
            await send(pg_runtime, fan, where, "doughnut", key=f"race-{n}")
            return "sent"
        except DomainError as error:
            return error.code.value

    outcomes = await asyncio.gather(*(attempt(n) for n in range(200)))
    assert outcomes.count("sent") == 37
    assert outcomes.count("INSUFFICIENT_COINS") == 163
    async with pg_runtime.sessions() as session:
        assert (await wallets.wallet(session, fan)).coins == 29
        assert (await wallets.wallet(session, where.creator_id)).diamonds == 37 * 15
        assert (await live.totals(session, where.session_id)).gifts == 37
        assert await audit(session) == []
        negative = await session.scalar(select(func.count()).select_from(Account)
                                        .where(Account.balance < 0))
        assert negative == 0


async def test_concurrent_sponsored_sends_into_one_writer_never_overdraw_the_brand_budget(
        postgres_database_url):
    from app.plugins import PluginHost
    from app.runtime import Runtime
    from app.services.brands import budget_balance, fund_budget
    from tests.sample_plugins.acme import Acme
    from tests.support import settings_for

    config = settings_for(postgres_database_url).model_copy(update={"database_pool_size": 30})
    runtime = Runtime.build(config, PluginHost(config, extra_plugins=[("acme", Acme())]))
    try:
        await runtime.sync_catalogue()
        admin = await new_viewer(runtime, "admin")
        await fund_budget(runtime.sessions, admin_id=admin, slug="acme", coins=25 * 20 + 7,
                          idempotency_key="fund")  # 20 rockets' subsidies of 25, and 7 over
        where = await stage(runtime)
        fans = [await new_viewer(runtime, f"fan{n}", 1_000) for n in range(50)]

        async def attempt(n: int) -> str:
            try:
                await send(runtime, fans[n], where, "acme-rocket", key=f"rocket-{n}")
                return "sent"
            except DomainError as error:
                return error.code.value

        outcomes = await asyncio.gather(*(attempt(n) for n in range(50)))
        assert outcomes.count("sent") == 20
        assert outcomes.count("SPONSOR_BUDGET_EXHAUSTED") == 30
        async with runtime.sessions() as session:
            assert await budget_balance(session, "acme") == 7
            assert await audit(session) == []
    finally:
        await runtime.close()


async def test_payout_requests_racing_gifts_and_each_other_never_overdraw(pg_runtime):
    from tests.money_support import earn_diamonds, request

    where = await stage(pg_runtime)
    await earn_diamonds(pg_runtime, where.creator_id, 10_000)
    fans = [await new_viewer(pg_runtime, f"fan{n}", 1_000) for n in range(20)]

    async def payout(n: int) -> int:
        try:
            return (await request(pg_runtime, where.creator_id, 1_000, f"payout-{n}")
                    ).payout.diamonds
        except DomainError as error:
            assert error.code in (ErrorCode.INSUFFICIENT_DIAMONDS,
                                  ErrorCode.PAYOUT_ABOVE_DAILY_MAXIMUM)
            return 0

    async def gift(n: int) -> int:
        return (await send(pg_runtime, fans[n], where, "hand-hearts", key=f"g-{n}")
                ).receipt.creator_diamonds

    results = await asyncio.gather(*(payout(n) for n in range(30)),
                                   *(gift(n) for n in range(20)))
    held, earned = sum(results[:30]), sum(results[30:])
    assert held >= 10_000  # at least the starting diamonds could be paid out
    async with pg_runtime.sessions() as session:
        earnings = (await wallets.wallet(session, where.creator_id)).diamonds
        assert earnings == 10_000 + earned - held >= 0
        assert await audit(session) == []


async def test_a_payout_webhook_delivered_five_times_at_once_settles_once(pg_runtime):
    from tests.money_support import earn_diamonds, payout_webhook, request

    creator = await new_viewer(pg_runtime, "creator")
    await earn_diamonds(pg_runtime, creator, 5_000)
    payout = (await request(pg_runtime, creator, 5_000, "p")).payout
    results = await asyncio.gather(*(payout_webhook(pg_runtime, payout.provider_payout_id,
                                                    "paid") for _ in range(5)))
    assert sorted(changed for _, changed in results) == [False] * 4 + [True]
    async with pg_runtime.sessions() as session:
        settled = await session.scalar(select(func.count()).select_from(LedgerTransaction)
                                       .where(LedgerTransaction.kind == "payout_paid"))
        assert settled == 1
        assert await audit(session) == []


async def test_a_refund_delivered_five_times_at_once_reverses_once(pg_runtime):
    from app.services.payouts import WebhookError
    from tests.money_support import buy, store_webhook

    fan = await new_viewer(pg_runtime, "fan")
    await buy(pg_runtime, fan, "coins-700", txn="store-1")

    async def deliver() -> int:
        try:
            await store_webhook(pg_runtime, "refund", "store-1")
            return 200
        except WebhookError as error:
            return error.status

    assert sorted(await asyncio.gather(*(deliver() for _ in range(5)))) == [200] + [409] * 4
    async with pg_runtime.sessions() as session:
        assert (await wallets.wallet(session, fan)).coins == 0
        assert await audit(session) == []
