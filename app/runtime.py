"""Everything a running livegifts needs, built once from settings and shared by
the HTTP app, the CLI and the tests: engine, sessions, plugins and providers."""

from __future__ import annotations

from dataclasses import dataclass

import pluggy
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import SessionFactory, create_engine, create_session_factory
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

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        engine = create_engine(settings)
        plugins = create_plugin_manager()
        return cls(settings, engine, create_session_factory(engine), plugins,
                   payment_providers(plugins, settings))

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
        await self.engine.dispose()
