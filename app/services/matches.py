"""Live matches: two live creators' timed contest, scored by the gifts their viewers send.

A creator invites another live creator (:func:`invite`); the invitee accepts within
``INVITE_SECONDS`` (:func:`accept`) or declines (:func:`decline`). An accepted match runs
for its duration (1 to 10 minutes): each side scores the coins gifted into its session
while it runs (sponsored gifts at their full value; a boosting brand's gifts times its
multiplier), added in each batch of gifts' own transaction (:func:`count_gifts`), with a
``MatchScore`` event to both sessions. A background pass that every server process runs
(:func:`end_due_matches`) ends a match once its time is up, with one ``MatchEnded`` (the
winner or a tie, each side's top three supporters); ending either session ends its match
at once. Matches are pure bookkeeping: they never change what a gift costs or pays.

A creator is in at most one match at a time: accepting locks both sessions, whose
``match_id`` names their latest match. Brand boosts are asked of the plugins before the
match's transaction, behind their bulkheads (:func:`ask_for_boosts`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import add_to_counters, one_of
from app.errors import DomainError, ErrorCode
from app.models import LiveMatch, LiveSession, MatchSupporter, User
from app.relay import Relay
from app.services import event_log
from app.services.live import LIVE, check_own
from app.sponsorship import MatchBoost, MatchContext, PluginAnswerInvalid, check_boost

if TYPE_CHECKING:
    from app.plugins import PluginHost

logger = logging.getLogger(__name__)

INVITED, DECLINED, EXPIRED, RUNNING, ENDED = "invited", "declined", "expired", "running", "ended"
INVITE_SECONDS = 60  # how long an invitation waits for its answer
MIN_SECONDS, MAX_SECONDS = 60, 600
TOP_SUPPORTERS = 3
DUE_PER_PASS = 100


@dataclass(frozen=True, slots=True)
class Scored:
    """What one send may add to its session's match."""

    session_id: int
    sender_id: int
    coins: int  # its full value, a brand's subsidy included
    brand: str | None  # the sponsoring brand's slug


def status_of(match: LiveMatch, now: datetime) -> str:
    """The match's status as its users see it: an unanswered invitation past its time is
    expired even before the background pass marks it."""
    if match.status == INVITED and match.expires_at <= now:
        return EXPIRED
    return match.status


def in_match(match: LiveMatch | None) -> bool:
    """Whether the match holds its creators: until it is ended (by the background pass, a
    moment after its time is up, or with one of its sessions)."""
    return match is not None and match.status == RUNNING


async def invite(sessions: async_sessionmaker[AsyncSession], relay: Relay, *, creator_id: int,
                 session_id: int, opponent_session_id: int, duration_seconds: int,
                 now: datetime) -> LiveMatch:
    """Invite the creator of another live session to a match of ``duration_seconds``.
    Raises :class:`DomainError` (nothing written) for a bad duration, a session that is not
    the creator's own live one, an opponent not live or in a match, or an invitation of
    the creator's still waiting for its answer."""
    if type(duration_seconds) is not int or not MIN_SECONDS <= duration_seconds <= MAX_SECONDS:
        raise DomainError(ErrorCode.MATCH_DURATION_OUT_OF_RANGE, f"durationSeconds must be "
                          f"between {MIN_SECONDS} and {MAX_SECONDS} (1 to 10 minutes).",
                          "durationSeconds")
    async with sessions() as session, session.begin():
        own, other = await _lock_sessions(session, session_id, opponent_session_id)
        check_own(own, creator_id, to="invite another creator to a match",
                  ended="This session has ended.")
        if other is None:
            raise DomainError(ErrorCode.NOT_FOUND, "No live session has this ID.",
                              "opponentSessionId")
        if other.creator_id == creator_id:
            raise DomainError(ErrorCode.INVALID_INPUT, "You cannot invite yourself to a match.",
                              "opponentSessionId")
        if other.status != LIVE:
            raise DomainError(ErrorCode.SESSION_NOT_LIVE, "The other creator's session has "
                              "ended; only a creator who is live can be invited.",
                              "opponentSessionId")
        await _check_free(session, own, other, now)
        waiting = await session.scalar(select(LiveMatch).where(
            LiveMatch.inviter_id == creator_id, LiveMatch.status == INVITED,
            LiveMatch.expires_at > now).limit(1))
        if waiting is not None:
            raise DomainError(ErrorCode.MATCH_INVITE_PENDING, f"Your invitation to a match is "
                              f"waiting for its answer until {_clock(waiting.expires_at)} UTC; "
                              "invite again after it is answered or expires.",
                              "opponentSessionId")
        match = LiveMatch(inviter_id=creator_id, invitee_id=other.creator_id,
                          inviter_session_id=own.id, invitee_session_id=other.id,
                          duration_seconds=duration_seconds, status=INVITED, invited_at=now,
                          expires_at=now + timedelta(seconds=INVITE_SECONDS))
        session.add(match)
        await session.flush()
        events = await _to_both(session, match, "MatchInvited", {
            "duration_seconds": duration_seconds, "expires_at": match.expires_at.isoformat()})
    await relay.committed(events)
    return match


