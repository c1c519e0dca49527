"""Plugin health across every server process: each process writes how its plugins are
doing (loaded or not, failures, time-outs, breaker, last failure) to ``plugin_health``
when it changes; ``livegifts plugins``, the admin ``plugins`` query and a brand's own
view add the processes up."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import upsert
from app.models import PluginHealth as HealthRow
from app.plugins import CLOSED, OPEN, PluginHost

# A process not heard from for longer is gone: its breaker no longer counts.
FRESH = timedelta(minutes=1)
# Rows of processes gone this long are removed.
FORGOTTEN = timedelta(days=7)


def this_instance() -> str:
    """This server process, as its rows name it."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}"


def snapshot(host: PluginHost) -> list[dict[str, Any]]:
    """What this process would write: one row of each plugin's state."""
    return [{"plugin": r.name, "status": r.status, "error": r.error, "failures": r.failures,
             "timeouts": r.timeouts, "breaker": host.breaker_state(r.name),
             "last_failure": r.last_failure, "last_failure_at": r.last_failure_at}
            for r in host.records.values()]


async def report(session: AsyncSession, rows: list[dict[str, Any]], instance: str) -> None:
    """Write this process's rows (from :func:`snapshot`); forget long-gone processes."""
    now = datetime.now(UTC)
    if rows:
        await session.execute(upsert(session, HealthRow, [
            {**row, "instance": instance, "updated_at": now} for row in rows],
            ["instance", "plugin"]))
    await session.execute(delete(HealthRow).where(HealthRow.updated_at < now - FORGOTTEN))


@dataclass(frozen=True, slots=True)
class FleetHealth:
    """One plugin, added up over the server processes that reported it."""

    plugin: str
    failures: int  # since each process started, over every process ever reported
    timeouts: int
    breaker: str  # open if any live process has it open, else half-open if any, else closed
    open_in: int  # live processes whose breaker is not closed
    processes: int  # live processes (heard from within FRESH) that report the plugin
    last_failure: str | None
    last_failure_at: datetime | None


async def fleet(session: AsyncSession, now: datetime | None = None) -> dict[str, FleetHealth]:
    """Each reported plugin's health over the fleet, by plugin name."""
    now = now or datetime.now(UTC)
    rows: dict[str, list[HealthRow]] = {}
    for row in await session.scalars(select(HealthRow)):
        rows.setdefault(row.plugin, []).append(row)
    found = {}
    for plugin, reports in rows.items():
        live = [r for r in reports if r.updated_at >= now - FRESH]
        states = {r.breaker for r in live}
        latest = max((r for r in reports if r.last_failure_at is not None),
                     key=lambda r: r.last_failure_at, default=None)  # type: ignore[arg-type,return-value]
        found[plugin] = FleetHealth(
            plugin, sum(r.failures for r in reports), sum(r.timeouts for r in reports),
            OPEN if OPEN in states else next(iter(states - {CLOSED}), CLOSED),
            sum(r.breaker != CLOSED for r in live), len(live),
            latest.last_failure if latest else None, latest.last_failure_at if latest else None)
    return found
