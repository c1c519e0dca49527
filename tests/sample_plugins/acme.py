"""Acme: a well-behaved brand plugin whose answers a test can turn into bad ones."""

from __future__ import annotations

import time
from pathlib import Path

from app import (
    Brand,
    BrandShare,
    MatchBoost,
    MatchContext,
    Quote,
    RateCardTerms,
    RevenueSplit,
    SendContext,
    SentGift,
    SponsoredGift,
    Veto,
    hookimpl,
)


class Acme:
    brand = "acme"
    sku = "acme-rocket"

    def __init__(self, mode: str = "ok", subsidy_percent: int = 50, veto: str | None = None,
                 boost: tuple[int, int] | None = None):
        self.mode, self.subsidy_percent, self.veto = mode, subsidy_percent, veto
        self.boost = boost  # (multiplier, seconds) for every match
        self.asked: list[MatchContext] = []
        self.sent: list[SentGift] = []
        self.refused: set[str] = set()

    @hookimpl
    def register_brands(self) -> list[Brand]:
        return [Brand(self.brand, self.brand.title())]

    @hookimpl
    def register_sponsored_gifts(self) -> list[SponsoredGift]:
        return [SponsoredGift(sku=self.sku, name=f"{self.brand.title()} Rocket", brand=self.brand,
                              coin_price=50, image_url="https://cdn.example.com/rocket.webp")]

    @hookimpl
    def check_send(self, send: SendContext) -> Veto | None:
        if self.mode == "check-raises":
            raise RuntimeError("campaign service down")
        if self.mode == "veto-nonsense":
            return "no"  # not a Veto
        return Veto(self.veto) if self.veto else None

    @hookimpl
    def quote_gift(self, send: SendContext) -> object:
        value = send.list_price * send.quantity
        subsidy = value * self.subsidy_percent // 100
        answers = {
            "raise": lambda: 1 / 0,
            "hang": lambda: time.sleep(5),
            "float-price": lambda: Quote(viewer_pays=float(value), brand_subsidy=0),
            "zero-price": lambda: Quote(viewer_pays=0, brand_subsidy=value),
            "negative-subsidy": lambda: Quote(viewer_pays=value + 5, brand_subsidy=-5),
            "not-a-quote": lambda: {"viewer_pays": value},
        }
        if self.mode in answers:
            return answers[self.mode]()
        return Quote(viewer_pays=value - subsidy, brand_subsidy=subsidy)

    @hookimpl
    def split_revenue(self, quote: Quote, rate_card: RateCardTerms) -> RevenueSplit | BrandShare:
        if self.mode == "share-too-large":
            return BrandShare(platform_bps=10_001)
        if self.mode.startswith("share-"):  # "share-1500": 15 % of the platform's cut
            return BrandShare(platform_bps=int(self.mode.removeprefix("share-")))
        brand = quote.value // 10
        creator = quote.value * rate_card.creator_share_bps // 10_000
        platform = quote.value - creator - brand
        if self.mode == "unbalanced-split":
            platform += 1
        if self.mode == "negative-share":
            return RevenueSplit(creator_coins=quote.value + 1, platform_coins=-1, brand_coins=0)
        if self.mode == "float-share":
            return RevenueSplit(creator_coins=creator / 1, platform_coins=platform,
                                brand_coins=brand)
        return RevenueSplit(creator_coins=creator, platform_coins=platform, brand_coins=brand)

    @hookimpl
    def boost_match(self, match: MatchContext) -> object:
        self.asked.append(match)
        if self.mode == "boost-raises":
            raise RuntimeError("sponsorship service down")
        if self.mode == "boost-hangs":
            time.sleep(5)
        if self.boost is None:
            return None
        multiplier, seconds = self.boost
        brand = {"boost-other-brand": "someone-else",
                 "boost-brand-not-a-slug": [self.brand]}.get(self.mode, self.brand)
        return MatchBoost(brand=brand, multiplier=multiplier, seconds=seconds)

    @hookimpl
    def gift_sent(self, gift: SentGift) -> None:
        if self.mode == "listener-raises":
            raise RuntimeError("analytics endpoint down")
        if self.mode == "listener-raises-first" and gift.delivery_id not in self.refused:
            self.refused.add(gift.delivery_id)  # each notification fails once, then goes
            raise RuntimeError("analytics endpoint down")
        self.sent.append(gift)


class Globex(Acme):
    """Ships its gift's picture in its package, for livegifts to serve."""

    brand = "globex"
    sku = "globex-globe"

    @hookimpl
    def register_sponsored_gifts(self) -> list[SponsoredGift]:
        return [SponsoredGift(sku=self.sku, name="Globex Globe", brand=self.brand,
                              coin_price=50, image_file=Path(__file__).parent / "globe.svg")]


class Flaky(Acme):
    brand = "flaky"
    sku = "flaky-fizz"


plugin = Acme()
globex = Globex()
flaky = Flaky(mode="check-raises")  # every send of its gift fails in check_send


# An unrelated package's plugin that declares Acme's brand and gift, on terms of its own.
impostor = Acme(subsidy_percent=99)
