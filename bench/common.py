"""Shared set-up for benchmarks: a fresh, migrated PostgreSQL database of their own."""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Awaitable, Callable

import asyncpg
from sqlalchemy.engine import make_url

from app.runtime import Runtime
from app.settings import Settings

BENCH_URL = os.environ.get("LIVEGIFTS_BENCH_DATABASE_URL",
                           "postgresql+asyncpg://postgres@127.0.0.1:5432/livegifts_bench")


async def fresh_runtime(**overrides: object) -> Runtime:
    """Drop and recreate the benchmark database, migrate it, return a runtime on it."""
    url = make_url(BENCH_URL)
    admin = await asyncpg.connect(user=url.username, host=url.host, port=url.port,
                                  database="postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{url.database}"')
    finally:
        await admin.close()
    settings = Settings(database_url=BENCH_URL, seed_demo_data=False, database_pool_size=40,
                        **overrides)
    runtime = Runtime.build(settings)
    from app.migrate import upgrade

    await upgrade(runtime.engine)
    return runtime


async def median_ms(work: Callable[[], Awaitable[object]], repeat: int) -> float:
    await work()  # warm up caches and plans
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await work()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def own_cpu() -> float:
    """This process's user and system CPU seconds so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """Another process's user and system CPU seconds so far (from ``/proc``)."""
    fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