async def accept(sessions: async_sessionmaker[AsyncSession], relay: Relay,
                 plugins: PluginHost | None, *, creator_id: int, match_id: int,
                 clock: Callable[[], datetime]) -> LiveMatch:
    """The invitee accepts: the match starts, with the boosts brands offered, at the time
    read once both sessions are locked (no batch of gifts into them is in flight then: a
    gift counts exactly when written at or after the start). Raises :class:`DomainError`
    (nothing written) unless the caller is the invitee of a waiting, unexpired invitation
    and both creators are live and in no other match."""
    async with sessions() as session:  # checked before plugins are asked, and again below
        match = await session.get(LiveMatch, match_id)
        _check_answerable(match, creator_id, clock())
        assert match is not None
        await _check_startable(session, match, creator_id, clock())
    boosts = await ask_for_boosts(plugins, _context(match, clock()))
    async with sessions() as session, session.begin():
        inviter_live, invitee_live = await _lock_sessions(
            session, match.inviter_session_id, match.invitee_session_id)
        now = clock()
        match = await session.get(LiveMatch, match_id, with_for_update=True,
                                  populate_existing=True)
        assert match is not None
        _check_answerable(match, creator_id, now)
        await _check_startable(session, match, creator_id, now)
        match.status, match.started_at = RUNNING, now
        match.ends_at = now + timedelta(seconds=match.duration_seconds)
        match.boosts = json.dumps([{"brand": b.brand, "multiplier": b.multiplier,
                                    "until": (now + timedelta(seconds=b.seconds)).isoformat()}
                                   for b in boosts])
        assert inviter_live is not None and invitee_live is not None
        inviter_live.match_id = invitee_live.match_id = match.id
        await session.flush()
        events = await _to_both(session, match, "MatchStarted", {
            "started_at": now.isoformat(), "ends_at": match.ends_at.isoformat(),
            "boosts": json.loads(match.boosts)})
    await relay.committed(events)
    return match


async def _check_startable(session: AsyncSession, match: LiveMatch, creator_id: int,
                           now: datetime) -> None:
    """Refuse unless both of the match's sessions are live and in no other match."""
    inviter_live = await session.get(LiveSession, match.inviter_session_id)
    invitee_live = await session.get(LiveSession, match.invitee_session_id)
    assert inviter_live is not None and invitee_live is not None
    for live, whose in ((invitee_live, "Your"), (inviter_live, "The inviting creator's")):
        if live.status != LIVE:
            raise DomainError(ErrorCode.SESSION_NOT_LIVE, f"{whose} session has ended; a "
                              "match needs both creators live.", "matchId")
    await _check_free(session, invitee_live, inviter_live, now)


async def decline(sessions: async_sessionmaker[AsyncSession], relay: Relay, *,
                  creator_id: int, match_id: int, now: datetime) -> LiveMatch:
    """The invitee declines a waiting invitation."""
    async with sessions() as session, session.begin():
        match = await session.get(LiveMatch, match_id, with_for_update=True)
        _check_answerable(match, creator_id, now)
        assert match is not None
        match.status = DECLINED
        await session.flush()
        events = await _to_both(session, match, "MatchDeclined", {})
    await relay.committed(events)
    return match


async def ask_for_boosts(plugins: PluginHost | None, match: MatchContext) -> list[MatchBoost]:
    """Every active plugin's boost for the match, asked at once, each behind its bulkhead
    and time limit; one per brand. A failure, a time-out, an invalid answer or a brand the
    plugin does not own gives no boost (the failure is recorded against that plugin)."""
    if plugins is None:
        return []
    asking = [name for name in plugins.records
              if plugins.is_active(name) and plugins.implements(name, "boost_match")]
    answers = await asyncio.gather(*(plugins.call_owner(name, "boost_match", match=match)
                                     for name in asking), return_exceptions=True)
    boosts: dict[str, MatchBoost] = {}
    for name, answer in zip(asking, answers, strict=True):
        if isinstance(answer, BaseException):
            continue  # recorded by the bulkhead (PluginCallFailed)
        try:
            boost = check_boost(answer, match.duration_seconds)
        except PluginAnswerInvalid as invalid:
            plugins.record_failure(name, f"invalid answer: {invalid}", "boost_match")
            continue
        if boost is None:
            continue
        if not plugins.owns(name, boost.brand):
            plugins.record_failure(name, f"boost_match named the brand {boost.brand!r}, "
                                   "which it does not own", "boost_match")
            continue
        boosts.setdefault(boost.brand, boost)
    return list(boosts.values())


