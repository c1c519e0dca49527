"""A brand's revenue share: its balance, its monthly statement, and settling it against the
budget, as one balanced ledger transaction, with clear refusals that change nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from app.errors import DomainError, ErrorCode
from app.models import Account
from app.services.brands import budget_balance, revenue_balance, settle_revenue
from app.services.statements import brand_statement
from app.sponsorship import share_with_carry
from app.testing import audit, new_viewer
from tests.gifting_support import send
from tests.sample_plugins.acme import Acme
from tests.support import snapshot
from tests.test_plugins import core_with, funded_stage


async def test_revenue_is_earned_settled_against_the_budget_and_stated(database_url):
    async with core_with(database_url, ("acme", Acme())) as runtime:
        stage, fan = await funded_stage(runtime, budget=1_000)
        for _ in range(3):  # each Acme Rocket: value 50, the brand's share 5
            await send(runtime, fan, stage, "acme-rocket")
        async with runtime.sessions() as session:
            assert (await revenue_balance(session, "acme"), await budget_balance(
                session, "acme")) == (15, 1_000 - 3 * 25)
        admin = await new_viewer(runtime, "settling-admin")
        settled = await settle_revenue(runtime.sessions, admin_id=admin, slug="acme", coins=10,
                                       idempotency_key="settle-1")
        assert settled == (5, 935)
        again = await settle_revenue(runtime.sessions, admin_id=admin, slug="acme", coins=10,
                                     idempotency_key="settle-1")  # a replay moves nothing
        assert again == (5, 935)
        month = datetime.now(UTC).strftime("%Y-%m")
        today = datetime.now(UTC).date().isoformat()
        async with runtime.sessions() as session:
            statement = await brand_statement(session, "acme", month)
            assert await audit(session) == []
        assert [(line.section, line.label, line.count, line.coins)
                for line in statement.lines] == [
            ("balance", "opening", 0, 0), ("earned", today, 3, 15), ("settled", today, 1, -10),
            ("balance", "closing", 0, 5)]
        assert statement.to_csv().splitlines()[2] == f"earned,{today},3,15,0,0,,"


@pytest.mark.parametrize("slug, coins, code, message", [
    ("acme", 6, ErrorCode.INSUFFICIENT_COINS,
     "The brand's revenue is 5 coins: it cannot settle 6."),
    ("acme", 0, ErrorCode.INVALID_AMOUNT, "coins must be between 1 and 1,000,000,000."),
    ("nobody", 1, ErrorCode.NOT_FOUND, "No brand 'nobody' is installed."),
])
async def test_settling_more_than_was_earned_or_nothing_is_refused_and_changes_nothing(
        database_url, slug, coins, code, message):
    async with core_with(database_url, ("acme", Acme())) as runtime:
        stage, fan = await funded_stage(runtime)
        await send(runtime, fan, stage, "acme-rocket")
        admin = await new_viewer(runtime, "settling-admin")
        before = await snapshot(database_url)
        with pytest.raises(DomainError) as refused:
            await settle_revenue(runtime.sessions, admin_id=admin, slug=slug, coins=coins,
                                 idempotency_key=f"settle-{slug}-{coins}")
        assert (refused.value.code, refused.value.message) == (code, message)
        after = await snapshot(database_url)
        if code is ErrorCode.INSUFFICIENT_COINS:  # a business refusal keeps its key refused
            after["rows"].pop("idempotency_record"), before["rows"].pop("idempotency_record")
        assert after == before


async def test_a_month_is_asked_for_as_yyyy_mm(database_url):
    async with core_with(database_url, ("acme", Acme())) as runtime:
        async with runtime.sessions() as session:
            with pytest.raises(DomainError) as refused:
                await brand_statement(session, "acme", "December")
    assert (refused.value.code, refused.value.message) == (ErrorCode.INVALID_INPUT,
                                                           "month must look like 2026-11.")


@settings(max_examples=300, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=200),
       bps=st.integers(min_value=0, max_value=10_000))
def test_a_brand_share_carried_over_sends_is_the_exact_total_rounded_down(cuts, bps):
    """Over any run of sends, the brand's whole coins add up to the exact share rounded
    down: never a coin created, less than one coin short; no send gives more than its cut."""
    carry, total = 0, 0
    for cut in cuts:
        coins, carry = share_with_carry(cut, bps, carry)
        assert 0 <= coins <= cut and 0 <= carry < 10_000
        total += coins
    assert total == sum(cut * bps for cut in cuts) // 10_000


async def test_fifteen_percent_of_the_platform_cut_is_paid_over_time_not_lost(database_url):
    """A plugin that answers BrandShare(1500): each send's platform cut is a few coins, of
    which 15 % is less than one coin; the core carries the part owed, so the brand's
    revenue after n sends is 15 % of the n cuts, rounded down once, and the ledger holds."""
    async with core_with(database_url, ("acme", Acme(mode="share-1500"))) as runtime:
        stage, fan = await funded_stage(runtime)
        shares, cuts = [], 0
        for _ in range(7):
            receipt = (await send(runtime, fan, stage, "acme-rocket")).receipt
            shares.append(receipt.brand_coins)
            cuts += receipt.platform_coins + receipt.brand_coins
            assert receipt.creator_coins + receipt.platform_coins + receipt.brand_coins == 50
        assert sum(shares) == cuts * 1500 // 10_000 and len(set(shares)) > 1
        async with runtime.sessions() as session:
            assert await revenue_balance(session, "acme") == sum(shares)
            assert await audit(session) == []


async def test_brand_revenue_is_paid_out_through_the_provider_in_two_phases(database_url):
    """An admin pays revenue coins out: they are held at once and the provider is handed
    the cash (at the brand payout rate, rounded down); *paid* retires them, *failed*
    returns them to the revenue; each outcome is an event on the brand's stream, the
    statement shows it, the ledger stays balanced, a replay moves nothing."""
    from app.models import Event
    from app.services.payouts import request_brand_payout
    from tests.money_support import payout_webhook

    async with core_with(database_url, ("acme", Acme())) as runtime:
        stage, fan = await funded_stage(runtime, budget=1_000)
        for _ in range(6):  # the brand's share: 5 a send
            await send(runtime, fan, stage, "acme-rocket")
        admin = await new_viewer(runtime, "paying-admin")

        async def pay(coins: int, key: str):
            return await request_brand_payout(
                runtime.sessions, runtime.payout_providers, runtime.settings,
                admin_id=admin, slug="acme", coins=coins, idempotency_key=key)

        async def balances() -> tuple[int, int]:
            async with runtime.sessions() as session:
                hold = await session.scalar(select(Account.balance).where(
                    Account.code == "brand:acme:payout_hold"))
                return await revenue_balance(session, "acme"), hold or 0

        first = await pay(21, "pay-1")
        assert (first.payout.status, first.payout.coins, first.payout.diamonds,
                first.payout.cash_minor, first.payout.creator_id) == ("pending", 21, 0, 10, None)
        assert first.payout.provider_payout_id == f"sbxpo_{first.payout.id}"
        assert await balances() == (9, 21)
        again = await pay(21, "pay-1")
        assert again.replayed and again.payout.id == first.payout.id
        assert await balances() == (9, 21)
        paid, changed = await payout_webhook(runtime, first.payout.provider_payout_id, "paid")
        assert (paid.status, changed) == ("paid", True)
        assert await balances() == (9, 0)

        second = await pay(9, "pay-2")
        assert await balances() == (0, 9)
        failed, _ = await payout_webhook(runtime, second.payout.provider_payout_id, "failed")
        assert failed.status == "failed"
        assert await balances() == (9, 0)

        month = datetime.now(UTC).strftime("%Y-%m")
        today = datetime.now(UTC).date().isoformat()
        async with runtime.sessions() as session:
            statement = await brand_statement(session, "acme", month)
            assert await audit(session) == []
            settled = [json.loads(body) for body in (await session.scalars(
                select(Event.body).where(Event.stream == "brand:acme",
                                         Event.type == "PayoutSettled")
                .order_by(Event.seq))).all()]
        assert [(line.section, line.label, line.count, line.coins)
                for line in statement.lines] == [
            ("balance", "opening", 0, 0), ("earned", today, 6, 30),
            ("paid out", today, 2, -30), ("payout returned", today, 1, 9),
            ("balance", "closing", 0, 9)]
        assert [(e["payout_id"], e["status"], e["coins"], e["cash_minor"], e["brand"])
                for e in settled] == [(first.payout.id, "paid", 21, 10, "acme"),
                                      (second.payout.id, "failed", 9, 4, "acme")]


@pytest.mark.parametrize("slug, coins, code, message", [
    ("acme", 6, ErrorCode.INSUFFICIENT_COINS,
     "The brand's revenue is 5 coins: it cannot pay out 6."),
    ("acme", 0, ErrorCode.INVALID_AMOUNT, "coins must be between 1 and 1,000,000,000."),
    ("acme", 1, ErrorCode.INVALID_AMOUNT, "This payout is worth less than one cent at the "
                                          "brand payout rate; pay out more coins at once."),
    ("nobody", 5, ErrorCode.NOT_FOUND, "No brand 'nobody' is installed."),
])
async def test_paying_out_more_than_was_earned_or_less_than_a_cent_is_refused_and_changes_nothing(
        database_url, slug, coins, code, message):
    from app.services.payouts import request_brand_payout

    async with core_with(database_url, ("acme", Acme())) as runtime:
        stage, fan = await funded_stage(runtime)
        await send(runtime, fan, stage, "acme-rocket")
        admin = await new_viewer(runtime, "paying-admin")
        before = await snapshot(database_url)
        with pytest.raises(DomainError) as refused:
            await request_brand_payout(runtime.sessions, runtime.payout_providers,
                                       runtime.settings, admin_id=admin, slug=slug,
                                       coins=coins, idempotency_key="pay-x")
        assert (refused.value.code, refused.value.message) == (code, message)
        after = await snapshot(database_url)
        if code is ErrorCode.INSUFFICIENT_COINS:  # a business refusal keeps its key refused
            after["rows"].pop("idempotency_record"), before["rows"].pop("idempotency_record")
        assert after == before


async def test_a_provider_that_does_not_pay_brands_is_not_handed_a_brand_payout(
        database_url, monkeypatch):
    """Brand payouts need a provider that declares it pays brands: otherwise refused before
    any coin is held."""
    from app.sandbox import SandboxPayoutProvider
    from app.services.payouts import request_brand_payout

    monkeypatch.setattr(SandboxPayoutProvider, "pays_brands", False)
    async with core_with(database_url, ("acme", Acme())) as runtime:
        stage, fan = await funded_stage(runtime)
        await send(runtime, fan, stage, "acme-rocket")
        admin = await new_viewer(runtime, "paying-admin")
        before = await snapshot(database_url)
        with pytest.raises(DomainError) as refused:
            await request_brand_payout(runtime.sessions, runtime.payout_providers,
                                       runtime.settings, admin_id=admin, slug="acme", coins=5,
                                       idempotency_key="pay-y")
        assert (refused.value.code, refused.value.message) == (
            ErrorCode.INVALID_INPUT, "The payout provider 'sandbox' does not pay brands; "
                                     "settle the revenue against the budget instead.")
        assert await snapshot(database_url) == before
