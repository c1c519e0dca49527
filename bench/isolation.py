"""A plugin that hangs beside core gifts: does one partner's plugin hold anyone else up?

    .venv/bin/python -m bench.isolation [--seconds 10] [--rounds 2] [--in-flight 40]
                                        [--workers 2] [--connections 64] [--viewers 256]

Starts the real server (``livegifts serve --workers 2``, Redis as the event bus, default
plugin settings: a 1 s time limit, 4 threads a plugin, the breaker open after 5 failures
for 30 s) with ``bench/hanging_plugin.py``, whose every call hangs for 300 s, on the same
data as ``bench.http``. Each round drives core ``sendGift`` (a Finger Heart over 1,000
creators) with wrk twice: alone, then while ``--in-flight`` other viewers each keep one
send of the hanging plugin's gift in flight (a send refused at once is sent again after
0.5 s). Prints both runs' throughput, p99 and server CPU a gift, their ratios against the
targets (within 10 %), and the hanging plugin's sends: those that waited for it (answered
at the time limit) and those refused at once (its breaker open or its places taken).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import asyncpg
from sqlalchemy.engine import make_url
from strawberry.relay import to_base64

from bench.common import BENCH_URL
from bench.hanging_plugin import SKU
from bench.http import KINDS, Result, audit_ledger, prepare, run_wrk
from bench.http_gifting import SEND_GIFT, Server

LIMIT = 1.0  # the server's plugin time limit (its default)
WAITED, REFUSED, OTHER = "waited for the plugin", "refused at once", "other answer"


async def hanging_gift_id() -> str:
    url = make_url(BENCH_URL)
    connection = await asyncpg.connect(user=url.username, host=url.host, port=url.port,
                                       database=url.database)
    try:
        return to_base64("Gift", await connection.fetchval(
            "SELECT id FROM gift WHERE sku = $1", SKU))
    finally:
        await connection.close()


class HangingSenders:
    """Viewers each keeping one send of the hanging plugin's gift in flight, in a thread of
    their own; every answer's kind and seconds are kept."""

    def __init__(self, url: str, tokens: list[str], sessions: list[str], gift: str) -> None:
        self.url, self.tokens, self.sessions, self.gift = url, tokens, sessions, gift
        self.answers: list[tuple[str, float]] = []
        self.server_seconds: list[tuple[str, float]] = []  # from Server-Timing
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> HangingSenders:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(LIMIT * 5)

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(self._sender(http, n) for n in range(len(self.tokens))))

    async def _sender(self, http: aiohttp.ClientSession, n: int) -> None:
        # Each viewer's connection is open before its first send, as an app's would be:
        # the timed sends do not include 40 TCP handshakes with a saturated server.
        async with http.get(self.url.removesuffix("/graphql") + "/health") as reply:
            await reply.read()
        sent = 0
        while not self.stopping.is_set():
            sent += 1
            variables = {"input": {"sessionId": self.sessions[n % len(self.sessions)],
                                   "giftId": self.gift, "quantity": 1,
                                   "idempotencyKey": f"hang-{time.time_ns()}-{n}-{sent}"}}
            started = time.monotonic()
            async with http.post(self.url, json={"query": SEND_GIFT, "variables": variables},
                                 headers={"authorization": f"Bearer {self.tokens[n]}"}) as reply:
                body = await reply.json()
                timing = reply.headers.get("server-timing", "")
            seconds = time.monotonic() - started
            errors = (body.get("data") or {}).get("sendGift", {}).get("userErrors") or [{}]
            message = errors[0].get("message", "")
            kind = WAITED if message.endswith("plugin failed.") else \
                REFUSED if message.endswith("not answering for now.") else OTHER
            self.answers.append((kind, seconds))
            if timing.startswith("app;dur="):
                self.server_seconds.append((kind, float(timing.split("=", 1)[1]) / 1000))
            if kind != WAITED:
                await asyncio.sleep(0.5)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(rounds: list[tuple[Result, Result]], answers: list[tuple[str, float]],
           options: argparse.Namespace, verdict: str,
           server_side: list[tuple[str, float]] | None = None) -> None:
    print(f"core sendGift (Finger Heart, 1,000 creators), wrk -c{options.connections}, "
          f"{options.seconds} s a run, {options.workers} workers; beside it "
          f"{options.in_flight} sends of a plugin that hangs 300 s on every call")
    print(f"{'round':<7}{'run':<22}{'gifts/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/gift':>13}")
    for number, pair in enumerate(rounds, 1):
        for label, result in zip(("alone", "beside the hung plugin"), pair, strict=True):
            print(f"{number:<7}{label:<22}{result.rate:>9,.0f}{result.p50_ms:>9.1f}"
                  f"{result.p99_ms:>9.1f}{result.server_ms:>13.2f}")
    rate = statistics.median(b.rate / a.rate for a, b in rounds)
    p99 = statistics.median(b.p99_ms / a.p99_ms for a, b in rounds)
    print(f"median ratio beside / alone: throughput {rate:.2f}x, p99 {p99:.2f}x")
    for title, measured in (("the hanging plugin's sends, as their clients saw them:", answers),
                            ("the same, as the server answered them (Server-Timing):",
                             server_side or [])):
        print(title)
        for kind in (WAITED, REFUSED, OTHER):
            seconds = [s for k, s in measured if k == kind]
            if seconds:
                print(f"  {kind:<24}{len(seconds):>6}  p50 {1000 * quantile(seconds, 0.5):8.1f}"
                      f" ms  p99 {1000 * quantile(seconds, 0.99):8.1f} ms"
                      f"  max {1000 * max(seconds):8.1f} ms")
    waited = [s for k, s in answers if k == WAITED]
    served = [s for k, s in server_side or [] if k == WAITED]
    refused = [s for k, s in answers if k == REFUSED]
    print("targets:")
    for label, met, actual in (
            ("core throughput within 10 %", rate >= 0.9, f"{rate:.2f}x"),
            ("core p99 within 10 %", p99 <= 1.1, f"{p99:.2f}x"),
            (f"waited answered by {LIMIT:g} s + 50 ms", bool(waited) and
             max(waited) <= LIMIT + 0.05, f"{1000 * max(waited, default=0):.0f} ms"),
            (f"  the server's answer by {LIMIT:g} s + 50 ms", bool(served) and
             max(served) <= LIMIT + 0.05, f"{1000 * max(served, default=0):.0f} ms"),
            ("then refused at once", bool(refused), f"{len(refused)} refused")):
        print(f"  {label:<38} {actual:>12}   {'met' if met else 'MISSED'}")
    print(f"audit after the runs: {verdict}")
    print("reproduce:", shlex.join([".venv/bin/python", "-m", "bench.isolation",
                                    *sys.argv[1:]]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=10, help="a run, whole seconds")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--viewers", type=int, default=256)
    parser.add_argument("--in-flight", type=int, default=40)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/7")
    options = parser.parse_args()
    options.profile = None  # run_wrk's option
    if not shutil.which("wrk"):
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        sys.exit(2)
    data = asyncio.run(prepare(options.viewers + options.in_flight))
    core = dataclasses.replace(data, tokens=data.tokens[:options.viewers])
    os.environ["LIVEGIFTS_PLUGIN_MODULES"] = "bench.hanging_plugin"
    os.environ["LIVEGIFTS_PLUGIN_TIMEOUT_SECONDS"] = f"{LIMIT:g}"
    if options.redis:
        os.environ["REDIS_URL"] = options.redis
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spread = next(kind for kind in KINDS if kind.name == "gift-spread")
    rounds: list[tuple[Result, Result]] = []
    answers: list[tuple[str, float]] = []
    server_side: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="livegifts-bench-") as directory:
        server = Server(options.workers, port)
        try:
            server.wait()
            gift = asyncio.run(hanging_gift_id())
            for _ in range(options.rounds):
                alone = run_wrk(spread, core, server, options, Path(directory))
                with HangingSenders(server.url, data.tokens[options.viewers:], data.sessions,
                                    gift) as senders:
                    beside = run_wrk(spread, core, server, options, Path(directory))
                answers += senders.answers
                server_side += senders.server_seconds
                rounds.append((alone, beside))
        finally:
            try:
                server.stop()  # graceful, though its plugin threads hang for minutes
            except subprocess.TimeoutExpired:
                server.log.seek(0)
                print("the server did not stop within 30 s; its log ends:\n" +
                      server.log.read().decode()[-3000:], file=sys.stderr)
                server.process.kill()
                raise
    verdict = asyncio.run(audit_ledger())
    report(rounds, answers, options, verdict, server_side)


if __name__ == "__main__":
    main()
