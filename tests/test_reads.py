"""Reads outside a transaction (:meth:`app.db.Query.read`): on PostgreSQL they run on a
pooled driver connection without SQLAlchemy's connection and result; they must agree with
the same read in a transaction, and the pool must stay sound around them."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text

from app.db import Query, create_engine
from app.services import wallets
from app.settings import Settings
from app.testing import new_viewer

BACKEND_PID = Query(lambda dialect: select(func.pg_backend_pid()))


def opened() -> float:
    return REGISTRY.get_sample_value("livegifts_database_connections_opened_total") or 0.0


async def test_a_wallet_read_outside_a_transaction_agrees_with_one_inside(runtime):
    fan = await new_viewer(runtime, "fan", 120)
    nobody = await new_viewer(runtime, "nobody")
    for user in (fan, nobody):
        async with runtime.sessions() as session:
            inside = await wallets.wallet(session, user)
        assert await wallets.current_wallet(runtime.engine, user) == inside
    assert (await wallets.current_wallet(runtime.engine, fan)).coins == 120
    assert (await wallets.current_wallet(runtime.engine, nobody)).coins == 0


async def test_a_read_on_a_dropped_connection_fails_and_the_next_gets_a_new_one(
        postgres_database_url):
    """The backend of the pooled connection is terminated between two reads: the read
    on it fails with the driver's error, the connection is not pooled again, and the
    next read opens a new one and succeeds."""
    engine = create_engine(Settings(database_url=postgres_database_url, database_pool_size=1))
    killer = create_engine(Settings(database_url=postgres_database_url))
    try:
        [(first,)] = await BACKEND_PID.read(engine)
        async with killer.connect() as other:
            assert await other.scalar(text("SELECT pg_terminate_backend(:pid)"),
                                      {"pid": first}) is True
        before = opened()
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError,
                            asyncpg.exceptions.InternalClientError, ConnectionError)):
            await BACKEND_PID.read(engine)
        [(second,)] = await BACKEND_PID.read(engine)
        assert second != first and opened() == before + 1
    finally:
        await engine.dispose()
        await killer.dispose()


async def test_reads_beyond_the_pool_return_their_connections(postgres_database_url):
    """Two reads at once with a pool of one: the second opens a connection beyond the
    pool, which is closed when returned; the pool's own is used again after."""
    engine = create_engine(Settings(database_url=postgres_database_url, database_pool_size=1))
    slow = Query(lambda dialect: select(func.pg_backend_pid(), func.pg_sleep(0.2)))
    try:
        before = opened()
        both = await asyncio.gather(slow.read(engine), slow.read(engine))
        assert len({pid for [(pid, _)] in both}) == 2 and opened() == before + 2
        assert engine.sync_engine.pool.checkedout() == 0
        [(again,)] = await BACKEND_PID.read(engine)
        assert again in {pid for [(pid, _)] in both} and opened() == before + 2
    finally:
        await engine.dispose()


async def test_a_read_cancelled_mid_statement_does_not_hand_its_connection_on(
        postgres_database_url):
    """A read cancelled while PostgreSQL runs it (a client gone, a time limit) leaves its
    connection in the middle of a statement: that connection is closed, not pooled again,
    and the next read gets a new one and its answer."""
    engine = create_engine(Settings(database_url=postgres_database_url, database_pool_size=1))
    endless = Query(lambda dialect: select(func.pg_backend_pid(), func.pg_sleep(30)))
    try:
        [(first,)] = await BACKEND_PID.read(engine)
        before = opened()
        reading = asyncio.create_task(endless.read(engine))
        await asyncio.sleep(0.2)  # it waits on PostgreSQL (or, slower, still on the pool)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        assert engine.sync_engine.pool.checkedout() == 0
        [(second,)] = await asyncio.wait_for(BACKEND_PID.read(engine), 10)
        assert second != first and opened() == before + 1
    finally:
        await engine.dispose()