async def count_gifts(session: AsyncSession, lives: dict[int, LiveSession],
                      sends: Iterable[Scored], now: datetime) -> dict[int, list[dict[str, Any]]]:
    """Add a batch's sends to their sessions' running matches, in the batch's transaction
    (the match rows locked: concurrent batches add up exactly); a ``MatchScore`` event for
    both sessions of each match that moved."""
    sends = [s for s in sends if lives[s.session_id].match_id is not None]
    if not sends:
        return {}
    matches = (await session.scalars(
        select(LiveMatch).where(LiveMatch.id.in_({lives[s.session_id].match_id for s in sends}),
                                LiveMatch.status == RUNNING)
        .order_by(LiveMatch.id).with_for_update())).all()
    events: dict[int, list[dict[str, Any]]] = {}
    supporters: dict[tuple[int, int, int], int] = {}
    for match in matches:
        assert match.started_at is not None and match.ends_at is not None
        if not match.started_at <= now < match.ends_at:
            continue
        boosts = {b["brand"]: b for b in json.loads(match.boosts)}
        moved = False
        for send in sends:
            if send.session_id not in (match.inviter_session_id, match.invitee_session_id):
                continue
            boost = boosts.get(send.brand) if send.brand is not None else None
            points = send.coins * (boost["multiplier"] if boost is not None
                                   and now < datetime.fromisoformat(boost["until"]) else 1)
            if not points:
                continue
            if send.session_id == match.inviter_session_id:
                match.inviter_score += points
            else:
                match.invitee_score += points
            key = (match.id, send.session_id, send.sender_id)
            supporters[key] = supporters.get(key, 0) + points
            moved = True
        if moved:
            for event in _both(match, await _names(session, match), "MatchScore",
                               {"ends_at": match.ends_at.isoformat()}):
                events.setdefault(event["session_id"], []).append(event)
    if supporters:
        await session.flush()
        await add_to_counters(session, MatchSupporter, ("match_id", "session_id", "sender_id"), [
            {"match_id": m, "session_id": s, "sender_id": u, "score": score}
            for (m, s, u), score in sorted(supporters.items())])
    return events


async def end_due_matches(sessions: async_sessionmaker[AsyncSession], relay: Relay,
                          clock: Callable[[], datetime]) -> int:
    """End the running matches whose time is up (one ``MatchEnded`` each) and mark the
    invitations past their time expired; how many matches ended.

    A due match's two sessions are locked first, so the batches of gifts into them in
    flight are written before it ends and later ones see it ended: a gift counts exactly
    when its batch's time (read under the same locks) is before ``ends_at``. Safe in every
    server process at once: an ended match is never ended again."""
    async with sessions() as session, session.begin():
        candidates = (await session.execute(
            select(LiveMatch.id, LiveMatch.inviter_session_id, LiveMatch.invitee_session_id)
            .where(LiveMatch.status == RUNNING, LiveMatch.ends_at <= clock())
            .order_by(LiveMatch.id).limit(DUE_PER_PASS))).all()
        events: list[dict[str, Any]] = []
        ended = 0
        if candidates:
            await session.execute(  # every writer's order: sessions by id, then matches
                select(LiveSession.id).where(one_of(session, LiveSession.id, {
                    side for row in candidates for side in row[1:]}))
                .order_by(LiveSession.id).with_for_update())
            now = clock()
            due = (await session.scalars(
                select(LiveMatch).where(one_of(session, LiveMatch.id, [row[0] for row in
                                                                       candidates]),
                                        LiveMatch.status == RUNNING, LiveMatch.ends_at <= now)
                .order_by(LiveMatch.id).with_for_update())).all()
            events = [event for match in due for event in await _end(session, match, now)]
            ended = len(due)
        expired = (await session.scalars(
            select(LiveMatch).where(LiveMatch.status == INVITED, LiveMatch.expires_at <= clock())
            .order_by(LiveMatch.id).limit(DUE_PER_PASS)
            .with_for_update(skip_locked=True))).all()
        for match in expired:
            match.status = EXPIRED
        logged = await event_log.append_session_events(session, events)
    await relay.committed(logged)
    return ended


