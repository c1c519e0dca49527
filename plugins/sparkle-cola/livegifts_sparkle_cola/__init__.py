"""Sparkle Cola's campaign: a sponsored can the brand subsidises, within a window, with a cap.

* The Sparkle Cola Can lists at 100 coins. During the campaign a viewer pays 40% of
  that (rounded up) and Sparkle Cola's sponsorship budget pays the rest, so the
  creator still earns on the full value under the published rate card.
* The campaign runs from ``SPARKLE_COLA_STARTS`` to ``SPARKLE_COLA_ENDS`` (ISO 8601).
* Each viewer may send at most ``SPARKLE_COLA_DAILY_CAP`` cans a day (UTC).
"""

from __future__ import annotations

import logging
import os
from datetime import datetime

from app import Brand, Quote, SendContext, SentGift, SponsoredGift, Veto, hookimpl

BRAND = "sparkle-cola"
SKU = "sparkle-cola-can"
LIST_PRICE = 100

logger = logging.getLogger(__name__)


class Campaign:
    def __init__(self, starts: datetime, ends: datetime, daily_cap: int = 5,
                 viewer_pays_percent: int = 40) -> None:
        if not 0 < viewer_pays_percent <= 100 or daily_cap < 1 or ends <= starts:
            raise ValueError("a campaign needs a window, a cap >= 1 and a share in 1..100")
        self.starts, self.ends = starts, ends
        self.daily_cap, self.viewer_pays_percent = daily_cap, viewer_pays_percent
        self.sent: list[SentGift] = []

    @classmethod
    def from_environment(cls) -> Campaign:
        return cls(
            starts=datetime.fromisoformat(os.environ.get("SPARKLE_COLA_STARTS",
                                                         "2026-11-01T00:00:00+00:00")),
            ends=datetime.fromisoformat(os.environ.get("SPARKLE_COLA_ENDS",
                                                       "2030-01-01T00:00:00+00:00")),
            daily_cap=int(os.environ.get("SPARKLE_COLA_DAILY_CAP", "5")))

    @hookimpl
    def register_brands(self) -> list[Brand]:
        return [Brand(slug=BRAND, name="Sparkle Cola")]

    @hookimpl
    def register_sponsored_gifts(self) -> list[SponsoredGift]:
        return [SponsoredGift(
            sku=SKU, name="Sparkle Cola Can", brand=BRAND, coin_price=LIST_PRICE,
            image_url="https://cdn.example.com/sparkle-cola/can.webp",
            animation_url="https://cdn.example.com/sparkle-cola/fizz.json",
            available_from=self.starts, available_until=self.ends)]

    @hookimpl
    def check_send(self, send: SendContext) -> Veto | None:
        if not self.starts <= send.at < self.ends:
            return Veto(f"The Sparkle Cola campaign runs from {self.starts:%Y-%m-%d} "
                        f"to {self.ends:%Y-%m-%d}.")
        left = self.daily_cap - send.viewer_sent_today
        if send.quantity > left:
            return Veto(f"Sparkle Cola Cans are limited to {self.daily_cap} per viewer a day; "
                        f"you can send {max(left, 0)} more today.")
        return None

    @hookimpl
    def quote_gift(self, send: SendContext) -> Quote:
        value = send.list_price * send.quantity
        viewer_pays = -(-value * self.viewer_pays_percent // 100)  # rounded up, in coins
        return Quote(viewer_pays=viewer_pays, brand_subsidy=value - viewer_pays)

    @hookimpl
    def gift_sent(self, gift: SentGift) -> None:
        self.sent.append(gift)
        logger.info("sparkle-cola: %s can(s) sent in session %s", gift.quantity, gift.session_id)


campaign = Campaign.from_environment()
