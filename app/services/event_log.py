"""The event log's reads and writes: append events with the change they report, read a
stream after a position, move streams' relay positions and find what was not relayed,
prune.

An event is a JSON-safe dict with a ``type``; once appended it also carries its ``stream``
and its ``seq`` in the stream (which name it anywhere), and read back from the log, its
global ``event_id`` too. Appending takes each stream's
counter row (in stream order, every writer's lock order) until the transaction ends, so
a stream's sequence numbers are committed in order: whoever sees number *n* committed
can read every number before it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import (
    ArrayStatement,
    add_to_counters,
    execute_arrays,
    insert_ignoring_conflict,
    insert_rows,
    to_json,
)
from app.models import Event, EventRelay, EventStream, WebhookDelivery
from app.models.base import utcnow

PAGE = 500  # events read at a time

LoggedEvent = dict[str, Any]


def session_stream(session_id: int) -> str:
    """The stream of a live session's events."""
    return f"session:{session_id}"


def creator_stream(creator_id: int) -> str:
    """The stream of a creator's own events (their payouts settled)."""
    return f"creator:{creator_id}"


def brand_stream(slug: str) -> str:
    """The stream of a brand's events (its sponsored gifts sent), for its partner."""
    return f"brand:{slug}"


async def append(session: AsyncSession, events: list[tuple[str, dict[str, Any]]],
                 now: datetime | None = None) -> list[LoggedEvent]:
    """Write (stream, event) pairs, in order, in the caller's transaction; each event with
    its ``stream`` and ``seq`` (the dicts given are updated). Two statements whatever the
    number of events and streams."""
    if not events:
        return []
    counts: dict[str, int] = {}
    for stream, _ in events:
        counts[stream] = counts.get(stream, 0) + 1
    last = await _advance(session, counts)
    if new := [stream for stream, count in counts.items() if last[stream] == count]:
        await session.execute(insert_ignoring_conflict(  # their first events: no position yet
            session, EventRelay, [{"stream": stream, "relayed_seq": 0} for stream in sorted(new)],
            ["stream"]))
    next_seq = {stream: last[stream] - count for stream, count in counts.items()}
    now = now or utcnow()
    rows = []
    for stream, event in events:
        next_seq[stream] += 1
        event.update(stream=stream, seq=next_seq[stream])
        rows.append({"stream": stream, "seq": next_seq[stream], "type": event["type"],
                     "body": to_json(event), "created_at": now})
    await insert_rows(session, Event.__table__, rows)
    return [event for _, event in events]


async def append_session_events(session: AsyncSession, events: list[dict[str, Any]],
                                brand_events: list[dict[str, Any]] = ()  # type: ignore[assignment]
                                ) -> list[LoggedEvent]:
    """Write events of live sessions (each with its ``session_id``), each to its session's
    stream, and brands' events (each with its ``brand``) to its brand's, in order, in the
    caller's transaction."""
    return await append(session, [
        *((session_stream(event["session_id"]), event) for event in events),
        *((brand_stream(event["brand"]), event) for event in brand_events)])


async def hold(session: AsyncSession, stream: str) -> None:
    """Take the stream's turn now (until the transaction ends), before reading what an
    event will report, so that what it reports is not older than an event before it."""
    await _advance(session, {stream: 0})


async def _advance(session: AsyncSession, counts: dict[str, int]) -> dict[str, int]:
    """Add to the streams' last numbers (in stream order); the new last numbers."""
    return dict(await add_to_counters(
        session, EventStream, ("stream",),
        [{"stream": stream, "last_seq": counts[stream]} for stream in sorted(counts)],
        returning=("stream", "last_seq")))


def _decoded(rows: Any) -> list[LoggedEvent]:
    events = []
    for event_id, body in rows:
        event = json.loads(body)
        event["event_id"] = event_id
        events.append(event)
    return events


