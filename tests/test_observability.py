"""Observability: request ids and JSON logs, Prometheus metrics, health and readiness, tracing.

HTTP claims run against real ``livegifts serve`` processes; the counting of committed money
and the tracing (in-memory span exporter) are also checked in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.db import create_engine
from app.ledger import Currency, Leg, post_transaction, system_account
from app.observability import readiness
from app.settings import Settings
from tests.conftest import fresh_database
from tests.sample_plugins.acme import Acme
from tests.support import REQUIRE_POSTGRES, ServerProcess, failure, settings_for, token
from tests.test_http_gifting import SEND, buy_coins, gift_ids, go_live, person, send_input

ADMIN = token("observer-admin", "admin")
FUND = """mutation($brand: String!, $coins: Long!, $key: String!) {
  fundBrandBudget(input: {brand: $brand, coins: $coins, idempotencyKey: $key}) {
    budget userErrors { code } } }"""
MONEY = ("livegifts_gifts_sent_total", "livegifts_coins_moved_total",
         "livegifts_diamonds_moved_total")


class Faulty(Acme):
    """A brand plugin whose revenue split is nonsense (a float share)."""

    brand = "faulty"
    sku = "faulty-rocket"


faulty = Faulty(mode="float-share")
FAULTY = "tests.test_observability:faulty"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    url = fresh_database(request.param, request, tmp_path_factory.mktemp("observe"))
    process = ServerProcess(url, LIVEGIFTS_SEED_DEMO_DATA="true",
                            LIVEGIFTS_PLUGIN_MODULES=f"tests.sample_plugins.acme:plugin,{FAULTY}")
    process.start()
    yield process
    process.stop()


@pytest.fixture
def sqlite_url(request, tmp_path) -> str:
    return fresh_database("sqlite", request, tmp_path)


def base(server: ServerProcess) -> str:
    return server.url.removesuffix("/graphql")


def scrape(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``, by name and labels."""
    answer = httpx.get(base(server) + "/metrics", timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text)
            for sample in family.samples}


def total(scraped: dict[Any, float], name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(value for (found, found_labels), value in scraped.items()
               if found == name and labels.items() <= dict(found_labels).items())


def log_lines(server: ServerProcess, wanted: Any = None) -> list[dict[str, Any]]:
    """The server's log so far, each line parsed as JSON; waits until a line matches
    ``wanted`` (the log is read as the server writes it)."""
    for _ in range(300):
        lines = [json.loads(line) for line in list(server.log)]
        if wanted is None or any(wanted(line) for line in lines):
            return lines
        time.sleep(0.05)
    raise AssertionError(f"no log line matched; the log: {lines}")


def test_a_request_id_travels_from_header_to_response_and_log(server):
    sent = httpx.get(base(server) + "/health", headers={"X-Request-ID": "checkout-7f3a"})
    assert sent.status_code == 200 and sent.headers["x-request-id"] == "checkout-7f3a"
    lines = log_lines(server, lambda line: line["request_id"] == "checkout-7f3a")
    access = [line for line in lines if line["request_id"] == "checkout-7f3a"]
    assert len(access) == 1
    assert access[0]["logger"] == "livegifts.access" and access[0]["level"] == "INFO"
    assert (access[0]["method"], access[0]["path"], access[0]["status"]) == ("GET", "/health", 200)
    assert access[0]["message"] == "GET /health 200"
    assert isinstance(access[0]["duration_ms"], float) and access[0]["duration_ms"] >= 0
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", access[0]["timestamp"])
    assert all({"timestamp", "level", "logger", "message", "request_id"} <= line.keys()
               for line in lines)


@pytest.mark.parametrize("header", ["has spaces", "x" * 129, "semi;colon", ""])
def test_an_unusable_request_id_is_replaced_by_a_new_one(server, header):
    answer = httpx.get(base(server) + "/health", headers={"X-Request-ID": header})
    assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])
    fresh = answer.headers["x-request-id"]
    log_lines(server, lambda line: line["request_id"] == fresh)
    other = httpx.get(base(server) + "/nowhere")
    assert other.status_code == 404 and other.headers["x-request-id"] not in (fresh, header)


def test_every_answer_says_how_long_the_server_took(server):
    """Server-Timing (what browsers' developer tools show): the server's time to answer."""
    for path in ("/health", "/nowhere"):
        answer = httpx.get(base(server) + path)
        timing = re.fullmatch(r"app;dur=(\d+\.\d)", answer.headers["server-timing"])
        assert timing is not None, answer.headers
        assert float(timing.group(1)) >= 0


