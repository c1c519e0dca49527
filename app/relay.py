"""The relay: gets every committed event of the log onto the bus, at least once.

The process that commits events publishes them at once (:meth:`Relay.publish_all`, the
fast path: a gift's watchers see it within milliseconds) and, every 200 ms, moves the
relay position of each stream it published on to the last event it published there
(:func:`app.services.event_log.relayed`). A stream's events commit in number order, so
an event another process committed before that one and did not publish yet (or ever) is
relayed with it: its subscribers fill such gaps from the log. Whatever was committed and
not relayed at all (the process crashed in between, or the bus was down) is found by the
sweep, which any process runs every second: streams whose first event not relayed is
older than the grace are claimed (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two
processes never relay the same ones together), their events published and the positions
moved. An event may reach the bus twice (published, then the process died before moving
the position); it carries its stream and sequence number, and subscribers drop what they
already have. Moving a position also queues the webhook deliveries of the events it
moves over (:func:`app.services.webhooks.enqueue`), in the same transaction, so each
event is queued once, in its stream's order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from app.db import SessionFactory
from app.events import Event, EventBus, stream_channel
from app.models.base import utcnow
from app.services import event_log, webhooks

logger = logging.getLogger(__name__)

NOTE_INTERVAL = 0.2  # seconds between notes of what this process published
SWEEP_INTERVAL = 1.0  # seconds between looks for events the bus has not had


class Relay:
    def __init__(self, sessions: SessionFactory, bus: EventBus, *,
                 grace: timedelta = timedelta(seconds=5)) -> None:
        self.sessions, self.bus, self.grace = sessions, bus, grace
        self._published: dict[str, int] = {}  # stream: the last seq published there
        self._task: asyncio.Task[None] | None = None

    async def publish_all(self, events: list[tuple[str, Event]]) -> None:
        """Publish events just committed (on their channels, in order); the ones from the
        log are noted relayed soon after, the others (none expected) just published."""
        try:
            await self.bus.publish_all(events)
        except Exception:  # noqa: BLE001 - the sweep publishes them once the bus is back
            logger.warning("publishing %d events failed; the relay publishes them later",
                           len(events), exc_info=True)
            return
        for _, event in events:
            if "seq" in event:
                stream = event["stream"]
                self._published[stream] = max(self._published.get(stream, 0), event["seq"])

    async def committed(self, events: list[Event]) -> None:
        """Publish logged events just committed, each on its stream's channel."""
        if events:
            await self.publish_all([(stream_channel(event["stream"]), event)
                                    for event in events])

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        swept = loop.time()
        while True:
            await asyncio.sleep(NOTE_INTERVAL)
            try:
                await self.note()
                if loop.time() - swept >= SWEEP_INTERVAL:
                    swept = loop.time()
                    await self.sweep()
            except Exception:
                logger.exception("relaying events failed; trying again in %s s",
                                 SWEEP_INTERVAL)
                await asyncio.sleep(SWEEP_INTERVAL)

    async def note(self) -> None:
        """Move the relay positions of the streams this process published on."""
        published, self._published = self._published, {}
        if not published:
            return
        try:
            async with self.sessions() as session, session.begin():
                await webhooks.enqueue(session, await event_log.relayed(session, published))
        except BaseException:
            for stream, seq in published.items():
                self._published[stream] = max(self._published.get(stream, 0), seq)
            raise

    async def sweep(self) -> int:
        """Relay the events of streams not relayed within the grace; how many events."""
        relayed = 0
        while True:
            async with self.sessions() as session, session.begin():
                events = await event_log.unrelayed(session, utcnow() - self.grace)
                if not events:
                    return relayed
                await self.bus.publish_all([(stream_channel(event["stream"]), event)
                                            for event in events])
                await webhooks.enqueue(session, await event_log.relayed(
                    session, {event["stream"]: event["seq"] for event in events}))
            relayed += len(events)
            logger.info("relayed %d events their process had not published", len(events))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.note()
