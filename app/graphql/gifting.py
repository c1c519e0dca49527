"""GraphQL for gifting: catalogue, rate card, live sessions, sendGift, leaderboards, live events."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any

import strawberry
from strawberry import relay
from strawberry.types import Info

from app import media, models
from app.auth import Role
from app.errors import DomainError
from app.events import session_channel
from app.graphql import broadcast
from app.graphql.brands import Brand
from app.graphql.common import (
    MAX_SAFE_INTEGER,
    Long,
    UserError,
    bad_cursor,
    connection,
    cursor_id,
    cursor_value,
    decode_id,
    page_size,
)
from app.graphql.context import ClientError
from app.graphql.matches import (
    Match,
    MatchBoost,
    MatchSideResult,
    MatchSideScore,
    boosts_in,
    matches_of,
    side_results,
    side_scores,
)
from app.graphql.types import LedgerTransaction, Money, User, _rows_by_id, ctx
from app.services import catalogue, event_log, gifting, goals, live, rates, recognition
from app.services.recognition import Period

strawberry.enum(Period, name="LeaderboardPeriod", description="A leaderboard period, in UTC.")


@strawberry.type(description="A virtual gift a viewer can send to a creator.")
class Gift(relay.Node):
    id: relay.NodeID[int]
    sku: str
    name: str
    coin_price: Long = strawberry.field(description="What one gift costs the viewer, in coins.")
    stored_image_url: strawberry.Private[str]
    animation_url: str | None
    category: str
    available_from: datetime | None
    available_until: datetime | None
    sort_order: int
    active: bool
    sponsored: bool = strawberry.field(description="Added by a brand; priced by its plugin.")
    brand_id: strawberry.Private[int | None]
    plugin: strawberry.Private[str | None]

    @classmethod
    def of(cls, row: models.Gift) -> Gift:
        return cls(id=row.id, sku=row.sku, name=row.name, coin_price=row.coin_price,
                   stored_image_url=row.image_url, animation_url=row.animation_url,
                   category=row.category, available_from=row.available_from,
                   available_until=row.available_until, sort_order=row.sort_order,
                   active=row.active, sponsored=row.plugin is not None, brand_id=row.brand_id,
                   plugin=row.plugin)

    @strawberry.field(description="The gift's picture, an absolute URL: the default gifts' "
                                  "and brands' shipped pictures are served by this server "
                                  "(SVG, PNG or WebP, cacheable for a day).")
    def image_url(self, info: Info) -> str:
        return media.absolute(ctx(info).runtime.settings.public_base_url,
                              self.stored_image_url)

    @strawberry.field(description="Whether it can be sent right now: on sale, inside its "
                                  "window, and for a sponsored gift, its plugin is running.")
    def available(self, info: Info) -> bool:
        row = models.Gift(coin_price=self.coin_price, active=self.active,
                          available_from=self.available_from,
                          available_until=self.available_until)
        running = self.plugin is None or ctx(info).runtime.plugins.is_active(self.plugin)
        return running and catalogue.is_available(row, datetime.now(UTC))

    @strawberry.field(description="The sponsoring brand, for a sponsored gift.")
    async def brand(self, info: Info) -> Brand | None:
        if self.brand_id is None:
            return None
        [row] = await _rows_by_id(info, models.Brand, [str(self.brand_id)])
        return Brand.of(row) if row else None

    @classmethod
    async def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str],
                            required: bool = False) -> list[Gift | None]:
        rows = await _rows_by_id(info, models.Gift, node_ids)
        return [cls.of(r) if r and (r.active or ctx(info).is_admin()) else None for r in rows]


@strawberry.type(description="How gift coins are shared and what diamonds are worth. Every gift "
                             "records the version it used.")
class RateCard:
    version: int
    creator_share_bps: int = strawberry.field(
        description="The creator's share of a gift's coins, in hundredths of a percent.")
    platform_share_bps: int = strawberry.field(
        description="The platform's share (the rest, before any brand share). Remainders of "
                    "integer division go to the platform.")
    diamonds_per_coin: int = strawberry.field(
        description="Diamonds a creator earns per coin of their share.")
    cash_per_100_diamonds: Money = strawberry.field(description="Cash value of 100 diamonds.")
    effective_from: datetime
    note: str

    @classmethod
    def of(cls, row: models.RateCard) -> RateCard:
        return cls(version=row.version, creator_share_bps=row.creator_share_bps,
                   platform_share_bps=10_000 - row.creator_share_bps,
                   diamonds_per_coin=row.diamonds_per_coin,
                   cash_per_100_diamonds=Money(amount=row.cash_minor_per_100_diamonds,
                                               currency=row.cash_currency),
                   effective_from=row.effective_from, note=row.note)


@strawberry.enum(description="Whether a live session is on air.")
class LiveSessionStatus(Enum):
    LIVE = "live"
    ENDED = "ended"


@strawberry.type(description="A place on a leaderboard.")
class LeaderboardEntry:
    rank: int
    user: User
    coins: Long = strawberry.field(description="Coins sent (gift value).")
    diamonds: Long = strawberry.field(description="Diamonds those gifts earned the creator.")
    gifts: Long = strawberry.field(description="Number of gifts, by quantity (a send of 5 "
                                               "roses counts 5; statements count sends).")


def _leaderboard(rows: list[recognition.Ranked], limit: int) -> relay.Connection[LeaderboardEntry]:
    return connection(rows, limit, lambda r: LeaderboardEntry(
        rank=r.rank, user=User(id=r.user_id, name=r.name), coins=r.coins, diamonds=r.diamonds,
        gifts=r.gifts), key=lambda r: r.rank)


def _rank_window(first: int | None, after: str | None) -> tuple[int, int]:
    return page_size(first), cursor_id(after) or 0


@strawberry.type(description="Running totals of a live session.")
class LiveSessionTotals:
    gifts: Long
    coins: Long
    diamonds: Long
    viewers: int = strawberry.field(description="Watching now.")
    peak_viewers: int = strawberry.field(description="Distinct viewers who joined.")


MAX_RUNNING_COMBOS = 50


@strawberry.type(description="A combo still running: one viewer sending one gift again and "
                             "again.")
class RunningCombo:
    combo_id: relay.GlobalID
    sender: User
    gift: Gift
    count: Long = strawberry.field(description="Gifts in the combo so far.")
    sends: int
    coins: Long
    started_at: datetime
    last_at: datetime


@strawberry.enum(description="What a live goal counts.")
class LiveGoalKind(Enum):
    COINS = "coins"
    GIFT_COUNT = "gift_count"


@strawberry.enum(description="Where a live goal stands.")
class LiveGoalStatus(Enum):
    OPEN = "open"
    REACHED = "reached"
    MISSED = "missed"


@strawberry.type(description=(
    "A creator's target for a live session, with the progress everyone watches: coins gifted "
    "into the session (sponsored gifts at their full value) or a number of one gift. Every "
    "gift counts in its own transaction; `GoalProgress` and one `GoalReached` events follow "
    "it live. Goals end with the session."))
class LiveGoal:
    id: relay.GlobalID
    title: str
    kind: LiveGoalKind
    target: Long
    progress: Long = strawberry.field(description="May pass the target: gifts keep counting.")
    reached_at: datetime | None
    status: LiveGoalStatus
    gift_id: strawberry.Private[int | None]

    @classmethod
    def of(cls, row: models.LiveGoal, session_live: bool) -> LiveGoal:
        status = LiveGoalStatus.REACHED if row.reached_at is not None else \
            LiveGoalStatus.OPEN if session_live else LiveGoalStatus.MISSED
        return cls(id=relay.GlobalID("LiveGoal", str(row.id)), title=row.title,
                   kind=LiveGoalKind(row.kind), target=row.target, progress=row.progress,
                   reached_at=row.reached_at, status=status, gift_id=row.gift_id)

    @strawberry.field(description="The gift a GIFT_COUNT goal counts; null for COINS.")
    async def gift(self, info: Info) -> Gift | None:
        if self.gift_id is None:
            return None
        [row] = await _rows_by_id(info, models.Gift, [str(self.gift_id)])
        return Gift.of(row)


@strawberry.type(description="A creator's live broadcast, during which viewers send gifts.")
class LiveSession(relay.Node):
    id: relay.NodeID[int]
    title: str
    status: LiveSessionStatus
    started_at: datetime
    ended_at: datetime | None
    creator_id: strawberry.Private[int]
    match_id: strawberry.Private[int | None]

    @classmethod
    def of(cls, row: models.LiveSession) -> LiveSession:
        return cls(id=row.id, title=row.title, status=LiveSessionStatus(row.status),
                   started_at=row.started_at, ended_at=row.ended_at, creator_id=row.creator_id,
                   match_id=row.match_id)

    @strawberry.field
    async def creator(self, info: Info) -> User:
        [row] = await _rows_by_id(info, models.User, [str(self.creator_id)])
        return User(id=row.id, name=row.name)

    @strawberry.field
    async def totals(self, info: Info) -> LiveSessionTotals:
        async with ctx(info).runtime.reads() as session:
            t = await live.totals(session, self.id)
        return LiveSessionTotals(gifts=t.gifts, coins=t.coins, diamonds=t.diamonds,
                                 viewers=t.viewers, peak_viewers=t.peak_viewers)

    @strawberry.field(description="The goals the creator set for the session, in order.")
    async def goals(self, info: Info) -> list[LiveGoal]:
        async with ctx(info).runtime.reads() as session:
            rows = await goals.goals_of(session, self.id)
        return [LiveGoal.of(row, self.status == LiveSessionStatus.LIVE) for row in rows]

    @strawberry.field(description="The session's latest match (running or ended); null if "
                                  "it has had none.")
    async def match(self, info: Info) -> Match | None:
        if self.match_id is None:
            return None
        [match] = await matches_of(info, await _rows_by_id(info, models.LiveMatch,
                                                           [str(self.match_id)]))
        return match

    @strawberry.field(description="The session's gifters ranked by coins sent.")
    async def top_gifters(self, info: Info, first: int | None = None, after: str | None = None
                          ) -> relay.Connection[LeaderboardEntry]:
        limit, offset = _rank_window(first, after)
        async with ctx(info).runtime.reads() as session:
            rows = await recognition.top_gifters(session, self.id, limit=limit + 1, offset=offset)
        return _leaderboard(rows, limit)

    @strawberry.field(description=(
        "Combos not ended yet, latest send first: "
        "what an overlay shows when it opens mid-combo. Each continues in `GiftSent` "
        "events with the same `comboId` and ends with one `ComboEnded`."))
    async def running_combos(self, info: Info, first: int = 10) -> list[RunningCombo]:
        if not 1 <= first <= MAX_RUNNING_COMBOS:
            raise ClientError(f"first must be between 1 and {MAX_RUNNING_COMBOS}.",
                              "BAD_USER_INPUT")
        async with ctx(info).runtime.reads() as session:
            rows = await live.running_combos(session, self.id, limit=first)
        return [RunningCombo(combo_id=relay.GlobalID("GiftCombo", str(combo.id)),
                             sender=User(id=sender.id, name=sender.name), gift=Gift.of(gift),
                             count=combo.count, sends=combo.sends, coins=combo.coins,
                             started_at=combo.started_at, last_at=combo.last_at)
                for combo, sender, gift in rows]

    @classmethod
    async def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str],
                            required: bool = False) -> list[LiveSession | None]:
        ctx(info).require()
        return [cls.of(r) if r else None
                for r in await _rows_by_id(info, models.LiveSession, node_ids)]


@strawberry.type(description="Where every coin of a sent gift went. coinsPaid + brandSubsidy = "
                             "creatorCoins + platformCoins + brandCoins.")
class GiftReceipt(relay.Node):
    id: relay.NodeID[int]
    quantity: int
    unit_price: Long = strawberry.field(description="Coins per gift at the time of sending.")
    coins_paid: Long = strawberry.field(description="Coins taken from the viewer's wallet.")
    brand_subsidy: Long = strawberry.field(description="Coins paid by a brand's budget.")
    creator_coins: Long = strawberry.field(description="Coins of the gift's value earned by "
                                                       "the creator (as diamonds).")
    creator_diamonds: Long
    platform_coins: Long = strawberry.field(description="The platform's share, remainders "
                                                        "included.")
    brand_coins: Long = strawberry.field(description="A sponsoring brand's revenue share.")
    rate_card_version: int
    combo_count: Long = strawberry.field(description="Running count of the combo this send is "
                                                     "part of, this send included.")
    created_at: datetime
    row: strawberry.Private[models.GiftSend]

    @classmethod
    def of(cls, row: models.GiftSend) -> GiftReceipt:
        return cls(id=row.id, quantity=row.quantity, unit_price=row.unit_price,
                   coins_paid=row.coins_paid, brand_subsidy=row.brand_subsidy,
                   creator_coins=row.creator_coins, creator_diamonds=row.creator_diamonds,
                   platform_coins=row.platform_coins, brand_coins=row.brand_coins,
                   rate_card_version=row.rate_card_version, combo_count=row.combo_count,
                   created_at=row.created_at, row=row)

    @strawberry.field
    async def gift(self, info: Info) -> Gift:
        [row] = await _rows_by_id(info, models.Gift, [str(self.row.gift_id)])
        return Gift.of(row)

    @strawberry.field
    async def session(self, info: Info) -> LiveSession:
        [row] = await _rows_by_id(info, models.LiveSession, [str(self.row.session_id)])
        return LiveSession.of(row)

    @strawberry.field
    async def sender(self, info: Info) -> User:
        [row] = await _rows_by_id(info, models.User, [str(self.row.sender_id)])
        return User(id=row.id, name=row.name)

    @strawberry.field
    async def transaction(self, info: Info) -> LedgerTransaction:
        [row] = await _rows_by_id(info, models.LedgerTransaction, [str(self.row.transaction_id)])
        return LedgerTransaction.of(row)

    @classmethod
    async def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str],
                            required: bool = False) -> list[GiftReceipt | None]:
        context = ctx(info)
        user_id = await context.user_id()
        return [cls.of(r) if r and (user_id in (r.sender_id, r.creator_id) or context.is_admin())
                else None for r in await _rows_by_id(info, models.GiftSend, node_ids)]


# Live events -----------------------------------------------------------------------------


@strawberry.interface(description="An event of a live session, from its event log.")
class LiveEvent:
    cursor: str = strawberry.field(description=(
        "Where this event is in the session's events: pass it as `after` to "
        "`liveSessionEvents` to resume with the events after it."))


@strawberry.type(description="The creator went live.")
class SessionStarted(LiveEvent):
    title: str
    started_at: datetime


@strawberry.type(description="A gift was sent in the session.")
class GiftSent(LiveEvent):
    receipt_id: relay.GlobalID
    sender: User
    gift: Gift
    quantity: int
    coins: Long
    diamonds: Long
    combo_id: relay.GlobalID = strawberry.field(description="Same for every send of one combo.")
    combo_count: Long = strawberry.field(description="Running total of the combo so far. "
                                                     "Display it; do not add it up.")


@strawberry.type(description="A combo ended. Sent exactly once per combo, with its total.")
class ComboEnded(LiveEvent):
    combo_id: relay.GlobalID
    sender: User
    gift: Gift
    total_count: Long
    sends: int
    total_coins: Long


@strawberry.type(description="Someone joined or left.")
class ViewerCountChanged(LiveEvent):
    viewers: int


@strawberry.type(description="The top gifters of the session changed.")
class TopGiftersChanged(LiveEvent):
    top: list[LeaderboardEntry]


@strawberry.type(description="The creator ended the session. No more events follow.")
class SessionEnded(LiveEvent):
    ended_at: datetime
    totals: LiveSessionTotals


@strawberry.type(description=(
    "A goal was set (progress 0) or gifts moved it. Progress is the goal's total so far: "
    "display it; do not add it up."))
class GoalProgress(LiveEvent):
    goal_id: relay.GlobalID
    title: str
    kind: LiveGoalKind
    target: Long
    progress: Long


@strawberry.type(description="A goal reached its target. Sent exactly once per goal.")
class GoalReached(LiveEvent):
    goal_id: relay.GlobalID
    title: str
    kind: LiveGoalKind
    target: Long
    progress: Long
    reached_at: datetime


@strawberry.type(description=(
    "The session's creator invited another live creator to a match, or was invited (sent to "
    "both sessions). The invitee has until `expiresAt` to accept or decline."))
class MatchInvited(LiveEvent):
    match_id: relay.GlobalID
    sides: list[MatchSideScore] = strawberry.field(description="The inviter's side first.")
    duration_seconds: int
    expires_at: datetime


@strawberry.type(description="The invited creator declined the match.")
class MatchDeclined(LiveEvent):
    match_id: relay.GlobalID
    sides: list[MatchSideScore] = strawberry.field(description="The inviter's side first.")


@strawberry.type(description="A match started: both sessions' gifts score until `endsAt`.")
class MatchStarted(LiveEvent):
    match_id: relay.GlobalID
    sides: list[MatchSideScore] = strawberry.field(description="The inviter's side first.")
    started_at: datetime
    ends_at: datetime
    boosts: list[MatchBoost]


@strawberry.type(description=(
    "Gifts moved a running match's scores (sent to both sessions). Scores are the totals so "
    "far: display them; do not add them up."))
class MatchScore(LiveEvent):
    match_id: relay.GlobalID
    sides: list[MatchSideScore] = strawberry.field(description="The inviter's side first.")
    ends_at: datetime


@strawberry.type(description=(
    "A match ended: its time was up, or one of its creators ended their session. Sent exactly "
    "once per match, to both sessions, with each side's top three supporters."))
class MatchEnded(LiveEvent):
    match_id: relay.GlobalID
    sides: list[MatchSideResult] = strawberry.field(description="The inviter's side first.")
    winner: User | None = strawberry.field(description="Null for a tie.")
    tie: bool
    ended_at: datetime


LiveSessionEvent = Annotated[
    SessionStarted | GiftSent | ComboEnded | ViewerCountChanged | TopGiftersChanged
    | GoalProgress | GoalReached | MatchInvited | MatchDeclined | MatchStarted | MatchScore
    | MatchEnded | SessionEnded,
    strawberry.union("LiveSessionEvent", description="Something that happened in a live session.")]


async def _shared_event(info: Info, event: dict[str, Any]) -> Any:
    """The GraphQL object for an event, built once per process and event: the same
    event dict reaches every subscriber of the session in this process, and the
    object depends on the event only, so the first subscriber's is kept on it."""
    built = event.get(_BUILT)
    if built is None:
        built = event[_BUILT] = await _event(info, event)
    return built


