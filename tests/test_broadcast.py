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

VIEWERS = """subscription($id: ID!) {
  liveSessionEvents(sessionId: $id) { ... on ViewerCountChanged { viewers } } }"""


def _subscriber(runtime, operation_id: str, frames: list[dict]) -> broadcast.Subscriber:
    async def write(text: str) -> None:
        frames.append(json.loads(text))

    return broadcast.Subscriber(operation_id, VIEWERS, {"id": "TGl2ZVNlc3Npb246MQ=="}, None,
                                schema._schema, Context(runtime=runtime), write)


async def test_a_member_gets_only_the_events_published_after_it_joined(runtime):
    """Events published before a subscriber joined an existing watch (one being executed, one
    still queued) are older than the state the subscriber opens with: they are not written
    to it."""
    bus, channel = MemoryEventBus(), session_channel(1)
    executing, release = asyncio.Event(), asyncio.Event()

    async def build(event: dict) -> ViewerCountChanged:
        if event["viewers"] == 1:  # held while being executed
            executing.set()
            await release.wait()
        return ViewerCountChanged(viewers=event["viewers"])

    first, second = [], []
    async with broadcast.watch(bus, channel, _subscriber(runtime, "a", first), build) as one:
        writing = [asyncio.create_task(one.run())]
        bus.deliver(channel, {"type": "ViewerCountChanged", "viewers": 1})
        await asyncio.wait_for(executing.wait(), 5)
        bus.deliver(channel, {"type": "ViewerCountChanged", "viewers": 2})  # queued behind
        async with broadcast.watch(bus, channel, _subscriber(runtime, "b", second),
                                   build) as two:
            writing.append(asyncio.create_task(two.run()))
            release.set()
            bus.deliver(channel, {"type": "ViewerCountChanged", "viewers": 3})
            bus.deliver(channel, {"type": "SessionEnded", "viewers": 0})
            await asyncio.wait_for(asyncio.gather(*writing), 5)  # both end with the session
    assert [f["payload"]["data"]["liveSessionEvents"] for f in first] == [
        {"viewers": 1}, {"viewers": 2}, {"viewers": 3}, {"viewers": 0}]
    assert [f["payload"]["data"]["liveSessionEvents"] for f in second] == [
        {"viewers": 3}, {"viewers": 0}]
    assert {f["id"] for f in first} == {"a"} and {f["id"] for f in second} == {"b"}
