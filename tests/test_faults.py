"""Faults injected at every database statement, from a hook: all or nothing.

A gift is sent once to count its statements (those through SQLAlchemy and those run on the
driver directly); then, for each statement k, a new gift is sent and (a) statement k raises
the error a lost connection raises (SQLAlchemy's, or the driver's; raised by the hook: the
connection itself stays up, and COMMIT does not pass through the hook), or (b)
the caller is cancelled there (PostgreSQL). The gift is written by the process's writer
task, not the caller's, so (b) proves that a caller going away leaves its gift whole,
written or not. Afterwards either nothing of the gift exists or all of it does, and the
audit passes. A purchase, whose transaction runs in the request's own task, is cancelled
at each of its statements, on both databases: its transaction is interrupted midway, and
on SQLite the write lock must be free the moment the request has ended. Real dropped
connections, at COMMIT too, and killed processes are ``tests/test_fault_suite.py``.
"""

from __future__ import annotations

import asyncio

import pytest
from asyncpg.exceptions import ConnectionDoesNotExistError
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from app.models import GiftSend, SessionGifterTotal
from app.services import gifting, wallets
from app.testing import audit
from tests.gifting_support import new_viewer, send, stage
from tests.support import StatementWatch


class Injector:
    """Counts statements, and runs ``action(driver)`` before the ``fail_at``-th."""

    def __init__(self, runtime, monkeypatch) -> None:
        self.count, self.fail_at, self.action = 0, None, None
        self.watch = StatementWatch(runtime, monkeypatch, self._before)

    def _before(self, driver: bool) -> None:
        self.count += 1
        if self.fail_at is not None and self.count == self.fail_at:
            self.action(driver)


def drop(driver: bool) -> None:
    """What a statement raises when its connection is lost: SQLAlchemy's error, or the
    driver's for a statement run on it directly."""
    if driver:
        raise ConnectionDoesNotExistError("connection lost")
    raise OperationalError("injected", None, ConnectionResetError("connection lost"))


async def state(runtime, where, fan):
    async with runtime.sessions() as session:
        sends = await session.scalar(select(func.count()).select_from(GiftSend))
        board = await session.scalar(select(func.coalesce(func.sum(SessionGifterTotal.coins), 0))
                                     .where(SessionGifterTotal.session_id == where.session_id))
        return (sends, (await wallets.wallet(session, fan)).coins,
                (await wallets.wallet(session, where.creator_id)).diamonds, int(board),
                await audit(session))


@pytest.mark.parametrize("fault", ["dropped connection", "cancelled"])
async def test_a_fault_at_any_statement_of_a_gift_leaves_all_or_nothing(pg_runtime, fault,
                                                                         monkeypatch):
    runtime = pg_runtime
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 100_000)
    injector = Injector(runtime, monkeypatch)
    for warm_up in range(2):  # create and then remember every account
        await send(runtime, fan, where, "hand-hearts", key=f"warm-up-{warm_up}")
    injector.count = 0
    await send(runtime, fan, where, "hand-hearts", key="count")
    statements = injector.count
    assert statements > 10

    absorbed = []  # faults the send survived
    for k in range(1, statements + 1):
        before = await state(runtime, where, fan)
        injector.count, injector.fail_at = 0, k
        if fault == "dropped connection":
            injector.action = drop
            try:
                await send(runtime, fan, where, "hand-hearts", key=f"{fault}-{k}")
                absorbed.append(k)
            except (OperationalError, ConnectionDoesNotExistError) as error:
                assert "connection lost" in str(error)
        else:
            task = asyncio.create_task(send(runtime, fan, where, "hand-hearts",
                                            key=f"{fault}-{k}"))
            injector.action = lambda _driver, task=task: task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            # The caller went away; the send it handed over is written or not, in full.
            await gifting.written(runtime.sessions)
        injector.fail_at = None
        after = await state(runtime, where, fan)
        sent = after[0] - before[0]
        assert sent in (0, 1), f"statement {k}: {sent} gifts"
        assert after[1] == before[1] - 100 * sent, f"statement {k}: wallet"
        assert after[2] == before[2] + 50 * sent, f"statement {k}: diamonds"
        assert after[3] == before[3] + 100 * sent, f"statement {k}: leaderboard"
        assert after[4] == [], f"statement {k}: {after[4]}"
    # Only reading ahead for sponsored gifts' plugins (with partner plugins installed) may
    # fail harmlessly: the batch then reads what it needs itself.
    assert absorbed in ([], [1]), absorbed


async def test_a_purchase_cancelled_at_any_statement_leaves_all_or_nothing_and_no_lock(
        runtime, monkeypatch):
    """A purchase runs its transaction in the request's own task: cancelled at each of its
    statements in turn, the coins are credited in full or not at all, the audit passes,
    and on SQLite the database's write lock is free as soon as the request has ended
    (another connection takes it without waiting), so the next writer is not stuck."""
    import sqlite3

    from sqlalchemy.engine import make_url

    from tests.money_support import buy

    fan = await new_viewer(runtime, "fan")
    await buy(runtime, fan, txn="warm-up")  # accounts and packages exist
    injector = Injector(runtime, monkeypatch)
    injector.count = 0
    await buy(runtime, fan, txn="count")
    statements = injector.count
    assert statements > 5
    sqlite_file = None if runtime.settings.is_sqlite is False else \
        make_url(runtime.settings.database_url).database

    async def coins() -> tuple[int, list]:
        async with runtime.sessions() as session:
            return (await wallets.wallet(session, fan)).coins, await audit(session)

    for k in range(1, statements + 1):
        before, _ = await coins()
        injector.count, injector.fail_at = 0, k
        task = asyncio.create_task(buy(runtime, fan, txn=f"cancelled-{k}"))
        injector.action = lambda _driver, task=task: task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        injector.fail_at = None
        if sqlite_file is not None:
            probe = sqlite3.connect(sqlite_file, timeout=0, isolation_level=None)
            try:
                probe.execute("BEGIN IMMEDIATE")  # raises "database is locked" if held
                probe.execute("ROLLBACK")
            finally:
                probe.close()
        after, findings = await coins()
        assert after - before in (0, 700), f"statement {k}: {after - before} coins"
        assert findings == [], f"statement {k}: {findings}"
    await buy(runtime, fan, txn="after")  # the next writer goes through
