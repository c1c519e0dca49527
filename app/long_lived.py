"""What a process keeps out of the garbage collector's scans: objects that live as long as it
does, and those of a crowd of WebSocket connections once the crowd has arrived.

A WebSocket connection leaves a few hundred objects alive for as long as it stays open (its
task, protocol, subscription, watch member). The collector scans every object of a
generation each time it collects that generation: after 5,000 viewers join a stream, their
connections' objects are a quarter of a million in each worker, and the first collection of
the middle generation that meets them (seconds later, in the middle of a gift's delivery)
pauses the worker for about 200 ms. Every subscriber of the event being written waits
through it.

:class:`LongLivedObjects` moves them out of the collector's generations (``gc.freeze()``,
which costs no scan) once a burst of connections has arrived: at least ``burst`` opened
since the last freeze, then ``settle`` seconds for the burst's handshakes to finish. A
frozen object is still freed as soon as nothing refers to it; only a reference cycle among
frozen objects stays until they are handed back. So once as many connections have closed
since the freeze as it kept open (and at least ``burst``), everything frozen is handed back
to the collector (``gc.unfreeze()``); its next full collection reclaims the closed
connections' cycles, and what survives it is frozen again.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

BURST = 200  # connections opened since the last freeze that make a burst
SETTLE = 1.0  # seconds from a burst to its freeze: its handshakes finish meanwhile


class LongLivedObjects:
    """The collector's view of one process's connections (see the module's docstring)."""

    def __init__(self, burst: int = BURST, settle: float = SETTLE,
                 clock: Callable[[], float] = time.monotonic,
                 freeze: Callable[[], None] = gc.freeze,
                 unfreeze: Callable[[], None] = gc.unfreeze) -> None:
        self.burst, self.settle, self.clock = burst, settle, clock
        self._freeze, self._unfreeze = freeze, unfreeze
        self.open = 0  # connections open now
        self.opened = 0  # connections opened since the last freeze
        self.closed = 0  # connections closed since the last freeze
        self.kept = 0  # connections open at the last freeze (0: nothing of theirs frozen)
        self.due: float | None = None  # when the burst under way is frozen
        self.refreeze = False  # freeze what survives the next full collection
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Freeze what lives as long as the process, and follow the collector."""
        if self.collected not in gc.callbacks:
            gc.callbacks.append(self.collected)
        self.freeze_now()

    def freeze_now(self) -> None:
        """Freeze everything alive."""
        self._freeze()
        self.opened = self.closed = 0
        self.kept = self.open
        self.due = None
        self.refreeze = False

    def connection_opened(self) -> None:
        self.open += 1
        self.opened += 1
        if self.due is None and self.opened >= self.burst:
            self.due = self.clock() + self.settle
            self._remind()

    def connection_closed(self) -> None:
        self.open -= 1
        self.closed += 1
        if self.kept and self.closed >= max(self.burst, self.kept):
            self._unfreeze()  # the closed ones' cycles go back to the collector
            self.kept = 0
            self.closed = 0
            self.refreeze = True

    def collected(self, phase: str, info: dict[str, int]) -> None:
        """A ``gc.callbacks`` entry: after a full collection that followed a hand-back,
        what is left is long-lived again."""
        if phase == "stop" and info["generation"] == 2 and self.refreeze:
            self.freeze_now()

    def tick(self) -> None:
        """Freeze the burst under way if its time has come."""
        if self.due is not None and self.clock() >= self.due:
            self.freeze_now()

    def _remind(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a unit test drives tick itself)
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(self.settle, self._on_time)

    def _on_time(self) -> None:
        self._timer = None
        self.tick()
        if self.due is not None:  # the clock is behind the loop's: look again
            self._remind()


# One a process: the collector is the process's.
PROCESS = LongLivedObjects()