async def end_with_session(session: AsyncSession, live: LiveSession, now: datetime
                           ) -> list[dict[str, Any]]:
    """A session is ending (its row locked): its waiting invitations expire, and its running
    match ends now; the events. (A gift into the other session counts if its batch wrote
    it before this.)"""
    await session.execute(
        update(LiveMatch).where(LiveMatch.status == INVITED,
                                or_(LiveMatch.inviter_session_id == live.id,
                                    LiveMatch.invitee_session_id == live.id))
        .values(status=EXPIRED).execution_options(synchronize_session=False))
    if live.match_id is None:
        return []
    match = await session.get(LiveMatch, live.match_id, with_for_update=True)
    if match is None or match.status != RUNNING:
        return []
    return await _end(session, match, now)


async def _end(session: AsyncSession, match: LiveMatch, now: datetime) -> list[dict[str, Any]]:
    """End a running match (its row locked): its MatchEnded events, to log."""
    match.status, match.ended_at = ENDED, now
    await session.flush()
    assert match.id is not None
    tops = await top_supporters_of(session, [(match.id, match.inviter_session_id),
                                             (match.id, match.invitee_session_id)],
                                   TOP_SUPPORTERS)
    events = _both(match, await _names(session, match), "MatchEnded", {
        "ended_at": now.isoformat(), "winner_id": winner_of(match)})
    for event in events:
        for side in event["sides"]:
            side["top"] = [{"user_id": u, "name": n, "score": s} for u, n, s in
                           tops[match.id, side["session_id"]]]
    return events


def winner_of(match: LiveMatch) -> int | None:
    """The creator with the higher score; None for a tie."""
    if match.inviter_score == match.invitee_score:
        return None
    return match.inviter_id if match.inviter_score > match.invitee_score else match.invitee_id


async def top_supporters_of(session: AsyncSession, sides: Iterable[tuple[int, int]],
                            limit: int) -> dict[tuple[int, int], list[tuple[int, str, int]]]:
    """Each (match id, session id) side's supporters by what they added to its score,
    the first ``limit``: (user id, name, score). One query for all the sides."""
    sides = set(sides)
    ranked = select(MatchSupporter.match_id, MatchSupporter.session_id,
                    MatchSupporter.sender_id, User.name, MatchSupporter.score,
                    func.row_number().over(
                        partition_by=(MatchSupporter.match_id, MatchSupporter.session_id),
                        order_by=(MatchSupporter.score.desc(), MatchSupporter.sender_id))
                    .label("place")) \
        .join(User, User.id == MatchSupporter.sender_id) \
        .where(one_of(session, MatchSupporter.match_id, {m for m, _ in sides})).subquery()
    found: dict[tuple[int, int], list[tuple[int, str, int]]] = {side: [] for side in sides}
    for row in await session.execute(select(ranked).where(ranked.c.place <= limit)
                                     .order_by(ranked.c.match_id, ranked.c.session_id,
                                               ranked.c.place)):
        if (row.match_id, row.session_id) in found:
            found[row.match_id, row.session_id].append((row.sender_id, row.name, row.score))
    return found


@dataclass(frozen=True, slots=True)
class Record:
    wins: int
    losses: int
    ties: int


async def record_of(session: AsyncSession, creator_id: int) -> Record:
    """A creator's ended matches: won, lost, tied."""
    inviter, invitee = LiveMatch.inviter_id == creator_id, LiveMatch.invitee_id == creator_id
    ahead, behind = LiveMatch.inviter_score > LiveMatch.invitee_score, \
        LiveMatch.inviter_score < LiveMatch.invitee_score
    won = or_(and_(inviter, ahead), and_(invitee, behind))
    tied = LiveMatch.inviter_score == LiveMatch.invitee_score
    total, wins, ties = (await session.execute(
        select(func.count(), func.coalesce(func.sum(case((won, 1), else_=0)), 0),
               func.coalesce(func.sum(case((tied, 1), else_=0)), 0))
        .where(LiveMatch.status == ENDED, or_(inviter, invitee)))).one()
    return Record(wins=wins, losses=total - wins - ties, ties=ties)


