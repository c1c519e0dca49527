"""Real faults on PostgreSQL, through a TCP proxy the tests control and real process kills.

Under a bounded load of gifts: a server process killed, and PostgreSQL cut off (Redis killed
under load is
``tests/test_multiprocess.py::test_without_redis_reads_and_gifts_go_on_and_every_acknowledged_gift_is_kept``).
At one gift's COMMIT: the connection dropped before it or after it (the answer lost), the
sender hanging up while it is in flight, the server SIGKILLed while it is in flight.

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
import pytest
from sqlalchemy import func, select
from strawberry.relay import from_base64

from app.models import GiftSend, IdempotencyRecord
from app.runtime import Runtime
from app.services import wallets
from app.testing import audit
from tests.support import GraphQLClient, ServerProcess, settings_for, token
from tests.test_http_gifting import SEND, buy_coins, gift_ids, go_live, send_input

FANS = 4


SSL_REQUEST, GSS_REQUEST = 80877103, 80877104  # startup-phase requests before the real one
DROP_BEFORE, DROP_AFTER, HOLD = "drop before", "drop after", "hold"


class Proxy:
    """A TCP proxy on loopback in front of PostgreSQL that a test controls.

    :meth:`cut` drops every open connection and refuses new ones until :meth:`restore`.
    It also reads the client's side of the wire protocol, so it can fault the ``COMMIT`` of
    the next transaction that wrote to a given table (:meth:`fault_next_commit`): drop the
    connection before the COMMIT reaches PostgreSQL (the transaction rolls back), or after
    PostgreSQL answered it but before the answer gets back (committed, and the client
    cannot know), or hold it until the test releases it, forwarded or dropped. Statements
    are recognised by their text in Parse and simple Query messages, and prepared ones
    again by name when Bind executes them.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port, self.port = target_port, 0
        self.refusing = False
        self.links: set[asyncio.WriteTransport] = set()
        self.server: asyncio.Server | None = None
        self.commit_fault: str | None = None
        self.fault_table = b""
        self.commit_held = asyncio.Event()
        self.released: asyncio.Future[bool] | None = None  # True: forward the held COMMIT

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def fault_next_commit(self, fault: str, table: str = "gift_send") -> None:
        self.commit_fault, self.released = fault, asyncio.get_running_loop().create_future()
        self.fault_table = f"INSERT INTO {table} ".encode()
        self.commit_held.clear()

    def release(self, forward: bool) -> None:
        assert self.released is not None
        self.released.set_result(forward)

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
        answer_lost = asyncio.Event()  # set: drop instead of passing on the next answer
        self.links.update(ends)
        try:
            await asyncio.gather(self._from_client(reader, up_writer, ends, answer_lost),
                                 _pipe(up_reader, writer, answer_lost))
        finally:
            for end in ends:
                self.links.discard(end)
                end.abort()

    async def _from_client(self, reader: asyncio.StreamReader, sink: asyncio.StreamWriter,
                           ends: tuple[asyncio.BaseTransport, ...],
                           answer_lost: asyncio.Event) -> None:
        """Pass the client's messages on one at a time, faulting a COMMIT if asked."""
        startup, statements, wrote = True, {}, False  # prepared statement name -> text
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
            while True:
                if startup:  # length, then a request code: no type byte yet
                    header = await reader.readexactly(4)
                    body = await reader.readexactly(int.from_bytes(header, "big") - 4)
                    startup = int.from_bytes(body[:4], "big") in (SSL_REQUEST, GSS_REQUEST)
                else:
                    header = await reader.readexactly(5)
                    body = await reader.readexactly(int.from_bytes(header[1:], "big") - 4)
                    kind = header[:1]
                    if kind == b"P":  # Parse: name, text
                        name, text = body.split(b"\0")[:2]
                        statements[name] = text
                    executed = body if kind == b"Q" else \
                        statements.get(body.split(b"\0")[1], b"") if kind == b"B" else b""
                    wrote = wrote or (self.fault_table != b"" and self.fault_table in executed)
                    ends_transaction = kind == b"Q" and body.lstrip().upper().startswith(
                        (b"COMMIT", b"ROLLBACK"))
                    faulted = ends_transaction and wrote and self.commit_fault is not None \
                        and body.lstrip().upper().startswith(b"COMMIT")
                    wrote = wrote and not ends_transaction
                    if faulted:
                        fault, self.commit_fault = self.commit_fault, None
                        if fault == HOLD:
                            self.commit_held.set()
                            assert self.released is not None
                            fault = DROP_AFTER if await self.released else DROP_BEFORE
                            if fault == DROP_AFTER:  # forwarded: its client may be gone
                                answer_lost.clear()
                                sink.write(header + body)
                                await sink.drain()
                                continue
                        if fault == DROP_BEFORE:
                            for end in ends:
                                end.abort()
                            return
                        answer_lost.set()
                sink.write(header + body)
                await sink.drain()
        sink.transport.abort()

    def cut(self) -> None:
        self.refusing = True
        for end in list(self.links):
            end.abort()

    def restore(self) -> None:
        self.refusing = False

    async def stop(self) -> None:
        self.cut()
        if self.released is not None and not self.released.done():
            self.released.set_result(False)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                answer_lost: asyncio.Event | None = None) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await source.read(65536):
            if answer_lost is not None and answer_lost.is_set():
                break  # the database answered; the client never hears it
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


