"""Test livegifts and its plugins against the real core on SQLite.

A pytest plugin (loaded automatically once livegifts is installed) with one
fixture, ``livegifts``: a :class:`Harness` that starts the core with the plugins
you give it, on a fresh migrated SQLite database, and drives it the way the API
does. It needs nothing but pytest: the plugin runs ``async def`` tests itself (unless
pytest-asyncio, if installed, runs them), and the harness keeps the core on an event loop
of its own, in a thread, so its methods can be awaited from any test's loop::

    async def test_my_gift(livegifts):
        await livegifts.start(("my-brand", my_plugin))
        stage = await livegifts.go_live("creator")
        fan = await livegifts.viewer("fan", coins=1_000)
        receipt = await livegifts.send(fan, stage, "my-gift", quantity=3)
        assert receipt.brand_subsidy == 60
        assert await livegifts.audit() == []

The harness's :class:`Clock` is the time the core's rules see (a plugin's
``SendContext.at``, "today" for caps and ages, availability windows): freeze it and move
it to test a happy hour or a daily cap without waiting.

The module-level helpers (:func:`give_coins`, :func:`new_viewer`, :func:`go_live`)
work on any :class:`~app.runtime.Runtime` and are what the core's own tests use.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.ledger import AuditFinding, Currency, Leg, post_transaction, system_account
from app.ledger import audit as ledger_audit
from app.models import Gift, GiftSend
from app.plugins import PluginHost
from app.runtime import Runtime
from app.services import brands, gifting, wallets
from app.services.catalogue import seed_default_gifts
from app.services.live import start_session
from app.services.users import coin_account, ensure_user
from app.settings import Settings

__all__ = ["Clock", "Harness", "Stage", "audit", "give_coins", "go_live", "livegifts", "new_viewer"]


class Clock:
    """The time the core sees: the real time until frozen, then only what the test sets."""

    def __init__(self) -> None:
        self._frozen: datetime | None = None

    def __call__(self) -> datetime:
        """The time now, as the core sees it: timezone-aware, in UTC."""
        return self._frozen or datetime.now(UTC)

    def freeze(self, at: datetime | None = None) -> datetime:
        """Stop the clock at ``at`` (timezone-aware; default: now); returns that time."""
        if at is not None and at.utcoffset() is None:
            raise ValueError("freeze() needs a timezone-aware datetime, such as "
                             "datetime(2027, 1, 1, 18, tzinfo=UTC)")
        self._frozen = (at or datetime.now(UTC)).astimezone(UTC)
        return self._frozen

    def move(self, by: timedelta) -> datetime:
        """Move the (frozen) clock on by ``by``; returns the new time."""
        return self.freeze(self() + by)

    def thaw(self) -> None:
        """Let the clock follow the real time again."""
        self._frozen = None


@dataclass
class Stage:
    """A creator who is live: gifts go into ``session_id``; ``gifts`` maps sku to id."""

    creator_id: int
    session_id: int
    gifts: dict[str, int]


async def audit(session: AsyncSession) -> list[AuditFinding]:
    """The ledger audit of a database the test kit funds: its grants (``test_grant``, coins
    given as if bought) are accepted without a purchase behind them."""
    return await ledger_audit(session, test_grants=True)


async def give_coins(runtime: Runtime, user_id: int, coins: int) -> None:
    """Credit coins as if bought (from the issuance account), balanced like any purchase."""
    async with runtime.sessions() as session, session.begin():
        await post_transaction(session, kind="test_grant", legs=[
            Leg(await system_account(session, "coin_issuance", Currency.COIN), -coins),
            Leg(await coin_account(session, user_id), coins)])


ADULT = date(1990, 1, 1)


async def new_viewer(runtime: Runtime, name: str, coins: int = 0,
                     birthdate: date | None = ADULT) -> int:
    """A new user (an adult unless ``birthdate`` says otherwise) holding ``coins`` given as
    if bought; returns the user's id."""
    async with runtime.sessions() as session, session.begin():
        user_id = (await ensure_user(session, name, birthdate)).id
    if coins:
        await give_coins(runtime, user_id, coins)
    return user_id


async def go_live(runtime: Runtime, creator: str, title: str = "Tonight") -> Stage:
    """Seed the default catalogue if needed, and start a live session for ``creator``."""
    async with runtime.sessions() as session, session.begin():
        await seed_default_gifts(session)
        creator_id = (await ensure_user(session, creator, ADULT)).id
        live, started = await start_session(session, creator_id, title)
        gifts = {g.sku: g.id for g in (await session.scalars(select(Gift))).all()}
    await runtime.relay.committed(started)
    return Stage(creator_id=creator_id, session_id=live.id, gifts=gifts)


def _on_core_loop(method: Callable[..., Coroutine[Any, Any, Any]]
                  ) -> Callable[..., Awaitable[Any]]:
    """A harness method that runs on the harness's own loop, awaited from any loop."""
    @functools.wraps(method)
    async def run(self: Harness, *args: Any, **kwargs: Any) -> Any:
        return await self._on_loop(method(self, *args, **kwargs))
    return run