async def read_after(session: AsyncSession, stream: str, after: int,
                     before: int | None = None, limit: int = PAGE) -> list[LoggedEvent]:
    """The stream's events numbered after ``after`` (and before ``before``), in order."""
    query = select(Event.id, Event.body).where(Event.stream == stream, Event.seq > after)
    if before is not None:
        query = query.where(Event.seq < before)
    return _decoded(await session.execute(query.order_by(Event.seq).limit(limit)))


@dataclass(frozen=True, slots=True)
class Extent:
    """What a stream holds: its last number, and its oldest kept (None if none kept)."""

    last: int
    oldest: int | None

    def keeps_after(self, position: int) -> bool:
        """Whether every event after ``position`` is still in the log."""
        if self.oldest is None:
            return position >= self.last
        return position >= self.oldest - 1


async def extent(session: AsyncSession, stream: str) -> Extent:
    last = await session.scalar(select(EventStream.last_seq)
                                .where(EventStream.stream == stream))
    oldest = await session.scalar(select(func.min(Event.seq)).where(Event.stream == stream))
    return Extent(last or 0, oldest)


@dataclass(frozen=True, slots=True)
class Span:
    """A stream's events numbered after ``after`` up to ``upto``, just relayed."""

    stream: str
    after: int
    upto: int


_LOCK_POSITIONS = ArrayStatement.of(
    lambda parameter: "SELECT stream, relayed_seq FROM event_relay WHERE stream = "
                      f"ANY(CAST({parameter('streams')} AS VARCHAR[])) ORDER BY stream FOR UPDATE",
    ("streams",))
_MOVE_POSITIONS = ArrayStatement.of(
    lambda parameter: "UPDATE event_relay AS r SET relayed_seq = t.seq FROM unnest("
                      f"CAST({parameter('streams')} AS VARCHAR[]), "
                      f"CAST({parameter('seqs')} AS BIGINT[])) AS t(stream, seq) "
                      "WHERE r.stream = t.stream",
    ("streams", "seqs"))


async def _relay_positions(session: AsyncSession, streams: list[str],
                           skip_locked: bool = False) -> dict[str, int]:
    """Take the streams' relay positions (in stream order, until the transaction ends);
    with ``skip_locked``, on PostgreSQL, leave out those another process holds. (A
    stream's position is made with its first event.)"""
    streams = sorted(set(streams))
    if session.get_bind().dialect.name == "postgresql" and not skip_locked:
        return dict(await execute_arrays(session, _LOCK_POSITIONS, {"streams": streams}))
    query = select(EventRelay.stream, EventRelay.relayed_seq) \
        .where(EventRelay.stream.in_(streams)).order_by(EventRelay.stream)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=skip_locked)
    return dict((await session.execute(query)).all())


async def relayed(session: AsyncSession, upto: dict[str, int]) -> list[Span]:
    """Move the streams' relay positions forward to ``upto`` ({stream: seq}), in the
    caller's transaction; the spans this call moved over (each event is in one span,
    whoever relays it). Numbers commit in order, so every event of a span is there."""
    if not upto:
        return []
    positions = await _relay_positions(session, list(upto))
    spans = [Span(stream, positions[stream], seq) for stream, seq in sorted(upto.items())
             if seq > positions[stream]]
    if not spans:
        return []
    if session.get_bind().dialect.name == "postgresql":
        await execute_arrays(session, _MOVE_POSITIONS, {"streams": [span.stream for span in spans],
                                                        "seqs": [span.upto for span in spans]})
    else:
        await session.execute(update(EventRelay), [  # by primary key
            {"stream": span.stream, "relayed_seq": span.upto} for span in spans])
    return spans


async def read_spans(session: AsyncSession, spans: list[Span]) -> list[Any]:
    """The events of the spans (rows of id, stream, seq, type, body), in id order."""
    columns = (Event.id, Event.stream, Event.seq, Event.type, Event.body)
    rows: list[Any] = []
    for start in range(0, len(spans), PAGE):  # a bound number of parameters
        rows += (await session.execute(select(*columns).where(or_(*(
            (Event.stream == span.stream) & (Event.seq > span.after)
            & (Event.seq <= span.upto) for span in spans[start:start + PAGE]))))).all()
    return sorted(rows, key=lambda row: row.id)


