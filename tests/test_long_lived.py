"""The collector's view of connections: a burst of WebSockets is frozen once it has settled,
and handed back once as many have closed as the freeze kept open."""

from __future__ import annotations

import asyncio

import pytest

from app import long_lived
from app.asgi import _server_send_kept
from app.graphql.broadcast import SERVER_SEND


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _objects(burst: int = 3, settle: float = 1.0) -> tuple[long_lived.LongLivedObjects,
                                                              Clock, list[str]]:
    clock, calls = Clock(), []
    objects = long_lived.LongLivedObjects(burst=burst, settle=settle, clock=clock,
                                          freeze=lambda: calls.append("freeze"),
                                          unfreeze=lambda: calls.append("unfreeze"))
    return objects, clock, calls


def test_a_burst_is_frozen_once_it_has_had_time_to_settle():
    objects, clock, calls = _objects(burst=3, settle=1.0)
    for _ in range(2):
        objects.connection_opened()
    clock.now += 5
    objects.tick()
    assert calls == []  # two connections are no burst

    objects.connection_opened()
    objects.tick()
    clock.now += 0.9
    objects.tick()
    assert calls == []  # the burst's handshakes may still be under way

    objects.connection_opened()  # a later arrival does not put the freeze off
    clock.now += 0.1
    objects.tick()
    assert calls == ["freeze"]
    assert (objects.open, objects.opened, objects.kept) == (4, 0, 4)
    clock.now += 10
    objects.tick()
    assert calls == ["freeze"]  # once a burst


def test_what_was_frozen_is_handed_back_once_as_many_have_closed_as_it_kept():
    objects, clock, calls = _objects(burst=3, settle=1.0)
    for _ in range(5):
        objects.connection_opened()
    clock.now += 1
    objects.tick()
    assert calls == ["freeze"]

    for _ in range(4):
        objects.connection_closed()
    assert calls == ["freeze"]  # one of the five still open: most of the burst is alive
    objects.connection_closed()
    assert calls == ["freeze", "unfreeze"]
    assert (objects.open, objects.kept) == (0, 0)

    for _ in range(3):  # closures with nothing of theirs frozen change nothing
        objects.connection_opened()
        objects.connection_closed()
    assert calls == ["freeze", "unfreeze"]

    objects.collected("stop", {"generation": 1, "collected": 0, "uncollectable": 0})
    assert calls == ["freeze", "unfreeze"]  # the closed ones' cycles are still there
    objects.collected("stop", {"generation": 2, "collected": 7, "uncollectable": 0})
    assert calls == ["freeze", "unfreeze", "freeze"]  # what survived is long-lived again
    objects.collected("stop", {"generation": 2, "collected": 0, "uncollectable": 0})
    assert calls == ["freeze", "unfreeze", "freeze"]  # once a hand-back


def test_a_freeze_with_few_connections_open_waits_for_a_burst_of_closures():
    objects, clock, calls = _objects(burst=3, settle=1.0)
    for _ in range(3):
        objects.connection_opened()
    for _ in range(2):
        objects.connection_closed()
    clock.now += 1
    objects.tick()  # one connection of the burst left open
    assert calls == ["freeze"] and objects.kept == 1

    objects.connection_closed()
    objects.connection_opened()
    objects.connection_closed()
    assert calls == ["freeze"]
    objects.connection_opened()
    objects.connection_closed()
    assert calls == ["freeze", "unfreeze"]  # at least a burst's worth of closures


def test_freezing_at_start_up_keeps_no_connection_to_hand_back():
    objects, _clock, calls = _objects(burst=1)
    objects.freeze_now()
    objects.connection_opened()
    objects.connection_closed()
    assert calls == ["freeze"]
    objects.collected("stop", {"generation": 2, "collected": 0, "uncollectable": 0})
    assert calls == ["freeze"]


def test_a_cycle_left_by_a_closed_connection_is_reclaimed_after_the_hand_back():
    """With the interpreter's own collector: a reference cycle frozen with a burst survives
    collections until it is handed back, then the next full collection reclaims it and the
    survivors are frozen again."""
    import gc
    import weakref

    class Connection:
        pass

    objects = long_lived.LongLivedObjects(burst=1, settle=0.0, clock=lambda: 0.0)
    gc.callbacks.append(objects.collected)
    try:
        connection = Connection()
        connection.self = connection  # a cycle, as a closed connection's state leaves one
        alive = weakref.ref(connection)
        objects.connection_opened()
        objects.tick()
        assert objects.kept == 1 and gc.get_freeze_count() > 0
        del connection
        gc.collect()
        assert alive() is not None  # frozen: the collector does not see it

        objects.connection_closed()  # handed back
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert alive() is None
        assert gc.get_freeze_count() > 0  # the survivors, frozen again
    finally:
        gc.callbacks.remove(objects.collected)
        gc.unfreeze()


async def test_the_event_loop_freezes_a_burst_when_its_time_comes():
    objects, clock, calls = _objects(burst=2, settle=0.01)
    frozen = asyncio.Event()
    objects._freeze = lambda: (calls.append("freeze"), frozen.set())
    objects.connection_opened()
    objects.connection_opened()
    await asyncio.sleep(0.05)  # the loop's timer ran: the clock had not moved
    assert calls == []
    clock.now += 0.01
    await asyncio.wait_for(frozen.wait(), timeout=30)
    assert calls == ["freeze"]


async def test_the_asgi_layer_counts_each_websocket_open_until_its_handler_returns(
        monkeypatch):
    objects, _clock, _calls = _objects(burst=1000)
    monkeypatch.setattr(long_lived, "PROCESS", objects)
    seen: list[tuple[str, int]] = []

    async def handler(scope, receive, send):
        seen.append((scope["type"], objects.open))
        if scope.get("fail"):
            raise RuntimeError("the handler failed")

    async def send(message):
        pass

    app = _server_send_kept(handler)
    await app({"type": "websocket"}, None, send)
    await app({"type": "http"}, None, send)
    with pytest.raises(RuntimeError):
        await app({"type": "websocket", "fail": True}, None, send)
    assert seen == [("websocket", 1), ("http", 0), ("websocket", 1)]
    assert (objects.open, objects.opened, objects.closed) == (0, 2, 2)

    scope: dict = {"type": "websocket"}
    await app(scope, None, send)
    assert scope[SERVER_SEND] is send
