"""The event log: every live event written in the transaction of its change, numbered in
its session's stream without gaps by writers that contend; pruning; and the relay getting
the events of a killed process to subscribers once Redis is back."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.models import Event, GiftSend
from app.runtime import Runtime
from app.services import event_log, gifting
from tests.gifting_support import new_viewer, send, stage
from tests.support import GraphQLClient, ServerProcess, Subscription, settings_for, token
from tests.test_http_events import RESUMABLE, _received
from tests.test_http_gifting import SEND, buy_coins, gift_ids, go_live, send_input
from tests.test_multiprocess import start_redis


async def _stream(runtime, session_id: int) -> list[dict]:
    async with runtime.reads() as session:
        return await event_log.read_after(session, event_log.session_stream(session_id), 0)


async def test_events_are_written_with_their_change_and_numbered_in_their_stream(runtime):
    """A committed send writes its events in its transaction; a refused one writes none; a
    session's events are numbered 1, 2, 3... from SessionStarted."""
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 10)
    broke = await new_viewer(runtime, "broke", 0)
    await send(runtime, fan, where, "rose", 2)
    with pytest.raises(Exception, match="coins"):
        await send(runtime, broke, where, "rose")
    await gifting.end_live_session(runtime.sessions, runtime.relay,
                                   session_id=where.session_id, creator_id=where.creator_id)
    events = await _stream(runtime, where.session_id)
    assert [(e["seq"], e["type"]) for e in events] == [
        (1, "SessionStarted"), (2, "GiftSent"), (3, "TopGiftersChanged"), (4, "ComboEnded"),
        (5, "SessionEnded")]
    async with runtime.sessions() as session:
        receipt = await session.scalar(select(GiftSend))
    assert events[1]["send_id"] == receipt.id and events[1]["quantity"] == 2
    assert events[4]["totals"]["gifts"] == 2
    assert len({e["event_id"] for e in events}) == 5


async def test_writers_on_separate_connections_number_one_stream_without_gaps_or_repeats(
        pg_runtime, postgres_database_url):
    """Two runtimes (their own connection pools) sending to one session at once: every
    gift has exactly one GiftSent event, numbered in one run 1..N of the session's stream."""
    other = Runtime.build(settings_for(postgres_database_url))
    try:
        where = await stage(pg_runtime)
        fans = [await new_viewer(pg_runtime, f"fan{n}", 100) for n in range(16)]
        await asyncio.gather(*(send(runtime, fan, where, "rose", key=f"{fan}-{n}")
                               for n in range(5) for fan, runtime in
                               zip(fans, [pg_runtime, other] * 8, strict=True)))
        events = await _stream(pg_runtime, where.session_id)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        async with pg_runtime.sessions() as session:
            receipts = set((await session.scalars(select(GiftSend.id))).all())
        assert sorted(e["send_id"] for e in events if e["type"] == "GiftSent") == \
            sorted(receipts)
        assert len(receipts) == 80
    finally:
        await other.close()


async def test_pruning_keeps_recent_and_unpublished_events_and_expires_older_cursors(
        runtime, monkeypatch):
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 10)
    await send(runtime, fan, where, "rose")
    await runtime.relay.note()
    stream = event_log.session_stream(where.session_id)
    later = event_log.utcnow() + timedelta(days=8)
    async with runtime.sessions() as session, session.begin():
        assert await event_log.prune(session, timedelta(days=7)) == 0  # all recent
    monkeypatch.setattr(runtime.bus, "publish_all", _failing)  # the next gift's stay
    await send(runtime, fan, where, "rose")  # unpublished
    async with runtime.sessions() as session, session.begin():
        pruned = await event_log.prune(session, timedelta(days=7), now=later)
    assert pruned == 3  # SessionStarted, GiftSent, TopGiftersChanged: published, old
    async with runtime.sessions() as session:
        kept = await event_log.extent(session, stream)
        assert await session.scalar(select(func.count()).select_from(Event)) == 2
    assert (kept.last, kept.oldest) == (5, 4)  # the unpublished gift and its podium
    assert kept.keeps_after(3) and kept.keeps_after(5) and not kept.keeps_after(2)


