"""Bulkheads between plugins: a blocked or hung plugin holds up no other gift, never uses
another plugin's threads, and is refused at once while its breaker is open or its places
are taken. The tests hold a plugin on an event they control; none asserts a duration."""

from __future__ import annotations

import asyncio
import threading

import pytest

from app import hookimpl
from app.errors import DomainError, ErrorCode
from app.plugins import CLOSED, HALF_OPEN, OPEN, Breaker
from app.testing import new_viewer
from tests.gifting_support import send
from tests.sample_plugins.acme import Acme, Globex
from tests.support import snapshot
from tests.test_plugins import Counting, core_with, funded_stage


class Held(Acme):
    """Acme, whose ``check_send`` (or ``gift_sent``) waits until the test lets it go."""

    def __init__(self, hold: str = "check_send") -> None:
        super().__init__()
        self.hold, self.released, self.calls = hold, threading.Event(), 0
        self.entered = threading.Semaphore(0)
        self.told: list[int] = []

    def _wait(self) -> None:
        self.calls += 1
        self.entered.release()
        assert self.released.wait(60), "the test never released the plugin"

    @hookimpl
    def check_send(self, send):
        if self.hold == "check_send" and not self.released.is_set():
            self._wait()
        return super().check_send(send)

    @hookimpl
    def gift_sent(self, gift):
        if self.hold == "gift_sent" and not self.released.is_set():
            self._wait()
        self.told.append(gift.receipt_id)
        super().gift_sent(gift)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def entered(plugin: Held, calls: int) -> None:
    for _ in range(calls):
        assert await asyncio.to_thread(plugin.entered.acquire, True, 30)


async def until(condition) -> None:
    """Poll ``condition`` (a state the test brought about, not a duration) for up to 30 s."""
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


async def refused(coroutine) -> DomainError:
    with pytest.raises(DomainError) as refusal:
        await coroutine
    return refusal.value


async def test_a_blocked_plugin_holds_up_no_other_gift(database_url):
    """While a plugin is blocked in two calls (its two threads) with two more waiting for
    them: a core gift and another plugin's gift are written, and a hundred more sends of
    the blocked plugin's gift are refused without calling it; released, the four held
    sends go through and no coin is lost or created."""
    acme, globex = Held(), Globex()
    async with core_with(database_url, ("acme", acme), ("globex", globex),
                         plugin_threads=2, plugin_max_waiting=2,
                         plugin_timeout_seconds=120) as runtime:
        stage, fan = await funded_stage(runtime)
        fans = [await new_viewer(runtime, f"fan-{n}", 100) for n in range(4)]
        held = [asyncio.create_task(send(runtime, one, stage, "acme-rocket")) for one in fans]
        await entered(acme, 2)
        await until(lambda: runtime.plugins.in_flight("acme") == 4)  # two wait for a thread
        rose = await send(runtime, fan, stage, "rose")
        globe = await send(runtime, fan, stage, "globex-globe")
        assert (rose.receipt.coins_paid, globe.receipt.brand_subsidy) == (1, 25)
        before = await snapshot(database_url)
        refusals = await asyncio.gather(*(refused(send(runtime, fan, stage, "acme-rocket"))
                                          for _ in range(100)))
        assert {(r.code, r.retry_after) for r in refusals} == {(ErrorCode.GIFT_UNAVAILABLE, 1)}
        assert refusals[0].message == ("The gift 'Acme Rocket' is unavailable: its sponsor's "
                                       "plugin is not answering for now.")
        assert await snapshot(database_url) == before
        assert acme.calls == 2 and not any(task.done() for task in held)
        acme.released.set()
        receipts = await asyncio.gather(*held)
        assert [r.receipt.brand_subsidy for r in receipts] == [25] * 4
        # Refusals for want of a place are not the plugin's failures, nor anyone else's.
        assert runtime.plugins.records["acme"].failures == 0
        assert runtime.plugins.records["globex"].failures == 0
        async with runtime.sessions() as session:
            from app.testing import audit

            assert await audit(session) == []