async def test_requests_arriving_together_each_note_their_arrival_before_any_is_served():
    """Three requests started in one pass of the event loop: each one's arrival (what a
    plugin's time limit and Server-Timing count from) is noted before the first of them is
    served, not once the ones ahead of it have run."""
    from app.observability import REQUEST_STARTED, ObservedRequests

    arrived, served = [], []

    async def app(scope, receive, send):
        arrived.append(REQUEST_STARTED.get())
        served.append(time.perf_counter())
        await send({"type": "http.response.start", "status": 204, "headers": []})

    async def ignore(message):
        pass

    observed = ObservedRequests(app)
    scope = {"type": "http", "method": "GET", "path": "/health", "headers": []}
    await asyncio.gather(*(observed(dict(scope), None, ignore) for _ in range(3)))
    assert len(arrived) == 3 and max(arrived) < min(served)


def test_the_loop_lag_is_the_largest_noted_in_the_last_one_to_two_windows():
    from app.observability import LoopLag

    lag = LoopLag(window=1.0)
    assert lag.recent() == 0
    lag.note(0.02, now=10.0)
    lag.note(0.01, now=10.5)
    assert lag.recent() == 0.02
    lag.note(0.005, now=11.2)  # the next window: the one before still counts
    assert lag.recent() == 0.02
    lag.note(0.004, now=12.3)  # the one after: the first is forgotten
    assert lag.recent() == 0.005
    lag.note(0.001, now=20.0)  # after a silence, nothing older is kept
    assert lag.recent() == 0.001
    assert lag.recent(now=20.9) == lag.recent(now=21.9) == 0.001
    assert lag.recent(now=22.0) == 0  # nothing noted for a window or two: no watch runs


async def test_the_loop_lag_watch_notes_a_loop_held_by_a_callback():
    """A callback that holds the event loop for 0.2 s delays the watch's timer by at least
    that (less its own 10 ms period), and the watch notes it."""
    from app.observability import LoopLag

    lag = LoopLag(every=0.01)
    watch = asyncio.create_task(lag.watch())
    await asyncio.sleep(0.03)  # the watch has started and waits on its timer
    time.sleep(0.2)  # noqa: ASYNC251 - holding the loop is the point
    for _ in range(5):  # let its timer fire
        await asyncio.sleep(0.01)
    watch.cancel()
    assert lag.recent() >= 0.19


def test_metrics_count_requests_by_route_template_not_raw_path(server):
    before = scrape(server)
    for month in ("2026-01", "2026-02", "2026-03"):
        assert httpx.get(f"{base(server)}/statements/{month}.csv").status_code == 401
    assert httpx.get(base(server) + "/no/such/page").status_code == 404
    assert httpx.request("PROPFIND", base(server) + "/health").status_code == 405
    after = scrape(server)
    route = "/statements/{filename}"
    assert total(after, "livegifts_http_requests_total", route=route, status="401") - \
        total(before, "livegifts_http_requests_total", route=route, status="401") == 3
    assert total(after, "livegifts_http_request_duration_seconds_count", route=route) - \
        total(before, "livegifts_http_request_duration_seconds_count", route=route) == 3
    assert total(after, "livegifts_http_requests_total", route="unmatched", status="404") - \
        total(before, "livegifts_http_requests_total", route="unmatched", status="404") == 1
    assert total(after, "livegifts_http_requests_total", method="OTHER", status="405") - \
        total(before, "livegifts_http_requests_total", method="OTHER", status="405") == 1
    labels = [dict(labels) for (name, labels) in after if name == "livegifts_http_requests_total"]
    assert not any("2026-01" in label["route"] or "no/such" in label["route"]
                   or label["method"] == "PROPFIND" for label in labels)
    assert total(after, "process_cpu_seconds_total") > 0
    assert total(after, "process_resident_memory_bytes") > 0


