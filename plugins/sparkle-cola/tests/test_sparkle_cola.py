"""Sparkle Cola's campaign against the real livegifts core (the ``livegifts`` fixture)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from livegifts_sparkle_cola import BRAND, SKU, Campaign

from app.errors import DomainError


def terms(starts: datetime, ends: datetime, **more) -> dict:
    """The core's settings for the plugin: its terms, as LIVEGIFTS_PLUGIN_CONFIG gives them."""
    return {"plugin_config": {BRAND: {"starts": starts.isoformat(), "ends": ends.isoformat(),
                                      **more}}}


def running(**more) -> dict:
    now = datetime.now(UTC)
    return terms(now - timedelta(days=1), now + timedelta(days=1), **more)


async def test_the_can_is_in_the_catalogue_as_sponsored(livegifts):
    await livegifts.start(("sparkle-cola", Campaign()), **running())
    can = (await livegifts.catalogue())[SKU]
    assert (can.name, can.coin_price, can.plugin) == ("Sparkle Cola Can", 100, "sparkle-cola")
    assert livegifts.plugins.records["sparkle-cola"].gifts == [SKU]


async def test_the_viewer_pays_forty_percent_and_the_budget_the_rest(livegifts):
    campaign = Campaign()
    await livegifts.start(("sparkle-cola", campaign), **running())
    await livegifts.fund_brand(BRAND, 1_000)
    stage = await livegifts.go_live("creator")
    fan = await livegifts.viewer("fan", coins=500)
    receipt = await livegifts.send(fan, stage, SKU, quantity=3)
    assert (receipt.coins_paid, receipt.brand_subsidy) == (120, 180)
    assert (receipt.creator_coins, receipt.platform_coins) == (150, 150)  # on the full 300
    assert (await livegifts.wallet(fan)).coins == 380
    assert (await livegifts.wallet(stage.creator_id)).diamonds == 150
    assert await livegifts.budget(BRAND) == 820
    await livegifts.notified()  # gift_sent is told after the sender is answered
    assert [g.quantity for g in campaign.sent] == [3]
    assert await livegifts.audit() == []


async def test_a_viewer_may_send_five_cans_a_day(livegifts):
    await livegifts.start(("sparkle-cola", Campaign()), **running(daily_cap=5))
    await livegifts.fund_brand(BRAND, 10_000)
    stage = await livegifts.go_live("creator")
    fan, other = await livegifts.viewer("fan", 5_000), await livegifts.viewer("other", 5_000)
    await livegifts.send(fan, stage, SKU, quantity=4)
    with pytest.raises(DomainError) as vetoed:
        await livegifts.send(fan, stage, SKU, quantity=2)
    assert vetoed.value.code.value == "SEND_VETOED"
    assert vetoed.value.message == ("Sparkle Cola Cans are limited to 5 per viewer a day; "
                                    "you can send 1 more today.")
    await livegifts.send(fan, stage, SKU)  # the fifth
    await livegifts.send(other, stage, SKU, quantity=5)  # caps are per viewer
    report = await livegifts.report(BRAND)
    assert (report.total.sends, report.total.quantity, report.total.subsidy) == (3, 10, 600)


async def test_an_exhausted_budget_makes_the_can_unavailable(livegifts):
    await livegifts.start(("sparkle-cola", Campaign()), **running())
    await livegifts.fund_brand(BRAND, 100)
    stage = await livegifts.go_live("creator")
    fan = await livegifts.viewer("fan", 1_000)
    await livegifts.send(fan, stage, SKU)  # subsidy 60: 40 left
    with pytest.raises(DomainError) as refused:
        await livegifts.send(fan, stage, SKU)
    assert refused.value.code.value == "SPONSOR_BUDGET_EXHAUSTED"
    assert await livegifts.budget(BRAND) == 40
    assert (await livegifts.wallet(fan)).coins == 960
    assert await livegifts.audit() == []