_BUILT = "_graphql_object"  # kept on the delivered copy only (see events.LocalFanout)


def event_cursor(session_id: int, seq: int) -> str:
    """The opaque cursor of a session's event numbered ``seq`` (0: before the first)."""
    return relay.to_base64("LiveEvent", f"{session_id}:{seq}")


def event_position(cursor: str, session_id: int) -> int:
    """The event number a cursor of this session's events stands for."""
    try:
        prefix, value = relay.from_base64(cursor)
        sid, seq = (int(part) for part in value.split(":"))
    except ValueError:
        prefix, sid, seq = "", -1, -1
    if prefix != "LiveEvent" or sid != session_id or seq < 0:
        raise ClientError("after is not a cursor of this session's events.", "BAD_USER_INPUT")
    return seq


async def _event(info: Info, event: dict[str, Any]) -> Any:
    kind = event["type"]
    cursor = event_cursor(event["session_id"], event["seq"])
    if kind in ("GiftSent", "ComboEnded"):
        # Events carry the gift and the sender's name; an event published by an older
        # process (during a rolling upgrade) may not, and is completed from the database.
        if "gift" in event and "sender_name" in event:
            gift_row = models.Gift.model_validate(event["gift"])
            sender = User(id=event["sender_id"], name=event["sender_name"])
        else:
            [gift_row] = await _rows_by_id(info, models.Gift, [str(event["gift_id"])])
            [sender_row] = await _rows_by_id(info, models.User, [str(event["sender_id"])])
            sender = User(id=sender_row.id, name=sender_row.name)
        gift = Gift.of(gift_row)
        combo_id = relay.GlobalID("GiftCombo", str(event["combo_id"]))
        if kind == "GiftSent":
            return GiftSent(cursor=cursor,
                            receipt_id=relay.GlobalID("GiftReceipt", str(event["send_id"])),
                            sender=sender, gift=gift, quantity=event["quantity"],
                            coins=event["coins"], diamonds=event["diamonds"], combo_id=combo_id,
                            combo_count=event["combo_count"])
        return ComboEnded(cursor=cursor, combo_id=combo_id, sender=sender, gift=gift,
                          total_count=event["total_count"], sends=event["sends"],
                          total_coins=event["total_coins"])
    if kind == "ViewerCountChanged":
        return ViewerCountChanged(cursor=cursor, viewers=event["viewers"])
    if kind == "TopGiftersChanged":
        return TopGiftersChanged(cursor=cursor, top=[
            LeaderboardEntry(rank=n + 1, user=User(id=e["user_id"], name=e["name"]),
                             coins=e["coins"], diamonds=e.get("diamonds", 0),
                             gifts=e.get("gifts", 0)) for n, e in enumerate(event["top"])])
    if kind in ("GoalProgress", "GoalReached"):
        fields = dict(cursor=cursor, goal_id=relay.GlobalID("LiveGoal", str(event["goal_id"])),
                      title=event["title"], kind=LiveGoalKind(event["kind"]),
                      target=event["target"], progress=event["progress"])
        if kind == "GoalProgress":
            return GoalProgress(**fields)
        return GoalReached(**fields, reached_at=datetime.fromisoformat(event["reached_at"]))
    if kind.startswith("Match"):
        return _match_event(event, cursor)
    if kind == "SessionStarted":
        return SessionStarted(cursor=cursor, title=event["title"],
                              started_at=datetime.fromisoformat(event["started_at"]))
    totals = event["totals"]
    return SessionEnded(cursor=cursor, ended_at=datetime.fromisoformat(event["ended_at"]),
                        totals=LiveSessionTotals(**totals))


