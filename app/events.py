"""The event bus: live-session events, published after commit, fanned out to subscribers.

In one process the bus is in memory. With ``REDIS_URL`` set, events go through
Redis pub/sub: each process keeps one pattern subscription and fans events out
to its own subscribers, so a gift sent through any process reaches every watcher.
The bus itself is at most once (a subscriber that falls more than ``QUEUE_SIZE`` events
behind loses the oldest): the events come from the event log, which subscribers read what
they missed from, and the relay (:mod:`app.relay`) gets every committed one onto the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from app.services.event_log import session_stream

logger = logging.getLogger(__name__)

QUEUE_SIZE = 1000
# Publishes ARGV's (channel, message) pairs in order. Channels are arguments, not keys:
# pub/sub channels belong to no key slot.
PUBLISH_ALL = """
for i = 1, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end
return #ARGV / 2
"""

Event = dict[str, Any]


def stream_channel(stream: str) -> str:
    """The bus channel carrying an event log stream's events."""
    return f"live-{stream}"


def session_channel(session_id: int) -> str:
    return stream_channel(session_stream(session_id))


class LocalFanout:
    def __init__(self) -> None:
        self._queues: dict[str, set[asyncio.Queue[Event]]] = defaultdict(set)

    def deliver(self, channel: str, event: Event) -> None:
        # One copy for all of this process's subscribers: what they derive from the
        # event is computed once and kept on it, never on the publisher's dict.
        shared = dict(event)
        for queue in list(self._queues.get(channel, ())):
            if queue.full():
                queue.get_nowait()  # drop the oldest for a subscriber that fell behind
            queue.put_nowait(shared)

    def listen(self, channel: str) -> asyncio.Queue[Event]:
        """A queue receiving the events published on ``channel`` from now on, until
        :meth:`forget`."""
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._queues[channel].add(queue)
        return queue

    def forget(self, channel: str, queue: asyncio.Queue[Event]) -> None:
        self._queues[channel].discard(queue)
        if not self._queues[channel]:
            del self._queues[channel]

    @contextlib.asynccontextmanager
    async def subscription(self, channel: str) -> AsyncIterator[AsyncIterator[Event]]:
        """Listen on ``channel``: events published from the moment this is entered arrive."""
        queue = self.listen(channel)

        async def events() -> AsyncIterator[Event]:
            while True:
                yield await queue.get()

        try:
            yield events()
        finally:
            self.forget(channel, queue)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


class MemoryEventBus(LocalFanout):
    async def publish(self, channel: str, event: Event) -> None:
        await self.publish_all([(channel, event)])

    async def publish_all(self, events: list[tuple[str, Event]]) -> None:
        """Publish (channel, event) pairs, in order."""
        for channel, event in events:
            self.deliver(channel, event)


class RedisEventBus(LocalFanout):
    def __init__(self, url: str, prefix: str) -> None:
        super().__init__()
        import redis.asyncio as redis

        self._redis = redis.from_url(url)
        self._publish = self._redis.register_script(PUBLISH_ALL)
        self._prefix = f"{prefix}:events:"
        self._listener: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def publish(self, channel: str, event: Event) -> None:
        await self.publish_all([(channel, event)])

    async def publish_all(self, events: list[tuple[str, Event]]) -> None:
        """Publish (channel, event) pairs, in order, in one round trip to Redis and one
        reply (a batch's events: each reply of a pipeline costs more to read than the
        message costs to send)."""
        if events:
            await self._publish(args=[part for channel, event in events
                                      for part in (self._prefix + channel,
                                                   msgspec.json.encode(event))])

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen())
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def _listen(self) -> None:
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.psubscribe(self._prefix + "*")
                self._ready.set()
                async for message in pubsub.listen():
                    if message["type"] == "pmessage":
                        channel = message["channel"].decode()[len(self._prefix):]
                        if channel in self._queues:  # decoded only where someone listens
                            self.deliver(channel, msgspec.json.decode(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Redis event listener failed; reconnecting in 1 s")
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def close(self) -> None:
        if self._listener:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._redis.aclose()


EventBus = MemoryEventBus | RedisEventBus


def create_event_bus(redis_url: str | None, prefix: str = "livegifts") -> EventBus:
    """Through Redis (channels ``<prefix>:events:*``) when ``redis_url`` is set."""
    return RedisEventBus(redis_url, prefix) if redis_url else MemoryEventBus()