async def unrelayed(session: AsyncSession, older_than: datetime,
                    limit: int = PAGE) -> list[LoggedEvent]:
    """Events the bus may not have had, in streams whose first one not relayed was written
    before ``older_than`` (its process had time to relay it, and did not), in stream and
    number order; those streams' positions are held (on PostgreSQL, skipping the streams
    another process's relay holds)."""
    late = (await session.scalars(
        select(EventRelay.stream)
        .join(EventStream, EventStream.stream == EventRelay.stream)
        .join(Event, (Event.stream == EventRelay.stream)
              & (Event.seq == EventRelay.relayed_seq + 1))
        .where(EventStream.last_seq > EventRelay.relayed_seq, Event.created_at < older_than)
        .order_by(EventRelay.stream).limit(limit))).all()
    if not late:
        return []
    positions = await _relay_positions(session, late, skip_locked=True)
    events: list[LoggedEvent] = []
    for stream, after in positions.items():
        if len(events) >= limit:
            break
        events += await read_after(session, stream, after, limit=limit - len(events))
    return events


async def prune(session: AsyncSession, keep: timedelta, now: datetime | None = None,
                limit: int = 10_000) -> int:
    """Delete up to ``limit`` of the oldest relayed events written more than ``keep``
    ago; how many. Streams keep their numbers: a cursor into what was pruned is told it
    expired. (Ids grow with time: the old events are found along the primary key.)"""
    cutoff = (now or utcnow()) - keep
    boundary = await session.scalar(select(Event.id).where(Event.created_at >= cutoff)
                                    .order_by(Event.id).limit(1))
    chosen = select(Event.id).join(EventRelay, EventRelay.stream == Event.stream).where(
        Event.seq <= EventRelay.relayed_seq, Event.created_at < cutoff)
    if boundary is not None:
        chosen = chosen.where(Event.id < boundary)
    chosen = chosen.order_by(Event.id).limit(limit)
    result = await session.execute(delete(Event).where(Event.id.in_(chosen.scalar_subquery()))
                                   .execution_options(synchronize_session=False))
    return result.rowcount or 0


async def prune_all(sessions: Any, keep: timedelta) -> int:
    """Prune in transactions of a bounded size until nothing is older than ``keep``; the
    webhook deliveries made longer ago than that go too (those delivered). How many
    events."""
    pruned = 0
    while True:
        async with sessions() as session, session.begin():
            count = await prune(session, keep)
        pruned += count
        if count == 0:
            break
    async with sessions() as session, session.begin():
        await session.execute(delete(WebhookDelivery).where(
            WebhookDelivery.status == "delivered",
            WebhookDelivery.created_at < utcnow() - keep))
    return pruned


class Follower:
    """Reads one stream from a position, in order, each event once: an event that arrives
    again (the relay may publish twice) or late (two processes publish in either order) is
    dropped; one that arrives after a gap comes with the events it skipped, read from the
    log (a stream's numbers commit in order, so the skipped ones are there)."""

    def __init__(self, reads: Any, stream: str, position: int | None) -> None:
        self.reads, self.stream, self.position = reads, stream, position

    async def before(self, seq: int | None) -> list[LoggedEvent] | None:
        """For an arriving event numbered ``seq``: None to drop it, else the events to pass
        on before it (usually none). The caller then moves :attr:`position` to ``seq``."""
        if seq is None or self.position is None:  # not from the log, or no position yet
            return []
        if seq <= self.position:
            return None
        if seq == self.position + 1:
            return []
        return await self.read(before=seq)

    async def read(self, before: int | None = None) -> list[LoggedEvent]:
        """The logged events after the position (and before ``before``), in order."""
        assert self.position is not None
        events: list[LoggedEvent] = []
        after = self.position
        while True:
            async with self.reads() as session:
                page = await read_after(session, self.stream, after, before)
            events += page
            if len(page) < PAGE:
                return events
            after = page[-1]["seq"]