def _match_event(event: dict[str, Any], cursor: str) -> Any:
    kind, match_id = event["type"], relay.GlobalID("Match", str(event["match_id"]))
    if kind == "MatchEnded":
        winner = event["winner_id"]
        names = {s["creator_id"]: s["creator_name"] for s in event["sides"]}
        return MatchEnded(cursor=cursor, match_id=match_id, sides=side_results(event),
                          winner=None if winner is None else User(id=winner, name=names[winner]),
                          tie=winner is None,
                          ended_at=datetime.fromisoformat(event["ended_at"]))
    sides = side_scores(event)
    if kind == "MatchInvited":
        return MatchInvited(cursor=cursor, match_id=match_id, sides=sides,
                            duration_seconds=event["duration_seconds"],
                            expires_at=datetime.fromisoformat(event["expires_at"]))
    if kind == "MatchDeclined":
        return MatchDeclined(cursor=cursor, match_id=match_id, sides=sides)
    if kind == "MatchStarted":
        return MatchStarted(cursor=cursor, match_id=match_id, sides=sides,
                            started_at=datetime.fromisoformat(event["started_at"]),
                            ends_at=datetime.fromisoformat(event["ends_at"]),
                            boosts=boosts_in(event))
    return MatchScore(cursor=cursor, match_id=match_id, sides=sides,
                      ends_at=datetime.fromisoformat(event["ends_at"]))


