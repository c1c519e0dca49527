"""Everything a running livegifts needs, built once from settings and shared by
the HTTP app, the CLI and the tests: engine, sessions, plugins and providers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import (
    SessionFactory,
    create_engine,
    create_session_factory,
    reading,
)
from app.documents import Documents
from app.events import EventBus, create_event_bus
from app.migrate import upgrade
from app.models import CoinPackage
from app.models.base import utcnow
from app.observability import LOOP_LAG
from app.payments import PaymentProvider, PayoutProvider
from app.plugins import PluginHost
from app.public_data import PublicData
from app.relay import Relay
from app.services.users import KnownUsers
from app.settings import Settings

JOURNAL_SEAL_INTERVAL = 15.0  # seconds between seals of the journal's hash chain
STRANDED_PAYOUT_INTERVAL = 30.0  # seconds between looks for payouts never handed over
PLUGIN_HEALTH_INTERVAL = 5.0  # seconds between writes of this process's plugin health
EVENT_PRUNE_INTERVAL = 3600.0  # seconds between prunings of the event log
WEBHOOK_INTERVAL = 1.0  # seconds between looks for webhook deliveries due


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    plugins: PluginHost
    payment_providers: dict[str, PaymentProvider]
    payout_providers: dict[str, PayoutProvider]
    bus: EventBus
    public_data: PublicData
    documents: Documents
    # Sessions and connections for reads that need no transaction (see app.db.reading).
    reads: SessionFactory
    read_engine: AsyncEngine
    relay: Relay
    # Webhook deliveries and verification challenges go out through this client.
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(
        follow_redirects=False))
    known_users: KnownUsers = field(default_factory=KnownUsers)
    # The time gifts are sent at, as their rules see it (the test kit's can be frozen).
    clock: Callable[[], datetime] = utcnow
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, plugins: PluginHost | None = None) -> Runtime:
        engine = create_engine(settings)
        sessions = create_session_factory(engine)
        read_engine = reading(engine)
        plugins = plugins or PluginHost(settings)
        bus = create_event_bus(settings.redis_url, settings.redis_prefix)
        relay = Relay(sessions, bus,
                      grace=timedelta(seconds=settings.event_relay_grace_seconds))
        return cls(settings, engine, sessions, plugins,
                   plugins.payment_providers(), plugins.payout_providers(), bus,
                   PublicData(engine), Documents(sessions, settings.trusted_documents_only),
                   create_session_factory(read_engine), read_engine, relay)

    @property
    def combo_window(self) -> timedelta:
        return timedelta(seconds=self.settings.combo_window_seconds)

    async def sync_catalogue(self) -> None:
        """Bring the plugins' brands and sponsored gifts into the catalogue."""
        from app.services.brands import sync_sponsored_catalogue

        async with self.sessions() as session, session.begin():
            await sync_sponsored_catalogue(session, self.plugins,
                                           self.settings.brands_auto_approved)

    async def start(self) -> None:
        """Start what a serving process runs beside requests: the event bus and its relay,
        the combo reaper."""
        await self.sync_catalogue()
        await self.bus.start()
        self.relay.start()
        await self.public_data.start()
        self._tasks.append(asyncio.create_task(self._reap_combos()))
        self._tasks.append(asyncio.create_task(self._seal_journal()))
        self._tasks.append(asyncio.create_task(self._submit_stranded_payouts()))
        self._tasks.append(asyncio.create_task(self._report_plugin_health()))
        self._tasks.append(asyncio.create_task(self._prune_events()))
        self._tasks.append(asyncio.create_task(self._deliver_webhooks()))
        self._tasks.append(asyncio.create_task(LOOP_LAG.watch()))

    async def _submit_stranded_payouts(self) -> None:
        from app.services.payouts import submit_stranded

        while True:
            await asyncio.sleep(STRANDED_PAYOUT_INTERVAL)
            try:
                await submit_stranded(self.sessions, self.payout_providers)
            except Exception:
                logging.getLogger(__name__).exception("submitting stranded payouts failed")

    async def _report_plugin_health(self) -> None:
        """Write this process's plugin health for the fleet's view, when it changed."""
        from app.services import plugin_health

        instance, written = plugin_health.this_instance(), None
        while True:
            rows = plugin_health.snapshot(self.plugins)
            if rows != written:
                try:
                    async with self.sessions() as session, session.begin():
                        await plugin_health.report(session, rows, instance)
                    written = rows
                except Exception:
                    logging.getLogger(__name__).exception("writing plugin health failed")
            await asyncio.sleep(PLUGIN_HEALTH_INTERVAL)

    async def _prune_events(self) -> None:
        from app.services.event_log import prune_all

        keep = timedelta(days=self.settings.event_retention_days)
        while True:
            await asyncio.sleep(EVENT_PRUNE_INTERVAL)
            try:
                await prune_all(self.sessions, keep)
            except Exception:
                logging.getLogger(__name__).exception("pruning the event log failed")

    @property
    def webhook_policy(self) -> Any:
        from app.services.webhooks import Policy

        return Policy(timedelta(seconds=self.settings.webhook_retry_base_seconds),
                      timedelta(hours=self.settings.webhook_give_up_hours))

    async def deliver_events(self, now: Callable[[], datetime] = utcnow) -> int:
        """Queue what this process published and deliver every webhook and ``gift_sent``
        due ``now`` (what the background task does each second); how many were sent."""
        from app.services.webhooks import Targets, deliver_due

        await self.relay.note()
        return await deliver_due(self.sessions, Targets(self.http, self.plugins),
                                 self.webhook_policy, now)

    async def _deliver_webhooks(self) -> None:
        while True:
            await asyncio.sleep(WEBHOOK_INTERVAL)
            try:
                await self.deliver_events()
            except Exception:
                logging.getLogger(__name__).exception("delivering webhooks failed")

    async def _seal_journal(self) -> None:
        from app.ledger import journal

        while True:
            await asyncio.sleep(JOURNAL_SEAL_INTERVAL)
            try:
                async with self.sessions() as session, session.begin():
                    await journal.seal(session)
            except Exception:
                logging.getLogger(__name__).exception("sealing the journal failed")

    async def _reap_combos(self) -> None:
        """End idle combos, and matches whose time is up (every process: each is ended once)."""
        from app.services.gifting import end_stale_combos
        from app.services.matches import end_due_matches

        interval = min(1.0, self.settings.combo_window_seconds / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                await end_stale_combos(self.sessions, self.relay, self.combo_window)
            except Exception:
                logging.getLogger(__name__).exception("ending stale combos failed")
            try:
                await end_due_matches(self.sessions, self.relay, self.clock)
            except Exception:
                logging.getLogger(__name__).exception("ending matches failed")

    async def prepare_database(self) -> None:
        """Migrate to the latest schema; seed demo data into an empty database if enabled."""
        await upgrade(self.engine)
        await self.sync_catalogue()
        if self.settings.seed_demo_data:
            async with self.sessions() as session:
                empty = await session.scalar(select(CoinPackage.id).limit(1)) is None
            if empty:
                from app.seed import seed_demo_data

                await seed_demo_data(self)

    async def close(self) -> None:
        from app.services.gifting import written

        await written(self.sessions)  # sends already accepted are written, not dropped
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.relay.close()
        await self.bus.close()
        await self.http.aclose()
        await self.public_data.close()
        self.plugins.close()
        await self.engine.dispose()
