"""Per-user and per-IP rate limits on the API: fixed one-minute windows.

Counters live in the process, or in Redis when ``REDIS_URL`` is set, so several
server processes share one budget. A request over either limit is answered 429
with a GraphQL error ``RATE_LIMITED`` and ``Retry-After``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from litestar.datastructures import Headers
from litestar.types import ASGIApp, Receive, Scope, Send

from app.auth import AuthError, principal_from_header
from app.settings import Settings

WINDOW_SECONDS = 60


class Counters:
    """Counts hits per key and window, in memory or in Redis."""

    def __init__(self, redis_url: str | None, prefix: str = "livegifts") -> None:
        self._redis: Any = None
        self._prefix = f"{prefix}:rate:"
        if redis_url:
            import redis.asyncio as redis

            self._redis = redis.from_url(redis_url)
        self._memory: dict[str, int] = {}

    async def hit(self, keys: list[str], window: int) -> list[int]:
        """Count one hit on each key in ``window``; each key's count so far (in Redis, all
        in one round trip)."""
        slots = [f"{self._prefix}{key}:{window}" for key in keys]
        if self._redis is not None:
            async with self._redis.pipeline(transaction=True) as pipe:
                for slot in slots:
                    pipe.incr(slot).expire(slot, WINDOW_SECONDS * 2)
                replies = await pipe.execute()
            return [int(count) for count in replies[::2]]
        if len(self._memory) > 100_000:  # forget windows that have passed
            current = f":{window}"
            self._memory = {k: v for k, v in self._memory.items() if k.endswith(current)}
        for slot in slots:
            self._memory[slot] = self._memory.get(slot, 0) + 1
        return [self._memory[slot] for slot in slots]

    async def close(self) -> None:
        if self._redis is not None:
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
