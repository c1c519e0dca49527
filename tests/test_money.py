"""Payouts, refunds, chargebacks, safeguards and statements, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select, update

from app.errors import DomainError, ErrorCode
from app.models import Account, LimitChange
from app.services import payouts, safeguards, statements, wallets
from app.services.payouts import WebhookError
from app.testing import audit
from tests.gifting_support import new_viewer, send, stage
from tests.money_support import (
    buy,
    earn_diamonds,
    payout_webhook,
    request,
    signed,
    store_webhook,
)
from tests.support import snapshot


async def balances(runtime, user_id: int) -> dict[str, int]:
    async with runtime.sessions() as session:
        rows = await session.execute(select(Account.code, Account.balance).where(
            Account.owner_user_id == user_id))
        return {code.split(":")[-1]: balance for code, balance in rows}


async def assert_refused(runtime, code, coro, *, records_key=False):
    before = await snapshot(runtime.settings.database_url)
    with pytest.raises(DomainError) as refused:
        await coro
    assert refused.value.code is code, refused.value.message
    after = await snapshot(runtime.settings.database_url)
    if records_key:
        before["rows"]["idempotency_record"] += 1
    assert after == before
    return refused.value


# Payouts ----------------------------------------------------------------------------------

async def test_a_payout_holds_diamonds_then_settles_once(runtime):
    creator = await new_viewer(runtime, "creator")
    await earn_diamonds(runtime, creator, 5_000)
    result = await request(runtime, creator, 2_000, "p-1")
    payout = result.payout
    assert (payout.status, payout.cash_minor, payout.currency) == ("pending", 1_000, "USD")
    assert payout.provider_payout_id == f"sbxpo_{payout.id}"
    assert await balances(runtime, creator) == {"wallet": 0, "earnings": 3_000,
                                                "payout_hold": 2_000}
    again = await request(runtime, creator, 2_000, "p-1")
    assert again.replayed and again.payout.id == payout.id

    settled, changed = await payout_webhook(runtime, payout.provider_payout_id, "paid")
    assert (settled.status, changed) == ("paid", True)
    before = await snapshot(runtime.settings.database_url)
    settled, changed = await payout_webhook(runtime, payout.provider_payout_id, "paid")
    assert (settled.status, changed) == ("paid", False)
    assert await snapshot(runtime.settings.database_url) == before
    assert await balances(runtime, creator) == {"wallet": 0, "earnings": 3_000,
                                                "payout_hold": 0}
    with pytest.raises(WebhookError) as conflict:
        await payout_webhook(runtime, payout.provider_payout_id, "failed")
    assert conflict.value.status == 409
    async with runtime.sessions() as session:
        assert await audit(session) == []
        listed = await payouts.payouts_of(session, creator, limit=10, before_id=None)
    assert [p.status for p in listed] == ["paid"]


async def test_a_failed_payout_returns_the_diamonds(runtime):
    creator = await new_viewer(runtime, "creator")
    await earn_diamonds(runtime, creator, 5_000)
    payout = (await request(runtime, creator, 5_000, "p-1")).payout
    failed, _ = await payout_webhook(runtime, payout.provider_payout_id, "failed")
    assert failed.status == "failed"
    assert await balances(runtime, creator) == {"wallet": 0, "earnings": 5_000,
                                                "payout_hold": 0}


async def test_payout_refusals_change_nothing(runtime):
    creator, other = await new_viewer(runtime, "creator"), await new_viewer(runtime, "other")
    await earn_diamonds(runtime, creator, 3_000_000)
    minimum = runtime.settings.payout_minimum_diamonds
    error = await assert_refused(runtime, ErrorCode.PAYOUT_BELOW_MINIMUM,
                                 request(runtime, creator, minimum - 1, "small"))
    assert error.message == "A payout must be at least 1,000 diamonds."
    await request(runtime, creator, 1_500_000, "big")
    error = await assert_refused(runtime, ErrorCode.PAYOUT_ABOVE_DAILY_MAXIMUM,
                                 request(runtime, creator, 500_001, "too-much"))
    assert error.message == ("Payouts are limited to 2,000,000 diamonds a day; "
                             "500,000 remain today.")
    await earn_diamonds(runtime, other, 1_500)
    error = await assert_refused(runtime, ErrorCode.INSUFFICIENT_DIAMONDS,
                                 request(runtime, other, 2_000, "broke"), records_key=True)
    assert error.message == "Not enough diamonds: this needs 2000 and the balance is 1500."
    mine = (await request(runtime, creator, 1_000, "mine")).payout
    error = await assert_refused(runtime, ErrorCode.NOT_FOUND, payouts.cancel_payout(
        runtime.sessions, creator_id=other, payout_id=mine.id))
    assert error.message == "No payout of yours has this ID."
    before = await snapshot(runtime.settings.database_url)
    for body, signature, status, message in [
        (*signed({"payout_id": mine.provider_payout_id, "status": "paid"})[:1], "sha256=00",
         400, "webhook rejected: the signature does not match the body"),
        (*signed({"payout_id": "sbxpo_999999", "status": "paid"}), 404,
         "unknown payout 'sbxpo_999999'"),
    ]:
        with pytest.raises(WebhookError) as rejected:
            await payouts.settle_from_webhook(runtime.sessions, runtime.payout_providers,
                                              "sandbox", body, signature)
        assert (rejected.value.status, rejected.value.message) == (status, message)
    assert await snapshot(runtime.settings.database_url) == before


async def test_a_creator_cancels_a_payout_not_yet_with_the_provider(runtime):
    from app.models import Payout

    creator = await new_viewer(runtime, "creator")
    await earn_diamonds(runtime, creator, 6_000)
    submitted = (await request(runtime, creator, 2_000, "sent")).payout
    error = await assert_refused(runtime, ErrorCode.PAYOUT_NOT_PENDING, payouts.cancel_payout(
        runtime.sessions, creator_id=creator, payout_id=submitted.id))
    assert error.message == ("This payout is already with the payout provider; it can no "
                             "longer be cancelled.")
    payout = (await request(runtime, creator, 4_000, "p")).payout
    async with runtime.sessions() as session, session.begin():  # not handed over yet
        await session.execute(update(Payout).where(Payout.id == payout.id)
                              .values(provider_payout_id=None))
    cancelled = await payouts.cancel_payout(runtime.sessions, creator_id=creator,
                                            payout_id=payout.id)
    assert (cancelled.status, cancelled.failure_reason) == ("failed", "cancelled by the creator")
    assert (await balances(runtime, creator))["earnings"] == 4_000
    await assert_refused(runtime, ErrorCode.PAYOUT_NOT_PENDING, payouts.cancel_payout(
        runtime.sessions, creator_id=creator, payout_id=payout.id))


# Refunds and chargebacks ------------------------------------------------------------------

async def test_a_refund_removes_unspent_coins_and_records_a_debt_for_spent_ones(runtime):
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan")
    await buy(runtime, fan, "coins-700", txn="store-1")
    await send(runtime, fan, where, "money-gun")  # 500 coins spent
    reversed_ = await store_webhook(runtime, "refund", "store-1")
    assert (reversed_.reversal.coins_removed, reversed_.reversal.debt_recorded) == (200, 500)
    assert reversed_.clawed_diamonds == 0  # a refund does not touch the creator
    assert await balances(runtime, fan) == {"wallet": 0, "earnings": 0, "coin_debt": -500}

    before = await snapshot(runtime.settings.database_url)
    with pytest.raises(WebhookError) as again:
        await store_webhook(runtime, "chargeback", "store-1")
    assert (again.value.status, again.value.message) == (
        409, "this purchase was already reversed; nothing was changed")
    assert await snapshot(runtime.settings.database_url) == before

    await buy(runtime, fan, "coins-350", txn="store-2")  # settles 350 of the debt first
    assert await balances(runtime, fan) == {"wallet": 0, "earnings": 0, "coin_debt": -150}
    await buy(runtime, fan, "coins-700", txn="store-3")
    assert await balances(runtime, fan) == {"wallet": 550, "earnings": 0, "coin_debt": 0}
    async with runtime.sessions() as session:
        assert await audit(session) == []


async def test_a_chargeback_claws_back_diamonds_with_a_reason(runtime):
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan")
    await buy(runtime, fan, "coins-700", txn="stolen-card")
    await send(runtime, fan, where, "hand-hearts", quantity=3)  # 300 coins, 150 diamonds
    await send(runtime, fan, where, "doughnut", quantity=2)     # 60 coins, 30 diamonds
    result = await store_webhook(runtime, "chargeback", "stolen-card")
    assert result.reversal.debt_recorded == 360 and result.clawed_diamonds == 180
    assert (await balances(runtime, where.creator_id))["earnings"] == 0
    async with runtime.sessions() as session:
        clawbacks = await statements.clawbacks_of(session, where.creator_id, limit=10,
                                                  before_id=None)
        assert [c.diamonds for c in clawbacks] == [150, 30]
        assert clawbacks[0].reason.startswith("Chargeback: the coins fan paid for this gift "
                                              "were charged back by the store (sandbox")
        assert await audit(session) == []


async def test_a_chargeback_takes_back_only_what_the_creator_still_holds(runtime):
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan")
    await buy(runtime, fan, "coins-7000", txn="stolen")
    await send(runtime, fan, where, "sports-car")  # 7000 coins, 3500 diamonds
    await request(runtime, where.creator_id, 3_000, "cash-out")
    result = await store_webhook(runtime, "chargeback", "stolen")
    assert result.clawed_diamonds == 500
    assert (await balances(runtime, where.creator_id))["earnings"] == 0


# Safeguards -------------------------------------------------------------------------------

def years_ago(years: int, days: int = 0) -> date:
    today = datetime.now(UTC).date()
    try:
        birthday = today.replace(year=today.year - years)
    except ValueError:  # 29 February
        birthday = today.replace(year=today.year - years, day=28)
    return birthday + timedelta(days=days)


async def test_age_rules_at_their_boundary(runtime):
    where = await stage(runtime)
    turns_18_tomorrow = await new_viewer(runtime, "almost", 100, birthdate=years_ago(18, 1))
    turned_18_today = await new_viewer(runtime, "today", 100, birthdate=years_ago(18))
    unknown = await new_viewer(runtime, "unknown", 100, birthdate=None)
    error = await assert_refused(runtime, ErrorCode.AGE_RESTRICTED,
                                 send(runtime, turns_18_tomorrow, where))
    assert error.message == "Sending gifts needs you to be at least 18."
    error = await assert_refused(runtime, ErrorCode.BIRTHDATE_REQUIRED, send(runtime, unknown,
                                                                             where))
    assert error.message == ("Your birthdate is needed before sending gifts; add it with "
                             "updateProfile.")
    assert (await send(runtime, turned_18_today, where)).receipt.coins_paid == 1
    await buy(runtime, turned_18_today, "coins-70")  # adults buy coins
    error = await assert_refused(runtime, ErrorCode.AGE_RESTRICTED,
                                 buy(runtime, turns_18_tomorrow, "coins-70"))
    assert error.message == "Buying coins needs you to be at least 18."

    young_creator = await new_viewer(runtime, "teen-streamer", birthdate=years_ago(16))
    from app.services.live import start_session
    async with runtime.sessions() as session, session.begin():
        live, _ = await start_session(session, young_creator, "hi")
    teen_stage = type(where)(young_creator, live.id, where.gifts)
    error = await assert_refused(runtime, ErrorCode.AGE_RESTRICTED,
                                 send(runtime, turned_18_today, teen_stage))
    assert error.message == "Receiving gifts needs the creator to be at least 18."


async def test_a_daily_cap_at_its_boundary_and_tightening_at_once(runtime):
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 10_000)
    async with runtime.sessions() as session, session.begin():
        change = await safeguards.change_limit(session, fan, safeguards.DAILY, amount=130)
    assert change.effective_at <= datetime.now(UTC)  # a first cap tightens: at once
    await send(runtime, fan, where, "hand-hearts")      # 100
    await send(runtime, fan, where, "doughnut")          # 130: exactly at the cap
    error = await assert_refused(runtime, ErrorCode.DAILY_CAP_REACHED,
                                 send(runtime, fan, where, "rose"))
    assert error.message == ("This gift costs 1 coins and would pass your daily limit of 130 "
                             "(spent so far: 130).")


async def test_loosening_waits_24_hours_and_a_later_change_supersedes_it(runtime):
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 10_000)
    async with runtime.sessions() as session, session.begin():
        await safeguards.change_limit(session, fan, safeguards.MONTHLY, amount=50)
        loosened = await safeguards.change_limit(session, fan, safeguards.MONTHLY, amount=500)
    assert loosened.effective_at - datetime.now(UTC) > timedelta(hours=23, minutes=59)
    await send(runtime, fan, where, "doughnut")  # 30
    await assert_refused(runtime, ErrorCode.MONTHLY_CAP_REACHED, send(runtime, fan, where,
                                                                      "doughnut"))
    async with runtime.sessions() as session, session.begin():  # a day passes
        await session.execute(update(LimitChange).where(LimitChange.id == loosened.id)
                              .values(effective_at=datetime.now(UTC) - timedelta(seconds=1)))
    await send(runtime, fan, where, "doughnut")
    async with runtime.sessions() as session, session.begin():
        await safeguards.change_limit(session, fan, safeguards.MONTHLY, amount=None)  # remove
        pending = await safeguards.pending_changes(session, fan, datetime.now(UTC))
        assert [(p.kind, p.amount) for p in pending] == [("monthly_cap", None)]
        await safeguards.change_limit(session, fan, safeguards.MONTHLY, amount=60)  # tighten
        assert await safeguards.pending_changes(session, fan, datetime.now(UTC)) == []
        assert (await safeguards.own_limits(session, fan, datetime.now(UTC))).monthly_cap == 60


async def test_cool_off_applies_at_once_and_ends_only_after_24_hours(runtime):
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 1_000)
    async with runtime.sessions() as session, session.begin():
        await safeguards.change_limit(session, fan, safeguards.COOLOFF, cooloff_days=7)
    error = await assert_refused(runtime, ErrorCode.COOLING_OFF, send(runtime, fan, where))
    assert error.message.startswith("You chose a break from gifting until ")
    async with runtime.sessions() as session, session.begin():
        ended = await safeguards.change_limit(session, fan, safeguards.COOLOFF, cooloff_days=0)
    assert ended.effective_at > datetime.now(UTC) + timedelta(hours=23)
    await assert_refused(runtime, ErrorCode.COOLING_OFF, send(runtime, fan, where))


async def test_platform_caps_bound_every_viewer(runtime):
    runtime.settings = runtime.settings.model_copy(update={"default_daily_cap_coins": 40})
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 1_000)
    async with runtime.sessions() as session, session.begin():
        await safeguards.change_limit(session, fan, safeguards.DAILY, amount=500)
    await send(runtime, fan, where, "doughnut")
    error = await assert_refused(runtime, ErrorCode.DAILY_CAP_REACHED,
                                 send(runtime, fan, where, "doughnut"))
    assert "daily limit of 40" in error.message


@pytest.mark.parametrize("kind, value, message", [
    (safeguards.DAILY, -1, "dailyCapCoins must be between 0 and 100,000,000 coins"),
    (safeguards.COOLOFF, 4000, "coolOffDays must be between 0 and 3650."),
])
async def test_bad_limits_are_refused(runtime, kind, value, message):
    fan = await new_viewer(runtime, "fan")
    before = await snapshot(runtime.settings.database_url)
    with pytest.raises(DomainError, match=message):
        async with runtime.sessions() as session, session.begin():
            if kind == safeguards.COOLOFF:
                await safeguards.change_limit(session, fan, kind, cooloff_days=value)
            else:
                await safeguards.change_limit(session, fan, kind, amount=value)
    assert await snapshot(runtime.settings.database_url) == before


# Statements -------------------------------------------------------------------------------

async def test_statements_for_viewers_and_creators(runtime):
    where = await stage(runtime, "star")
    fan = await new_viewer(runtime, "fan")
    await buy(runtime, fan, "coins-700", txn="s-1")
    await buy(runtime, fan, "coins-70", txn="s-2")
    await send(runtime, fan, where, "hand-hearts", quantity=2)
    await send(runtime, fan, where, "rose", quantity=10)
    await store_webhook(runtime, "refund", "s-2")
    month = datetime.now(UTC).strftime("%Y-%m")
    async with runtime.sessions() as session:
        viewer = await statements.viewer_statement(session, fan, month)
        earned = await statements.creator_earnings(
            session, where.creator_id, datetime.now(UTC).date(),
            datetime.now(UTC).date() + timedelta(days=1))
        held = await wallets.wallet(session, fan)
    assert [(line.label, line.coins, line.money_minor) for line in viewer.section("purchase")] \
        == [("700 Coins", 700, 999), ("70 Coins", 70, 99)]
    assert [(line.label, line.count, line.coins) for line in viewer.section("gifts to creator")] \
        == [("star", 2, 210)]
    assert [line.coins for line in viewer.section("refund")] == [-70]
    assert held.coins == 770 - 210 - 70
    assert [(line.label, line.diamonds) for line in earned.section("by gift")] == \
        [("Hand Hearts", 100), ("Rose", 5)]
    assert [line.label for line in earned.section("by brand")] == ["(not sponsored)"]
    assert [line.count for line in earned.section("by session")] == [2]
    csv_text = viewer.to_csv()
    assert csv_text.splitlines()[0] == "section,label,count,coins,diamonds,money_minor,currency,at"
    assert "gifts to creator,star,2,210" in csv_text
    with pytest.raises(DomainError, match="month must look like 2026-11."):
        async with runtime.sessions() as session:
            await statements.viewer_statement(session, fan, "November")


async def test_a_payout_never_handed_to_the_provider_is_handed_over_later(runtime):
    from datetime import timedelta as span

    from app.models import Payout

    creator = await new_viewer(runtime, "creator")
    await earn_diamonds(runtime, creator, 3_000)
    payout = (await request(runtime, creator, 3_000, "p")).payout
    async with runtime.sessions() as session, session.begin():  # as if the server had died
        await session.execute(update(Payout).where(Payout.id == payout.id)
                              .values(provider_payout_id=None))
    assert await payouts.submit_stranded(runtime.sessions, runtime.payout_providers,
                                         older_than=span(0)) == 1
    async with runtime.sessions() as session:
        handed = await session.get(Payout, payout.id)
    assert (handed.status, handed.provider_payout_id) == ("pending", f"sbxpo_{payout.id}")
    assert await payouts.submit_stranded(runtime.sessions, runtime.payout_providers,
                                         older_than=span(0)) == 0


async def test_a_second_chargeback_never_claws_back_the_same_gift_twice(runtime):
    stage_one = await stage(runtime, "first-star")
    stage_two = await stage(runtime, "second-star")
    fan = await new_viewer(runtime, "fan")
    await buy(runtime, fan, "coins-700", txn="card-1")
    await send(runtime, fan, stage_one, "hand-hearts")           # 100 coins, 50 diamonds
    await buy(runtime, fan, "coins-700", txn="card-2")
    await send(runtime, fan, stage_two, "hand-hearts", quantity=7)  # 700 coins, 350 diamonds
    await earn_diamonds(runtime, stage_two.creator_id, 1_000)   # other earnings of the creator
    first = await store_webhook(runtime, "chargeback", "card-2")
    second = await store_webhook(runtime, "chargeback", "card-1")
    # card-2: 600 of its coins were still in the wallet; 100 spent: half of them are diamonds.
    assert first.clawed_diamonds == 50
    # card-1: all 700 spent; newest gifts first, and that gift has only 300 diamonds left.
    assert second.clawed_diamonds == 300
    async with runtime.sessions() as session:
        clawed = await statements.clawbacks_of(session, stage_two.creator_id, limit=10,
                                               before_id=None)
        assert sum(c.diamonds for c in clawed) == 350  # exactly what the gift earned, no more
        assert await audit(session) == []


async def test_statement_months_out_of_range_are_refused(runtime):
    fan = await new_viewer(runtime, "fan")
    with pytest.raises(DomainError, match="month must look like 2026-11."):
        async with runtime.sessions() as session:
            await statements.viewer_statement(session, fan, "9999-12")
