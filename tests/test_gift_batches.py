"""Gifts written in batches: sends arriving together share one database transaction with a
constant number of statements, and every rule of a single send still holds per send."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from app.db import driver_arguments
from app.errors import DomainError, ErrorCode
from app.models import GiftCombo, GiftSend, IdempotencyRecord, LedgerTransaction
from app.runtime import Runtime
from app.services import gifting, live, recognition, safeguards, wallets
from app.services.recognition import Period
from app.testing import audit
from tests.gifting_support import Recorder, new_viewer, send, stage
from tests.support import StatementWatch, settings_for, snapshot


async def _outcome(coroutine) -> str:
    try:
        await coroutine
        return "sent"
    except DomainError as error:
        return error.code.value


class Statements:
    """Counts the statements an engine executes, through SQLAlchemy or on the driver
    directly (an executemany counts once)."""

    def __init__(self, runtime: Runtime, monkeypatch) -> None:
        self.count = 0
        self.watch = StatementWatch(runtime, monkeypatch, self._seen)

    def _seen(self, _driver: bool) -> None:
        self.count += 1

    def close(self) -> None:
        self.watch.close()


async def test_a_batch_of_fifty_sends_costs_the_statements_of_one(pg_runtime, monkeypatch):
    """On PostgreSQL. (SQLite, embedded, cannot return inserted ids in input order, so
    there SQLAlchemy inserts the batch's rows one statement each; it has no round trips.)"""
    runtime = pg_runtime
    stages = [await stage(runtime, f"star{n}") for n in range(5)]
    fans = [await new_viewer(runtime, f"fan{n}", 1000) for n in range(50)]
    await send(runtime, fans[0], stages[0], "rose")  # accounts and caches warm
    statements = Statements(runtime, monkeypatch)
    await send(runtime, fans[1], stages[1], "rose")
    one = statements.count
    assert one > 15  # the statements of a send, most of them run on the driver
    statements.count = 0
    await asyncio.gather(*(send(runtime, fan, stages[n % 5], "finger-heart")
                           for n, fan in enumerate(fans)))
    fifty = statements.count
    statements.close()
    # The first send finds the writer idle and goes alone; the other 49 form one batch.
    assert fifty <= 2 * one, (one, fifty)
    async with runtime.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(GiftSend)) == 52
        assert await audit(session) == []
        for n, where in enumerate(stages):
            totals = await live.totals(session, where.session_id)
            assert totals.gifts == 10 + (n < 2)
        board = await recognition.top_creators(session, Period.DAY, limit=10, offset=0)
        assert sum(entry.diamonds for entry in board) == 50 * 2  # a Rose earns no diamond
        assert sum(entry.gifts for entry in board) == 52


