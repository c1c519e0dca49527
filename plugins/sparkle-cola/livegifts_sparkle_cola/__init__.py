"""Sparkle Cola's campaign: a sponsored can the brand subsidises, within a window, with a cap.

* The Sparkle Cola Can lists at 100 coins. During the campaign a viewer pays
  ``viewer_pays_percent`` (default 40) of that, rounded up, and Sparkle Cola's
  sponsorship budget pays the rest, so the creator still earns on the full value under
  the published rate card.
* The campaign runs from ``starts`` to ``ends`` (ISO 8601 with a UTC offset).
* Each viewer may send at most ``daily_cap`` cans a day (UTC).
* Matches that start during the campaign are boosted: for their first
  ``match_boost_seconds`` (default 60), each can counts ``match_boost_multiplier``
  (default 2) times its value in the match's score.

The terms come from the core's settings for this plugin, ``LIVEGIFTS_PLUGIN_CONFIG``::

    LIVEGIFTS_PLUGIN_CONFIG='{"sparkle-cola": {"starts": "2027-01-01T00:00:00+00:00",
                                               "ends": "2027-02-01T00:00:00+00:00",
                                               "daily_cap": 5}}'
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from typing import Any

from app import (
    Brand,
    MatchBoost,
    MatchContext,
    Quote,
    SendContext,
    SentGift,
    SponsoredGift,
    Veto,
    hookimpl,
)

BRAND = "sparkle-cola"
SKU = "sparkle-cola-can"
LIST_PRICE = 100
DEFAULTS = {"starts": "2026-11-01T00:00:00+00:00", "ends": "2030-01-01T00:00:00+00:00",
            "daily_cap": 5, "viewer_pays_percent": 40, "match_boost_multiplier": 2,
            "match_boost_seconds": 60}

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Terms:
    """The campaign's terms, read from the plugin's settings (``config``)."""

    starts: datetime
    ends: datetime
    daily_cap: int
    viewer_pays_percent: int
    match_boost_multiplier: int
    match_boost_seconds: int

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Terms:
        values = {**DEFAULTS, **config}
        terms = cls(datetime.fromisoformat(values["starts"]),
                    datetime.fromisoformat(values["ends"]), values["daily_cap"],
                    values["viewer_pays_percent"], values["match_boost_multiplier"],
                    values["match_boost_seconds"])
        if terms.starts.utcoffset() is None or terms.ends.utcoffset() is None or \
                terms.ends <= terms.starts or type(terms.daily_cap) is not int or \
                terms.daily_cap < 1 or type(terms.viewer_pays_percent) is not int or \
                not 0 < terms.viewer_pays_percent <= 100:
            raise ValueError("the campaign needs starts < ends (with UTC offsets), an integer "
                             "daily_cap >= 1 and an integer viewer_pays_percent in 1..100")
        return terms


class Campaign:
    def __init__(self) -> None:
        self.sent: list[SentGift] = []

    @hookimpl
    def register_brands(self) -> list[Brand]:
        return [Brand(slug=BRAND, name="Sparkle Cola")]

    @hookimpl
    def register_sponsored_gifts(self, config: Mapping[str, Any]) -> list[SponsoredGift]:
        terms = Terms.of(config)
        return [SponsoredGift(
            sku=SKU, name="Sparkle Cola Can", brand=BRAND, coin_price=LIST_PRICE,
            image_file=files(__package__) / "can.svg",  # served by livegifts
            animation_url="https://cdn.example.com/sparkle-cola/fizz.json",
            available_from=terms.starts, available_until=terms.ends)]

    @hookimpl
    def check_send(self, send: SendContext, config: Mapping[str, Any]) -> Veto | None:
        terms = Terms.of(config)
        if not terms.starts <= send.at < terms.ends:
            return Veto(f"The Sparkle Cola campaign runs from {terms.starts:%Y-%m-%d} "
                        f"to {terms.ends:%Y-%m-%d}.")
        left = terms.daily_cap - send.viewer_sent_today
        if send.quantity > left:
            return Veto(f"Sparkle Cola Cans are limited to {terms.daily_cap} per viewer a day; "
                        f"you can send {max(left, 0)} more today.")
        return None

    @hookimpl
    def quote_gift(self, send: SendContext, config: Mapping[str, Any]) -> Quote:
        value = send.list_price * send.quantity
        viewer_pays = -(-value * Terms.of(config).viewer_pays_percent // 100)  # rounded up
        return Quote(viewer_pays=viewer_pays, brand_subsidy=value - viewer_pays)

    @hookimpl
    def boost_match(self, match: MatchContext, config: Mapping[str, Any]) -> MatchBoost | None:
        terms = Terms.of(config)
        if not terms.starts <= match.at < terms.ends:
            return None
        return MatchBoost(brand=BRAND, multiplier=terms.match_boost_multiplier,
                          seconds=min(terms.match_boost_seconds, match.duration_seconds))

    @hookimpl
    def gift_sent(self, gift: SentGift) -> None:
        if any(seen.delivery_id == gift.delivery_id for seen in self.sent):
            return  # told again (at least once): counted already
        self.sent.append(gift)
        logger.info("sparkle-cola: %s can(s) sent in session %s", gift.quantity, gift.session_id)


campaign = Campaign()
