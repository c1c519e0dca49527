"""Observability: structured logs with request ids, Prometheus metrics, health and readiness,
and optional OpenTelemetry tracing.

Logs. :func:`logging_config` is the one logging configuration; ``livegifts serve`` applies it
in the serving process and in every worker. Lines are one JSON object each (python-json-logger:
``timestamp``, ``level``, ``logger``, ``message``, ``request_id``, ``process`` (the pid) and
any ``extra`` fields), or readable text with ``LIVEGIFTS_LOG_FORMAT=text``.
:class:`ObservedRequests` gives every HTTP request and WebSocket an id (the caller's
``X-Request-ID`` when it is sane, otherwise a new one), returns it in the ``X-Request-ID``
response header, keeps it in a context variable that every log line written meanwhile
carries, and writes one access line per request.

Metrics. prometheus_client metrics, served at ``GET /metrics``. ``livegifts serve --workers N``
runs N processes, each counting its own requests and commits, so a scrape answered by one
worker must still report all of them: serve points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
directory (removed when it stops) before any worker starts, every process then keeps its
values in memory-mapped files there, and ``/metrics`` adds up all the files. This is
prometheus_client's own multi-process mode, so the merging (counters summed, histogram
buckets added) is the library's, not ours; counts of a worker that was restarted are kept.
Per-process collectors do not work in that mode, so :class:`WorkerProcesses` reports the
``process_*`` metrics of each worker under a ``pid`` label instead. Without the variable (one
process, e.g. an app built by a test) the default registry is served as is.

Money is counted only once it is committed: ``post_transaction`` notes each transaction's
legs in ``session.info``, and the session listeners below count them at the outer commit,
forget those of a savepoint that rolls back, and drop all of them when the transaction
rolls back or ends without committing.

Tracing. With ``LIVEGIFTS_OTEL_ENABLED=true`` (or the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``
set) and the ``otel`` extra installed, requests and SQL statements are traced and exported
over OTLP/HTTP, configured by the standard ``OTEL_*`` variables.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import os
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from typing import Any

from litestar import Response, get
from litestar.datastructures import Headers, State
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from pythonjsonlogger.core import RESERVED_ATTRS
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session, SessionTransaction

from app.http_errors import error_body
from app.settings import LogFormat, Settings

# Logs and request ids -------------------------------------------------------------------

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
# When the request being served arrived (time.perf_counter()), for limits on its whole stay.
REQUEST_STARTED: ContextVar[float | None] = ContextVar("request_started", default=None)
REQUEST_ID_HEADER = "x-request-id"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
access_log = logging.getLogger("livegifts.access")
error_log = logging.getLogger("livegifts.errors")


def request_id_from(header: str | None) -> str:
    """The caller's request id if it is short and plain, otherwise a new one."""
    if header and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Stamps every record with the id of the request being served (``None`` outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def logging_config(settings: Settings) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of a serving process: everything to stderr."""
    formatters = {
        LogFormat.JSON: {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": ["levelname", "name", "message", "request_id", "process"],
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": True,
            # uvicorn repeats its messages with terminal colours in this attribute.
            "reserved_attrs": [*RESERVED_ATTRS, "color_message"],
        },
        LogFormat.TEXT: {
            "format": "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s",
        },
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"default": formatters[settings.log_format]},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                "formatter": "default", "filters": ["request_id"]}},
        "root": {"handlers": ["stderr"], "level": settings.log_level},
        # uvicorn's loggers pass their lines on to the root handler, like every other.
        "loggers": {**{name: {"handlers": [], "propagate": True}
                       for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
                    # Alembic announces each of its plugins at start: noise, not news.
                    "alembic.runtime.plugins": {"level": "WARNING"}},
    }


# Metrics --------------------------------------------------------------------------------

HTTP_REQUESTS = Counter("livegifts_http_requests", "HTTP requests answered.",
                        ["method", "route", "status"])
HTTP_LATENCY = Histogram("livegifts_http_request_duration_seconds",
                         "Time to answer an HTTP request, in seconds.", ["method", "route"])
GIFTS_SENT = Counter("livegifts_gifts_sent", "Gift sends committed (one per send, whatever its "
                     "quantity), by sponsorship: core, or brand when a brand account takes part.",
                     ["sponsorship"])
COINS_MOVED = Counter("livegifts_coins_moved", "Coins moved by committed ledger transactions "
                      "(the sum of their credits), by transaction kind.", ["kind"])
DIAMONDS_MOVED = Counter("livegifts_diamonds_moved", "Diamonds moved by committed ledger "
                         "transactions (the sum of their credits), by transaction kind.", ["kind"])
PUBLIC_ANSWERS = Counter("livegifts_public_answers", "Anonymous public queries answered, by "
                         "source: cache (GraphQL did not run) or graphql.", ["source"])
PLUGIN_FAILURES = Counter("livegifts_plugin_failures", "Plugin calls that raised, timed out or "
                          "answered nonsense.", ["plugin", "hook"])
PLUGIN_REFUSALS = Counter("livegifts_plugin_refusals", "Plugin calls not made: the plugin's "
                          "breaker was open or its threads and queue were full.",
                          ["plugin", "hook", "why"])
PLUGIN_BREAKER_OPEN = Gauge("livegifts_plugin_breaker_open", "1 while the plugin's circuit "
                            "breaker is open or probing in any server process.", ["plugin"],
                            multiprocess_mode="max")
DATABASE_CONNECTIONS_OPENED = Counter(
    "livegifts_database_connections_opened", "Database connections opened. Under steady load "
    "it should stay flat: one that keeps rising means more requests use the database at once "
    "than the pool keeps (LIVEGIFTS_DATABASE_POOL_SIZE), so connections are opened and closed "
    "again, each preparing its statements anew.")
EVENT_LOOP_LAG = Histogram(
    "livegifts_event_loop_lag_seconds", "How late a server process's event loop ran a timer "
    "that was due (sampled every 50 ms): under load, a request that has arrived waits about "
    "as long before it is read, and an answer before it is written.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
UNMATCHED_ROUTE = "unmatched"  # the route label of requests no route answers (a 404)
# Clients choose the method: any other is labelled OTHER, so they cannot add time series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"


class WorkerProcesses:
    """``process_*`` metrics (CPU, memory, file descriptors) of every worker, by ``pid``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def collect(self) -> Iterable[Metric]:
        # Each process that counted anything has files named like counter_<pid>.db.
        pids = {int(found.group(1)) for name in os.listdir(self.directory)
                if (found := re.search(r"_(\d+)\.db$", name))} | {os.getpid()}
        merged: dict[str, Metric] = {}
        for pid in sorted(pids):
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
                into = merged.setdefault(family.name, Metric(family.name, family.documentation,
                                                             family.type))
                into.samples += [sample._replace(labels={**sample.labels, "pid": str(pid)})
                                 for sample in family.samples]
        return merged.values()


def metrics_registry() -> CollectorRegistry:
    """What ``/metrics`` reports: all workers' files in multi-process mode, else this process."""
    directory = os.environ.get(MULTIPROCESS_DIRECTORY)
    return _all_workers(directory) if directory else REGISTRY


@functools.cache
def _all_workers(directory: str) -> CollectorRegistry:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    registry.register(WorkerProcesses(directory))
    return registry


@get("/metrics", sync_to_thread=True, include_in_schema=False)
def metrics() -> Response[bytes]:
    """Prometheus metrics in the text exposition format."""
    return Response(generate_latest(metrics_registry()), media_type=CONTENT_TYPE_LATEST)


class LoopLag:
    """How late this process's event loop runs what is due, sampled by a timer every
    ``every`` seconds (and counted in ``livegifts_event_loop_lag_seconds``). Under load a
    request that has arrived waits about that long before the loop reads it, and again
    before its answer is written: time the request itself cannot show. :meth:`recent` is
    the largest lag noted in the last one to two windows of ``window`` seconds (0 before
    any)."""

    def __init__(self, every: float = 0.05, window: float = 1.0) -> None:
        self.every, self.window = every, window
        self._current = self._previous = 0.0
        self._window_ends = float("-inf")

    def note(self, lag: float, now: float) -> None:
        if now >= self._window_ends:
            recent = now < self._window_ends + self.window
            self._previous, self._current = (self._current if recent else 0.0), 0.0
            self._window_ends = now + self.window
        self._current = max(self._current, lag)
        EVENT_LOOP_LAG.observe(lag)

    def recent(self, now: float | None = None) -> float:
        """The largest lag noted lately; given ``now`` (the loop's time), 0 when nothing
        was noted in the last window or two (no watch runs on this loop any more)."""
        if now is not None and now >= self._window_ends + self.window:
            return 0.0
        return max(self._current, self._previous)

    async def watch(self) -> None:
        """Sample the running loop's lag until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.every
            await asyncio.sleep(self.every)
            now = loop.time()
            self.note(max(now - due, 0.0), now)


LOOP_LAG = LoopLag()  # the serving process's loop; Runtime.start watches it


class ObservedRequests:
    """ASGI middleware, outermost: request id, access log line and HTTP metrics; each
    answer says how long the server took to start it (``Server-Timing: app;dur=<ms>``,
    shown by browsers' developer tools)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_from(Headers.from_scope(scope).get(REQUEST_ID_HEADER))
        reset = REQUEST_ID.set(request_id)
        status = 500  # what the server answers when the app fails before responding
        reset_started = REQUEST_STARTED.set(started)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] in ("http.response.start", "websocket.accept"):
                status = message.get("status", 101)
                headers = [*(message.get("headers") or ()),
                           (b"x-request-id", request_id.encode())]
                if message["type"] == "http.response.start":  # how long the server took
                    elapsed = (time.perf_counter() - started) * 1000
                    headers.append((b"server-timing", f"app;dur={elapsed:.1f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            # Requests that arrive together start here one after another, each running
            # until it first waits: yielding once lets each note its arrival before any
            # of them is served, so a plugin's time limit and Server-Timing include the
            # time spent queued behind the others.
            await asyncio.sleep(0)
            await self.app(scope, receive, send_with_id)
        finally:
            if scope["type"] == "http":
                self._observe(scope, status, time.perf_counter() - started)
            REQUEST_ID.reset(reset)
            REQUEST_STARTED.reset(reset_started)

    @staticmethod
    def _observe(scope: Scope, status: int, seconds: float) -> None:
        # The router leaves the matched route's template in the scope; raw paths would give
        # every session id its own time series.
        route = scope.get("path_template") or UNMATCHED_ROUTE
        method = scope["method"]
        label = method if method in KNOWN_METHODS else "OTHER"
        HTTP_REQUESTS.labels(label, route, str(status)).inc()
        HTTP_LATENCY.labels(label, route).observe(seconds)
        access_log.log(logging.ERROR if status >= 500 else logging.INFO,
                       "%s %s %s", method, scope["path"], status,
                       extra={"method": method, "path": scope["path"], "route": route,
                              "status": status, "duration_ms": round(seconds * 1000, 3)})


async def log_unhandled_error(exception: Exception, scope: Scope) -> None:
    """Litestar's ``after_exception`` hook: a request that fails unexpectedly is logged."""
    if getattr(exception, "status_code", 500) >= 500:
        error_log.error("unhandled error while serving %s %s", scope.get("method", ""),
                        scope["path"], exc_info=exception)


# Money moved, counted at commit -----------------------------------------------------------

POSTINGS = "ledger_postings"  # session.info key: (kind, legs) noted by post_transaction
_SAVEPOINT_MARKS = "ledger_posting_marks"  # savepoint -> how many postings preceded it


_MOVED = {"COIN": COINS_MOVED, "DIAMOND": DIAMONDS_MOVED, "GIFT": GIFTS_SENT}


def count_committed(postings: Sequence[tuple[str, Sequence[Any]]]) -> None:
    """Count committed ledger transactions: money moved by kind, and the gifts they sent
    (summed first: one increment a metric and label, however many postings committed)."""
    moved: dict[tuple[str, str], int] = defaultdict(int)
    for kind, legs in postings:
        for leg in legs:
            if leg.amount > 0 and leg.account.currency in _MOVED:
                moved[leg.account.currency, kind] += leg.amount
        if kind == "gift":
            sponsored = any(leg.account.code.startswith("brand:") for leg in legs)
            moved["GIFT", "brand" if sponsored else "core"] += 1
    for (what, label), amount in moved.items():
        _MOVED[what].labels(label).inc(amount)


@event.listens_for(Session, "after_transaction_create")
def _mark_savepoint(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        marks = session.info.setdefault(_SAVEPOINT_MARKS, {})
        marks[transaction] = len(session.info.get(POSTINGS, ()))


@event.listens_for(Session, "after_commit")
def _count_at_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint was released: its postings wait for the outer commit
    count_committed(session.info.pop(POSTINGS, ()))


@event.listens_for(Session, "after_rollback")
def _forget_at_rollback(session: Session) -> None:
    postings = session.info.get(POSTINGS)
    if postings:
        savepoint = session.get_nested_transaction()
        keep = session.info.get(_SAVEPOINT_MARKS, {}).get(savepoint, 0) if savepoint else 0
        del postings[keep:]


@event.listens_for(Session, "after_transaction_end")
def _forget_at_end(session: Session, transaction: SessionTransaction) -> None:
    session.info.get(_SAVEPOINT_MARKS, {}).pop(transaction, None)
    if transaction.parent is None:
        session.info.pop(POSTINGS, None)  # closed without a commit: nothing was written


# Health and readiness -------------------------------------------------------------------


@get(["/health", "/healthz"], sync_to_thread=False)
def health() -> dict[str, str]:
    """Liveness: the process answers. No I/O."""
    return {"status": "ok"}


async def readiness(settings: Settings, engine: AsyncEngine) -> dict[str, str]:
    """Check each dependency within ``LIVEGIFTS_READY_TIMEOUT_SECONDS``: "ok" or why not."""

    async def database() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def redis() -> None:
        import redis.asyncio as redis_client

        client = redis_client.from_url(settings.redis_url)
        try:
            await client.ping()
        finally:
            await client.aclose()

    checks = {"database": database}
    if settings.redis_url:
        checks["redis"] = redis
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            async with asyncio.timeout(settings.ready_timeout_seconds):
                await check()
            results[name] = "ok"
        except TimeoutError:
            results[name] = f"no answer within {settings.ready_timeout_seconds:g} s"
        except Exception as exc:
            results[name] = f"{type(exc).__name__}: {exc}"
    return results


# Without Redis a process still serves everything (rate limits counted alone, live events
# to its own subscribers): it is degraded, not unready.
DEGRADING = frozenset({"redis"})


@get("/ready")
async def ready(state: State) -> Response[dict[str, Any]]:
    """Readiness: 503 when the database does not answer (the one error body, the checks
    beside it); 200 otherwise, ``degraded`` when Redis is configured and does not answer."""
    checks = await readiness(state.runtime.settings, state.runtime.engine)
    failing = sorted(name for name, result in checks.items() if result != "ok")
    if set(failing) - DEGRADING:
        why = "; ".join(f"{name}: {checks[name]}" for name in failing)
        return Response({**error_body(503, f"Not ready: {why.rstrip('.')}."),
                         "status": "unavailable", "failing": failing, "checks": checks},
                        status_code=503)
    if failing:
        return Response({"status": "degraded", "degraded": failing, "checks": checks},
                        status_code=200)
    return Response({"status": "ready", "checks": checks}, status_code=200)


# Tracing --------------------------------------------------------------------------------


class TracingUnavailable(RuntimeError):
    """Tracing is switched on but the OpenTelemetry packages are not installed."""


_TRACING_MODULES = ("opentelemetry.sdk.trace",
                    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
                    "opentelemetry.instrumentation.sqlalchemy", "litestar.plugins.opentelemetry")


def require_tracing_packages(settings: Settings) -> None:
    """Raise :class:`TracingUnavailable` if tracing is on and its packages are missing."""
    if not settings.tracing_enabled:
        return
    try:
        for module in _TRACING_MODULES:
            importlib.import_module(module)
    except ImportError as missing:
        raise TracingUnavailable(
            "Tracing is on (LIVEGIFTS_OTEL_ENABLED or OTEL_EXPORTER_OTLP_ENDPOINT is set) but "
            f"the OpenTelemetry packages are not installed ({missing}): install them with "
            "pip install 'livegifts[otel]', or switch tracing off.") from missing


def tracing_plugins(settings: Settings, engine: AsyncEngine) -> list[Any]:
    """The Litestar plugins that trace requests (and instrument ``engine``), if tracing is on.

    Uses the process's tracer provider when one is set (by an embedding program or a test);
    otherwise sets one that exports over OTLP/HTTP.
    """
    if not settings.tracing_enabled:
        return []
    require_tracing_packages(settings)
    from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        service = os.environ.get("OTEL_SERVICE_NAME", "livegifts")
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
    instrumentor = SQLAlchemyInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()  # one app per process: trace the newest engine
    # The instrumentation declares SQLAlchemy < 2.1; the engine events it uses are unchanged.
    instrumentor.instrument(engine=engine.sync_engine, skip_dep_check=True)

    def stamp_request_id(span: Any, scope: Any) -> None:
        if span.is_recording():
            span.set_attribute("livegifts.request_id", REQUEST_ID.get() or "")

    return [OpenTelemetryPlugin(OpenTelemetryConfig(server_request_hook_handler=stamp_request_id))]
