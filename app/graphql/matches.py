"""GraphQL for live matches: invitations, the contest, its live events, history, records."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry import relay
from strawberry.dataloader import DataLoader
from strawberry.types import Info

from app import models
from app.auth import Role
from app.errors import DomainError
from app.graphql.common import Long, UserError, connection, cursor_id, decode_id, page_size
from app.graphql.context import ClientError
from app.graphql.types import User, _rows_by_id, ctx
from app.services import matches

if TYPE_CHECKING:
    from app.graphql.gifting import LiveSession

LazyLiveSession = Annotated["LiveSession", strawberry.lazy("app.graphql.gifting")]


@strawberry.enum(description="Where a match stands.")
class MatchStatus(Enum):
    INVITED = "invited"
    DECLINED = "declined"
    EXPIRED = "expired"
    RUNNING = "running"
    ENDED = "ended"


@strawberry.type(description="A viewer's part in one side's score.")
class MatchSupporter:
    rank: int
    user: User
    score: Long = strawberry.field(description="What the viewer's gifts added to the side's "
                                               "score, boosts included.")


@strawberry.type(description=(
    "A brand's sponsorship of a match: until `until`, each of the brand's gifts counts "
    "`multiplier` times its value in the score (never in what it costs or pays)."))
class MatchBoost:
    brand: str = strawberry.field(description="The brand's slug.")
    multiplier: int
    until: datetime


@strawberry.type(description="One creator's side of a match.")
class MatchSide:
    creator: User
    score: Long = strawberry.field(description=(
        "Coins gifted into the side's session while the match ran (sponsored gifts at their "
        "full value, a boosting brand's gifts times its multiplier)."))
    session_id: strawberry.Private[int]
    match_id: strawberry.Private[int]

    @strawberry.field
    async def session(self, info: Info) -> LazyLiveSession:
        from app.graphql.gifting import LiveSession

        [row] = await _rows_by_id(info, models.LiveSession, [str(self.session_id)])
        return LiveSession.of(row)

    @strawberry.field(description="The side's supporters by what they added to its score.")
    async def top_supporters(self, info: Info, first: int = 3) -> list[MatchSupporter]:
        if not 1 <= first <= 100:
            raise ClientError("first must be between 1 and 100.", "BAD_USER_INPUT")
        rows = await _supporters_loader(info, first).load((self.match_id, self.session_id))
        return [MatchSupporter(rank=n + 1, user=User(id=u, name=name), score=score)
                for n, (u, name, score) in enumerate(rows)]


def _supporters_loader(info: Info, first: int) -> DataLoader[tuple[int, int], list[Any]]:
    """Every side's top supporters asked for in one request, in one query (per ``first``)."""
    context = ctx(info)
    key = f"match-supporters:{first}"
    if key not in context.cache:
        async def load(sides: list[tuple[int, int]]) -> list[list[Any]]:
            async with context.runtime.reads() as session:
                found = await matches.top_supporters_of(session, sides, first)
            return [found[side] for side in sides]

        context.cache[key] = DataLoader(load_fn=load, cache=False)
    return context.cache[key]


@strawberry.type(description=(
    "Two live creators' timed contest: each side scores the coins its viewers gift into its "
    "session while it runs. A creator invites another (`inviteToMatch`), who accepts or "
    "declines within 60 seconds; the match then runs for its duration and ends with one "
    "`MatchEnded` event. Matches never change what a gift costs or pays."))
