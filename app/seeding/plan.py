"""The shape of a benchmark data set, drawn from a random seed without touching the database.

:func:`draw_plan` turns :class:`ScaleOptions`, the gift prices and the coin package ladder
into creators' live sessions, bursts of gift sends and viewers' coin purchases. The same
options, seed and catalogue always give the same plan. What makes it realistic:

* popularity is skewed (Zipf): a few creators receive most gifts, a few viewers send most;
* cheap gifts are common and expensive ones rare; most sends are of one gift, some of 5, 10
  or 99;
* a burst of several sends of one gift, seconds apart, is a combo;
* each creator's sessions are spread over the period without overlapping, and some creators'
  latest session is still live;
* every viewer who sends gifts bought the coins for them before the first gift, and a little
  more; some viewers bought coins and never sent a gift.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from typing import NamedTuple

SECOND_US = 1_000_000
MINUTE_US = 60 * SECOND_US
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

SESSIONS_PER_CREATOR = 4  # the default: about one stream a week over four weeks
CREATOR_SKEW = 1.1  # Zipf exponent of creators' popularity
VIEWER_SKEW = 0.9  # Zipf exponent of viewers' generosity: the whales
PRICE_SKEW = 0.7  # a gift's popularity falls as its price ** -0.7
QUANTITY_WEIGHTS = {1: 80, 5: 10, 10: 7, 99: 3}
LIVE_SHARE = 0.2  # creators whose latest session is still live
COMBO_SHARE = 0.3  # bursts of more than one send
MEAN_COMBO_EXTRA = 4.0  # sends beyond the second, on average, in a combo
MAX_COMBO_SENDS = 60
SEND_GAP_US = (300_000, 2_500_000)  # between the sends of a combo: inside the combo window
SESSION_LENGTH_US = (30 * MINUTE_US, 4 * HOUR_US)
LEFTOVER_COINS = 700  # viewers keep up to this many coins unspent
IDLE_BUYERS = 0.5  # share of viewers without gifts who still bought coins


class SeedOptionsInvalid(ValueError):
    """The options cannot describe a data set; the message says which option and why."""


@dataclass(frozen=True, slots=True)
class ScaleOptions:
    creators: int = 0
    viewers: int = 0
    sessions: int | None = None  # None: SESSIONS_PER_CREATOR per creator
    gifts: int = 0
    days: int = 28
    random_seed: int = 0
    until: datetime | None = None  # the end of the period; None: now

    @property
    def session_count(self) -> int:
        return self.creators * SESSIONS_PER_CREATOR if self.sessions is None else self.sessions

    @property
    def requested(self) -> bool:
        return bool(self.creators or self.viewers or self.gifts or self.sessions)

    def check(self, now: datetime) -> None:
        """Raise :class:`SeedOptionsInvalid` unless the options describe a data set."""
        for name in ("creators", "viewers", "sessions", "gifts"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise SeedOptionsInvalid(f"--{name} must be 0 or more, not {value}")
        if self.days < 1:
            raise SeedOptionsInvalid(f"--days must be at least 1, not {self.days}")
        if self.session_count and not self.creators:
            raise SeedOptionsInvalid("--sessions needs creators to host them (--creators)")
        if self.gifts and not self.viewers:
            raise SeedOptionsInvalid("--gifts needs viewers to send them (--viewers)")
        if self.gifts and not self.session_count:
            raise SeedOptionsInvalid("--gifts needs live sessions to send them in "
                                     "(--creators, --sessions)")
        if self.until is not None and self.until > now:
            raise SeedOptionsInvalid(f"--until cannot be in the future "
                                     f"({self.until.isoformat()} is after {now.isoformat()})")


class PlannedSession(NamedTuple):
    started_us: int
    creator: int  # index into the creators, most popular first
    ended_us: int | None  # None: still live


class Burst(NamedTuple):
    """``sends`` sends of one gift by one viewer, ``gap_us`` apart: a combo when more than one."""

    start_us: int
    gap_us: int
    session: int  # index into Plan.sessions
    sender: int  # index into the viewers
    gift: int  # index into the gift prices
    quantity: int
    sends: int


class PlannedPurchase(NamedTuple):
    at_us: int
    viewer: int
    package: int  # index into the package ladder


@dataclass(frozen=True, slots=True)
class Plan:
    until_us: int
    sessions: list[PlannedSession]  # by start time
    bursts: list[Burst]  # by start time
    purchases: list[PlannedPurchase]  # by time
    birthdates: list[date]  # creators', then viewers'

    @property
    def live_sessions(self) -> int:
        return sum(1 for s in self.sessions if s.ended_us is None)


def to_datetime(microseconds: int) -> datetime:
    return EPOCH + timedelta(microseconds=microseconds)


def to_microseconds(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1)


def draw_plan(options: ScaleOptions, until: datetime, prices: Sequence[int],
              package_coins: Sequence[int]) -> Plan:
    """Draw the data set. ``prices``: the gifts' coin prices; ``package_coins``: the ladder."""
    rng = random.Random(options.random_seed)
    until_us = to_microseconds(until)
    start_us = until_us - options.days * DAY_US
    creator_weights = _zipf(options.creators, CREATOR_SKEW)
    sessions, per_creator = _draw_sessions(rng, creator_weights, options.session_count,
                                           start_us, until_us)
    bursts, spent, first_gift = _draw_bursts(rng, options, sessions, creator_weights,
                                             per_creator, prices, until_us)
    purchases = _draw_purchases(rng, spent, first_gift, package_coins, start_us, until_us)
    born = date(1960, 1, 1)
    birthdates = [born + timedelta(days=rng.randrange(40 * 365))
                  for _ in range(options.creators + options.viewers)]
    return Plan(until_us, sessions, bursts, purchases, birthdates)