async def test_outside_the_window_the_can_cannot_be_sent(livegifts):
    now = datetime.now(UTC)
    await livegifts.start(("sparkle-cola", Campaign()),
                          **terms(now - timedelta(days=10), now - timedelta(days=1)))
    await livegifts.fund_brand(BRAND, 1_000)
    stage = await livegifts.go_live("creator")
    fan = await livegifts.viewer("fan", 1_000)
    with pytest.raises(DomainError) as refused:
        await livegifts.send(fan, stage, SKU)
    assert refused.value.code.value == "GIFT_UNAVAILABLE"


async def test_the_daily_cap_starts_again_the_next_day_and_the_window_closes(livegifts):
    """The test kit's clock is the time the core and the plugin see: move it past midnight
    (UTC) and the cap starts again; move it past the campaign's end and the can is gone."""
    starts = datetime(2027, 3, 1, tzinfo=UTC)
    await livegifts.start(("sparkle-cola", Campaign()),
                          **terms(starts, starts + timedelta(days=2), daily_cap=2))
    livegifts.clock.freeze(starts + timedelta(hours=23))
    await livegifts.fund_brand(BRAND, 10_000)
    stage = await livegifts.go_live("creator")
    fan = await livegifts.viewer("fan", 5_000)
    receipt = await livegifts.send(fan, stage, SKU, quantity=2)
    assert receipt.created_at == starts + timedelta(hours=23)
    with pytest.raises(DomainError) as capped:
        await livegifts.send(fan, stage, SKU)
    assert capped.value.message.endswith("you can send 0 more today.")
    livegifts.clock.move(timedelta(hours=2))  # 01:00 the next day
    await livegifts.send(fan, stage, SKU, quantity=2)
    livegifts.clock.move(timedelta(days=1))  # the campaign ended
    with pytest.raises(DomainError) as ended:
        await livegifts.send(fan, stage, SKU)
    assert ended.value.code.value == "GIFT_UNAVAILABLE"
    assert await livegifts.audit() == []


async def test_a_match_during_the_campaign_is_boosted_in_its_score_only(livegifts):
    """A match accepted during the campaign: for its first 90 s each can scores three times
    its value; after, its value; what the viewer pays is the same throughout."""
    from app.models import LiveMatch
    from app.services import matches

    starts = datetime(2027, 3, 1, tzinfo=UTC)
    await livegifts.start(("sparkle-cola", Campaign()), **terms(
        starts, starts + timedelta(days=2), match_boost_multiplier=3, match_boost_seconds=90))
    livegifts.clock.freeze(starts + timedelta(hours=1))
    await livegifts.fund_brand(BRAND, 10_000)
    red, blue = await livegifts.go_live("red"), await livegifts.go_live("blue")
    fan = await livegifts.viewer("fan", 5_000)
    runtime = livegifts.runtime
    invited = await matches.invite(runtime.sessions, runtime.relay, creator_id=red.creator_id,
                                   session_id=red.session_id,
                                   opponent_session_id=blue.session_id, duration_seconds=300,
                                   now=livegifts.clock())
    match = await matches.accept(runtime.sessions, runtime.relay, runtime.plugins,
                                 creator_id=blue.creator_id, match_id=invited.id,
                                 clock=livegifts.clock)
    assert [(b["brand"], b["multiplier"]) for b in matches.boosts_of(match)] == [(BRAND, 3)]
    boosted = await livegifts.send(fan, red, SKU)
    livegifts.clock.move(timedelta(seconds=91))
    plain = await livegifts.send(fan, red, SKU)
    assert (boosted.coins_paid, plain.coins_paid) == (40, 40)
    async with runtime.sessions() as session:
        assert (await session.get(LiveMatch, match.id)).inviter_score == 3 * 100 + 100
    assert await livegifts.audit() == []


def test_the_installed_entry_point_loads_the_campaign():
    from app.plugins import PluginHost
    from app.settings import Settings

    host = PluginHost(Settings(plugins="sparkle-cola"))
    record = host.records["sparkle-cola"]
    assert (record.status, record.gifts, record.brands) == ("active", [SKU], [BRAND])
    assert {"check_send", "quote_gift", "gift_sent", "boost_match"} <= set(record.hooks)
    host.close()
