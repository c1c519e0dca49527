"""Live goals: a creator's targets for a live session, counted by its gifts.

A goal is coins gifted into the session (``coins``: sponsored gifts count at their full
value) or a number of one gift (``gift_count``). Goals are pure bookkeeping: they never
change what a gift costs or pays. Each batch of gifts adds to the goals of its sessions in
its own transaction (:func:`count_gifts`), holding the goals' rows, so concurrent batches,
in one process or several, add up exactly and one ``GoalReached`` goes out per goal. Goals
end with their session.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.errors import DomainError, ErrorCode
from app.models import Gift, LiveGoal, LiveSession
from app.relay import Relay
from app.services import event_log
from app.services.live import own_live_session

COINS, GIFT_COUNT = "coins", "gift_count"
MAX_GOALS = 5  # a session's goals, reached or not
MAX_TARGET = 1_000_000_000
MAX_TITLE = 80


@dataclass(frozen=True, slots=True)
class Counted:
    """What one send adds to its session's goals."""

    session_id: int
    gift_id: int
    coins: int  # its full value, a brand's subsidy included
    quantity: int


async def set_goal(sessions: async_sessionmaker[AsyncSession], relay: Relay, *,
                   creator_id: int, session_id: int, title: str, kind: str, target: int,
                   gift_id: int | None = None) -> LiveGoal:
    """Set a goal for the creator's live session; it counts the gifts sent from now on.
    Raises :class:`DomainError` (nothing written) for bad input, another creator's or an
    ended session, or a session that has its ``MAX_GOALS`` already."""
    title = title.strip() if isinstance(title, str) else ""
    if not 1 <= len(title) <= MAX_TITLE or not title.isprintable():
        raise DomainError(ErrorCode.INVALID_INPUT, f"title must be 1 to {MAX_TITLE} printable "
                          "characters.", "title")
    if type(target) is not int or not 1 <= target <= MAX_TARGET:
        raise DomainError(ErrorCode.GOAL_TARGET_OUT_OF_RANGE,
                          f"target must be between 1 and {MAX_TARGET:,}.", "target")
    if kind not in (COINS, GIFT_COUNT):
        raise DomainError(ErrorCode.INVALID_INPUT, "kind must be coins or gift_count.", "kind")
    if (kind == GIFT_COUNT) != (gift_id is not None):
        raise DomainError(ErrorCode.INVALID_INPUT, "giftId is needed for a GIFT_COUNT goal, "
                          "and only for one.", "giftId")
    async with sessions() as session, session.begin():
        # Locked: no batch of gifts is between reading the session's goal count and writing.
        live = await own_live_session(session, session_id, creator_id, to="set its goals",
                                      ended="This session has ended.")
        if live.goals >= MAX_GOALS:
            raise DomainError(ErrorCode.TOO_MANY_GOALS, f"A session has at most {MAX_GOALS} "
                              "goals.", "sessionId")
        if gift_id is not None and await session.get(Gift, gift_id) is None:
            raise DomainError(ErrorCode.NOT_FOUND, "No gift has this ID.", "giftId")
        goal = LiveGoal(session_id=session_id, title=title, kind=kind, gift_id=gift_id,
                        target=target)
        session.add(goal)
        live.goals += 1
        await session.flush()
        events = await event_log.append_session_events(session, [progress_event(goal)])
    await relay.committed(events)
    return goal


async def goals_of(session: AsyncSession, session_id: int) -> list[LiveGoal]:
    """The session's goals, in the order they were set."""
    return list((await session.scalars(
        select(LiveGoal).where(LiveGoal.session_id == session_id).order_by(LiveGoal.id))).all())


async def count_gifts(session: AsyncSession, lives: dict[int, LiveSession],
                      sends: Iterable[Counted], now: datetime) -> dict[int, list[dict[str, Any]]]:
    """Add a batch's sends to their sessions' goals, in the batch's transaction; the events
    to log, by session: a ``GoalProgress`` for each goal that moved, and a ``GoalReached``
    for each goal this batch took to its target (its row is locked: one per goal, whatever
    the writers)."""
    sends = [send for send in sends if lives[send.session_id].goals]
    if not sends:
        return {}
    goals = (await session.scalars(
        select(LiveGoal).where(LiveGoal.session_id.in_({s.session_id for s in sends}))
        .order_by(LiveGoal.id).with_for_update())).all()
    events: dict[int, list[dict[str, Any]]] = {}
    for goal in goals:
        added = sum(s.coins if goal.kind == COINS else s.quantity for s in sends
                    if s.session_id == goal.session_id
                    and (goal.kind == COINS or s.gift_id == goal.gift_id))
        if not added:
            continue
        goal.progress += added
        moved = events.setdefault(goal.session_id, [])
        moved.append(progress_event(goal))
        if goal.reached_at is None and goal.progress >= goal.target:
            goal.reached_at = now
            moved.append({**progress_event(goal), "type": "GoalReached",
                          "reached_at": now.isoformat()})
    await session.flush()
    return events


def progress_event(goal: LiveGoal) -> dict[str, Any]:
    return {"type": "GoalProgress", "session_id": goal.session_id, "goal_id": goal.id,
            "title": goal.title, "kind": goal.kind, "gift_id": goal.gift_id,
            "target": goal.target, "progress": goal.progress}
