"""A bank-style workload on PostgreSQL: many concurrent workers buying, gifting, sponsoring
and cashing out, a fixed number of steps each. No deadlock or serialization error may reach a user;
afterwards every currency is conserved, nothing is negative and the audit passes."""

from __future__ import annotations

import asyncio
import random

from sqlalchemy import func, select

from app.errors import DomainError
from app.models import Account, GiftSend
from app.plugins import PluginHost
from app.runtime import Runtime
from app.services.brands import fund_budget
from app.testing import audit, go_live, new_viewer
from tests.gifting_support import send
from tests.money_support import buy, earn_diamonds, request
from tests.sample_plugins.acme import Acme
from tests.support import settings_for

WORKERS, STEPS = 24, 12
REFUSALS = {"INSUFFICIENT_COINS", "INSUFFICIENT_DIAMONDS", "SPONSOR_BUDGET_EXHAUSTED",
            "PAYOUT_ABOVE_DAILY_MAXIMUM"}


async def test_a_bounded_concurrent_workload_keeps_the_books(postgres_database_url):
    config = settings_for(postgres_database_url).model_copy(update={"database_pool_size": 30})
    runtime = Runtime.build(config, PluginHost(config, extra_plugins=[("acme", Acme())]))
    try:
        await runtime.sync_catalogue()
        stages = [await go_live(runtime, f"star{n}") for n in range(3)]
        for where in stages:
            await earn_diamonds(runtime, where.creator_id, 20_000)
        fans = [await new_viewer(runtime, f"fan{n}") for n in range(WORKERS)]
        admin = await new_viewer(runtime, "admin")
        await fund_budget(runtime.sessions, admin_id=admin, slug="acme", coins=3_000,
                          idempotency_key="fund")
        await buy(runtime, admin, "coins-70", txn="seed")  # puts the packages on sale first
        done: list[str] = []

        async def worker(n: int) -> None:
            rng = random.Random(n)
            for step in range(STEPS):
                where = rng.choice(stages)
                kind = rng.choice(["buy", "gift", "gift", "sponsored", "payout"])
                try:
                    if kind == "buy":
                        await buy(runtime, fans[n], "coins-350", txn=f"w{n}-{step}")
                    elif kind == "gift":
                        await send(runtime, fans[n], where, rng.choice(["rose", "doughnut",
                                                                        "hand-hearts"]),
                                   key=f"w{n}-{step}")
                    elif kind == "sponsored":
                        await send(runtime, fans[n], where, "acme-rocket", key=f"w{n}-{step}")
                    else:
                        await request(runtime, where.creator_id, 1_000, f"w{n}-{step}")
                    done.append(kind)
                except DomainError as refusal:  # a business refusal is an answer, not a fault
                    assert refusal.code.value in REFUSALS, refusal.message
                    done.append("refused")

        await asyncio.gather(*(worker(n) for n in range(WORKERS)))
        assert len(done) == WORKERS * STEPS and {"buy", "gift", "payout"} <= set(done)
        async with runtime.sessions() as session:
            assert await audit(session) == []
            negative = await session.scalar(select(func.count()).select_from(Account).where(
                Account.limited, Account.balance < 0))
            assert negative == 0
            assert await session.scalar(select(func.count()).select_from(GiftSend)) > 0
    finally:
        await runtime.close()