async def test_one_batch_refuses_each_bad_send_alone_and_writes_the_rest(runtime, database_url):
    where = await stage(runtime)
    ended = await stage(runtime, "gone")
    async with runtime.sessions() as session, session.begin():
        await live.end_session(session, ended.session_id, ended.creator_id)
    rich = await new_viewer(runtime, "rich", 1000)
    poor = await new_viewer(runtime, "poor", 3)
    capped = await new_viewer(runtime, "capped", 1000)
    async with runtime.sessions() as session, session.begin():
        await safeguards.change_limit(session, capped, safeguards.DAILY, amount=12)
    await send(runtime, rich, where, "rose", key="used-before")
    before = await snapshot(database_url)

    bad = {
        "poor": send(runtime, poor, where, "finger-heart", key="poor-1"),
        "self": send(runtime, where.creator_id, where, "rose", key="self-1"),
        "ended": send(runtime, rich, ended, "rose", key="ended-1"),
        "reused": send(runtime, rich, where, "rose", quantity=2, key="used-before"),
    }
    good = [send(runtime, rich, where, "rose", key=f"rich-{n}") for n in range(3)]
    caps = [send(runtime, capped, where, "finger-heart", key=f"capped-{n}") for n in range(4)]
    outcomes = await asyncio.gather(*(_outcome(c) for c in [*bad.values(), *good, *caps]))
    assert outcomes[:4] == ["INSUFFICIENT_COINS", "CANNOT_GIFT_SELF", "SESSION_NOT_LIVE",
                            "IDEMPOTENCY_KEY_REUSED"]
    assert outcomes[4:7] == ["sent"] * 3
    assert outcomes[7:] == ["sent", "sent", "DAILY_CAP_REACHED", "DAILY_CAP_REACHED"]

    after = await snapshot(database_url)
    assert after["rows"]["gift_send"] - before["rows"]["gift_send"] == 5
    assert after["rows"]["ledger_transaction"] - before["rows"]["ledger_transaction"] == 5
    async with runtime.sessions() as session:
        assert (await wallets.wallet(session, poor)).coins == 3
        assert (await wallets.wallet(session, rich)).coins == 1000 - 4
        assert (await wallets.wallet(session, capped)).coins == 1000 - 10
        spent = (await safeguards.spending_of(session, [capped, poor], datetime.now(UTC)))
        assert (spent[capped].today, spent[capped].this_month) == (10, 10)
        assert (spent[poor].today, spent[poor].this_month) == (0, 0)
        keys = dict((await session.execute(select(IdempotencyRecord.key,
                                                  IdempotencyRecord.status))).all())
        # A business refusal keeps its key refused; input errors leave no key behind.
        assert keys["poor-1"] == "failed"
        assert "self-1" not in keys and "ended-1" not in keys and "capped-3" not in keys
        assert keys["rich-0"] == keys["capped-1"] == "succeeded"
        assert await audit(session) == []
    with pytest.raises(DomainError) as refused:
        await send(runtime, poor, where, "finger-heart", key="poor-1")
    assert refused.value.code is ErrorCode.INSUFFICIENT_COINS
    assert refused.value.message == "Not enough coins: this needs 5 and the balance is 3."


async def test_the_same_key_twice_at_once_sends_once_and_replays_once(runtime):
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 100)
    results = await asyncio.gather(*(send(runtime, fan, where, "rose", key="twice")
                                     for _ in range(2)))
    assert sorted(r.replayed for r in results) == [False, True]
    assert results[0].receipt.id == results[1].receipt.id
    assert {r.wallet_coins for r in results} == {99}


async def test_a_combo_counts_every_send_of_a_batch_in_order(runtime):
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 1000)
    recorder = Recorder(runtime, where.session_id)
    results = await asyncio.gather(*(send(runtime, fan, where, "rose", quantity=2)
                                     for _ in range(5)))
    assert [r.receipt.combo_count for r in results] == [2, 4, 6, 8, 10]
    assert [r.wallet_coins for r in results] == [998, 996, 994, 992, 990]
    assert len({r.receipt.combo_id for r in results}) == 1
    sent = recorder.of("GiftSent")
    assert [e["combo_count"] for e in sent] == [2, 4, 6, 8, 10]
    assert [e["send_id"] for e in sent] == [r.receipt.id for r in results]
    assert recorder.of("TopGiftersChanged")[-1]["top"][0]["coins"] == 10
    async with runtime.sessions() as session:
        combo = await session.scalar(select(GiftCombo))
        assert (combo.count, combo.sends, combo.coins, combo.ended_at) == (10, 5, 10, None)


async def test_a_send_that_breaks_its_batch_fails_alone(runtime, monkeypatch):
    where = await stage(runtime)
    fans = [await new_viewer(runtime, f"fan{n}", 100) for n in range(4)]
    accept = gifting._Batch.accept

    async def accept_but_break_on_fan_2(self, request):
        if request.sender_id == fans[2]:
            raise RuntimeError("broken")
        return await accept(self, request)

    monkeypatch.setattr(gifting._Batch, "accept", accept_but_break_on_fan_2)
    outcomes = await asyncio.gather(*(send(runtime, fan, where, "rose") for fan in fans),
                                    return_exceptions=True)
    assert [type(o).__name__ for o in outcomes] == ["SendResult", "SendResult",
                                                    "RuntimeError", "SendResult"]
    async with runtime.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(GiftSend)) == 3
        assert (await wallets.wallet(session, fans[2])).coins == 100
        assert await audit(session) == []


