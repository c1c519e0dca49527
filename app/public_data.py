"""Which version of the public data is current: the key of the public response cache.

Public data is what anonymous callers can read: brands, gifts, rate cards and coin packages.
Database triggers (revision 0007) bump ``public_data_version`` in the transaction of every
change to those tables, whoever makes it: a mutation, a plugin's catalogue at start, an
operator's SQL. So the database alone says which version is current:

- on PostgreSQL, each process LISTENs on a connection of its own for the notification the
  trigger sends at commit, and reads the version again when told. While that connection is
  down, the version is unknown and nothing is answered from the cache;
- on SQLite (one file on this machine, no round trip), the version is read on each ask.

Time changes public answers too: a gift's sale window opens or closes, a scheduled rate card
takes effect. A snapshot knows the next such moment, and the key changes when it passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Gift, PublicDataVersion, RateCard

NOTIFY_CHANNEL = "livegifts_public_data"  # the trigger's pg_notify channel (revision 0007)
RECONNECT_SECONDS = 1.0
logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    next_change: datetime | None  # when a sale window or a rate card next changes the answers


class PublicData:
    def __init__(self, engine: AsyncEngine, clock: Clock = utc_now) -> None:
        self.engine, self.clock = engine, clock
        self._listening = engine.dialect.name == "postgresql"
        self._snapshot: Snapshot | None = None
        self._told = 0  # notifications received; a read that overlaps one is already stale
        self._read = -1  # ``_told`` as it was when the snapshot was read
        self._reading: asyncio.Lock = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._connected = False
        self.listener_pid: int | None = None  # the backend listening, as pg_stat_activity shows

    async def start(self) -> None:
        if self._listening:
            self._listener = asyncio.create_task(self._listen())

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def key(self) -> tuple[int, datetime | None] | None:
        """The current (version, next scheduled change), or None while it cannot be known."""
        if self._listening and not self._connected:
            return None
        snapshot = self._fresh()
        if snapshot is None:
            try:
                snapshot = await self._refresh()
            except Exception as error:  # the database will say what is wrong to the request
                logger.warning("reading the public data version failed: %s", error)
                return None
        return (snapshot.version, snapshot.next_change)

    def _fresh(self) -> Snapshot | None:
        """The snapshot, if nothing since it was read can have changed the answers: on
        PostgreSQL no notification came, and its next scheduled change has not come."""
        snapshot = self._snapshot
        if snapshot is None or not self._listening or self._read != self._told or \
                not _before(self.clock(), snapshot):
            return None
        return snapshot

    async def _refresh(self) -> Snapshot:
        async with self._reading:
            if (fresh := self._fresh()) is not None:
                return fresh  # another request read it meanwhile
            told, now = self._told, self.clock()
            async with self.engine.connect() as connection:
                version = await connection.scalar(select(PublicDataVersion.version))
                snapshot = self._snapshot
                if snapshot is None or snapshot.version != version or \
                        not _before(now, snapshot):
                    snapshot = Snapshot(version or 0, await _next_change(connection, now))
            self._snapshot, self._read = snapshot, told
            return snapshot

    def _changed(self, *_: Any) -> None:
        self._told += 1

    async def _listen(self) -> None:
        while True:
            try:
                async with self.engine.connect() as connection:
                    raw = (await connection.get_raw_connection()).driver_connection
                    closed = asyncio.Event()
                    raw.add_termination_listener(lambda _, closed=closed: closed.set())
                    await raw.add_listener(NOTIFY_CHANNEL, self._changed)
                    self.listener_pid = raw.get_server_pid()
                    self._changed()  # whatever changed while nobody listened
                    self._connected = True
                    try:
                        await closed.wait()
                    finally:
                        self._connected = False
                        with contextlib.suppress(Exception):
                            await raw.remove_listener(NOTIFY_CHANNEL, self._changed)
                    await connection.invalidate()  # closed: not to be handed out again
                logger.warning("lost the public data notifications; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("listening for public data changes failed; retrying")
            await asyncio.sleep(RECONNECT_SECONDS)


def _before(now: datetime, snapshot: Snapshot) -> bool:
    return snapshot.next_change is None or now < snapshot.next_change


async def _next_change(connection: Any, now: datetime) -> datetime | None:
    moments = [await connection.scalar(select(func.min(column)).where(column > now))
               for column in (Gift.available_from, Gift.available_until,
                              RateCard.effective_from)]
    moments = [moment for moment in moments if moment is not None]
    return min(moments, default=None)