async def _failing(events):
    raise ConnectionError("the bus is down")


async def test_events_of_a_killed_process_reach_subscribers_when_redis_comes_back(
        tmp_path, postgres_database_url):
    """Two servers share PostgreSQL and Redis. Redis goes away; gifts sent through server A
    are committed but cannot be published; A is killed (SIGKILL). Redis comes back: a
    subscriber watching through server B gets every one of those gifts, in order, once."""
    url = postgres_database_url
    redis_process, redis_url = start_redis(tmp_path)
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    shared = {"REDIS_URL": redis_url, "LIVEGIFTS_SEED_DEMO_DATA": "true",
              "LIVEGIFTS_EVENT_RELAY_GRACE_SECONDS": "1"}
    a, b = ServerProcess(url, **shared), ServerProcess(url, **shared)
    a.start()
    b.start()
    gql_a, gql_b = GraphQLClient(a.url), GraphQLClient(b.url)
    try:
        gifts = await gift_ids(gql_a)
        session_id = await go_live(gql_a, token("kill-star", "creator"))
        fan = token("kill-fan")
        await buy_coins(gql_a, fan)
        async with Subscription(b.url, token("w"), RESUMABLE, {"id": session_id}) as events:
            await events.next_data()
            redis_process.kill()
            redis_process.wait()
            for quantity in (1, 2, 3):
                sent = await gql_a(SEND, send_input(session_id, gifts["rose"], quantity),
                                   token=fan)
                assert sent["data"]["sendGift"]["userErrors"] == []
            os.kill(a.process.pid, signal.SIGKILL)
            a.process.wait()
            redis_process, _ = start_redis(tmp_path, port)
            got = await _received(events, 6)  # each gift and the podium after it
            assert [e.get("comboCount") for e in got] == [1, None, 3, None, 6, None]
            await gql_b(SEND, send_input(session_id, gifts["rose"], 4), token=fan)
            after = await _received(events, 2)
            assert after[0]["comboCount"] == 10  # nothing repeated before it
        cursors = [e["cursor"] for e in [*got, *after]]
        assert len(set(cursors)) == len(cursors)
    finally:
        await gql_a.close()
        await gql_b.close()
        a.stop()
        b.stop()
        redis_process.terminate()
        redis_process.wait()


async def test_a_settled_payout_is_an_event_of_its_creator_once(runtime):
    from tests.money_support import earn_diamonds, payout_webhook, request

    creator = await new_viewer(runtime, "payee")
    await earn_diamonds(runtime, creator, 5_000)
    payout = (await request(runtime, creator, 2_000, "payout-1")).payout
    await payout_webhook(runtime, payout.provider_payout_id, "paid")
    await payout_webhook(runtime, payout.provider_payout_id, "paid")  # again: no new event
    async with runtime.reads() as session:
        events = await event_log.read_after(session, event_log.creator_stream(creator), 0)
    assert [(e["type"], e["status"], e["diamonds"], e["payout_id"]) for e in events] == [
        ("PayoutSettled", "paid", 2_000, payout.id)]


async def test_a_brand_budget_falling_below_the_threshold_is_one_event(database_url):
    from tests.sample_plugins.acme import Acme
    from tests.test_plugins import core_with, funded_stage

    async with core_with(database_url, ("acme", Acme()),
                         brand_budget_low_coins=60) as runtime:
        stage, fan = await funded_stage(runtime, budget=100)
        for _ in range(3):  # each subsidised 25: 100 -> 75 -> 50 (below 60) -> 25
            await send(runtime, fan, stage, "acme-rocket")
        async with runtime.reads() as session:
            events = await event_log.read_after(session, event_log.brand_stream("acme"), 0)
    assert [e["type"] for e in events] == ["BrandGiftSent", "BrandGiftSent",
                                           "BrandBudgetLow", "BrandGiftSent"]
    assert (events[2]["budget_coins"], events[2]["threshold_coins"]) == (50, 60)
