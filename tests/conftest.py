"""Test fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``LIVEGIFTS_TEST_POSTGRES_URL`` (default: the local server,
database ``test``). When it cannot be reached the PostgreSQL half is skipped and
the run says so at the end, unless ``CI`` or ``LIVEGIFTS_REQUIRE_POSTGRES`` is
set: then those tests fail instead.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.migrate import upgrade
from app.models import metadata
from app.runtime import Runtime
from tests.support import REQUIRE_POSTGRES, GraphQLClient, ServerProcess, settings_for

POSTGRES_URL = os.environ.get("LIVEGIFTS_TEST_POSTGRES_URL",
                              "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]

_postgres_problem: list[str] = []  # filled once: why PostgreSQL is unusable, if it is


async def _reach_postgres(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


async def _reset_postgres(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await connection.execute(text("CREATE SCHEMA public"))
        await upgrade(engine)
    finally:
        await engine.dispose()


async def _truncate_postgres(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            # The ledger refuses TRUNCATE (migration 0011): a test database's owner sets that
            # aside, as a superuser restoring a backup would, for this transaction only.
            await connection.execute(text("SET LOCAL session_replication_role = replica"))
            # The launch rate card comes with the schema (migration 0002): keep it.
            # public_data_version's one row is bumped, never removed.
            kept = ("rate_card", "public_data_version")
            tables = ", ".join(f'"{name}"' for name in metadata.tables if name not in kept)
            await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            await connection.execute(text("DELETE FROM rate_card WHERE version > 1"))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The migrated PostgreSQL test database; a skip when PostgreSQL cannot be reached (a
    failure in CI), and a failure, named as one, everywhere when the migrations fail on it."""
    if not _postgres_problem:
        try:
            asyncio.run(asyncio.wait_for(_reach_postgres(POSTGRES_URL), timeout=30))
        except Exception as exc:  # unreachable, refused, no such database...
            _postgres_problem.append(
                f"PostgreSQL at {POSTGRES_URL} is unreachable ({type(exc).__name__}: {exc})")
        else:
            try:
                asyncio.run(asyncio.wait_for(_reset_postgres(POSTGRES_URL), timeout=120))
                _postgres_problem.append("")
            except Exception as exc:
                _postgres_problem.append(f"MIGRATION FAILED on PostgreSQL at {POSTGRES_URL}: "
                                         f"{type(exc).__name__}: {exc}")
    problem = _postgres_problem[0]
    if problem.startswith("MIGRATION FAILED"):
        pytest.fail(problem, pytrace=False)
    if problem:
        if REQUIRE_POSTGRES:
            pytest.fail(problem + "; CI requires it", pytrace=False)
        pytest.skip(problem)
    return POSTGRES_URL


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "livegifts.db"
    from app.db import create_engine

    async def migrate() -> None:
        engine = create_engine(settings_for(f"sqlite+aiosqlite:///{path}"))
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    return path


def fresh_database(backend: str, request: pytest.FixtureRequest, directory: Path) -> str:
    """An empty, migrated database on the backend; returns its URL.

    On PostgreSQL a test's database is the shared test database, emptied. A fixture that
    outlives one test (a module's server process) gets a database of its own, copied from
    a migrated template and dropped after it: the tests beside it empty the shared one, and
    its server's background work (relay, webhook deliveries) must not act on their data."""
    if backend == "sqlite":
        target = directory / "livegifts.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite+aiosqlite:///{target}"
    url = request.getfixturevalue("postgres_url")
    if request.scope == "function":
        asyncio.run(_truncate_postgres(url))
        return url
    template = request.getfixturevalue("postgres_template")
    name = f"{template}_{next(_own_databases)}"
    asyncio.run(_maintain(url, [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                                f'CREATE DATABASE "{name}" TEMPLATE "{template}"']))
    request.addfinalizer(lambda: asyncio.run(_maintain(
        url, [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'])))
    return make_url(url).set(database=name).render_as_string(hide_password=False)


_own_databases = itertools.count(1)


async def run_autocommit(url: Any, statements: list[str]) -> None:
    """Run statements one by one outside a transaction (CREATE and DROP DATABASE need it)."""
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def _maintain(url: str, statements: list[str]) -> None:
    """Run statements that create or drop databases, from the server's ``postgres``
    database."""
    await run_autocommit(make_url(url).set(database="postgres"), statements)


@pytest.fixture(scope="session")
def postgres_template(postgres_url: str) -> Iterator[str]:
    """The name of a migrated database that no one connects to, for copies."""
    name = f"{make_url(postgres_url).database}_template"
    asyncio.run(_maintain(postgres_url, [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                                         f'CREATE DATABASE "{name}"']))
    asyncio.run(_reset_postgres(
        make_url(postgres_url).set(database=name).render_as_string(hide_password=False)))
    yield name
    asyncio.run(_maintain(postgres_url, [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)']))


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return fresh_database(request.param, request, tmp_path)


@pytest.fixture
def postgres_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """For claims that need real concurrency: PostgreSQL only."""
    return fresh_database("postgresql", request, tmp_path)


@pytest.fixture
async def runtime(database_url: str) -> AsyncIterator[Runtime]:
    built = Runtime.build(settings_for(database_url))
    yield built
    await built.close()


@pytest.fixture
async def pg_runtime(postgres_database_url: str) -> AsyncIterator[Runtime]:
    built = Runtime.build(settings_for(postgres_database_url).model_copy(
        update={"database_pool_size": 30}))
    yield built
    await built.close()


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    """A real ``livegifts serve`` process on loopback with its own fresh database."""
    url = fresh_database(request.param, request, tmp_path_factory.mktemp("server"))
    process = ServerProcess(url)
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def gql(server: ServerProcess) -> AsyncIterator[GraphQLClient]:
    """A GraphQL-over-HTTP client of the test module's ``server``."""
    client = GraphQLClient(server.url)
    yield client
    await client.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _postgres_problem and _postgres_problem[0] and not REQUIRE_POSTGRES:
        terminalreporter.write_line(
            f"NOTE: the PostgreSQL half of the suite was SKIPPED: {POSTGRES_URL} is unreachable "
            f"({_postgres_problem[0]}). Only SQLite was tested. Set LIVEGIFTS_TEST_POSTGRES_URL "
            "to a reachable PostgreSQL to run both.", yellow=True, bold=True)

