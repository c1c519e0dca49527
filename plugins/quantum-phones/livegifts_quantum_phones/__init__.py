"""Quantum Phones' sponsored gift: the more you send at once, the less each costs.

* The Quantum Phone lists at 500 coins. Sent 10 at a time or more each costs 10% less,
  50 or more 20% less (rounded up to whole coins). Viewers pay it all: no subsidy.
* Revenue share: Quantum Phones takes 10% of the value (rounded down); the creator
  gets the rate card's share of the value (rounded down); the platform gets the rest.

Both come from the core's settings for this plugin (``LIVEGIFTS_PLUGIN_CONFIG``):
``{"quantum-phones": {"tiers": [[50, 80], [10, 90], [1, 100]], "brand_share_percent": 10}}``,
each tier ``[from this quantity, percent of the list price]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app import Brand, Quote, RateCardTerms, RevenueSplit, SendContext, SponsoredGift, hookimpl

BRAND = "quantum-phones"
SKU = "quantum-phone"
LIST_PRICE = 500
TIERS = ((50, 80), (10, 90), (1, 100))  # (from this quantity, percent of list price)
BRAND_SHARE_PERCENT = 10


def unit_percent(quantity: int, tiers: Any = TIERS) -> int:
    """The percent of the list price each costs when ``quantity`` are sent at once."""
    ordered = sorted(((int(threshold), int(percent)) for threshold, percent in tiers),
                     reverse=True)
    return next(percent for threshold, percent in ordered if quantity >= threshold)


class QuantumPhones:
    @hookimpl
    def register_brands(self) -> list[Brand]:
        return [Brand(slug=BRAND, name="Quantum Phones")]

    @hookimpl
    def register_sponsored_gifts(self) -> list[SponsoredGift]:
        return [SponsoredGift(sku=SKU, name="Quantum Phone", brand=BRAND, coin_price=LIST_PRICE,
                              image_url="https://cdn.example.com/quantum/phone.webp")]

    @hookimpl
    def quote_gift(self, send: SendContext, config: Mapping[str, Any]) -> Quote:
        percent = unit_percent(send.quantity, config.get("tiers", TIERS))
        total = send.list_price * send.quantity * percent
        return Quote(viewer_pays=-(-total // 100))

    @hookimpl
    def split_revenue(self, quote: Quote, rate_card: RateCardTerms,
                      config: Mapping[str, Any]) -> RevenueSplit:
        brand = quote.value * int(config.get("brand_share_percent", BRAND_SHARE_PERCENT)) // 100
        creator = quote.value * rate_card.creator_share_bps // 10_000
        return RevenueSplit(creator_coins=creator, platform_coins=quote.value - creator - brand,
                            brand_coins=brand)


plugin = QuantumPhones()
