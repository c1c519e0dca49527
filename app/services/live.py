"""Live sessions: a creator goes live and ends; viewers join and leave (each change of the
viewer count an event in the session's stream)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import insert_ignoring_conflict, total
from app.errors import DomainError, ErrorCode
from app.models import Gift, GiftCombo, LiveSession, SessionGifterTotal, SessionViewer, User
from app.services import event_log

LIVE, ENDED = "live", "ended"


@dataclass(frozen=True, slots=True)
class SessionTotals:
    gifts: int
    coins: int
    diamonds: int
    viewers: int
    peak_viewers: int


def session_not_found() -> DomainError:
    return DomainError(ErrorCode.NOT_FOUND, "No live session has this ID.", "sessionId")


async def start_session(session: AsyncSession, creator_id: int, title: str
                        ) -> tuple[LiveSession, list[dict[str, object]]]:
    """Go live; the session and its first event (SessionStarted), to publish once committed."""
    title = title.strip()
    if not 1 <= len(title) <= 120:
        raise DomainError(ErrorCode.INVALID_INPUT, "title must be 1 to 120 characters.", "title")
    live = LiveSession(creator_id=creator_id, title=title, status=LIVE)
    try:
        async with session.begin_nested():
            session.add(live)
    except IntegrityError:
        raise DomainError(ErrorCode.ALREADY_LIVE, "You are already live; end that session "
                          "before starting another.", None) from None
    assert live.id is not None
    return live, await event_log.append_session_events(session, [{
        "type": "SessionStarted", "session_id": live.id, "title": live.title,
        "started_at": live.started_at.isoformat()}])


async def own_live_session(session: AsyncSession, session_id: int, creator_id: int, *,
                           to: str, ended: str) -> LiveSession:
    """The creator's own live session, locked for update; refused (saying what the creator
    tried ``to`` do, and ``ended`` once it has) for anyone else or after it ended."""
    return check_own(await session.get(LiveSession, session_id, with_for_update=True),
                     creator_id, to=to, ended=ended)


def check_own(live: LiveSession | None, creator_id: int, *, to: str, ended: str
              ) -> LiveSession:
    """``live`` if it is the creator's own live session; refused as :func:`own_live_session`
    says otherwise."""
    if live is None:
        raise session_not_found()
    if live.creator_id != creator_id:
        raise DomainError(ErrorCode.NOT_SESSION_CREATOR, f"Only the creator of a session can "
                          f"{to}.", "sessionId")
    if live.status != LIVE:
        raise DomainError(ErrorCode.SESSION_NOT_LIVE, ended, "sessionId")
    return live


async def end_session(session: AsyncSession, session_id: int, creator_id: int) -> LiveSession:
    live = await own_live_session(session, session_id, creator_id, to="end it",
                                  ended="This session has already ended.")
    now = datetime.now(UTC)
    live.status, live.ended_at = ENDED, now
    await session.execute(update(SessionViewer).where(SessionViewer.session_id == session_id,
                                                      SessionViewer.left_at.is_(None))
                          .values(left_at=now))
    await session.flush()
    return live


async def join(session: AsyncSession, session_id: int, user_id: int) -> bool:
    """Mark the viewer as watching; return whether the viewer count changed."""
    live = await session.get(LiveSession, session_id)
    if live is None:
        raise session_not_found()
    if live.status != LIVE:
        raise DomainError(ErrorCode.SESSION_NOT_LIVE, "This session has ended.", "sessionId")
    inserted = await session.execute(insert_ignoring_conflict(
        session, SessionViewer, {"session_id": session_id, "user_id": user_id},
        ["session_id", "user_id"]))
    if inserted.rowcount:
        return True
    rejoined = await session.execute(
        update(SessionViewer).where(SessionViewer.session_id == session_id,
                                    SessionViewer.user_id == user_id,
                                    SessionViewer.left_at.is_not(None))
        .values(left_at=None))
    return bool(rejoined.rowcount)


async def leave(session: AsyncSession, session_id: int, user_id: int) -> bool:
    if await session.get(LiveSession, session_id) is None:
        raise session_not_found()
    left = await session.execute(
        update(SessionViewer).where(SessionViewer.session_id == session_id,
                                    SessionViewer.user_id == user_id,
                                    SessionViewer.left_at.is_(None))
        .values(left_at=datetime.now(UTC)))
    return bool(left.rowcount)


async def viewers_changed(session: AsyncSession, session_id: int) -> list[dict[str, object]]:
    """Log the session's viewer count, counted once this transaction holds the session's
    stream: two viewers joining together are reported as 1 then 2, never 1 and 1."""
    await event_log.hold(session, event_log.session_stream(session_id))
    return await event_log.append_session_events(session, [{
        "type": "ViewerCountChanged", "session_id": session_id,
        "viewers": await viewer_count(session, session_id)}])


async def viewer_count(session: AsyncSession, session_id: int) -> int:
    return await session.scalar(select(func.count()).select_from(SessionViewer).where(
        SessionViewer.session_id == session_id, SessionViewer.left_at.is_(None)))


async def totals(session: AsyncSession, session_id: int) -> SessionTotals:
    gifts, coins, diamonds = (await session.execute(
        select(total(SessionGifterTotal.gifts),
               total(SessionGifterTotal.coins),
               total(SessionGifterTotal.diamonds))
        .where(SessionGifterTotal.session_id == session_id))).one()
    peak = await session.scalar(select(func.count()).select_from(SessionViewer)
                                .where(SessionViewer.session_id == session_id))
    return SessionTotals(gifts=gifts, coins=coins, diamonds=diamonds,
                         viewers=await viewer_count(session, session_id), peak_viewers=peak)


async def list_sessions(session: AsyncSession, *, status: str | None, limit: int,
                        before_id: int | None) -> list[LiveSession]:
    query = select(LiveSession).order_by(LiveSession.id.desc()).limit(limit)
    if status is not None:
        query = query.where(LiveSession.status == status)
    if before_id is not None:
        query = query.where(LiveSession.id < before_id)
    return list((await session.scalars(query)).all())


async def running_combos(session: AsyncSession, session_id: int, *, limit: int
                         ) -> list[tuple[GiftCombo, User, Gift]]:
    """The session's open combos, latest send first, with their sender and gift."""
    rows = await session.execute(
        select(GiftCombo, User, Gift).join(User, User.id == GiftCombo.sender_id)
        .join(Gift, Gift.id == GiftCombo.gift_id)
        .where(GiftCombo.session_id == session_id, GiftCombo.ended_at.is_(None))
        .order_by(GiftCombo.last_at.desc(), GiftCombo.id.desc()).limit(limit))
    return [(combo, user, gift) for combo, user, gift in rows.all()]