def _zipf(count: int, skew: float) -> list[float]:
    return [1 / (rank + 1) ** skew for rank in range(count)]


def _pick(rng: random.Random, cumulative: list[float]) -> int:
    return min(bisect.bisect(cumulative, rng.random() * cumulative[-1]), len(cumulative) - 1)


def _draw_sessions(rng: random.Random, creator_weights: list[float], count: int,
                   start_us: int, until_us: int) -> tuple[list[PlannedSession], list[int]]:
    """Every creator hosts one session (the most popular first when there are fewer), and the
    rest go to creators by popularity; a creator's sessions take turns in equal slots."""
    creators = len(creator_weights)
    per_creator = [1 if creator < count else 0 for creator in range(creators)]
    for creator in rng.choices(range(creators), weights=creator_weights,
                               k=max(0, count - creators)):
        per_creator[creator] += 1
    sessions = []
    for creator, hosted in enumerate(per_creator):
        if not hosted:
            continue
        slot = (until_us - start_us) // hosted
        longest = max(1, slot * 4 // 5)
        live = rng.random() < LIVE_SHARE
        for turn in range(hosted):
            if live and turn == hosted - 1:
                length = rng.randint(min(5 * MINUTE_US, longest), min(2 * HOUR_US, longest))
                sessions.append(PlannedSession(until_us - length, creator, None))
                continue
            length = min(longest, rng.randint(*SESSION_LENGTH_US))
            begin = start_us + turn * slot + int(rng.random() * (slot - length))
            sessions.append(PlannedSession(begin, creator, begin + length))
    sessions.sort()
    return sessions, per_creator


def _draw_bursts(rng: random.Random, options: ScaleOptions, sessions: list[PlannedSession],
                 creator_weights: list[float], per_creator: list[int], prices: Sequence[int],
                 until_us: int) -> tuple[list[Burst], list[int], list[int]]:
    if not options.gifts:
        return [], [0] * options.viewers, [until_us] * options.viewers
    by_session = list(accumulate(creator_weights[s.creator] / per_creator[s.creator]
                                 for s in sessions))
    by_viewer = list(accumulate(_zipf(options.viewers, VIEWER_SKEW)))
    by_gift = list(accumulate(price ** -PRICE_SKEW for price in prices))
    quantities = list(QUANTITY_WEIGHTS)
    by_quantity = list(accumulate(QUANTITY_WEIGHTS.values()))
    spent = [0] * options.viewers
    first_gift = [until_us] * options.viewers
    bursts = []
    remaining = options.gifts
    while remaining:
        sends = 1 if rng.random() >= COMBO_SHARE else \
            min(MAX_COMBO_SENDS, 2 + int(rng.expovariate(1 / MEAN_COMBO_EXTRA)))
        sends = min(sends, remaining)
        index = _pick(rng, by_session)
        sender, gift = _pick(rng, by_viewer), _pick(rng, by_gift)
        quantity = quantities[_pick(rng, by_quantity)]
        session = sessions[index]
        end_us = session.ended_us or until_us
        gap = min(rng.randint(*SEND_GAP_US), (end_us - session.started_us) // sends)
        start = session.started_us + int(rng.random() * (end_us - session.started_us
                                                         - (sends - 1) * gap))
        bursts.append(Burst(start, gap, index, sender, gift, quantity, sends))
        spent[sender] += prices[gift] * quantity * sends
        first_gift[sender] = min(first_gift[sender], start)
        remaining -= sends
    bursts.sort()
    return bursts, spent, first_gift


def _draw_purchases(rng: random.Random, spent: list[int], first_gift: list[int],
                    package_coins: Sequence[int], start_us: int, until_us: int
                    ) -> list[PlannedPurchase]:
    """Enough coins for every viewer's gifts, bought in the day before their first gift:
    the largest package as often as needed, then the smallest one that covers the rest."""
    ladder = sorted(range(len(package_coins)), key=lambda p: package_coins[p])
    largest = ladder[-1]
    purchases = []
    for viewer, coins in enumerate(spent):
        if not coins and rng.random() >= IDLE_BUYERS:
            continue
        big, rest = divmod(coins + rng.randrange(1, LEFTOVER_COINS), package_coins[largest])
        packages = [largest] * big
        if rest:
            packages.append(next(p for p in ladder if package_coins[p] >= rest))
        before = first_gift[viewer] if coins else \
            start_us + int(rng.random() * (until_us - start_us))
        for package in packages:
            purchases.append(PlannedPurchase(before - 1 - int(rng.random() * DAY_US), viewer,
                                             package))
    purchases.sort()
    return purchases