async def test_a_hung_plugin_opens_its_breaker_and_one_probe_closes_it(database_url):
    """Two time-outs in a row open the breaker: the next send is refused at once, without
    calling the plugin, with the seconds left of the cool-down; another plugin's failures
    count stay 0. Once the clock passes the cool-down one send probes the plugin: a failed
    probe reopens the breaker, an answer closes it."""
    acme, globex, clock = Held(), Globex(), Clock()
    async with core_with(database_url, ("acme", acme), ("globex", globex),
                         plugin_threads=2, plugin_timeout_seconds=0.05,
                         plugin_breaker_failures=2, plugin_breaker_cooldown_seconds=30,
                         clock=clock) as runtime:
        stage, fan = await funded_stage(runtime)
        for _ in range(2):
            failure = await refused(send(runtime, fan, stage, "acme-rocket"))
            assert (failure.message, failure.retry_after) == (
                "The gift 'Acme Rocket' is unavailable: its sponsor's plugin failed.", None)
        record = runtime.plugins.records["acme"]
        assert (record.failures, record.timeouts, record.breaker) == (2, 2, OPEN)
        assert record.last_failure == "check_send: check_send did not answer within 0.05 s"
        clock.now += 10
        paused = await refused(send(runtime, fan, stage, "acme-rocket"))
        assert (paused.retry_after, acme.calls) == (20, 2)
        assert (await send(runtime, fan, stage, "globex-globe")).receipt.brand_subsidy == 25
        assert runtime.plugins.records["globex"].failures == 0
        acme.released.set()  # the hung calls end; their threads are free again

        clock.now += 21
        assert runtime.plugins.breaker_state("acme") == HALF_OPEN
        acme.mode = "check-raises"  # the probe fails: open again, for a whole cool-down
        await refused(send(runtime, fan, stage, "acme-rocket"))
        assert runtime.plugins.breaker_state("acme") == OPEN
        assert (await refused(send(runtime, fan, stage, "acme-rocket"))).retry_after == 30

        clock.now += 30
        acme.mode = "ok"
        assert (await send(runtime, fan, stage, "acme-rocket")).receipt.brand_subsidy == 25
        assert runtime.plugins.breaker_state("acme") == CLOSED


async def test_a_probe_whose_caller_gives_up_leaves_the_breaker_ready_to_probe_again(
        database_url):
    """The breaker half-open, its probe send is cancelled while the plugin holds it (its
    client went away): the breaker is half-open again, not open for good, and the next
    send probes the plugin and closes it."""
    acme, clock = Held(), Clock()
    async with core_with(database_url, ("acme", acme), plugin_timeout_seconds=60,
                         plugin_breaker_failures=1, plugin_breaker_cooldown_seconds=30,
                         clock=clock) as runtime:
        stage, fan = await funded_stage(runtime)
        acme.released.set()
        acme.mode = "check-raises"
        await refused(send(runtime, fan, stage, "acme-rocket"))
        assert runtime.plugins.breaker_state("acme") == OPEN
        clock.now += 31
        acme.mode, acme.released = "ok", threading.Event()
        probe = asyncio.create_task(send(runtime, fan, stage, "acme-rocket"))
        await entered(acme, 1)
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        assert runtime.plugins.breaker_state("acme") == HALF_OPEN
        acme.released.set()
        assert (await send(runtime, fan, stage, "acme-rocket")).receipt.brand_subsidy == 25
        assert runtime.plugins.breaker_state("acme") == CLOSED


async def test_a_held_gift_sent_listener_holds_up_neither_senders_nor_other_plugins(
        database_url):
    """A sponsored gift's sender is answered before its plugin's ``gift_sent``; while that
    listener is held, other gifts go through and another plugin is told of its own;
    released, the held plugin is told of every gift, in the order they were written."""
    acme, globex = Held(hold="gift_sent"), Globex()
    async with core_with(database_url, ("acme", acme), ("globex", globex),
                         plugin_timeout_seconds=60) as runtime:
        stage, fan = await funded_stage(runtime)
        receipts = [(await send(runtime, fan, stage, "acme-rocket")).receipt.id
                    for _ in range(3)]
        assert acme.told == []  # every sender answered first
        telling = asyncio.create_task(runtime.deliver_events())
        await entered(acme, 1)
        other = (await send(runtime, fan, stage, "globex-globe")).receipt
        assert await runtime.deliver_events() == 1  # globex's, beside acme's held one
        assert [g.receipt_id for g in globex.sent] == [other.id] and acme.told == []
        acme.released.set()
        assert await telling == 3
        assert acme.told == receipts == sorted(receipts)


