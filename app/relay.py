"""The relay: gets every committed event of the log onto the bus, at least once.

The process that commits events publishes them at once (:meth:`Relay.publish_all`, the
fast path: a gift's watchers see it within milliseconds) and notes them published, in
one UPDATE for everything published since the last note. Whatever was committed and not
published (the process crashed in between, or the bus was down) is found by the sweep,
which any process runs every second: events still unpublished after the grace are
claimed (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two processes never publish the
same ones together), published and noted. An event may reach the bus twice (published,
then the process died before noting it); it carries its stream and sequence number, and
subscribers drop what they already have. Noting an event published also queues its
webhook deliveries (:func:`app.services.webhooks.enqueue`), in the same transaction: the
UPDATE notes each event once, so each is queued once.
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

NOTE_INTERVAL = 0.2  # seconds between notes of what this process published (one UPDATE)
SWEEP_INTERVAL = 1.0  # seconds between looks for events the bus has not had


class Relay:
    def __init__(self, sessions: SessionFactory, bus: EventBus, *,
                 grace: timedelta = timedelta(seconds=5)) -> None:
        self.sessions, self.bus, self.grace = sessions, bus, grace
        self._published: list[tuple[str, int]] = []  # (stream, seq)
        self._task: asyncio.Task[None] | None = None

    async def publish_all(self, events: list[tuple[str, Event]]) -> None:
        """Publish events just committed (on their channels, in order); the ones from the
        log are noted published soon after, the others (none expected) just published."""
        try:
            await self.bus.publish_all(events)
        except Exception:  # noqa: BLE001 - the sweep publishes them once the bus is back
            logger.warning("publishing %d events failed; the relay publishes them later",
                           len(events), exc_info=True)
            return
        self._published.extend((event["stream"], event["seq"]) for _, event in events
                               if "seq" in event)

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
        """Note the events this process published as published."""
        published, self._published = self._published, []
        if not published:
            return
        try:
            async with self.sessions() as session, session.begin():
                await webhooks.enqueue(
                    session, await event_log.mark_published(session, published))
        except BaseException:
            self._published[:0] = published
            raise

    async def sweep(self) -> int:
        """Publish the events still unpublished after the grace; how many."""
        relayed = 0
        while True:
            async with self.sessions() as session, session.begin():
                events = await event_log.unpublished(session, utcnow() - self.grace)
                if not events:
                    return relayed
                await self.bus.publish_all([(stream_channel(event["stream"]), event)
                                            for event in events])
                await webhooks.enqueue(session, await event_log.mark_published(
                    session, [(e["stream"], e["seq"]) for e in events]))
            relayed += len(events)
            logger.info("relayed %d events their process had not published", len(events))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.note()