# Inputs and payloads ---------------------------------------------------------------------


@strawberry.input(description="Send a gift in a live session.")
class SendGiftInput:
    session_id: strawberry.ID
    gift_id: strawberry.ID
    quantity: int = strawberry.field(default=1, description="1 to 1000 of the same gift.")
    idempotency_key: str = strawberry.field(
        description="Unique per send; resending the same key and input returns the first "
                    "receipt and moves nothing again.")


@strawberry.type
class SendGiftPayload:
    receipt: GiftReceipt | None
    wallet_coins: Long | None = strawberry.field(description="The sender's coins afterwards.")
    replayed: bool
    user_errors: list[UserError]


@strawberry.input
class StartLiveSessionInput:
    title: str


@strawberry.input
class LiveSessionInput:
    session_id: strawberry.ID


@strawberry.type
class LiveSessionPayload:
    live_session: LiveSession | None
    user_errors: list[UserError]


@strawberry.input(description=(
    "A goal for your live session: `target` coins gifted (COINS), or `target` of the gift "
    "`giftId` (GIFT_COUNT). A session has at most 5 goals."))
class SetLiveGoalInput:
    session_id: strawberry.ID
    title: str = strawberry.field(description="1 to 80 characters, shown on the overlay.")
    kind: LiveGoalKind
    target: Long = strawberry.field(description="1 to 1,000,000,000.")
    gift_id: strawberry.ID | None = None


