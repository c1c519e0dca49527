"""Real faults under a bounded load of gifts on PostgreSQL: a server process killed, and
PostgreSQL cut off through a TCP proxy (Redis killed under load is
``tests/test_multiprocess.py::test_without_redis_reads_and_gifts_go_on_and_every_acknowledged_gift_is_kept``).

Viewers send gifts over real HTTP, each with its own idempotency key, and keep what each
request answered. After the fault and the recovery: every acknowledged gift is in the
ledger under its key; every request that failed, sent again with its key, is written
exactly once (replayed if its commit had gone through before the fault cut its answer
off); each key has at most one receipt; wallets match their receipts; the audit passes.
Each phase waits for a count of answers, never for a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass, field

import httpx
from sqlalchemy import func, select
from strawberry.relay import from_base64

from app.models import GiftSend, IdempotencyRecord
from app.runtime import Runtime
from app.services import wallets
from app.testing import audit
from tests.support import GraphQLClient, ServerProcess, settings_for, token
from tests.test_http_gifting import SEND, buy_coins, gift_ids, go_live, send_input

FANS = 4


class Proxy:
    """A TCP proxy on loopback in front of PostgreSQL that can be cut: :meth:`cut` drops
    every open connection and refuses new ones until :meth:`restore`."""

    def __init__(self, target_port: int) -> None:
        self.target_port, self.port = target_port, 0
        self.refusing = False
        self.links: set[asyncio.WriteTransport] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        ends = (writer.transport, up_writer.transport)
        self.links.update(ends)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for end in ends:
                self.links.discard(end)
                end.abort()

    def cut(self) -> None:
        self.refusing = True
        for end in list(self.links):
            end.abort()

    def restore(self) -> None:
        self.refusing = False

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    sink.transport.abort()


@dataclass
class Load:
    """Viewers sending Roses, one request at a time each, until stopped. A viewer whose
    request failed waits until the test says the fault is over (as an app would back off),
    so the load stays bounded while the fault lasts."""

    session_id: str
    rose: str
    acknowledged: dict[str, str] = field(default_factory=dict)  # key -> receipt id
    failed: dict[str, str] = field(default_factory=dict)  # key -> the viewer's token
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    recovered: asyncio.Event = field(default_factory=asyncio.Event)
    answered: asyncio.Condition = field(default_factory=asyncio.Condition)

    def __post_init__(self) -> None:
        self.recovered.set()

    async def send(self, http: httpx.AsyncClient, url: str, fan: str, key: str) -> dict | None:
        """The sendGift payload, or None when the request failed in any way."""
        try:
            answer = await http.post(url, json={
                "query": SEND, "variables": send_input(self.session_id, self.rose, key=key)},
                headers={"authorization": f"Bearer {fan}"})
            payload = (answer.json().get("data") or {}).get("sendGift") or {}
        except (httpx.TransportError, ValueError):
            return None
        return payload if payload.get("receipt") else None

    async def viewer(self, url: str, fan: str, name: str) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            for number in range(10_000):
                if self.stopping.is_set():
                    return
                key = f"{name}-{number}"
                payload = await self.send(http, url, fan, key)
                if payload is None:
                    self.failed[key] = fan
                else:
                    self.acknowledged[key] = payload["receipt"]["id"]
                async with self.answered:
                    self.answered.notify_all()
                if payload is None:
                    await self._until_recovered()

    async def _until_recovered(self) -> None:
        waits = [asyncio.ensure_future(self.recovered.wait()),
                 asyncio.ensure_future(self.stopping.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()

    def stop(self) -> None:
        self.stopping.set()

    async def until(self, condition) -> None:
        async with self.answered:
            await asyncio.wait_for(self.answered.wait_for(condition), 120)

    async def settle_failures(self, url: str) -> None:
        """Send every failed request again with its key (a replay, if its first attempt
        had been written): each is acknowledged now."""
        async with httpx.AsyncClient(timeout=30) as http:
            for key, fan in sorted(self.failed.items()):
                payload = await self.send(http, url, fan, key)
                assert payload is not None, f"{key} failed again after the recovery"
                self.acknowledged[key] = payload["receipt"]["id"]


async def prepare(url: str) -> tuple[Load, list[str]]:
    client = GraphQLClient(url)
    try:
        gifts = await gift_ids(client)
        session_id = await go_live(client, token("fault-creator", "creator"))
        fans = [token(f"fault-fan-{n}") for n in range(FANS)]
        for fan in fans:
            await buy_coins(client, fan, "coins-350")
    finally:
        await client.close()
    return Load(session_id, gifts["rose"]), fans


async def check_the_books(database_url: str, load: Load) -> None:
    """Every acknowledged key has its receipt, written once; wallets match; audit passes."""
    runtime = Runtime.build(settings_for(database_url))
    try:
        async with runtime.sessions() as session:
            receipts = {int(from_base64(receipt)[1]) for receipt in load.acknowledged.values()}
            stored = set((await session.scalars(select(GiftSend.id))).all())
            assert receipts == stored, (receipts - stored, stored - receipts)
            assert len(receipts) == len(load.acknowledged)  # no key has two receipts
            by_key = {record.key: record.result["send_id"] for record in await session.scalars(
                select(IdempotencyRecord).where(IdempotencyRecord.operation == "send_gift"))}
            assert by_key == {key: int(from_base64(receipt)[1])
                              for key, receipt in load.acknowledged.items()}
            for sender, paid in (await session.execute(
                    select(GiftSend.sender_id, func.sum(GiftSend.coins_paid))
                    .group_by(GiftSend.sender_id))).all():
                assert (await wallets.wallet(session, sender)).coins == 350 - paid
            assert await audit(session) == []
    finally:
        await runtime.close()


async def test_postgresql_cut_off_under_gift_load(postgres_database_url):
    """PostgreSQL unreachable (every connection dropped, new ones refused) while viewers
    send gifts, then reachable again: requests fail while it is cut, the server recovers
    by itself, and the books hold as the module says."""
    proxy = Proxy(5432)
    await proxy.start()
    through_proxy = postgres_database_url.replace("127.0.0.1:5432",
                                                  f"127.0.0.1:{proxy.port}")
    assert through_proxy != postgres_database_url
    server = ServerProcess(through_proxy, LIVEGIFTS_SEED_DEMO_DATA="true",
                           LIVEGIFTS_RATE_LIMIT_PER_USER="100000")
    await asyncio.to_thread(server.start)
    try:
        load, fans = await prepare(server.url)
        viewers = [asyncio.create_task(load.viewer(server.url, fan, f"fan{n}"))
                   for n, fan in enumerate(fans)]
        try:
            await load.until(lambda: len(load.acknowledged) >= 20)
            load.recovered.clear()
            proxy.cut()
            await load.until(lambda: len(load.failed) >= FANS)  # every viewer felt it
            proxy.restore()
            load.recovered.set()
            acknowledged = len(load.acknowledged)
            await load.until(lambda: len(load.acknowledged) >= acknowledged + 20)
        finally:
            load.stop()
            await asyncio.gather(*viewers)
        await load.settle_failures(server.url)
    finally:
        await asyncio.to_thread(server.stop)
        await proxy.stop()
    await check_the_books(postgres_database_url, load)


async def test_a_server_process_killed_under_gift_load(postgres_database_url):
    """Two server processes on one database; one is killed (SIGKILL) while viewers send
    gifts through both. The other goes on; the killed one's unanswered requests, sent
    again to the survivor with their keys, are written once; the books hold."""
    first = ServerProcess(postgres_database_url, LIVEGIFTS_SEED_DEMO_DATA="true",
                          LIVEGIFTS_RATE_LIMIT_PER_USER="100000")
    second = ServerProcess(postgres_database_url, LIVEGIFTS_RATE_LIMIT_PER_USER="100000")
    await asyncio.to_thread(first.start)  # migrates and seeds; then the second
    await asyncio.to_thread(second.start)
    try:
        load, fans = await prepare(second.url)
        servers = [first, second] * (FANS // 2)
        viewers = [asyncio.create_task(load.viewer(server.url, fan, f"fan{n}"))
                   for n, (fan, server) in enumerate(zip(fans, servers, strict=True))]
        try:
            await load.until(lambda: len(load.acknowledged) >= 20)
            load.recovered.clear()  # the killed server's viewers wait once they fail
            assert first.process is not None
            os.kill(first.process.pid, signal.SIGKILL)
            await load.until(lambda: len(load.failed) >= FANS // 2)
            acknowledged = len(load.acknowledged)
            await load.until(lambda: len(load.acknowledged) >= acknowledged + 20)
        finally:
            load.stop()
            await asyncio.gather(*viewers)
        await load.settle_failures(second.url)
    finally:
        await asyncio.to_thread(first.stop)
        await asyncio.to_thread(second.stop)
    await check_the_books(postgres_database_url, load)
