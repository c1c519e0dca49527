"""What brand plugins and the core exchange: brands, sponsored gifts, quotes, splits, vetoes,
match boosts.

Plugins build these values; the core validates every answer before any coin
moves (:func:`check_quote`, :func:`check_split`) and refuses the send when an
answer is not an exact, non-negative integer account of the gift's value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


class PluginAnswerInvalid(ValueError):
    """A plugin answered something the core cannot accept; the message says what."""


@dataclass(frozen=True, slots=True)
class Brand:
    """A sponsoring brand. ``slug`` names its budget and its partner tokens."""

    slug: str
    name: str


@dataclass(frozen=True, slots=True)
class SponsoredGift:
    """A gift a brand adds to the catalogue; ``coin_price`` is the list price of one. Its
    picture is ``image_url`` (an http(s) URL hosted elsewhere) or ``image_file``: an .svg,
    .png or .webp file in the plugin's package (``importlib.resources.files(...) / name``
    or a path), which livegifts serves itself."""

    sku: str
    name: str
    brand: str
    coin_price: int
    image_url: str | None = None
    category: str = "sponsored"
    animation_url: str | None = None
    available_from: datetime | None = None
    available_until: datetime | None = None
    sort_order: int = 1000
    image_file: Any = None


@dataclass(frozen=True, slots=True)
class SendContext:
    """One attempted send of a sponsored gift, as the owning plugin sees it."""

    gift_sku: str
    brand: str
    list_price: int
    quantity: int
    viewer_id: int
    creator_id: int
    session_id: int
    at: datetime
    viewer_sent_today: int  # quantity of this gift the viewer already sent today (UTC)


@dataclass(frozen=True, slots=True)
class Quote:
    """The price of a send: the viewer pays ``viewer_pays`` coins, the brand's budget
    ``brand_subsidy``; together they are the gift's value, on which the creator earns."""

    viewer_pays: int
    brand_subsidy: int = 0

    @property
    def value(self) -> int:
        return self.viewer_pays + self.brand_subsidy


@dataclass(frozen=True, slots=True)
class RateCardTerms:
    """The published rate card in force, for plugins that split by it."""

    version: int
    creator_share_bps: int
    diamonds_per_coin: int


@dataclass(frozen=True, slots=True)
class RevenueSplit:
    """Where the value goes, in coins: the three parts must sum exactly to the value."""

    creator_coins: int
    platform_coins: int
    brand_coins: int


@dataclass(frozen=True, slots=True)
class BrandShare:
    """A brand's revenue share as a rate the core applies: ``platform_bps`` basis points
    (1/100 of a percent) of the platform's cut, the value less the creator's rate-card share.
    The core rounds it fairly over time: each send's share is whole coins, and the part of
    a coin left over is carried to the brand's next send, so over any run of sends the
    brand's total is the exact total rounded down (never a coin more, less than one short)."""

    platform_bps: int


def share_with_carry(platform_cut: int, platform_bps: int, carry: int) -> tuple[int, int]:
    """The brand's whole coins of ``platform_cut`` at ``platform_bps``, with the owed part
    of a coin (``carry``, in 1/10,000 coin) brought in; returns (coins, new carry)."""
    coins, carry = divmod(platform_cut * platform_bps + carry, 10_000)
    return coins, carry


@dataclass(frozen=True, slots=True)
class Veto:
    """A refusal by the gift's campaign rules; ``reason`` is shown to the viewer."""

    reason: str


@dataclass(frozen=True, slots=True)
class SentGift:
    """A committed send of a sponsored gift, for ``gift_sent`` listeners. ``delivery_id``
    is the same on every retry of one send's notification: de-duplicate on it."""

    receipt_id: int
    gift_sku: str
    brand: str
    quantity: int
    viewer_id: int
    creator_id: int
    session_id: int
    viewer_paid: int
    brand_subsidy: int
    brand_coins: int
    at: datetime
    delivery_id: str = ""


@dataclass(frozen=True, slots=True)
class MatchContext:
    """A match about to start, as plugins see it when asked for a boost. Ids are the core's
    internal integers; ``at`` is the time the invitee accepted (UTC)."""

    match_id: int
    inviter_id: int  # the creator who invited
    invitee_id: int  # the creator who accepted
    inviter_session_id: int
    invitee_session_id: int
    duration_seconds: int
    at: datetime


@dataclass(frozen=True, slots=True)
class MatchBoost:
    """A brand's sponsorship of a match: for its first ``seconds`` (at most the match's
    duration), each of the brand's gifts counts ``multiplier`` times its value in the score.
    Scores only: what a gift costs and pays never changes."""

    brand: str
    multiplier: int  # 2 to 10
    seconds: int


MAX_BOOST_MULTIPLIER = 10


def _whole(value: object, name: str, minimum: int) -> int:
    if type(value) is not int or value < minimum:
        raise PluginAnswerInvalid(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_quote(answer: object, max_value: int) -> Quote:
    if not isinstance(answer, Quote):
        raise PluginAnswerInvalid(f"quote_gift must return a Quote, got {answer!r}")
    _whole(answer.viewer_pays, "viewer_pays", 1)
    _whole(answer.brand_subsidy, "brand_subsidy", 0)
    if answer.value > max_value:
        raise PluginAnswerInvalid(f"the quoted value {answer.value} exceeds {max_value}")
    return answer


def check_split(answer: object, value: int) -> RevenueSplit | BrandShare:
    if isinstance(answer, BrandShare):
        if type(answer.platform_bps) is not int or not 0 <= answer.platform_bps <= 10_000:
            raise PluginAnswerInvalid(f"platform_bps must be an integer from 0 to 10000, got "
                                      f"{answer.platform_bps!r}")
        return answer
    if not isinstance(answer, RevenueSplit):
        raise PluginAnswerInvalid(f"split_revenue must return a RevenueSplit or a "
                                  f"BrandShare, got {answer!r}")
    parts = [_whole(getattr(answer, name), name, 0)
             for name in ("creator_coins", "platform_coins", "brand_coins")]
    if sum(parts) != value:
        raise PluginAnswerInvalid(f"the shares sum to {sum(parts)}, not the value {value}")
    return answer


def check_veto(answer: object) -> Veto | None:
    if answer is None or (isinstance(answer, Veto) and isinstance(answer.reason, str)
                          and answer.reason.strip()):
        return answer
    raise PluginAnswerInvalid(f"check_send must return None or a Veto with a reason, "
                              f"got {answer!r}")


def check_boost(answer: object, duration_seconds: int) -> MatchBoost | None:
    if answer is None:
        return None
    if not isinstance(answer, MatchBoost):
        raise PluginAnswerInvalid(f"boost_match must return None or a MatchBoost, got "
                                  f"{answer!r}")
    if not isinstance(answer.brand, str):
        raise PluginAnswerInvalid(f"brand must be a brand's slug, got {answer.brand!r}")
    if _whole(answer.multiplier, "multiplier", 2) > MAX_BOOST_MULTIPLIER:
        raise PluginAnswerInvalid(f"multiplier must be at most {MAX_BOOST_MULTIPLIER}, got "
                                  f"{answer.multiplier}")
    if _whole(answer.seconds, "seconds", 1) > duration_seconds:
        raise PluginAnswerInvalid(f"seconds must be at most the match's {duration_seconds}, "
                                  f"got {answer.seconds}")
    return answer