@strawberry.type
class LiveGoalPayload:
    goal: LiveGoal | None
    user_errors: list[UserError]


@strawberry.input(description="A gift for the catalogue. Prices in coins.")
class CreateGiftInput:
    sku: str
    name: str
    coin_price: Long
    image_url: str
    category: str
    animation_url: str | None = None
    available_from: datetime | None = None
    available_until: datetime | None = None
    sort_order: int = 0


@strawberry.input(description="Change a gift; omitted fields stay as they are.")
class UpdateGiftInput:
    id: strawberry.ID
    name: str | None = None
    coin_price: Long | None = None
    image_url: str | None = None
    animation_url: str | None = None
    category: str | None = None
    available_from: datetime | None = None
    available_until: datetime | None = None
    sort_order: int | None = None
    active: bool | None = None


@strawberry.type
class GiftPayload:
    gift: Gift | None
    user_errors: list[UserError]


@strawberry.input(description="Publish the next rate card version.")
class PublishRateCardInput:
    creator_share_bps: int
    diamonds_per_coin: int
    cash_minor_per_100_diamonds: int
    effective_from: datetime
    note: str = ""


@strawberry.type
class RateCardPayload:
    rate_card: RateCard | None
    user_errors: list[UserError]


def _fields(data: Any) -> catalogue.GiftFields:
    return catalogue.GiftFields(**{name: getattr(data, name, None)
                                   for name in catalogue.GiftFields.__slots__})


