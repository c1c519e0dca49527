"""A Hypothesis state machine drives the whole money model on PostgreSQL and compares every
balance with a plain in-memory model after every step; the audit must pass after each one.

Steps: coin purchases, gifts, sponsored gifts (a brand subsidy), refunds, payout requests,
and payouts settled or failed by webhook.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from app.errors import DomainError
from app.plugins import PluginHost
from app.runtime import Runtime
from app.services import wallets
from app.services.brands import budget_balance, fund_budget
from app.services.payouts import WebhookError
from app.testing import audit, go_live, new_viewer
from tests.conftest import _truncate_postgres
from tests.gifting_support import send
from tests.money_support import buy, payout_webhook, request, store_webhook
from tests.sample_plugins.acme import Acme
from tests.support import settings_for

PACKAGES = {"coins-70": 70, "coins-350": 350, "coins-700": 700}
GIFTS = {"rose": 1, "doughnut": 30, "hand-hearts": 100, "corgi": 299}
ROCKET = 50  # acme-rocket list price; the brand pays half


@pytest.fixture
def money_machine(postgres_database_url):
    class MoneyModel(RuleBasedStateMachine):
        purchases = Bundle("purchases")
        payouts = Bundle("payouts")

        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.run(_truncate_postgres(postgres_database_url))
            config = settings_for(postgres_database_url)
            self.runtime = Runtime.build(config, PluginHost(config,
                                                            extra_plugins=[("acme", Acme())]))
            self.counter = 0

        def run(self, coroutine):
            return self.loop.run_until_complete(coroutine)

        def key(self) -> str:
            self.counter += 1
            return f"step-{self.counter}"

        @initialize()
        def setup(self) -> None:
            async def prepare():
                await self.runtime.sync_catalogue()
                self.stage = await go_live(self.runtime, "creator")
                self.fans = [await new_viewer(self.runtime, f"fan{n}") for n in range(2)]
                admin = await new_viewer(self.runtime, "admin")
                await fund_budget(self.runtime.sessions, admin_id=admin, slug="acme",
                                  coins=200, idempotency_key="fund")
            self.run(prepare())
            self.coins = {fan: 0 for fan in self.fans}
            self.owed = {fan: 0 for fan in self.fans}
            self.diamonds, self.held, self.budget = 0, 0, 200
            self.reversed: set[str] = set()

        @rule(target=purchases, fan=st.integers(0, 1), sku=st.sampled_from(sorted(PACKAGES)))
        def purchase(self, fan, sku):
            user = self.fans[fan]
            txn = self.key()
            self.run(buy(self.runtime, user, sku, txn=txn))
            settled = min(self.owed[user], PACKAGES[sku])
            self.owed[user] -= settled
            self.coins[user] += PACKAGES[sku] - settled
            return (user, txn, PACKAGES[sku])

        @rule(fan=st.integers(0, 1), sku=st.sampled_from(sorted(GIFTS)),
              quantity=st.integers(1, 3))
        def gift(self, fan, sku, quantity):
            user, price = self.fans[fan], GIFTS[sku] * quantity
            try:
                self.run(send(self.runtime, user, self.stage, sku, quantity, key=self.key()))
            except DomainError as error:
                assert error.code.value == "INSUFFICIENT_COINS"
                assert self.coins[user] < price
                return
            self.coins[user] -= price
            self.diamonds += price // 2

        @rule(fan=st.integers(0, 1))
        def sponsored_gift(self, fan):
            user = self.fans[fan]
            try:
                self.run(send(self.runtime, user, self.stage, "acme-rocket", key=self.key()))
            except DomainError as error:
                assert error.code.value in ("INSUFFICIENT_COINS", "SPONSOR_BUDGET_EXHAUSTED")
                assert self.coins[user] < ROCKET // 2 or self.budget < ROCKET // 2
                return
            self.coins[user] -= ROCKET // 2
            self.budget -= ROCKET // 2
            self.diamonds += ROCKET // 2

        @rule(bought=purchases)
        def refund(self, bought):
            user, txn, coins = bought
            if txn in self.reversed:  # a second reversal is refused and moves nothing
                try:
                    self.run(store_webhook(self.runtime, "refund", txn))
                except WebhookError as error:
                    assert error.status == 409
                    return
                raise AssertionError("a purchase was reversed twice")
            self.run(store_webhook(self.runtime, "refund", txn))
            self.reversed.add(txn)
            removed = min(self.coins[user], coins)
            self.coins[user] -= removed
            self.owed[user] += coins - removed

        @rule(target=payouts, amount=st.sampled_from([1_000, 1_500]))
        def request_payout(self, amount):
            try:
                payout = self.run(request(self.runtime, self.stage.creator_id, amount,
                                          self.key())).payout
            except DomainError as error:
                assert error.code.value == "INSUFFICIENT_DIAMONDS" and self.diamonds < amount
                return None
            self.diamonds -= amount
            self.held += amount
            return (payout.provider_payout_id, amount)

        @rule(payout=consumes(payouts), paid=st.booleans())
        def settle(self, payout, paid):
            if payout is None:
                return
            reference, amount = payout
            self.run(payout_webhook(self.runtime, reference, "paid" if paid else "failed"))
            self.held -= amount
            if not paid:
                self.diamonds += amount

        @invariant()
        def books_match_the_model(self):
            if not hasattr(self, "stage"):
                return

            async def check():
                async with self.runtime.sessions() as session:
                    for user in self.fans:
                        held = await wallets.wallet(session, user)
                        assert (held.coins, held.coins_owed) == (self.coins[user],
                                                                 self.owed[user])
                    creator = await wallets.wallet(session, self.stage.creator_id)
                    assert (creator.diamonds, creator.diamonds_on_hold) == (self.diamonds,
                                                                            self.held)
                    assert await budget_balance(session, "acme") == self.budget
                    assert await audit(session) == []
            self.run(check())

        def teardown(self) -> None:
            self.run(self.runtime.close())
            self.loop.close()

    return MoneyModel


def test_the_money_model_holds_step_by_step(money_machine):
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(money_machine, settings=settings(
        max_examples=10, stateful_step_count=20, deadline=None,
        suppress_health_check=list(HealthCheck)))
