"""Tally: a brand plugin that writes every ``gift_sent`` it is told of to a file (its
``log`` setting), or hangs in it when its ``hang`` setting is on."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from app import Brand, SentGift, SponsoredGift, hookimpl


class Tally:
    @hookimpl
    def register_brands(self) -> list[Brand]:
        return [Brand("tally", "Tally")]

    @hookimpl
    def register_sponsored_gifts(self) -> list[SponsoredGift]:
        return [SponsoredGift(sku="tally-token", name="Tally Token", brand="tally",
                              coin_price=5, image_url="https://cdn.example.com/token.webp")]

    @hookimpl
    def gift_sent(self, gift: SentGift, config: Mapping[str, Any]) -> None:
        if config.get("hang"):
            time.sleep(30)
        with open(config["log"], "a") as log:
            log.write(json.dumps({"delivery_id": gift.delivery_id,
                                  "receipt_id": gift.receipt_id}) + "\n")


plugin = Tally()