class Match(relay.Node):
    id: relay.NodeID[int]
    status: MatchStatus
    duration_seconds: int
    invited_at: datetime
    invite_expires_at: datetime = strawberry.field(description="An invitation not answered by "
                                                               "then expires.")
    started_at: datetime | None
    ends_at: datetime | None = strawberry.field(description="When a running match's time is up.")
    ended_at: datetime | None
    inviter: MatchSide
    invitee: MatchSide
    winner: User | None = strawberry.field(description="Null until it ends, and for a tie.")
    tie: bool = strawberry.field(description="Ended with equal scores.")
    boosts: list[MatchBoost]

    @classmethod
    def of(cls, row: models.LiveMatch, names: dict[int, str], now: datetime) -> Match:
        assert row.id is not None
        ended = row.status == matches.ENDED
        winner = matches.winner_of(row) if ended else None
        return cls(
            id=row.id, status=MatchStatus(matches.status_of(row, now)),
            duration_seconds=row.duration_seconds, invited_at=row.invited_at,
            invite_expires_at=row.expires_at, started_at=row.started_at, ends_at=row.ends_at,
            ended_at=row.ended_at,
            inviter=MatchSide(creator=User(id=row.inviter_id, name=names[row.inviter_id]),
                              score=row.inviter_score, session_id=row.inviter_session_id,
                              match_id=row.id),
            invitee=MatchSide(creator=User(id=row.invitee_id, name=names[row.invitee_id]),
                              score=row.invitee_score, session_id=row.invitee_session_id,
                              match_id=row.id),
            winner=None if winner is None else User(id=winner, name=names[winner]),
            tie=ended and winner is None,
            boosts=boosts_in({"boosts": matches.boosts_of(row)}))

    @classmethod
    async def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str],
                            required: bool = False) -> list[Match | None]:
        ctx(info).require()
        rows = await _rows_by_id(info, models.LiveMatch, node_ids)
        return await matches_of(info, rows)


async def matches_of(info: Info, rows: list[Any]) -> list[Any]:
    """The GraphQL matches of rows (None stays None), with their creators' names."""
    people = {p for r in rows if r is not None for p in (r.inviter_id, r.invitee_id)}
    names = {u.id: u.name for u in await _rows_by_id(info, models.User, map(str, people))
             if u is not None}
    now = ctx(info).runtime.clock()
    return [None if r is None else Match.of(r, names, now) for r in rows]


@strawberry.type(description="A creator's ended matches.")
class MatchRecord:
    wins: int
    losses: int
    ties: int


# Live events (in `liveSessionEvents`, to both sessions of the match) ---------------------


@strawberry.type(description="One side of a match as a live event shows it.")
class MatchSideScore:
    creator: User
    session_id: relay.GlobalID
    score: Long


@strawberry.type(description="A side's final score and its top three supporters.")
class MatchSideResult:
    creator: User
    session_id: relay.GlobalID
    score: Long
    top_supporters: list[MatchSupporter]


def side_scores(event: dict[str, Any]) -> list[MatchSideScore]:
    """The sides of a match event, inviter first."""
    return [MatchSideScore(creator=User(id=s["creator_id"], name=s["creator_name"]),
                           session_id=relay.GlobalID("LiveSession", str(s["session_id"])),
                           score=s["score"]) for s in event["sides"]]


def side_results(event: dict[str, Any]) -> list[MatchSideResult]:
    """The sides of a MatchEnded event, with their top supporters."""
    return [MatchSideResult(
        creator=User(id=s["creator_id"], name=s["creator_name"]),
        session_id=relay.GlobalID("LiveSession", str(s["session_id"])), score=s["score"],
        top_supporters=[MatchSupporter(rank=n + 1, user=User(id=t["user_id"], name=t["name"]),
                                       score=t["score"]) for n, t in enumerate(s["top"])])
        for s in event["sides"]]


def boosts_in(event: dict[str, Any]) -> list[MatchBoost]:
    return [MatchBoost(brand=b["brand"], multiplier=b["multiplier"],
                       until=datetime.fromisoformat(b["until"])) for b in event["boosts"]]


# Inputs, payloads, queries and mutations --------------------------------------------------


@strawberry.input(description="Invite the creator of another live session to a match.")
class InviteToMatchInput:
    session_id: strawberry.ID = strawberry.field(description="Your live session.")
    opponent_session_id: strawberry.ID = strawberry.field(
        description="The other creator's live session.")
    duration_seconds: int = strawberry.field(description="60 to 600 (1 to 10 minutes).")


@strawberry.input
class MatchInput:
    match_id: strawberry.ID


@strawberry.type
class MatchPayload:
    match: Match | None
    user_errors: list[UserError]