@strawberry.type
class GiftingQuery:
    @strawberry.field(description="The gift catalogue in display order. Public.")
    async def gifts(self, info: Info, category: str | None = None, first: int | None = None,
                    after: str | None = None, include_unavailable: bool = False
                    ) -> relay.Connection[Gift]:
        context = ctx(info)
        if include_unavailable:
            context.require(Role.ADMIN)
        limit, position = page_size(first), cursor_value(after)
        if position is not None:
            try:
                order, gift_id = (int(part) for part in position.split("/"))
            except ValueError:
                raise bad_cursor() from None
            if not (-2**31 <= order < 2**31 and 0 < gift_id <= MAX_SAFE_INTEGER):
                raise bad_cursor()  # out of the columns' range: not one of ours
        async with context.runtime.reads() as session:
            rows = await catalogue.list_gifts(
                session, category=category, limit=limit + 1,
                after=None if position is None else (order, gift_id),
                include_unavailable=include_unavailable)
        return connection(rows, limit, Gift.of, key=lambda r: f"{r.sort_order}/{r.id}")

    @strawberry.field(description="The rate card in force now. Public.")
    async def rate_card(self, info: Info) -> RateCard:
        async with ctx(info).runtime.reads() as session:
            return RateCard.of(await rates.current_rate_card(session))

    @strawberry.field(description="Every published rate card, newest first. Public.")
    async def rate_cards(self, info: Info) -> list[RateCard]:
        async with ctx(info).runtime.reads() as session:
            return [RateCard.of(row) for row in await rates.rate_cards(session)]

    @strawberry.field(description="Live sessions, newest first.")
    async def live_sessions(self, info: Info, status: LiveSessionStatus | None = None,
                            first: int | None = None, after: str | None = None
                            ) -> relay.Connection[LiveSession]:
        context = ctx(info)
        context.require()
        limit = page_size(first)
        async with context.runtime.reads() as session:
            rows = await live.list_sessions(session, status=status.value if status else None,
                                            limit=limit + 1, before_id=cursor_id(after))
        return connection(rows, limit, LiveSession.of, key=lambda r: r.id)

    @strawberry.field(description="One live session, or null.")
    async def live_session(self, info: Info, id: strawberry.ID) -> LiveSession | None:
        context = ctx(info)
        context.require()
        try:
            session_id = decode_id(id, "LiveSession", "id")
        except DomainError as error:
            raise ClientError(error.message, "BAD_USER_INPUT") from None
        [row] = await _rows_by_id(info, models.LiveSession, [str(session_id)])
        return LiveSession.of(row) if row else None

    @strawberry.field(description="A creator's top supporters by coins sent in the current "
                                  "day, week, month (UTC) or of all time.")
    async def top_supporters(self, info: Info, creator_id: strawberry.ID, period: Period,
                             first: int | None = None, after: str | None = None
                             ) -> relay.Connection[LeaderboardEntry]:
        context = ctx(info)
        context.require()
        try:
            creator = decode_id(creator_id, "User", "creatorId")
        except DomainError as error:
            raise ClientError(error.message, "BAD_USER_INPUT") from None
        limit, offset = _rank_window(first, after)
        async with context.runtime.reads() as session:
            rows = await recognition.top_supporters(session, creator, period, limit=limit + 1,
                                                    offset=offset)
        return _leaderboard(rows, limit)

    @strawberry.field(description="Creators ranked by diamonds earned in the current day, "
                                  "week, month (UTC) or of all time.")
    async def top_creators(self, info: Info, period: Period, first: int | None = None,
                           after: str | None = None) -> relay.Connection[LeaderboardEntry]:
        context = ctx(info)
        context.require()
        limit, offset = _rank_window(first, after)
        async with context.runtime.reads() as session:
            rows = await recognition.top_creators(session, period, limit=limit + 1,
                                                  offset=offset)
        return _leaderboard(rows, limit)


