"""Helpers for tests: settings, tokens, a real server process, a GraphQL client and
database snapshots that prove a refused request changed nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from app.auth import Role, mint_token
from app.models import Account, metadata
from app.ratelimit import WINDOW_SECONDS as RATE_WINDOW_SECONDS
from app.sandbox import SandboxPaymentProvider
from app.settings import Settings

# Under CI every external component must be there: a missing one fails instead of skipping.
REQUIRE_POSTGRES = bool(os.environ.get("CI") or os.environ.get("LIVEGIFTS_REQUIRE_POSTGRES"))
JWT_SECRET = "test-jwt-secret-0123456789abcdef0123456789"
SANDBOX_SECRET = "test-sandbox-secret-0123456789abcdef01234"


def livegifts_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``livegifts`` command in a process of its own, as a user runs it."""
    env = {**os.environ, "DATABASE_URL": database_url, "LIVEGIFTS_JWT_SECRET": JWT_SECRET,
           "LIVEGIFTS_SANDBOX_SECRET": SANDBOX_SECRET, "LIVEGIFTS_PLUGINS": "none"}
    return subprocess.run([sys.executable, "-m", "app", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def settings_for(database_url: str) -> Settings:
    # The core's own tests load no installed plugins: they pass without plugins/.
    return Settings(database_url=database_url, jwt_secret=JWT_SECRET,
                    sandbox_secret=SANDBOX_SECRET, seed_demo_data=False, plugins="none")


ADULT = date(1990, 1, 1)


def token(name: str, *roles: str, ttl: int | None = None, secret: str = JWT_SECRET,
          brand: str | None = None, birthdate: date | None = ADULT) -> str:
    """A token as an identity provider would issue it: by default vouching for an adult."""
    settings = Settings(jwt_secret=secret)
    return mint_token(settings, name, [Role(r) for r in roles or ("viewer",)], ttl, brand,
                      birthdate)


def sandbox() -> SandboxPaymentProvider:
    return SandboxPaymentProvider(SANDBOX_SECRET)


def node_with_packages(directory: Path, package: str, purpose: str) -> Path:
    """Node's path, with the npm packages pinned in ``directory`` installed (``package``
    is one of them, to tell whether they are). Without Node the test is skipped, except
    under CI (``CI`` or ``LIVEGIFTS_REQUIRE_POSTGRES``) where it fails."""
    import pytest

    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        if REQUIRE_POSTGRES:
            pytest.fail(f"node and npm are needed for {purpose}", pytrace=False)
        pytest.skip(f"node and npm are not installed: {purpose} was skipped")
    if not (directory / "node_modules" / package).exists():
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-package-lock"],
                       cwd=directory, check=True, capture_output=True, timeout=300)
    return Path(node)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``python -m app serve`` on a free loopback port, stopped by :meth:`stop`."""

    def __init__(self, database_url: str, **environment: str) -> None:
        self.database_url = database_url
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/graphql"
        self.environment = environment
        self.process: subprocess.Popen[bytes] | None = None
        self.log: list[str] = []  # the server's stderr, line by line

    def start(self) -> None:
        env = {**os.environ, "DATABASE_URL": self.database_url,
               "LIVEGIFTS_JWT_SECRET": JWT_SECRET, "LIVEGIFTS_SANDBOX_SECRET": SANDBOX_SECRET,
               "LIVEGIFTS_SEED_DEMO_DATA": "false", "LIVEGIFTS_PLUGINS": "none",
               **self.environment}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(self.port)], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Read the log as it comes: a full pipe would block the server.
        reader = threading.Thread(target=self._read_log, args=(self.process.stderr,),
                                  daemon=True)
        reader.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                reader.join(timeout=10)
                raise RuntimeError("server exited: " + "".join(self.log))
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not answer /healthz within 60 s")

    def _read_log(self, stream: Any) -> None:
        for line in stream:
            self.log.append(line.decode(errors="replace"))

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def failure(response: Any) -> tuple[int, str, str]:
    """A failed HTTP response as the API guide's client code reads it, whatever the route:
    its status, its errors' messages (joined) and the first error's code."""
    errors = response.json()["errors"]
    assert errors and all(isinstance(e["message"], str) for e in errors), response.text
    assert response.headers["content-type"].startswith("application/"), response.headers
    return (response.status_code, "; ".join(e["message"] for e in errors),
            errors[0]["extensions"]["code"])


class GraphQLClient:
    """Posts GraphQL over real HTTP; returns the decoded JSON body."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.AsyncClient(timeout=60)

    async def __call__(self, query: str, variables: dict[str, Any] | None = None, *,
                       token: str | None = None, expect_errors: bool = False) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = await self.http.post(self.url, json={"query": query, "variables": variables},
                                        headers=headers)
        body = response.json()
        if not expect_errors:
            assert "errors" not in body, body
        return body

    async def close(self) -> None:
        await self.http.aclose()


def bearer(value: str) -> dict[str, str]:
    """The Authorization header carrying a bearer token."""
    return {"authorization": f"Bearer {value}"}


async def in_one_window(attempt):
    """``attempt(n)``'s outcome, from a run that began and ended in one rate-limit window
    (the limits count in fixed one-minute windows: a run across a boundary is made again,
    with new users, rather than judged)."""
    for n in range(3):
        window = int(time.time() // RATE_WINDOW_SECONDS)
        outcome = await attempt(n)
        if int(time.time() // RATE_WINDOW_SECONDS) == window:
            return outcome
    raise AssertionError("three runs in a row crossed a rate-limit window")


@contextlib.asynccontextmanager
async def two_servers(database_url: str) -> AsyncIterator[tuple[GraphQLClient, GraphQLClient]]:
    """Two ``livegifts serve`` processes on one database (the first seeds the demo data),
    per-user rate limits out of the way: a client of each. Both are stopped afterwards."""
    limits = {"LIVEGIFTS_RATE_LIMIT_PER_USER": "100000"}
    servers = [ServerProcess(database_url, LIVEGIFTS_SEED_DEMO_DATA="true", **limits),
               ServerProcess(database_url, **limits)]
    clients: list[GraphQLClient] = []
    try:
        for server in servers:
            await asyncio.to_thread(server.start)
            clients.append(GraphQLClient(server.url))
        yield clients[0], clients[1]
    finally:
        for client in clients:
            await client.close()
        for server in servers:
            await asyncio.to_thread(server.stop)


# Written by every process on its own clock (plugin health, every 5 s when it changed):
# whether a row appears between two snapshots says nothing about the request between them.
TELEMETRY = {"plugin_health"}


async def snapshot(database_url: str) -> dict[str, Any]:
    """Row counts of every table (but telemetry) and every account balance: equal
    snapshots, nothing moved."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            counts = {name: await connection.scalar(select(func.count()).select_from(table))
                      for name, table in metadata.tables.items() if name not in TELEMETRY}
            balances = dict((await connection.execute(
                select(Account.code, Account.balance).order_by(Account.code))).all())
        return {"rows": counts, "balances": balances}
    finally:
        await engine.dispose()


async def execute_sql(database_url: str, statement: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


class Subscription:
    """A real graphql-transport-ws client for one subscription."""

    def __init__(self, url: str, token: str | None, query: str,
                 variables: dict[str, Any] | None = None) -> None:
        self.url = url.replace("http://", "ws://")
        self.token, self.query, self.variables = token, query, variables
        self.socket: Any = None

    async def __aenter__(self) -> Subscription:
        import websockets

        self.socket = await websockets.connect(self.url, subprotocols=["graphql-transport-ws"])
        payload = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        await self.socket.send(json.dumps({"type": "connection_init", "payload": payload}))
        assert json.loads(await self.socket.recv())["type"] == "connection_ack"
        await self.socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": self.query, "variables": self.variables or {}}}))
        return self

    async def receive(self, timeout: float = 15) -> dict[str, Any]:
        """The next message for the subscription: ``next`` payload, ``error`` or ``complete``."""
        while True:
            message = json.loads(await asyncio.wait_for(self.socket.recv(), timeout))
            if message["type"] == "ping":
                await self.socket.send(json.dumps({"type": "pong"}))
                continue
            return message

    async def next_data(self, timeout: float = 15) -> dict[str, Any]:
        message = await self.receive(timeout)
        assert message["type"] == "next", message
        assert "errors" not in message["payload"], message
        return message["payload"]["data"]

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.socket.close()


class StatementWatch:
    """Sees every statement a runtime's engine runs: through SQLAlchemy (its
    ``before_cursor_execute`` event) and, on PostgreSQL, those the hot paths run on the
    driver directly once their transaction has begun (:mod:`app.db`). ``before(driver)``
    is called before each (``driver`` says which way it goes); what it raises is what the
    statement raises. Undo it with :meth:`close` (the driver hook is ``monkeypatch``'s)."""

    def __init__(self, runtime: Any, monkeypatch: Any, before: Any) -> None:
        from sqlalchemy import event

        from app import db

        self.before, self._engine = before, runtime.engine
        event.listen(self._engine.sync_engine, "before_cursor_execute", self._through_sqlalchemy)
        found = db._driver_in_transaction
        watch = self

        class Watched:
            def __init__(self, driver: Any) -> None:
                self.driver = driver

            async def fetch(self, *args: Any) -> Any:
                watch.before(True)
                return await self.driver.fetch(*args)

        async def in_transaction(session: Any) -> Any:
            driver = await found(session)
            return None if driver is None else Watched(driver)

        monkeypatch.setattr(db, "_driver_in_transaction", in_transaction)

    def _through_sqlalchemy(self, *_args: Any) -> None:
        self.before(False)

    def close(self) -> None:
        from sqlalchemy import event

        event.remove(self._engine.sync_engine, "before_cursor_execute",
                     self._through_sqlalchemy)
