"""Several server processes share live events through Redis pub/sub.

The test starts its own ``redis-server`` on a free loopback port and stops it.
Without a ``redis-server`` binary the test is skipped (it fails under CI).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid

import pytest
import redis

from tests.conftest import REQUIRE_POSTGRES, fresh_database
from tests.support import (
    GraphQLClient,
    ServerProcess,
    Subscription,
    _free_port,
    in_one_window,
    token,
)
from tests.test_http_gifting import EVENTS, SEND, buy_coins, gift_ids, go_live, send_input


def start_redis(directory, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server on loopback (on ``port``, or a free one), answering pings."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed; the multi-process test needs it"
        if REQUIRE_POSTGRES:  # CI: every real-component test must run
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    port = port or _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory)], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 15
    while True:
        try:
            redis.Redis.from_url(url).ping()
            return process, url
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.05)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    process, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def two_servers(request, tmp_path_factory, redis_url):
    url = fresh_database(request.param, request, tmp_path_factory.mktemp("pair"))
    servers = [ServerProcess(url, REDIS_URL=redis_url, LIVEGIFTS_SEED_DEMO_DATA="true",
                             LIVEGIFTS_COMBO_WINDOW_SECONDS="0.6",
                             LIVEGIFTS_RATE_LIMIT_PER_USER="6") for _ in range(2)]
    servers[0].start()  # the first one migrates and seeds; then the second
    servers[1].start()
    yield servers
    for server in servers:
        server.stop()


async def test_a_gift_sent_through_one_process_reaches_a_subscriber_on_another(two_servers):
    a = GraphQLClient(two_servers[0].url)
    try:
        gifts = await gift_ids(a)
        creator = token("pair-creator", "creator")
        session_id = await go_live(a, creator)
        fan = token("pair-fan")
        await buy_coins(a, fan)
        async with Subscription(two_servers[1].url, token("pair-overlay"), EVENTS,
                                {"id": session_id}) as events:
            assert (await events.next_data())["liveSessionEvents"]["viewers"] == 0
            sent = await a(SEND, send_input(session_id, gifts["hand-hearts"]), token=fan)
            assert sent["data"]["sendGift"]["userErrors"] == []
            event = (await events.next_data())["liveSessionEvents"]
            assert event["__typename"] == "GiftSent"
            assert (event["gift"]["sku"], event["coins"], event["sender"]["name"]) == \
                ("hand-hearts", 100, "pair-fan")
            # Both processes run a combo reaper; the combo still ends exactly once.
            later = [(await events.next_data())["liveSessionEvents"] for _ in range(2)]
            assert [e["__typename"] for e in later] == ["TopGiftersChanged", "ComboEnded"]
            with pytest.raises(TimeoutError):
                await events.receive(timeout=2.5)
    finally:
        await a.close()


async def test_rate_limits_are_shared_by_the_processes_through_redis(two_servers, redis_url):
    """Five requests through one process use up five of the user's six; once that process
    has sent its count to Redis, the other admits one more and refuses the next."""
    a, b = (GraphQLClient(server.url) for server in two_servers)
    store = redis.Redis.from_url(redis_url)
    query = {"query": "{ rateCard { version } }"}

    async def attempt(n):
        name = f"shared-limit-{n}-{uuid.uuid4().hex[:8]}"  # a fresh budget
        caller = {"authorization": f"Bearer {token(name)}"}
        for _ in range(5):
            assert (await b.http.post(b.url, json=query, headers=caller)).status_code == 200
        for _ in range(600):  # until b's background sync has landed (not a time window)
            counted = [int(store.get(key) or 0)
                       for key in store.keys(f"livegifts:rate:user:{name}:*")]
            if sum(counted) == 5:
                break
            await asyncio.sleep(0.05)
        sixth = await a.http.post(a.url, json=query, headers=caller)
        seventh = await a.http.post(a.url, json=query, headers=caller)
        return counted, sixth, seventh

    try:
        counted, sixth, seventh = await in_one_window(attempt)
        assert counted == [5]
        assert sixth.status_code == 200
        assert seventh.status_code == 429
        assert seventh.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    finally:
        store.close()
        await a.close()
        await b.close()


async def test_deployments_sharing_one_redis_keep_to_their_prefix(redis_url):
    from app.events import create_event_bus
    from app.ratelimit import Counters

    ours, same, theirs = (create_event_bus(redis_url, prefix)
                          for prefix in ("blue", "blue", "green"))
    counters = [Counters(redis_url, prefix) for prefix in ("blue", "green")]
    try:
        for bus in (ours, same, theirs):
            await bus.start()
        async with same.subscription("live-session:1") as mine, \
                theirs.subscription("live-session:1") as other:
            await ours.publish("live-session:1", {"type": "Ping"})
            assert await asyncio.wait_for(anext(mine), 5) == {"type": "Ping"}
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(other), 0.5)
        assert [await counters[0].hit(["user:x", "ip:y"], 1) for _ in range(2)] == [[1, 1],
                                                                                     [2, 2]]
        assert await counters[1].hit(["user:x"], 1) == [1]  # the other deployment's own count
        await counters[0].sync()  # the key exists: the sync only adds to it
        store = redis.Redis.from_url(redis_url)
        assert store.get("blue:rate:user:x:1") == b"2"
        assert 0 < store.ttl("blue:rate:user:x:1") <= 120
        store.close()
    finally:
        for bus in (ours, same, theirs):
            await bus.close()
        for counter in counters:
            await counter.close()


async def test_rate_limits_keep_counting_while_redis_is_down_and_send_the_counts_later(
        tmp_path):
    """Redis killed: requests are still counted (and limited) by the process, nothing fails;
    Redis back on the same port: the counts made meanwhile reach it."""
    from app.ratelimit import Counters

    process, url = start_redis(tmp_path)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    counters = Counters(url, "fault", sync_seconds=3600)  # syncs only when the test asks
    try:
        assert await counters.hit(["user:x"], 1) == [1]  # first of the window: in Redis
        process.kill()
        process.wait(timeout=10)
        assert await counters.hit(["user:x"], 1) == [2]
        assert await counters.hit(["user:y"], 1) == [1]  # a new key, counted here alone
        await counters.sync()  # Redis is away: the counts are kept for later
        process, url = start_redis(tmp_path, port)
        await counters.sync()
        store = redis.Redis.from_url(url)
        assert (store.get("fault:rate:user:x:1"), store.get("fault:rate:user:y:1")) == \
            (b"1", b"1")  # a new Redis: only what was counted while the old one was away
        # Created by the sync, each key still lives two windows, not for ever.
        assert 0 < store.ttl("fault:rate:user:x:1") <= 120
        assert 0 < store.ttl("fault:rate:user:y:1") <= 120
        store.close()
    finally:
        await counters.close()
        process.kill()
        process.wait(timeout=10)


async def test_events_published_together_arrive_in_order_on_their_channels(redis_url):
    from app.events import create_event_bus

    publisher, listener = (create_event_bus(redis_url, "order") for _ in range(2))
    try:
        for bus in (publisher, listener):
            await bus.start()
        async with listener.subscription("live-session:1") as one, \
                listener.subscription("live-session:2") as two:
            await publisher.publish_all([
                ("live-session:1", {"type": "GiftSent", "n": 1}),
                ("live-session:2", {"type": "GiftSent", "n": 2}),
                ("live-session:1", {"type": "TopGiftersChanged", "n": 3})])
            assert [await asyncio.wait_for(anext(one), 5) for _ in range(2)] == [
                {"type": "GiftSent", "n": 1}, {"type": "TopGiftersChanged", "n": 3}]
            assert await asyncio.wait_for(anext(two), 5) == {"type": "GiftSent", "n": 2}
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(one), 0.3)
    finally:
        for bus in (publisher, listener):
            await bus.close()


async def test_without_redis_reads_and_gifts_go_on_and_every_acknowledged_gift_is_kept(
        postgres_database_url, tmp_path):
    """Redis killed under a load of reads and gifts, then restarted on its port: not one
    answer is a 5xx or an error, /ready says degraded (not unavailable) meanwhile, and every
    gift acknowledged is in the ledger with the audit passing."""
    from sqlalchemy import select
    from strawberry.relay import from_base64

    from app.models import GiftSend
    from app.runtime import Runtime
    from app.testing import audit
    from tests.support import settings_for

    process, url = start_redis(tmp_path)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    server = ServerProcess(postgres_database_url, REDIS_URL=url, LIVEGIFTS_SEED_DEMO_DATA="true")
    server.start()
    client = GraphQLClient(server.url)
    acknowledged: list[str] = []
    answers: list[tuple[int, bool]] = []  # (status, had errors)
    stop = asyncio.Event()
    progress = asyncio.Condition()  # notified at each acknowledged gift
    try:
        gifts = await gift_ids(client)
        session_id = await go_live(client, token("redisless-creator", "creator"))
        fans = [token(f"redisless-fan-{n}") for n in range(4)]
        for fan in fans:
            await buy_coins(client, fan, "coins-350")

        async def load(fan: str) -> None:
            while not stop.is_set():
                sent = await client.http.post(server.url, json={
                    "query": SEND, "variables": send_input(session_id, gifts["rose"])},
                    headers={"authorization": f"Bearer {fan}"})
                read = await client.http.post(server.url, json={
                    "query": "{ rateCard { version } viewer { wallet { coins } } }"},
                    headers={"authorization": f"Bearer {fan}"})
                for answer in (sent, read):
                    answers.append((answer.status_code, "errors" in answer.json()))
                payload = sent.json().get("data", {}).get("sendGift") or {}
                if payload.get("receipt"):
                    acknowledged.append(payload["receipt"]["id"])
                    async with progress:
                        progress.notify_all()

        async def until(count: int) -> None:
            async with progress:
                await progress.wait_for(lambda: len(acknowledged) >= count)

        workers = [asyncio.create_task(load(fan)) for fan in fans]
        await asyncio.wait_for(until(20), 60)
        process.kill()
        process.wait(timeout=10)
        await asyncio.wait_for(until(len(acknowledged) + 40), 60)
        ready = await client.http.get(server.url.removesuffix("/graphql") + "/ready",
                                      timeout=30)
        assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
        assert ready.json()["degraded"] == ["redis"]
        process, url = start_redis(tmp_path, port)
        await asyncio.wait_for(until(len(acknowledged) + 40), 60)
        stop.set()
        await asyncio.gather(*workers)
        assert answers and all(status == 200 and not errors for status, errors in answers), \
            [answer for answer in answers if answer != (200, False)][:5]
        for _ in range(300):  # the process reconnects by itself
            ready = await client.http.get(server.url.removesuffix("/graphql") + "/ready")
            if ready.json()["status"] == "ready":
                break
            await asyncio.sleep(0.05)
        assert ready.json()["status"] == "ready"
    finally:
        stop.set()
        await client.close()
        server.stop()
        process.kill()
        process.wait(timeout=10)
    runtime = Runtime.build(settings_for(postgres_database_url))
    try:
        async with runtime.sessions() as session:
            kept = set((await session.scalars(select(GiftSend.id))).all())
            assert {int(from_base64(receipt)[1]) for receipt in acknowledged} <= kept
            assert await audit(session) == []
    finally:
        await runtime.close()
