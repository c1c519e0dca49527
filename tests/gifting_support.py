"""Shared set-up for gifting tests, on the helpers partners use too (:mod:`app.testing`)."""

from __future__ import annotations

from datetime import timedelta

from app.events import session_channel
from app.models.base import utcnow
from app.services import gifting
from app.testing import Stage, give_coins, go_live, new_viewer

__all__ = ["Recorder", "Stage", "give_coins", "new_viewer", "send", "stage"]


async def stage(runtime, creator: str = "star") -> Stage:
    return await go_live(runtime, creator)


async def send(runtime, sender_id: int, where: Stage, sku: str = "rose", quantity: int = 1,
               key: str | None = None, window: float = 60.0, clock=utcnow):
    """Send a gift; ``clock`` is the time its rules (combos, rate cards) see."""
    send.counter += 1
    return await gifting.send_gift(
        runtime.sessions, runtime.relay, sender_id=sender_id, session_id=where.session_id,
        gift_id=where.gifts[sku], quantity=quantity,
        idempotency_key=key or f"send-{send.counter}", combo_window=timedelta(seconds=window),
        plugins=runtime.plugins, settings=runtime.settings, clock=clock)


send.counter = 0


class Recorder:
    """Collects the events published on one session's channel."""

    def __init__(self, runtime, session_id: int) -> None:
        self._events: list[dict] = []
        self._queue = runtime.bus.listen(session_channel(session_id))

    @property
    def events(self) -> list[dict]:
        """Every event published so far (the in-memory bus delivers as it publishes)."""
        while not self._queue.empty():
            self._events.append(self._queue.get_nowait())
        return self._events

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]
