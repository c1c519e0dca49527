"""A brand plugin whose every call hangs for five minutes: the bad partner of
``bench.isolation``, loaded with ``LIVEGIFTS_PLUGIN_MODULES=bench.hanging_plugin``."""

from __future__ import annotations

import time

from app import Brand, SendContext, SponsoredGift, Veto, hookimpl

HANG_SECONDS = 300
SKU = "hang-gift"


@hookimpl
def register_brands() -> list[Brand]:
    return [Brand("hangs", "Hangs Forever")]


@hookimpl
def register_sponsored_gifts() -> list[SponsoredGift]:
    return [SponsoredGift(sku=SKU, name="Hang Gift", brand="hangs", coin_price=5,
                          image_url="https://cdn.example.com/hang.webp")]


@hookimpl
def check_send(send: SendContext) -> Veto | None:
    time.sleep(HANG_SECONDS)
    return None
