"""A batch of Redis commands as one script call, against a pipeline of commands.

    .venv/bin/python -m bench.redis_batches [--redis redis://127.0.0.1:6379] [--events 60]
                                            [--slots 50] [--batches 2000]

Two batches a server process sends all the time go to Redis as one script call
(``EVALSHA``), one reply to read: a committed batch's events (:data:`app.events.PUBLISH_ALL`,
about two a gift) and the rate limit's counts (:data:`app.ratelimit.ADD_ALL`, an
``INCRBY`` and an ``EXPIRE`` a key, ten times a second). The baseline, measured in the same
run against the same Redis, is the pipeline of one command each that they were before
(redis-py reads each command's reply on its own, under a timeout of its own). Both run in
alternating rounds; prints for each batch this process's CPU and the Redis server's (from
``/proc``), and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable

import msgspec
import redis.asyncio as redis

from app.events import PUBLISH_ALL
from app.ratelimit import ADD_ALL, WINDOW_SECONDS
from bench.common import own_cpu, process_cpu

PREFIX = "livegifts-bench"


async def _cost(batch: Callable[[], Awaitable[object]], batches: int, server: int
                ) -> tuple[float, float]:
    """Microseconds of this process's CPU and of Redis's a batch."""
    for _ in range(50):  # warm: the script loaded, the connection open
        await batch()
    client, redis_cpu = own_cpu(), process_cpu(server)
    for _ in range(batches):
        await batch()
    return ((own_cpu() - client) / batches * 1e6,
            (process_cpu(server) - redis_cpu) / batches * 1e6)


async def main(options: argparse.Namespace) -> None:
    client = redis.from_url(options.redis)
    server = int((await client.info("server"))["process_id"])
    try:
        process_cpu(server)
    except OSError:
        raise SystemExit(f"{options.redis} is not a Redis on this machine: its CPU cannot "
                         "be read") from None
    publish_all, add_all = client.register_script(PUBLISH_ALL), client.register_script(ADD_ALL)
    events = [(f"{PREFIX}:events:session:{n % 30}", msgspec.json.encode(
        {"type": "GiftSent", "session_id": n % 30, "sender_name": f"viewer-{n}",
         "gift": {"name": "Finger Heart", "coin_price": 5, "image_url": "x" * 60},
         "quantity": 1, "coins": 5, "diamonds": 2, "combo_count": 1}))
        for n in range(options.events)]
    slots = [f"{PREFIX}:rate:user:viewer-{n}:1" for n in range(options.slots)]

    async def events_pipelined() -> None:
        async with client.pipeline(transaction=False) as pipeline:
            for channel, message in events:
                pipeline.publish(channel, message)
            await pipeline.execute()

    async def events_scripted() -> None:
        await publish_all(args=[part for pair in events for part in pair])

    async def counts_pipelined() -> None:
        async with client.pipeline(transaction=False) as pipeline:
            for slot in slots:
                pipeline.incrby(slot, 3).expire(slot, WINDOW_SECONDS * 2)
            await pipeline.execute()

    async def counts_scripted() -> None:
        await add_all(keys=slots, args=[WINDOW_SECONDS * 2, *([3] * len(slots))])

    try:
        print(f"{options.batches} batches each way, in alternating rounds, against "
              f"{options.redis} (redis-server pid {server})")
        print(f"{'batch':52} {'client us':>10} {'redis us':>9}")
        for name, pipelined, scripted in (
                (f"{options.events} events published", events_pipelined, events_scripted),
                (f"{options.slots} rate-limit counts added", counts_pipelined, counts_scripted)):
            rounds = [(await _cost(pipelined, options.batches, server),
                       await _cost(scripted, options.batches, server)) for _ in range(2)]
            (base_client, base_redis), (client_us, redis_us) = (
                tuple(sum(figures) / len(rounds) for figures in zip(*side, strict=True))
                for side in zip(*rounds, strict=True))
            print(f"{name + ', a pipeline (baseline)':52} {base_client:10.0f} {base_redis:9.0f}")
            print(f"{name + ', one script call':52} {client_us:10.0f} {redis_us:9.0f}")
            print(f"{'  ratio, script / pipeline':52} {client_us / base_client:9.2f}x "
                  f"{redis_us / max(base_redis, 1e-9):8.2f}x   both "
                  f"{(client_us + redis_us) / (base_client + base_redis):.2f}x")
    finally:
        await client.delete(*slots)
        await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--events", type=int, default=60)
    parser.add_argument("--slots", type=int, default=50)
    parser.add_argument("--batches", type=int, default=2000)
    asyncio.run(main(parser.parse_args()))