@strawberry.type
class GiftingMutation:
    @strawberry.mutation(description="Send a gift: the viewer's coins pay for it, the creator "
                                     "earns diamonds and the platform its share, in one ledger "
                                     "transaction. Returns a receipt of where every coin went.")
    async def send_gift(self, info: Info, input: SendGiftInput) -> SendGiftPayload:
        context = ctx(info)
        user_id = await context.user_id()
        try:
            result = await gifting.send_gift(
                context.runtime.sessions, context.runtime.relay, sender_id=user_id,
                session_id=decode_id(input.session_id, "LiveSession", "sessionId"),
                gift_id=decode_id(input.gift_id, "Gift", "giftId"), quantity=input.quantity,
                idempotency_key=input.idempotency_key, combo_window=context.runtime.combo_window,
                plugins=context.runtime.plugins, settings=context.runtime.settings,
                clock=context.runtime.clock)
        except DomainError as error:
            return SendGiftPayload(receipt=None, wallet_coins=None, replayed=False,
                                   user_errors=[UserError.of(error)])
        return SendGiftPayload(receipt=GiftReceipt.of(result.receipt),
                               wallet_coins=result.wallet_coins,
                               replayed=result.replayed, user_errors=[])

    @strawberry.mutation(description="Creator: go live.")
    async def start_live_session(self, info: Info, input: StartLiveSessionInput
                                 ) -> LiveSessionPayload:
        context = ctx(info)
        context.require(Role.CREATOR)
        user_id = await context.user_id()
        try:
            async with context.runtime.sessions() as session, session.begin():
                row, started = await live.start_session(session, user_id, input.title)
        except DomainError as error:
            return LiveSessionPayload(live_session=None, user_errors=[UserError.of(error)])
        await context.runtime.relay.committed(started)
        return LiveSessionPayload(live_session=LiveSession.of(row), user_errors=[])

    @strawberry.mutation(description="Creator: end your live session. Open combos end first.")
    async def end_live_session(self, info: Info, input: LiveSessionInput) -> LiveSessionPayload:
        context = ctx(info)
        context.require(Role.CREATOR)
        user_id = await context.user_id()
        try:
            session_id = decode_id(input.session_id, "LiveSession", "sessionId")
            row = await gifting.end_live_session(context.runtime.sessions, context.runtime.relay,
                                                 session_id=session_id, creator_id=user_id)
        except DomainError as error:
            return LiveSessionPayload(live_session=None, user_errors=[UserError.of(error)])
        return LiveSessionPayload(live_session=LiveSession.of(row), user_errors=[])

    @strawberry.mutation(description=(
        "Creator: set a goal for your live session; gifts sent from now on count toward it."))
    async def set_live_goal(self, info: Info, input: SetLiveGoalInput) -> LiveGoalPayload:
        context = ctx(info)
        context.require(Role.CREATOR)
        user_id = await context.user_id()
        try:
            session_id = decode_id(input.session_id, "LiveSession", "sessionId")
            gift_id = None if input.gift_id is None else \
                decode_id(input.gift_id, "Gift", "giftId")
            row = await goals.set_goal(
                context.runtime.sessions, context.runtime.relay, creator_id=user_id,
                session_id=session_id, title=input.title, kind=input.kind.value,
                target=input.target, gift_id=gift_id)
        except DomainError as error:
            return LiveGoalPayload(goal=None, user_errors=[UserError.of(error)])
        return LiveGoalPayload(goal=LiveGoal.of(row, session_live=True), user_errors=[])

    @strawberry.mutation(description="Start watching a live session (counts as a viewer).")
    async def join_live_session(self, info: Info, input: LiveSessionInput) -> LiveSessionPayload:
        return await _watch(info, input, live.join)

    @strawberry.mutation(description="Stop watching a live session.")
    async def leave_live_session(self, info: Info, input: LiveSessionInput) -> LiveSessionPayload:
        return await _watch(info, input, live.leave)

    @strawberry.mutation(description="Admin: add a gift to the catalogue.")
    async def create_gift(self, info: Info, input: CreateGiftInput) -> GiftPayload:
        context = ctx(info)
        context.require(Role.ADMIN)
        try:
            async with context.runtime.sessions() as session, session.begin():
                row = await catalogue.create_gift(session, input.sku, _fields(input))
        except DomainError as error:
            return GiftPayload(gift=None, user_errors=[UserError.of(error)])
        return GiftPayload(gift=Gift.of(row), user_errors=[])

    @strawberry.mutation(description="Admin: change a gift, its window, or take it off sale.")
    async def update_gift(self, info: Info, input: UpdateGiftInput) -> GiftPayload:
        context = ctx(info)
        context.require(Role.ADMIN)
        try:
            async with context.runtime.sessions() as session, session.begin():
                row = await catalogue.update_gift(session, decode_id(input.id, "Gift", "id"),
                                                  _fields(input))
        except DomainError as error:
            return GiftPayload(gift=None, user_errors=[UserError.of(error)])
        return GiftPayload(gift=Gift.of(row), user_errors=[])

    @strawberry.mutation(description="Admin: publish a new rate card version from a given time.")
    async def publish_rate_card(self, info: Info, input: PublishRateCardInput
                                ) -> RateCardPayload:
        context = ctx(info)
        context.require(Role.ADMIN)
        try:
            async with context.runtime.sessions() as session, session.begin():
                row = await rates.publish_rate_card(
                    session, creator_share_bps=input.creator_share_bps,
                    diamonds_per_coin=input.diamonds_per_coin,
                    cash_minor_per_100_diamonds=input.cash_minor_per_100_diamonds,
                    effective_from=input.effective_from, note=input.note)
        except DomainError as error:
            return RateCardPayload(rate_card=None, user_errors=[UserError.of(error)])
        return RateCardPayload(rate_card=RateCard.of(row), user_errors=[])


