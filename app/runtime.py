"""Everything a running livegifts needs, built once from settings and shared by
the HTTP app, the CLI and the tests: engine, sessions, plugins and providers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta

import pluggy
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import SessionFactory, create_engine, create_session_factory
from app.events import EventBus, create_event_bus
from app.migrate import upgrade
from app.models import CoinPackage
from app.payments import PaymentProvider
from app.plugins import create_plugin_manager, payment_providers
from app.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    plugins: pluggy.PluginManager
    payment_providers: dict[str, PaymentProvider]
    bus: EventBus
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        engine = create_engine(settings)
        plugins = create_plugin_manager()
        return cls(settings, engine, create_session_factory(engine), plugins,
                   payment_providers(plugins, settings), create_event_bus(settings.redis_url))

    @property
    def combo_window(self) -> timedelta:
        return timedelta(seconds=self.settings.combo_window_seconds)

    async def start(self) -> None:
        """Start what a serving process runs beside requests: the event bus, the combo reaper."""
        await self.bus.start()
        self._tasks.append(asyncio.create_task(self._reap_combos()))

    async def _reap_combos(self) -> None:
        from app.services.gifting import end_stale_combos

        interval = min(1.0, self.settings.combo_window_seconds / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                await end_stale_combos(self.sessions, self.bus, self.combo_window)
            except Exception:
                logging.getLogger(__name__).exception("ending stale combos failed")

    async def prepare_database(self) -> None:
        """Migrate to the latest schema; seed demo data into an empty database if enabled."""
        await upgrade(self.engine)
        if self.settings.seed_demo_data:
            async with self.sessions() as session:
                empty = await session.scalar(select(CoinPackage.id).limit(1)) is None
            if empty:
                from app.seed import seed_demo_data

                await seed_demo_data(self)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.bus.close()
        await self.engine.dispose()