class Harness:
    """The real core, on its own SQLite file, with the plugins a test hands it."""

    directory: Path  # the test's own directory, holding the SQLite file
    runtime: Runtime | None  # the running core, None until started and after closing
    clock: Clock  # the time the core sees

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.runtime = None
        self.clock = Clock()
        self._keys = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def _on_loop(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run on the core's loop (started on first use) and wait for it from this one."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                            name="livegifts-harness")
            self._thread.start()
        try:
            if asyncio.get_running_loop() is self._loop:
                return await coroutine
        except RuntimeError:
            pass
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine,
                                                                          self._loop))

    def stop(self) -> None:
        """Stop the core and its loop, from outside any loop (the fixture's teardown)."""
        if self._loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result()
        finally:  # the loop and its thread end even if the core's close failed
            self._loop.call_soon_threadsafe(self._loop.stop)
            assert self._thread is not None
            self._thread.join()
            self._loop.close()
            self._loop = None

    @_on_core_loop
    async def start(self, *plugins: tuple[str, object], **settings: Any) -> Harness:
        """Start the core with ``(name, plugin)`` pairs registered as if installed."""
        config = Settings(database_url=f"sqlite+aiosqlite:///{self.directory / 'livegifts.db'}",
                          seed_demo_data=False, plugins="none",
                          **{"brands_auto_approve": True, **settings})
        self.runtime = Runtime.build(config, PluginHost(config, extra_plugins=plugins))
        self.runtime.clock = self.clock
        await self.runtime.prepare_database()
        return self

    @property
    def plugins(self) -> PluginHost:
        """The plugin host: ``records`` (each plugin's status, hooks, gifts, failures) and
        ``brands``/``gifts`` (what each plugin owns)."""
        assert self.runtime is not None, "call await livegifts.start(...) first"
        return self.runtime.plugins

    @_on_core_loop
    async def go_live(self, creator: str = "creator") -> Stage:
        """Seed the default catalogue and start a live session for a new (adult) creator."""
        assert self.runtime is not None
        return await go_live(self.runtime, creator)

    @_on_core_loop
    async def viewer(self, name: str, coins: int = 0) -> int:
        """A new adult viewer holding ``coins`` (bought, as far as the ledger is concerned);
        returns the viewer's id."""
        assert self.runtime is not None
        return await new_viewer(self.runtime, name, coins)

    @_on_core_loop
    async def fund_brand(self, slug: str, coins: int) -> int:
        """Add coins to a brand's sponsorship budget; return the budget."""
        assert self.runtime is not None
        admin = await new_viewer(self.runtime, "harness-admin")
        return await brands.fund_budget(self.runtime.sessions, admin_id=admin, slug=slug,
                                        coins=coins, idempotency_key=f"fund-{next(self._keys)}")

    @_on_core_loop
    async def send(self, viewer_id: int, stage: Stage, sku: str, quantity: int = 1,
                   key: str | None = None) -> GiftSend:
        """Send a gift; returns the receipt or raises :class:`app.errors.DomainError`."""
        assert self.runtime is not None
        result = await gifting.send_gift(
            self.runtime.sessions, self.runtime.relay, sender_id=viewer_id,
            session_id=stage.session_id, gift_id=stage.gifts[sku], quantity=quantity,
            idempotency_key=key or f"send-{next(self._keys)}",
            combo_window=timedelta(seconds=5), plugins=self.runtime.plugins,
            settings=self.runtime.settings, clock=self.runtime.clock)
        return result.receipt

    @_on_core_loop
    async def notified(self) -> None:
        """Deliver ``gift_sent`` for every send so far, now: plugins are told after the
        sender is answered, from the event log, so a test of a listener waits for this
        first. A call that raised or timed out is made again later, not by this."""
        assert self.runtime is not None
        await gifting.written(self.runtime.sessions)
        await self.runtime.deliver_events()

    @_on_core_loop
    async def catalogue(self) -> dict[str, Gift]:
        """Every gift in the catalogue, core and sponsored, by sku."""
        assert self.runtime is not None
        async with self.runtime.sessions() as session:
            return {g.sku: g for g in (await session.scalars(select(Gift))).all()}

    @_on_core_loop
    async def wallet(self, user_id: int) -> wallets.Wallet:
        """A user's ``coins`` and ``diamonds``."""
        assert self.runtime is not None
        async with self.runtime.sessions() as session:
            return await wallets.wallet(session, user_id)

    @_on_core_loop
    async def budget(self, slug: str) -> int:
        """Coins left in a brand's sponsorship budget."""
        assert self.runtime is not None
        async with self.runtime.sessions() as session:
            return await brands.budget_balance(session, slug)

    @_on_core_loop
    async def report(self, slug: str) -> brands.CampaignReport:
        """The brand's campaign report: ``total``, ``by_creator`` and ``by_day`` lines of
        sends, quantity, coins, viewer coins, subsidy and brand coins."""
        assert self.runtime is not None
        async with self.runtime.sessions() as session:
            return await brands.campaign_report(session, slug)

    @_on_core_loop
    async def audit(self) -> list[AuditFinding]:
        """Every broken ledger invariant; an empty list means no coin was lost or created."""
        assert self.runtime is not None
        async with self.runtime.sessions() as session:
            return await audit(session)

    @_on_core_loop
    async def close(self) -> None:
        """Stop the core (the fixture does it after each test)."""
        await self._close()

    async def _close(self) -> None:
        if self.runtime is not None:
            await self.runtime.close()
            self.runtime = None


@pytest.fixture
def livegifts(tmp_path: Path) -> Iterator[Harness]:
    """A :class:`Harness` in the test's own directory, stopped after the test."""
    harness = Harness(tmp_path)
    yield harness
    harness.stop()


@pytest.hookimpl
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run an ``async def`` test on a loop of its own, when nothing else did (with
    pytest-asyncio installed and in charge, it runs them instead)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    arguments = {name: pyfuncitem.funcargs[name]
                 for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(pyfuncitem.obj(**arguments))
    return True