async def test_the_time_limit_counts_from_the_arrival_of_the_request(database_url):
    """A send whose request arrived so long ago that less than a quarter of the limit is
    left (it queued, or its body was slow) is refused at once without asking the held
    plugin, and that counts against neither the plugin nor its breaker; nothing moved. A
    request with three quarters left is asked and answered."""
    import time

    from app.observability import REQUEST_STARTED

    acme = Held()
    async with core_with(database_url, ("acme", acme), plugin_timeout_seconds=60,
                         plugin_breaker_failures=1) as runtime:
        stage, fan = await funded_stage(runtime)
        before = await snapshot(database_url)
        late = REQUEST_STARTED.set(time.perf_counter() - 50)  # 10 s of 60 left
        try:
            failure = await refused(send(runtime, fan, stage, "acme-rocket"))
        finally:
            REQUEST_STARTED.reset(late)
        assert (failure.message, failure.retry_after) == (
            "The gift 'Acme Rocket' is unavailable: its sponsor's plugin is not answering "
            "for now.", 1)
        record = runtime.plugins.records["acme"]
        assert (acme.calls, record.failures, record.breaker) == (0, 0, CLOSED)
        assert await snapshot(database_url) == before
        acme.released.set()
        fresh = REQUEST_STARTED.set(time.perf_counter() - 15)  # 45 s of 60 left
        try:
            assert (await send(runtime, fan, stage, "acme-rocket")).receipt.brand_subsidy == 25
        finally:
            REQUEST_STARTED.reset(fresh)


def test_a_call_in_a_request_leaves_room_for_the_answers_own_queueing(monkeypatch):
    """In a request, a plugin call may take the limit less the request's stay so far, less
    four times the event loop's recent lag (under load, the request waits up to that
    long at each of four turns of the loop), that room at most a fifth of the limit;
    outside a request it has the whole limit. The clock is the test's."""
    import app.plugins as plugins
    from app.observability import REQUEST_STARTED, LoopLag

    lag = LoopLag()
    monkeypatch.setattr(plugins, "LOOP_LAG", lag)
    monkeypatch.setattr(plugins.time, "perf_counter", lambda: 100.0)
    lag.note(0.03, now=5.0)
    assert plugins._left(1.0) == 1.0  # a notification: no request, no room kept
    arrived = REQUEST_STARTED.set(99.9)  # the request arrived 0.1 s ago
    try:
        assert plugins._left(1.0) == pytest.approx(1.0 - 0.1 - 4 * 0.03)
        lag.note(2.0, now=5.1)  # a long stall: the room stops at a fifth of the limit
        assert plugins._left(1.0) == pytest.approx(1.0 - 0.1 - 0.2)
    finally:
        REQUEST_STARTED.reset(arrived)


async def test_the_room_for_the_answer_follows_the_lag_when_the_limit_comes_near(
        monkeypatch):
    """The room kept for the answer is decided when the least time the call can have has
    passed, not when it starts: a lag noted during the call (here, while it waits) sets
    it. With the clock 47.9 s into a 60 s limit, the call first waits the least it can
    have (60 - 47.9 - 12, a fifth of the limit kept), then the rest as the lag now says
    (60 - 47.9 - 4 x 1.5 s). The clock and the waits are the test's. Cancelled, a call
    still waiting for a thread is dropped."""
    from concurrent.futures import Future

    import app.plugins as plugins
    from app.observability import REQUEST_STARTED, LoopLag

    lag, waits = LoopLag(), []
    real_wait = asyncio.wait

    async def wait(futures, timeout):
        waits.append(round(timeout, 6))
        if len(waits) == 1:
            lag.note(1.5, now=asyncio.get_running_loop().time())  # load begins meanwhile
        return set(), set(futures)  # the plugin never answers

    monkeypatch.setattr(plugins, "LOOP_LAG", lag)
    monkeypatch.setattr(plugins.time, "perf_counter", lambda: 47.9)
    monkeypatch.setattr(plugins.asyncio, "wait", wait)
    arrived = REQUEST_STARTED.set(0.0)
    try:
        with pytest.raises(TimeoutError):
            await plugins._answer_within(Future(), 60)
        assert waits == [round(60 - 47.9 - 12, 6), round(60 - 47.9 - 4 * 1.5, 6)]
        monkeypatch.setattr(plugins.asyncio, "wait", real_wait)
        queued: Future[None] = Future()
        dropped = asyncio.create_task(plugins._answer_within(queued, 60))
        await asyncio.sleep(0)
        dropped.cancel()
        with pytest.raises(asyncio.CancelledError):
            await dropped
        assert queued.cancelled()
    finally:
        REQUEST_STARTED.reset(arrived)