@pytest.fixture
async def behind_proxy(postgres_database_url):
    """A server whose every connection to PostgreSQL goes through a :class:`Proxy`."""
    proxy = Proxy(5432)
    await proxy.start()
    through_proxy = postgres_database_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    assert through_proxy != postgres_database_url
    server = ServerProcess(through_proxy, LIVEGIFTS_SEED_DEMO_DATA="true",
                           LIVEGIFTS_RATE_LIMIT_PER_USER="100000")
    await asyncio.to_thread(server.start)
    yield proxy, server
    await asyncio.to_thread(server.stop)
    await proxy.stop()


async def one_fan(url: str) -> tuple[Load, str, httpx.AsyncClient]:
    load, fans = await prepare(url)
    http = httpx.AsyncClient(timeout=60)
    warm = await load.send(http, url, fans[0], "warm-up")  # accounts open, pool warm
    assert warm is not None
    load.acknowledged["warm-up"] = warm["receipt"]["id"]
    return load, fans[0], http


@pytest.mark.parametrize("fault", [DROP_BEFORE, DROP_AFTER])
async def test_a_gift_whose_commit_is_lost_is_answered_as_written_exactly_once(
        behind_proxy, postgres_database_url, fault):
    """The connection dropped as the gift's COMMIT goes out: before PostgreSQL gets it (the
    transaction rolls back) or after PostgreSQL committed it and before the answer got
    back. Either way the sender is answered with the gift, written once (the server tries a
    lone send whose connection was lost once more: its key replays it when the COMMIT had
    gone through), and the same key again gives the same receipt."""
    proxy, server = behind_proxy
    load, fan, http = await one_fan(server.url)
    try:
        proxy.fault_next_commit(fault)
        first = await load.send(http, server.url, fan, "the-gift")
        assert proxy.commit_fault is None  # the fault was applied to the gift's COMMIT
        assert first is not None, "the sender was not answered with the gift"
        assert first["replayed"] is (fault == DROP_AFTER)
        again = await load.send(http, server.url, fan, "the-gift")
        assert again is not None
        assert (again["replayed"], again["receipt"]["id"]) == (True, first["receipt"]["id"])
        load.acknowledged["the-gift"] = first["receipt"]["id"]
    finally:
        await http.aclose()
    await check_the_books(postgres_database_url, load)


async def test_a_sender_who_hangs_up_mid_request_finds_the_gift_written_once(
        behind_proxy, postgres_database_url):
    """The sender's HTTP connection closed while the gift's COMMIT is on its way: the gift
    is written (the server does not abandon a send it accepted), and the same key sent
    again gives that receipt, replayed."""
    proxy, server = behind_proxy
    load, fan, http = await one_fan(server.url)
    try:
        proxy.fault_next_commit(HOLD)
        hanging_up = asyncio.create_task(load.send(http, server.url, fan, "hung-up"))
        await asyncio.wait_for(proxy.commit_held.wait(), 60)
        hanging_up.cancel()  # closes the request's connection
        with contextlib.suppress(asyncio.CancelledError):
            await hanging_up
        proxy.release(forward=True)
        again = await load.send(http, server.url, fan, "hung-up")
        assert again is not None and again["replayed"] is True
        load.acknowledged["hung-up"] = again["receipt"]["id"]
    finally:
        await http.aclose()
    await check_the_books(postgres_database_url, load)


@pytest.mark.parametrize("committed", [True, False])
async def test_a_server_killed_while_its_gift_commits_leaves_it_whole_or_absent(
        behind_proxy, postgres_database_url, committed):
    """SIGKILL while the gift's COMMIT is held in flight; the COMMIT then reaches
    PostgreSQL (committed) or the connection drops (rolled back). A new server process
    answers the same key with the written gift (replayed) or writes it now: one receipt,
    whole, either way."""
    proxy, server = behind_proxy
    load, fan, http = await one_fan(server.url)
    restarted = ServerProcess(server.database_url, LIVEGIFTS_RATE_LIMIT_PER_USER="100000")
    try:
        proxy.fault_next_commit(HOLD)
        killed = asyncio.create_task(load.send(http, server.url, fan, "in-flight"))
        await asyncio.wait_for(proxy.commit_held.wait(), 60)
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGKILL)
        assert await killed is None  # its sender got no answer
        proxy.release(forward=committed)
        await asyncio.to_thread(restarted.start)
        again = await load.send(http, restarted.url, fan, "in-flight")
        assert again is not None and again["replayed"] is committed
        load.acknowledged["in-flight"] = again["receipt"]["id"]
    finally:
        await http.aclose()
        await asyncio.to_thread(restarted.stop)
    await check_the_books(postgres_database_url, load)