async def test_committed_gifts_and_money_are_counted_and_a_refused_gift_moves_nothing(
        server, gql):
    gifts = await gift_ids(gql)
    funded = await gql(FUND, {"brand": "acme", "coins": 10_000, "key": uuid.uuid4().hex},
                       token=ADMIN)
    assert funded["data"]["fundBrandBudget"]["userErrors"] == []
    session_id = await go_live(gql, person("metered-creator", "creator"))
    fan = person("metered-fan")

    before = scrape(server)
    coins = await buy_coins(gql, fan)
    after_purchase = scrape(server)
    assert total(after_purchase, "livegifts_coins_moved_total", kind="coin_purchase") - \
        total(before, "livegifts_coins_moved_total", kind="coin_purchase") == coins == 350

    receipts = []
    for sku, quantity in [("hand-hearts", 2), ("acme-rocket", 4)]:
        sent = await gql(SEND, send_input(session_id, gifts[sku], quantity), token=fan)
        assert sent["data"]["sendGift"]["userErrors"] == []
        receipts.append(sent["data"]["sendGift"]["receipt"])
    after_gifts = scrape(server)

    def moved(name: str, **labels: str) -> float:
        return total(after_gifts, name, **labels) - total(after_purchase, name, **labels)

    assert moved("livegifts_gifts_sent_total", sponsorship="core") == 1
    assert moved("livegifts_gifts_sent_total", sponsorship="brand") == 1
    # A gift moves its full value: what the viewer paid plus the sponsor's subsidy.
    assert moved("livegifts_coins_moved_total", kind="gift") == \
        sum(r["coinsPaid"] + r["brandSubsidy"] for r in receipts) == 200 + 200
    assert moved("livegifts_diamonds_moved_total", kind="gift") == \
        sum(r["creatorDiamonds"] for r in receipts) > 0

    refused = await gql(SEND, send_input(session_id, gifts["hand-hearts"], 1), token=fan)
    assert refused["data"]["sendGift"]["userErrors"][0]["code"] == "INSUFFICIENT_COINS"
    after_refusal = scrape(server)
    assert {key: value for key, value in after_refusal.items() if key[0] in MONEY} == \
        {key: value for key, value in after_gifts.items() if key[0] in MONEY}


async def test_a_plugin_failure_is_logged_with_structured_fields_and_counted(server, gql):
    gifts = await gift_ids(gql)
    session_id = await go_live(gql, person("faulty-creator", "creator"))
    fan = person("faulty-fan")
    await buy_coins(gql, fan)
    before = scrape(server)
    answer = await gql.http.post(server.url, json={"query": SEND, "variables": send_input(
        session_id, gifts["faulty-rocket"])}, headers={
        "authorization": f"Bearer {fan}", "x-request-id": "faulty-gift-1"})
    assert answer.json()["data"]["sendGift"]["userErrors"][0]["code"] == "GIFT_UNAVAILABLE", \
        answer.json()
    lines = log_lines(server, lambda line: line["request_id"] == "faulty-gift-1"
                      and line["logger"] == "livegifts.plugins")
    failure = next(line for line in lines if line["request_id"] == "faulty-gift-1"
                   and line["logger"] == "livegifts.plugins")
    assert failure["level"] == "ERROR"
    assert (failure["plugin"], failure["hook"]) == (FAULTY, "split_revenue")
    assert failure["reason"].startswith("invalid answer")
    after = scrape(server)
    assert total(after, "livegifts_plugin_failures_total", plugin=FAULTY, hook="split_revenue") \
        - total(before, "livegifts_plugin_failures_total", plugin=FAULTY,
                hook="split_revenue") == 1


def test_health_answers_without_io_and_ready_checks_the_database(server):
    for path in ("/health", "/healthz"):
        answer = httpx.get(base(server) + path)
        assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
    ready = httpx.get(base(server) + "/ready")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready",
                                                       "checks": {"database": "ok"}})


