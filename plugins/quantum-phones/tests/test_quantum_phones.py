"""Quantum Phones' pricing and revenue share against the real livegifts core."""

from __future__ import annotations

import pytest
from livegifts_quantum_phones import BRAND, SKU, QuantumPhones


@pytest.mark.parametrize("quantity, paid", [(1, 500), (9, 4_500), (10, 4_500), (49, 22_050),
                                            (50, 20_000), (51, 20_400)])
async def test_quantity_tiers(livegifts, quantity, paid):
    await livegifts.start(("quantum-phones", QuantumPhones()))
    stage = await livegifts.go_live("creator")
    fan = await livegifts.viewer("fan", coins=100_000)
    receipt = await livegifts.send(fan, stage, SKU, quantity=quantity)
    assert receipt.coins_paid == paid and receipt.brand_subsidy == 0
    assert (await livegifts.wallet(fan)).coins == 100_000 - paid


async def test_the_brand_takes_ten_percent_and_every_coin_is_accounted_for(livegifts):
    await livegifts.start(("quantum-phones", QuantumPhones()))
    stage = await livegifts.go_live("creator")
    fan = await livegifts.viewer("fan", coins=100_000)
    receipt = await livegifts.send(fan, stage, SKU, quantity=13)  # 13 * 450 = 5,850
    assert receipt.coins_paid == 5_850
    assert (receipt.brand_coins, receipt.creator_coins, receipt.platform_coins) == \
        (585, 2_925, 2_340)
    assert (await livegifts.wallet(stage.creator_id)).diamonds == 2_925
    report = await livegifts.report(BRAND)
    assert (report.total.coins, report.total.brand_coins) == (5_850, 585)
    assert [line.key for line in report.by_creator] == ["creator"]
    assert await livegifts.audit() == []


async def test_tiers_and_the_brand_share_come_from_the_plugins_settings(livegifts):
    await livegifts.start(("quantum-phones", QuantumPhones()), plugin_config={BRAND: {
        "tiers": [[1, 100], [5, 50]], "brand_share_percent": 20}})
    stage = await livegifts.go_live("creator")
    fan = await livegifts.viewer("fan", coins=100_000)
    receipt = await livegifts.send(fan, stage, SKU, quantity=5)  # 5 * 250 = 1,250
    assert (receipt.coins_paid, receipt.brand_coins) == (1_250, 250)
    assert (await livegifts.send(fan, stage, SKU, quantity=4)).coins_paid == 2_000
    assert await livegifts.audit() == []


async def test_the_phone_is_in_the_catalogue_as_sponsored(livegifts):
    await livegifts.start(("quantum-phones", QuantumPhones()))
    phone = (await livegifts.catalogue())[SKU]
    assert (phone.name, phone.coin_price, phone.plugin) == ("Quantum Phone", 500,
                                                            "quantum-phones")


def test_the_installed_entry_point_loads_the_plugin():
    from app.plugins import PluginHost
    from app.settings import Settings

    host = PluginHost(Settings(plugins="quantum-phones"))
    record = host.records["quantum-phones"]
    assert (record.status, record.gifts, record.brands) == ("active", [SKU], [BRAND])
    assert record.version == "1.0.0"
    host.close()
