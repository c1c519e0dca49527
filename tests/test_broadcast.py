"""Watches: one execution of each live-session event for every subscriber of a session asking
the same document, written to each subscriber's own connection."""

from __future__ import annotations

import asyncio
import json

from app.events import MemoryEventBus, session_channel
from app.graphql import broadcast
from app.graphql.context import Context
from app.graphql.gifting import ViewerCountChanged
from app.graphql.schema import schema
from app.services import event_log
from app.testing import go_live

VIEWERS = """subscription($id: ID!) {
  liveSessionEvents(sessionId: $id) { ... on ViewerCountChanged { viewers } } }"""


def _subscriber(runtime, operation_id: str, frames: list[dict]) -> broadcast.Subscriber:
    async def write(text: str) -> None:
        frames.append(json.loads(text))

    return broadcast.Subscriber(operation_id, VIEWERS, {"id": "TGl2ZVNlc3Npb246MQ=="}, None,
                                schema._schema, Context(runtime=runtime), write)


def _viewers(seq: int, viewers: int, kind: str = "ViewerCountChanged") -> dict:
    return {"type": kind, "session_id": 1, "seq": seq, "viewers": viewers}


def _follower(runtime, position: int | None) -> event_log.Follower:
    return event_log.Follower(runtime.reads, event_log.session_stream(1), position)


def _seen(frames: list[dict]) -> list[int]:
    return [f["payload"]["data"]["liveSessionEvents"]["viewers"] for f in frames]


async def test_a_member_writes_the_events_after_its_position_once_each(runtime):
    """A member joining an existing watch (an event being executed, one still queued) writes
    only the events after the position its opening reflects; an event the bus repeats, or
    delivers late, is written to nobody twice."""
    bus, channel = MemoryEventBus(), session_channel(1)
    executing, release = asyncio.Event(), asyncio.Event()

    async def build(event: dict) -> ViewerCountChanged:
        if event["seq"] == 1:  # held while being executed
            executing.set()
            await release.wait()
        return ViewerCountChanged(cursor="", viewers=event["viewers"])

    first, second = [], []
    async with broadcast.watch(bus, channel, _subscriber(runtime, "a", first), build,
                               _follower(runtime, 0)) as one:
        writing = [asyncio.create_task(one.run())]
        bus.deliver(channel, _viewers(1, 1))
        await asyncio.wait_for(executing.wait(), 5)
        bus.deliver(channel, _viewers(2, 2))  # queued behind
        async with broadcast.watch(bus, channel, _subscriber(runtime, "b", second), build,
                                   _follower(runtime, 2)) as two:
            writing.append(asyncio.create_task(two.run()))
            release.set()
            bus.deliver(channel, _viewers(3, 3))
            bus.deliver(channel, _viewers(2, 2))  # again: the relay published it twice
            bus.deliver(channel, _viewers(4, 0, "SessionEnded"))
            await asyncio.wait_for(asyncio.gather(*writing), 5)  # both end with the session
    assert _seen(first) == [1, 2, 3, 0]
    assert _seen(second) == [3, 0]
    assert {f["id"] for f in first} == {"a"} and {f["id"] for f in second} == {"b"}


async def test_a_member_reads_from_the_log_the_events_the_bus_skipped(runtime):
    """Events committed but never published (the bus was down) are read from the log when
    a later event arrives, and written in order before it; a member resuming from a cursor
    first writes everything the log holds after it."""
    where = await go_live(runtime, "star")
    assert where.session_id == 1
    stream = event_log.session_stream(1)
    async with runtime.sessions() as session, session.begin():
        logged = await event_log.append(session, [(stream, _viewers(0, n)) for n in (1, 2, 3)])
    assert [e["seq"] for e in logged] == [2, 3, 4]  # after SessionStarted
    bus, channel = MemoryEventBus(), session_channel(1)

    async def build(event: dict) -> ViewerCountChanged:
        return ViewerCountChanged(cursor="", viewers=event.get("viewers", -1))

    live, resumed = [], []
    async with broadcast.watch(bus, channel, _subscriber(runtime, "a", live), build,
                               _follower(runtime, 2)) as one, \
            broadcast.watch(bus, channel, _subscriber(runtime, "b", resumed), build,
                            _follower(runtime, 0)) as two:
        writing = [asyncio.create_task(one.run()),
                   asyncio.create_task(two.run(catch_up=True))]
        async with runtime.sessions() as session, session.begin():
            [ended] = await event_log.append(session, [(stream, _viewers(0, 0, "SessionEnded"))])
        bus.deliver(channel, ended)  # only the last one reaches the bus
        await asyncio.wait_for(asyncio.gather(*writing), 5)
    assert _seen(live) == [2, 3, 0]
    assert _seen(resumed) == [-1, 1, 2, 3, 0]  # SessionStarted has no viewer count
