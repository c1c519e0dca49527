"""Per-user and per-IP rate limits on the API: fixed one-minute windows.

Each process decides on its own counts, so a request never waits for Redis but the first
one of a user or address in a window. With ``REDIS_URL`` set, several processes share one
budget through Redis: a process adds up the hits on a key there at its first hit in a
window (one round trip, which answers the count of every process so far), then sends the
hits it counted since, and learns the others', every :data:`SYNC_SECONDS` in the
background. The tolerance: a limit may be passed by what the other processes admitted in
the last :data:`SYNC_SECONDS`. When Redis cannot be reached, each process keeps to the
limits alone and sends its counts when Redis is back.

A request over either limit is answered 429 with a GraphQL error ``RATE_LIMITED`` and
``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from litestar.datastructures import Headers
from litestar.types import ASGIApp, Receive, Scope, Send

from app.auth import AuthError, principal_from_header
from app.settings import Settings

WINDOW_SECONDS = 60
SYNC_SECONDS = 0.1
# Adds ARGV[i + 1] to KEYS[i] and keeps the key ARGV[1] seconds from now; the totals. One
# command and one reply however many keys a sync sends (a pipeline's replies, two a key,
# each cost more to read than the command to send).
ADD_ALL = """
local totals = {}
for i, key in ipairs(KEYS) do
  totals[i] = redis.call('INCRBY', key, ARGV[i + 1])
  redis.call('EXPIRE', key, ARGV[1])
end
return totals
"""
logger = logging.getLogger(__name__)


class Counters:
    """Counts hits per key and window, in this process, shared through Redis if given."""

    def __init__(self, redis_url: str | None, prefix: str = "livegifts",
                 sync_seconds: float = SYNC_SECONDS) -> None:
        self._redis: Any = None
        self._prefix = f"{prefix}:rate:"
        self._sync_seconds = sync_seconds
        if redis_url:
            import redis.asyncio as redis

            self._redis = redis.from_url(redis_url)
            self._add_all = self._redis.register_script(ADD_ALL)
        self._window: int | None = None
        self._known: dict[str, int] = {}  # slot -> hits of every process, as known here
        self._pending: dict[str, int] = {}  # slot -> hits counted here, not yet in Redis
        self._syncing: asyncio.Task[None] | None = None
        self._reachable = True  # logged once when Redis goes away, once when it is back

    async def hit(self, keys: list[str], window: int) -> list[int]:
        """Count one hit on each key in ``window``; each key's count so far."""
        if window != self._window:  # forget the windows that have passed
            self._window = window
            self._known = {k: v for k, v in self._known.items() if k.endswith(f":{window}")}
        slots = [f"{self._prefix}{key}:{window}" for key in keys]
        unknown = [slot for slot in slots if slot not in self._known]
        totals = await self._add(dict.fromkeys(unknown, 1)) if unknown and self._redis else {}
        kept = set(unknown) - totals.keys()  # Redis away: _add keeps these hits to send later
        for slot in slots:
            if slot in totals:
                self._known[slot] = max(self._known.get(slot, 0), totals[slot])
            else:
                self._known[slot] = self._known.get(slot, 0) + 1
                if self._redis is not None and slot not in kept:
                    self._pending[slot] = self._pending.get(slot, 0) + 1
        return [self._known[slot] for slot in slots]

    async def sync(self) -> None:
        """Send the hits counted here since the last sync; learn every process's counts."""
        if not self._pending:
            return
        sent, self._pending = self._pending, {}
        totals = await self._add(sent)
        for slot, total in totals.items():
            if slot in self._known:  # plus what was counted here while the answer came
                self._known[slot] = max(self._known[slot], total + self._pending.get(slot, 0))

    async def _add(self, hits: dict[str, int]) -> dict[str, int]:
        """Add ``hits`` in Redis, in one round trip; the totals, or {} when Redis is away
        (the hits are then kept, to be sent later)."""
        try:
            totals = await self._add_all(keys=list(hits), args=[WINDOW_SECONDS * 2,
                                                               *hits.values()])
        except Exception as error:
            if self._reachable:
                logger.warning("rate-limit counts cannot reach Redis (%s); each process keeps "
                               "to the limits alone until it is back", error)
            self._reachable = False
            for slot, count in hits.items():
                self._pending[slot] = self._pending.get(slot, 0) + count
            return {}
        if not self._reachable:
            logger.warning("rate-limit counts reach Redis again")
            self._reachable = True
        return {slot: int(total) for slot, total in zip(hits, totals, strict=True)}

    async def start(self) -> None:
        if self._redis is not None:
            self._syncing = asyncio.create_task(self._sync_forever())

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sync_seconds)
            await self.sync()

    async def close(self) -> None:
        if self._syncing is not None:
            self._syncing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncing
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self.sync()
            await self._redis.aclose()


class RateLimit:
    """ASGI middleware limiting requests to the API paths by user and by client IP."""

    def __init__(self, app: ASGIApp, settings: Settings, counters: Counters) -> None:
        self.app, self.settings, self.counters = app, settings, counters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(("/graphql", "/statements",
                                                                    "/earnings")):
            await self.app(scope, receive, send)
            return
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        client = (scope.get("client") or ("unknown", 0))[0]
        checks = [(f"ip:{client}", self.settings.rate_limit_per_ip, "client address")]
        try:
            principal = principal_from_header(self.settings,
                                              Headers.from_scope(scope).get("authorization"))
        except AuthError:
            principal = None  # the API explains bad tokens; limit by address only
        if principal is not None:
            checks.append((f"user:{principal.name}", self.settings.rate_limit_per_user, "user"))
        counts = await self.counters.hit([key for key, _, _ in checks], window)
        for (_, limit, label), count in zip(checks, counts, strict=True):
            if count > limit:
                retry = int(WINDOW_SECONDS - now % WINDOW_SECONDS) + 1
                await _too_many(send, f"Rate limit reached: at most {limit} requests a minute "
                                      f"per {label}. Retry in {retry} s.", retry)
                return
        await self.app(scope, receive, send)


async def _too_many(send: Send, message: str, retry: int) -> None:
    body = json.dumps({"data": None, "errors": [
        {"message": message, "extensions": {"code": "RATE_LIMITED"}}]}).encode()
    await send({"type": "http.response.start", "status": 429, "headers": [
        (b"content-type", b"application/json"), (b"retry-after", str(retry).encode()),
        (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
