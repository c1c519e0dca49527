"""Sparkle Cola's campaign against the real livegifts core (the ``livegifts`` fixture)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from livegifts_sparkle_cola import BRAND, SKU, Campaign

from app.errors import DomainError


def running_campaign(**kwargs) -> Campaign:
    now = datetime.now(UTC)
    return Campaign(starts=now - timedelta(days=1), ends=now + timedelta(days=1), **kwargs)


async def test_the_can_is_in_the_catalogue_as_sponsored(livegifts):
    await livegifts.start(("sparkle-cola", running_campaign()))
    can = (await livegifts.catalogue())[SKU]
    assert (can.name, can.coin_price, can.plugin) == ("Sparkle Cola Can", 100, "sparkle-cola")
    assert livegifts.plugins.records["sparkle-cola"].gifts == [SKU]


async def test_the_viewer_pays_forty_percent_and_the_budget_the_rest(livegifts):
    campaign = running_campaign()
    await livegifts.start(("sparkle-cola", campaign))
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
    await livegifts.start(("sparkle-cola", running_campaign(daily_cap=5)))
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
    await livegifts.start(("sparkle-cola", running_campaign()))
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
    ended = Campaign(starts=now - timedelta(days=10), ends=now - timedelta(days=1))
    await livegifts.start(("sparkle-cola", ended))
    await livegifts.fund_brand(BRAND, 1_000)
    stage = await livegifts.go_live("creator")
    fan = await livegifts.viewer("fan", 1_000)
    with pytest.raises(DomainError) as refused:
        await livegifts.send(fan, stage, SKU)
    assert refused.value.code.value == "GIFT_UNAVAILABLE"


def test_the_installed_entry_point_loads_the_campaign():
    from app.plugins import PluginHost
    from app.settings import Settings

    host = PluginHost(Settings(plugins="sparkle-cola"))
    record = host.records["sparkle-cola"]
    assert (record.status, record.gifts, record.brands) == ("active", [SKU], [BRAND])
    assert {"check_send", "quote_gift", "gift_sent"} <= set(record.hooks)
    host.close()