async def _watch(info: Info, input: LiveSessionInput, action: Any) -> LiveSessionPayload:
    context = ctx(info)
    user_id = await context.user_id()
    try:
        session_id = decode_id(input.session_id, "LiveSession", "sessionId")
        async with context.runtime.sessions() as session, session.begin():
            events = await live.viewers_changed(session, session_id) \
                if await action(session, session_id, user_id) else []
            row = await session.get(models.LiveSession, session_id)
    except DomainError as error:
        return LiveSessionPayload(live_session=None, user_errors=[UserError.of(error)])
    await context.runtime.relay.committed(events)
    return LiveSessionPayload(live_session=LiveSession.of(row), user_errors=[])


@strawberry.type
class Subscription:
    @strawberry.subscription(description=(
        "Everything that happens in a live session, as it happens: gifts, combos, viewers, "
        "top gifters, the end. Without `after`, starts with the current viewer count; with "
        "`after` (any event's `cursor`), replays every event after it from the session's "
        "event log, then goes on live: no event missed or repeated across a reconnect. A "
        "cursor older than the events kept (7 days by default) is refused with code "
        "CURSOR_EXPIRED and the oldest cursor that can be resumed from."))
    async def live_session_events(self, info: Info, session_id: strawberry.ID,
                                  after: str | None = None
                                  ) -> AsyncGenerator[LiveSessionEvent, None]:
        context = ctx(info)
        context.require()
        try:
            sid = decode_id(session_id, "LiveSession", "sessionId")
        except DomainError as error:
            raise ClientError(error.message, "BAD_USER_INPUT") from None
        resume_from = None if after is None else event_position(after, sid)
        channel, bus = session_channel(sid), context.runtime.bus
        follower = event_log.Follower(context.runtime.reads, event_log.session_stream(sid),
                                      resume_from)
        over_websocket = broadcast.subscriber()
        # Listening starts before the session is read, so an end in between is not missed.
        if over_websocket is not None:  # events written by the session's watch, once for all
            async with broadcast.watch(bus, channel, over_websocket,
                                       lambda event: _shared_event(info, event), follower,
                                       _variable_of(info, "after")) as member:
                opening, live_now = await _opening(info, sid, follower)
                if opening is not None:
                    yield opening
                await member.run(catch_up=resume_from is not None, live=live_now)
            return
        async with bus.subscription(channel) as events:
            opening, live_now = await _opening(info, sid, follower)
            if opening is not None:
                yield opening
            else:  # resuming: what the log holds after the cursor first
                for event in await follower.read():
                    follower.position = event["seq"]
                    yield await _event(info, event)
                    if event["type"] == "SessionEnded":
                        return
            if not live_now:
                return
            async for event in events:
                missing = await follower.before(event.get("seq"))
                if missing is None:
                    continue
                for each in [*missing, event]:
                    follower.position = each.get("seq", follower.position)
                    yield await _shared_event(info, each)
                    if each["type"] == "SessionEnded":
                        return


def _variable_of(info: Info, argument: str) -> str | None:
    """The variable the operation passes as the field's ``argument``, if it passes one."""
    for node in info._raw_info.field_nodes[0].arguments:
        if node.name.value == argument and node.value.kind == "variable":
            return node.value.name.value
    return None


async def _opening(info: Info, session_id: int, follower: event_log.Follower
                   ) -> tuple[ViewerCountChanged | None, bool]:
    """A subscription's first result (the viewer count, None when it resumes from a
    cursor) and whether the session is live. Sets where the follower starts: after the
    events the opening reflects, or checks the cursor it resumes from is still kept."""
    async with ctx(info).runtime.reads() as session:
        row = await session.get(models.LiveSession, session_id)
        if row is None:
            raise ClientError("No live session has this ID.", "NOT_FOUND")
        kept = await event_log.extent(session, follower.stream)
        if follower.position is None:
            viewers = await live.viewer_count(session, session_id)
            follower.position = kept.last
            return ViewerCountChanged(cursor=event_cursor(session_id, kept.last),
                                      viewers=viewers), row.status == live.LIVE
    if follower.position > kept.last:
        raise ClientError("after is not a cursor of this session's events.", "BAD_USER_INPUT")
    if not kept.keeps_after(follower.position):
        oldest = kept.last if kept.oldest is None else kept.oldest - 1
        raise ClientError(
            "This cursor has expired: the session's events before it are no longer kept. "
            "Resume from the oldest cursor kept (in extensions.oldestCursor), or subscribe "
            "without `after` to start from now.", "CURSOR_EXPIRED",
            oldestCursor=event_cursor(session_id, oldest))
    return None, row.status == live.LIVE