async def test_a_sponsors_refusal_does_not_wait_for_the_gift_writer(postgres_database_url):
    """While the gift writer's batch waits on a wallet another connection has locked, a
    sponsored send its plugin vetoes and one whose plugin fails are answered: a refusal
    writes nothing, so it is not queued behind a batch. Released, the core gift is written;
    nothing moved for the refused sends."""
    import asyncpg
    from sqlalchemy.engine import make_url

    from app.services.users import coin_account
    from app.testing import audit

    url = make_url(postgres_database_url)
    async with core_with(postgres_database_url, ("acme", Acme(veto="Sold out today")),
                         ("globex", Globex(mode="check-raises"))) as runtime:
        stage, fan = await funded_stage(runtime)
        other = await new_viewer(runtime, "other-fan", 100)
        async with runtime.sessions() as session:
            wallet = (await coin_account(session, fan)).id
        locker = await asyncpg.connect(user=url.username, host=url.host, port=url.port,
                                       database=url.database)
        try:
            locking = locker.transaction()
            await locking.start()
            await locker.execute("SELECT id FROM ledger_account WHERE id = $1 FOR UPDATE",
                                 wallet)
            rose = asyncio.create_task(send(runtime, fan, stage, "rose"))
            waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' " \
                      "AND datname = current_database()"
            for _ in range(3000):  # until the batch waits on the lock
                if await locker.fetchval(waiting):
                    break
                await asyncio.sleep(0.01)
            before = await snapshot(postgres_database_url)
            # Bounded, so that a refusal queued behind the batch fails rather than hangs.
            vetoed = await asyncio.wait_for(refused(send(runtime, other, stage, "acme-rocket")),
                                            30)
            failed = await asyncio.wait_for(refused(send(runtime, other, stage,
                                                         "globex-globe")), 30)
            assert (vetoed.code, vetoed.message) == (ErrorCode.SEND_VETOED, "Sold out today")
            assert (failed.code, failed.message) == (
                ErrorCode.GIFT_UNAVAILABLE,
                "The gift 'Globex Globe' is unavailable: its sponsor's plugin failed.")
            assert not rose.done()  # the batch still waits on the wallet
            assert await snapshot(postgres_database_url) == before
            await locking.rollback()
        finally:
            await locker.close()
        assert (await rose).receipt.coins_paid == 1
        async with runtime.sessions() as session:
            assert await audit(session) == []


async def test_a_sponsored_send_sent_again_is_replayed_without_asking_its_plugin(
        database_url):
    """The same send with the same idempotency key: the stored receipt, and the plugin is
    not asked again (nor would its refusal now, a daily cap say, undo the first send)."""
    acme = Counting()
    async with core_with(database_url, ("acme", acme)) as runtime:
        stage, fan = await funded_stage(runtime)
        first = await send(runtime, fan, stage, "acme-rocket", key="once")
        acme.veto = "Only one a day"
        again = await send(runtime, fan, stage, "acme-rocket", key="once")
        assert (again.replayed, again.receipt.id, acme.quotes) == (True, first.receipt.id, 1)
        refusal = await refused(send(runtime, fan, stage, "acme-rocket", key="twice"))
        assert refusal.message == "Only one a day"


def test_the_breaker_opens_after_failures_in_a_row_and_lets_one_probe_through():
    breaker = Breaker(threshold=3, cooldown=10)
    for _ in range(2):
        breaker.failed(now=0)
    breaker.succeeded()  # an answer resets the count: failures must be in a row
    breaker.failed(now=0)
    breaker.failed(now=0)
    assert breaker.wait(now=0) is None and breaker.state(0) == CLOSED
    breaker.failed(now=0)
    assert (breaker.state(5), breaker.wait(5)) == (OPEN, 5)
    assert breaker.wait(9.5) == 1  # never "retry after 0 seconds"
    assert breaker.state(10) == HALF_OPEN
    breaker.admit(10)
    assert (breaker.state(10), breaker.wait(10)) == (OPEN, 1)  # one probe at a time
    breaker.succeeded()
    assert breaker.state(10) == CLOSED