async def history(session: AsyncSession, creator_id: int, *, limit: int,
                  before_id: int | None) -> list[LiveMatch]:
    """The creator's matches (invitations included), newest first."""
    query = select(LiveMatch).where(or_(LiveMatch.inviter_id == creator_id,
                                        LiveMatch.invitee_id == creator_id)) \
        .order_by(LiveMatch.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(LiveMatch.id < before_id)
    return list((await session.scalars(query)).all())


async def invitations(session: AsyncSession, creator_id: int, now: datetime) -> list[LiveMatch]:
    """Invitations waiting for the creator's answer, oldest first."""
    return list((await session.scalars(
        select(LiveMatch).where(LiveMatch.invitee_id == creator_id, LiveMatch.status == INVITED,
                                LiveMatch.expires_at > now).order_by(LiveMatch.id))).all())


def boosts_of(match: LiveMatch) -> list[dict[str, Any]]:
    return json.loads(match.boosts)


# Checks ----------------------------------------------------------------------------------


async def _lock_sessions(session: AsyncSession, first_id: int, second_id: int
                         ) -> tuple[LiveSession | None, LiveSession | None]:
    """Both sessions, locked for update in id order (every writer's order)."""
    rows = {live.id: live for live in await session.scalars(
        select(LiveSession).where(LiveSession.id.in_({first_id, second_id}))
        .order_by(LiveSession.id).with_for_update().execution_options(populate_existing=True))}
    return rows.get(first_id), rows.get(second_id)


async def _check_free(session: AsyncSession, own: LiveSession, other: LiveSession,
                      now: datetime) -> None:
    """Refuse unless neither session is in a match (their rows locked)."""
    for live, who in ((own, "You are"), (other, "The other creator is")):
        current = None if live.match_id is None else await session.get(LiveMatch, live.match_id)
        if in_match(current):
            assert current is not None and current.ends_at is not None
            if current.ends_at <= now:
                raise DomainError(ErrorCode.ALREADY_IN_MATCH, f"{who} in a match that is "
                                  "ending now; try again in a moment.", None, retry_after=1)
            raise DomainError(ErrorCode.ALREADY_IN_MATCH, f"{who} in a match until "
                              f"{_clock(current.ends_at)} UTC; a creator is in one match at "
                              "a time.", None)


def _check_answerable(match: LiveMatch | None, creator_id: int, now: datetime) -> None:
    if match is None:
        raise DomainError(ErrorCode.NOT_FOUND, "No match has this ID.", "matchId")
    if match.invitee_id != creator_id:
        raise DomainError(ErrorCode.NOT_MATCH_INVITEE, "Only the invited creator can accept "
                          "or decline this match.", "matchId")
    status = status_of(match, now)
    if status == EXPIRED and match.expires_at > now:  # expired early: a session ended
        raise DomainError(ErrorCode.MATCH_INVITE_EXPIRED, "This invitation expired when one "
                          "of its creators ended their session; ask for a new one.", "matchId")
    if status == EXPIRED:
        raise DomainError(ErrorCode.MATCH_INVITE_EXPIRED, f"This invitation expired at "
                          f"{_clock(match.expires_at)} UTC; ask for a new one.", "matchId")
    if status != INVITED:
        raise DomainError(ErrorCode.MATCH_NOT_PENDING, f"This invitation was already "
                          f"answered (the match is {status}).", "matchId")


def _context(match: LiveMatch, at: datetime) -> MatchContext:
    assert match.id is not None
    return MatchContext(match_id=match.id, inviter_id=match.inviter_id,
                        invitee_id=match.invitee_id,
                        inviter_session_id=match.inviter_session_id,
                        invitee_session_id=match.invitee_session_id,
                        duration_seconds=match.duration_seconds, at=at)


# Events ----------------------------------------------------------------------------------


async def _names(session: AsyncSession, match: LiveMatch) -> dict[int, str]:
    return dict((await session.execute(select(User.id, User.name).where(
        User.id.in_((match.inviter_id, match.invitee_id))))).all())


def _both(match: LiveMatch, names: dict[int, str], kind: str, fields: dict[str, Any]
          ) -> list[dict[str, Any]]:
    """The event for each of the match's two sessions (the inviter's side first)."""
    def sides() -> list[dict[str, Any]]:
        return [{"creator_id": match.inviter_id, "creator_name": names[match.inviter_id],
                 "session_id": match.inviter_session_id, "score": match.inviter_score},
                {"creator_id": match.invitee_id, "creator_name": names[match.invitee_id],
                 "session_id": match.invitee_session_id, "score": match.invitee_score}]

    return [{"type": kind, "session_id": session_id, "match_id": match.id, **fields,
             "sides": sides()}
            for session_id in (match.inviter_session_id, match.invitee_session_id)]


async def _to_both(session: AsyncSession, match: LiveMatch, kind: str,
                   fields: dict[str, Any]) -> list[Any]:
    return await event_log.append_session_events(
        session, _both(match, await _names(session, match), kind, fields))


def _clock(at: datetime) -> str:
    return at.strftime("%H:%M:%S")
