"""sendGift throughput on PostgreSQL: one popular creator against gifts spread over creators.

    .venv/bin/python -m bench.gifting [--workers 16] [--seconds 10]

Each worker is a viewer with plenty of coins sending Roses in a loop for a fixed
time. Baseline: every worker gifts a different creator. Hot: every worker gifts
the same creator. The ratio shows how much a popular creator serialises the
system (their diamond account and leaderboard rows are the shared rows). The CPU this
process spends per gift is the writer's own cost, without HTTP or GraphQL.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import timedelta

from app.services import gifting
from app.testing import audit
from bench.common import fresh_runtime
from tests.gifting_support import new_viewer, stage


async def run(runtime, workers: int, seconds: float, hot: bool, tag: str
              ) -> tuple[float, float]:
    """Gifts a second, and this process's CPU per gift in microseconds (steadier than the
    rate on shared cores: the database's own CPU is not in it)."""
    stages = [await stage(runtime, f"{tag}-creator-{n}") for n in range(1 if hot else workers)]
    viewers = [await new_viewer(runtime, f"{tag}-viewer-{n}", 10_000_000) for n in range(workers)]
    deadline = time.perf_counter() + seconds
    sent = [0] * workers

    async def worker(n: int) -> None:
        where = stages[0 if hot else n]
        while time.perf_counter() < deadline:
            await gifting.send_gift(runtime.sessions, runtime.relay, sender_id=viewers[n],
                                    session_id=where.session_id, gift_id=where.gifts["rose"],
                                    quantity=1, idempotency_key=f"{tag}-{n}-{sent[n]}",
                                    combo_window=timedelta(seconds=5),
                                    settings=runtime.settings)
            sent[n] += 1

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(n) for n in range(workers)))
    return (sum(sent) / (time.perf_counter() - started),
            (time.process_time() - cpu) / max(sum(sent), 1) * 1e6)


async def main(workers: int, seconds: float) -> None:
    runtime = await fresh_runtime()
    spread, spread_cpu = await run(runtime, workers, seconds, hot=False, tag="spread")
    hot, hot_cpu = await run(runtime, workers, seconds, hot=True, tag="hot")
    async with runtime.sessions() as session:
        findings = await audit(session)
    print(f"{workers} concurrent senders, {seconds:.0f} s each, PostgreSQL")
    print(f"baseline, one creator per sender : {spread:8.0f} gifts/s   {spread_cpu:5.0f} µs of "
          "CPU a gift")
    print(f"hot, one creator for all senders : {hot:8.0f} gifts/s   {hot_cpu:5.0f} µs of CPU a "
          f"gift  ({hot / spread:.2f}x baseline)")
    print(f"audit after both runs: {'passed' if not findings else findings}")
    await runtime.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.workers, arguments.seconds))