async def test_gifts_stand_when_the_bus_fails_and_the_relay_publishes_their_events_later(
        runtime, monkeypatch, caplog):
    """A bus that fails delays the events, never the gifts: they are in the log, and the
    relay's sweep publishes them, in order, once the bus answers again."""
    where = await stage(runtime)
    fans = [await new_viewer(runtime, f"fan{n}", 100) for n in range(3)]
    recorder = Recorder(runtime, where.session_id)
    await runtime.relay.note()  # SessionStarted was published: noted so

    async def unreachable(events):
        raise ConnectionError("Redis is unreachable")

    with monkeypatch.context() as bus_down:
        bus_down.setattr(runtime.bus, "publish_all", unreachable)
        results = await asyncio.gather(*(send(runtime, fan, where, "rose") for fan in fans))
        assert [r.wallet_coins for r in results] == [99, 99, 99]
        assert "Redis is unreachable" in caplog.text
        runtime.relay.grace = timedelta(0)
        with pytest.raises(ConnectionError):
            await runtime.relay.sweep()  # still down: nothing is noted published
    assert recorder.events == []
    assert await runtime.relay.sweep() == 4  # three gifts and the new podium
    assert [e["type"] for e in recorder.events] == ["GiftSent"] * 3 + ["TopGiftersChanged"]
    assert [e["seq"] for e in recorder.events] == [2, 3, 4, 5]  # after SessionStarted
    assert await runtime.relay.sweep() == 0  # published once
    async with runtime.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(GiftSend)) == 3
        assert await audit(session) == []


async def test_two_writers_batching_gifts_to_one_hot_creator_agree(postgres_database_url):
    """Two runtimes in this process, each with its own writer and engine (as two servers
    have), race on one creator's rows, batch against batch; each viewer uses one of them,
    so only the creator's rows are contended (viewers' wallets across processes:
    ``tests/test_races.py``)."""
    runtimes = [Runtime.build(settings_for(postgres_database_url).model_copy(
        update={"database_pool_size": 10})) for _ in range(2)]
    try:
        where = await stage(runtimes[0])
        fans = [await new_viewer(runtimes[0], f"fan{n}", 10_000) for n in range(40)]

        async def gifter(n: int) -> None:
            for round_ in range(10):
                await send(runtimes[n % 2], fans[n], where, "finger-heart",
                           key=f"hot-{n}-{round_}")

        await asyncio.gather(*(gifter(n) for n in range(40)))
        async with runtimes[0].sessions() as session:
            assert (await wallets.wallet(session, where.creator_id)).diamonds == 400 * 2
            assert (await live.totals(session, where.session_id)).gifts == 400
            assert await session.scalar(select(func.count()).select_from(
                LedgerTransaction).where(LedgerTransaction.kind == "gift")) == 400
            board = await recognition.top_creators(session, Period.ALL, limit=1, offset=0)
            assert (board[0].gifts, board[0].diamonds) == (400, 800)
            assert await audit(session) == []
    finally:
        for runtime in runtimes:
            await runtime.close()


async def test_gifts_are_written_with_the_statement_caches_turned_off(postgres_database_url):
    """Behind a transaction-pooling PgBouncer the URL turns prepared-statement caching off;
    that turns asyncpg's own cache off too (the gift writer runs statements on it), and a
    batch is written whole with both off."""
    url = postgres_database_url + ("&" if "?" in postgres_database_url else "?") + \
        "prepared_statement_cache_size=0"
    assert driver_arguments(url) == {"statement_cache_size": 0}
    runtime = Runtime.build(settings_for(url))
    try:
        where = await stage(runtime, "cacheless")
        viewers = [await new_viewer(runtime, f"cacheless-{n}", 100) for n in range(5)]
        results = await asyncio.gather(*(send(runtime, viewer, where) for viewer in viewers))
        assert sorted(result.receipt.sender_id for result in results) == sorted(viewers)
        assert [result.wallet_coins for result in results] == [99] * 5
        async with runtime.sessions() as session:
            assert await audit(session) == []
    finally:
        await runtime.close()