@strawberry.type
class MatchQuery:
    @strawberry.field(description="One match, or null.")
    async def match(self, info: Info, id: strawberry.ID) -> Match | None:
        ctx(info).require()
        try:
            match_id = decode_id(id, "Match", "id")
        except DomainError as error:
            raise ClientError(error.message, "BAD_USER_INPUT") from None
        [match] = await matches_of(info, await _rows_by_id(info, models.LiveMatch,
                                                           [str(match_id)]))
        return match

    @strawberry.field(description="A creator's matches, invitations included, newest first.")
    async def matches(self, info: Info, creator_id: strawberry.ID, first: int | None = None,
                      after: str | None = None) -> relay.Connection[Match]:
        context = ctx(info)
        context.require()
        creator = _creator(creator_id)
        limit = page_size(first)
        async with context.runtime.reads() as session:
            rows = await matches.history(session, creator, limit=limit + 1,
                                         before_id=cursor_id(after))
        built = dict(zip((r.id for r in rows), await matches_of(info, rows), strict=True))
        return connection(rows, limit, lambda r: built[r.id], key=lambda r: r.id)

    @strawberry.field(description="A creator's wins, losses and ties in ended matches.")
    async def match_record(self, info: Info, creator_id: strawberry.ID) -> MatchRecord:
        context = ctx(info)
        context.require()
        creator = _creator(creator_id)
        async with context.runtime.reads() as session:
            record = await matches.record_of(session, creator)
        return MatchRecord(wins=record.wins, losses=record.losses, ties=record.ties)

    @strawberry.field(description="Creator: invitations to a match waiting for your answer.")
    async def match_invitations(self, info: Info) -> list[Match]:
        context = ctx(info)
        context.require(Role.CREATOR)
        user_id = await context.user_id()
        async with context.runtime.reads() as session:
            rows = await matches.invitations(session, user_id, context.runtime.clock())
        return await matches_of(info, rows)


def _creator(creator_id: strawberry.ID) -> int:
    try:
        return decode_id(creator_id, "User", "creatorId")
    except DomainError as error:
        raise ClientError(error.message, "BAD_USER_INPUT") from None


@strawberry.type
class MatchMutation:
    @strawberry.mutation(description=(
        "Creator: invite the creator of another live session to a match of "
        "`durationSeconds`. They have 60 seconds to accept or decline."))
    async def invite_to_match(self, info: Info, input: InviteToMatchInput) -> MatchPayload:
        context = ctx(info)
        context.require(Role.CREATOR)
        user_id = await context.user_id()
        runtime = context.runtime
        try:
            row = await matches.invite(
                runtime.sessions, runtime.relay, creator_id=user_id,
                session_id=decode_id(input.session_id, "LiveSession", "sessionId"),
                opponent_session_id=decode_id(input.opponent_session_id, "LiveSession",
                                              "opponentSessionId"),
                duration_seconds=input.duration_seconds, now=runtime.clock())
        except DomainError as error:
            return MatchPayload(match=None, user_errors=[UserError.of(error)])
        [match] = await matches_of(info, [row])
        return MatchPayload(match=match, user_errors=[])

    @strawberry.mutation(description="Creator: accept an invitation to a match; it starts now.")
    async def accept_match(self, info: Info, input: MatchInput) -> MatchPayload:
        return await _answer(info, input, accept=True)

    @strawberry.mutation(description="Creator: decline an invitation to a match.")
    async def decline_match(self, info: Info, input: MatchInput) -> MatchPayload:
        return await _answer(info, input, accept=False)


async def _answer(info: Info, input: MatchInput, *, accept: bool) -> MatchPayload:
    context = ctx(info)
    context.require(Role.CREATOR)
    user_id = await context.user_id()
    runtime = context.runtime
    try:
        match_id = decode_id(input.match_id, "Match", "matchId")
        if accept:
            row = await matches.accept(runtime.sessions, runtime.relay, runtime.plugins,
                                       creator_id=user_id, match_id=match_id,
                                       clock=runtime.clock)
        else:
            row = await matches.decline(runtime.sessions, runtime.relay, creator_id=user_id,
                                        match_id=match_id, now=runtime.clock())
    except DomainError as error:
        return MatchPayload(match=None, user_errors=[UserError.of(error)])
    [match] = await matches_of(info, [row])
    return MatchPayload(match=match, user_errors=[])