class TcpProxy:
    """Forwards a local port to a server until :meth:`close`: a database that can vanish."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.open:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)  # pass the end of the stream on

    def close(self) -> None:
        self.open = False
        self.listener.close()
        for connection in self.sockets:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()


def test_ready_is_503_naming_the_database_when_it_becomes_unreachable(request, tmp_path):
    url = make_url(fresh_database("postgresql", request, tmp_path))
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    server = ServerProcess(url.set(host="127.0.0.1", port=proxy.port)
                           .render_as_string(hide_password=False))
    try:
        server.start()
        assert httpx.get(base(server) + "/ready").status_code == 200
        proxy.close()
        answer = httpx.get(base(server) + "/ready", timeout=30)
        body = answer.json()
        assert answer.status_code == 503, body
        assert (body["status"], body["failing"]) == ("unavailable", ["database"])
        status, message, code = failure(answer)  # the one error body, checks beside it
        assert (status, code) == (503, "SERVICE_UNAVAILABLE")
        assert message.startswith("Not ready: database: "), message
        # The driver's own words: a pooled connection found closed or reset, or a refused
        # new one.
        assert re.match(r"\w+Error: .*(closed|reset|refused|failed)",
                        body["checks"]["database"]), body
        assert httpx.get(base(server) + "/health").status_code == 200  # alive, not ready
    finally:
        server.stop()
        proxy.close()


def test_ready_names_redis_when_it_is_configured_and_unreachable(sqlite_url):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    settings = settings_for(sqlite_url).model_copy(
        update={"redis_url": f"redis://127.0.0.1:{port}/0"})

    async def check() -> dict[str, str]:
        engine = create_engine(settings)
        try:
            return await readiness(settings, engine)
        finally:
            await engine.dispose()

    checks = asyncio.run(check())
    assert checks["database"] == "ok"
    assert checks["redis"].startswith("ConnectionError") and str(port) in checks["redis"]


def test_several_workers_add_up_their_counts(sqlite_url, tmp_path):
    from tests.test_multiprocess import start_redis

    bus, bus_url = start_redis(tmp_path)  # several workers need a bus they share
    server = ServerProcess(sqlite_url, LIVEGIFTS_WORKERS="2", REDIS_URL=bus_url)
    try:
        server.start()
        sent, workers = 0, set()
        while len(workers) < 2 and sent < 400:  # until both workers have answered some
            for _ in range(10):
                httpx.get(base(server) + "/health", headers={"x-request-id": f"w-{sent}"})
                sent += 1
            lines = log_lines(server, lambda line, last=f"w-{sent - 1}":
                              line["request_id"] == last)
            workers = {line["process"] for line in lines if line.get("path") == "/health"}
        assert len(workers) == 2, f"one worker answered all {sent} requests"
        for _ in range(100):  # the last count may land just after its answer
            scraped = scrape(server)
            if total(scraped, "livegifts_http_requests_total", route="/health") >= sent:
                break
        assert total(scraped, "livegifts_http_requests_total", route="/health") == sent
        assert total(scraped, "livegifts_http_request_duration_seconds_count",
                     route="/health") == sent
        pids = {dict(labels)["pid"] for (name, labels) in scraped
                if name == "process_cpu_seconds_total"}
        assert {str(pid) for pid in workers} <= pids
    finally:
        server.stop()
        bus.kill()
        bus.wait()


def test_text_logs_for_development_carry_the_request_id(sqlite_url):
    server = ServerProcess(sqlite_url, LIVEGIFTS_LOG_FORMAT="text")
    server.start()
    try:
        httpx.get(base(server) + "/health", headers={"x-request-id": "text-log-1"})
        for _ in range(300):
            access = [line for line in list(server.log) if "[text-log-1]" in line]
            if access:
                break
            time.sleep(0.05)
        assert len(access) == 1 and "livegifts.access" in access[0]
        assert access[0].rstrip().endswith("GET /health 200")
        assert not any(line.startswith("{") for line in server.log)
    finally:
        server.stop()


@pytest.mark.parametrize("environment, message", [
    ({"LIVEGIFTS_OTEL_ENABLED": "true"},
     "the OpenTelemetry packages are not installed (opentelemetry is hidden by this test): "
     "install them with pip install 'livegifts[otel]', or switch tracing off."),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
     "pip install 'livegifts[otel]'"),
    ({"LIVEGIFTS_LOG_FORMAT": "xml"}, "Input should be 'json' or 'text'"),
    ({"LIVEGIFTS_LOG_LEVEL": "LOUD"}, "Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
])
def test_serve_refuses_to_start_with_observability_it_cannot_provide(tmp_path, environment,
                                                                      message):
    hidden = tmp_path / "opentelemetry"  # as if the otel extra were not installed
    hidden.mkdir()
    (hidden / "__init__.py").write_text(
        'raise ImportError("opentelemetry is hidden by this test")\n')
    done = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", "1"], capture_output=True, text=True,
        timeout=120, env={**os.environ, "PYTHONPATH": str(tmp_path), "LIVEGIFTS_PLUGINS": "none",
                          "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/unused.db",
                          **environment})
    assert done.returncode != 0 and message in done.stderr, done.stderr
    assert not (tmp_path / "unused.db").exists()  # refused before touching the database


async def test_an_unexpected_error_is_logged_with_its_traceback(sqlite_url, caplog):
    from litestar import get
    from litestar.testing import AsyncTestClient

    from app.asgi import create_app

    @get("/explode", sync_to_thread=False)
    def explode() -> None:
        raise RuntimeError("the flux capacitor broke")

    app = create_app(settings_for(sqlite_url))
    app.register(explode)
    with caplog.at_level(logging.INFO, logger="livegifts"):
        async with AsyncTestClient(app=app) as client:
            answer = await client.get("/explode", headers={"x-request-id": "boom-1"})
    assert answer.status_code == 500 and answer.headers["x-request-id"] == "boom-1"
    [error] = [r for r in caplog.records if r.name == "livegifts.errors"]
    assert error.getMessage() == "unhandled error while serving GET /explode"
    assert str(error.exc_info[1]) == "the flux capacitor broke"
    [access] = [r for r in caplog.records if r.name == "livegifts.access"]
    assert (access.levelname, access.status, access.route) == ("ERROR", 500, "/explode")


# In-process: money counted at commit ---------------------------------------------------


def coins_moved(kind: str) -> float:
    return REGISTRY.get_sample_value("livegifts_coins_moved_total", {"kind": kind}) or 0.0


async def post_coins(session: Any, kind: str, coins: int) -> None:
    source = await system_account(session, "metrics_source", Currency.COIN)
    sink = await system_account(session, "metrics_sink", Currency.COIN)
    await post_transaction(session, kind=kind, legs=[Leg(source, -coins), Leg(sink, coins)])


async def test_money_is_counted_at_commit_and_forgotten_at_rollback(runtime):
    kind = f"test-{uuid.uuid4().hex[:8]}"
    async with runtime.sessions() as session, session.begin():
        await post_coins(session, kind, 7)
        assert coins_moved(kind) == 0  # posted, not yet committed
    assert coins_moved(kind) == 7

    with pytest.raises(RuntimeError):
        async with runtime.sessions() as session, session.begin():
            await post_coins(session, kind, 100)
            raise RuntimeError("roll back")
    assert coins_moved(kind) == 7

    async with runtime.sessions() as session:
        await post_coins(session, kind, 50)
    assert coins_moved(kind) == 7  # closed without a commit

    async with runtime.sessions() as session, session.begin():
        await post_coins(session, kind, 1)
        with pytest.raises(RuntimeError):
            async with session.begin_nested():
                await post_coins(session, kind, 1000)
                raise RuntimeError("roll back the savepoint only")
        async with session.begin_nested():
            await post_coins(session, kind, 10)
        assert coins_moved(kind) == 7  # a released savepoint waits for the outer commit
    assert coins_moved(kind) == 7 + 1 + 10


# In-process: tracing --------------------------------------------------------------------


async def test_requests_and_sql_are_traced_when_tracing_is_on(sqlite_url):
    try:
        import opentelemetry.sdk  # noqa: F401 - in the dev extras, through the otel extra
    except ImportError:
        if REQUIRE_POSTGRES:  # CI: nothing in the dev extras may be skipped
            pytest.fail("the otel extra is not installed; CI requires it", pytrace=False)
        pytest.skip("the otel extra is not installed: pip install -e '.[otel]'")
    from litestar.testing import AsyncTestClient
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from app.asgi import create_app

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    exporter = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))
    settings = settings_for(sqlite_url).model_copy(update={"otel_enabled": True})
    async with AsyncTestClient(app=create_app(settings)) as client:
        answer = await client.post("/graphql", headers={"x-request-id": "traced-1"},
                                   json={"query": "{ gifts(first: 1) { edges { cursor } } }"})
    assert answer.json()["data"] == {"gifts": {"edges": []}}
    spans = exporter.get_finished_spans()
    served = [s for s in spans if s.kind is SpanKind.SERVER
              and s.attributes.get("livegifts.request_id") == "traced-1"]
    assert len(served) == 1 and served[0].name == "POST /graphql"
    statements = [s for s in spans if s.kind is SpanKind.CLIENT
                  and s.context.trace_id == served[0].context.trace_id]
    assert any("FROM gift" in s.attributes.get("db.statement", "") for s in statements), \
        [(s.name, dict(s.attributes)) for s in spans]


async def test_connections_opened_beyond_the_pool_are_counted(postgres_database_url):
    """Each connection a process opens counts once: the pool's own, and one opened for a
    burst beyond it (closed again when returned, so the next burst opens another)."""
    engine = create_engine(Settings(database_url=postgres_database_url, database_pool_size=1))

    def opened() -> float:
        return REGISTRY.get_sample_value("livegifts_database_connections_opened_total") or 0.0

    async def burst() -> None:  # two connections at once: the pool's one and one more
        async with engine.connect() as first, engine.connect() as second:
            await first.execute(text("SELECT 1"))
            await second.execute(text("SELECT 1"))

    try:
        before = opened()
        await burst()
        assert opened() == before + 2
        await burst()  # the pool's connection is reused; the second is opened again
        assert opened() == before + 3
    finally:
        await engine.dispose()
