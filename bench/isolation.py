"""A plugin that hangs beside core gifts: does one partner's plugin hold anyone else up?

    .venv/bin/python -m bench.isolation [--seconds 10] [--rounds 2] [--in-flight 40]
                                        [--workers 2] [--connections 64] [--viewers 256]

Starts the real server (``livegifts serve --workers 2``, Redis as the event bus, default
plugin settings: a 1 s time limit, 4 threads a plugin, the breaker open after 5 failures
for 30 s) with ``bench/hanging_plugin.py``, whose every call hangs for 300 s, on the same
data as ``bench.http``. Each round drives core ``sendGift`` (a Finger Heart over 1,000
creators) with wrk twice: alone, then while ``--in-flight`` other viewers each keep one
send of the hanging plugin's gift in flight (a second wrk, one connection a viewer, timing
each send in C: ``bench/wrk/timed.lua``, started 0.3 s ahead of the core load; a send
refused at once is sent again after 0.5 s).
Prints both runs' throughput, p99 and server CPU a gift, their ratios against the targets
(within 10 %), and the hanging plugin's sends: those that waited for it (answered at the
time limit) and those refused at once (its breaker open or its places taken).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url
from strawberry.relay import to_base64

from bench.common import BENCH_URL
from bench.hanging_plugin import SKU
from bench.http import KINDS, SEND, Result, audit_ledger, prepare, run_wrk
from bench.http_gifting import Server

LIMIT = 1.0  # the server's plugin time limit (its default)
TIMED = Path(__file__).with_name("wrk") / "timed.lua"
IN_FLIGHT_AHEAD = 0.3  # seconds the hanging plugin's senders start before the core load
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
    """Viewers each keeping one send of the hanging plugin's gift in flight: wrk with one
    connection a viewer (``bench/wrk/timed.lua``), each answer timed in C around its request
    (the connections open before, as an app's would be), its kind and its seconds kept, and
    the server's own seconds (``Server-Timing``)."""

    def __init__(self, port: int, spec: Path, scratch: Path, viewers: int) -> None:
        self.out = scratch / f"timed-{time.time_ns()}.txt"
        self.command = ["wrk", f"-t{viewers}", f"-c{viewers}", "-d600s", "-s", str(TIMED),
                        f"http://127.0.0.1:{port}", "--", str(spec),
                        f"hang-{time.time_ns()}", str(self.out)]
        self.answers: list[tuple[str, float]] = []
        self.server_seconds: list[tuple[str, float]] = []  # from Server-Timing

    def __enter__(self) -> HangingSenders:
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
        # Their sends are in flight before the core load starts (they time out under it).
        # Started in the same instant, the two load generators' 100-odd new connections
        # land on the server in the same few milliseconds, and the last of them waits up
        # to about 170 ms to be read: a storm of connections, not what a hung plugin does.
        time.sleep(IN_FLIGHT_AHEAD)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.send_signal(signal.SIGINT)  # wrk stops, and its done() writes the answers
        output = self.process.communicate(timeout=60)[0].decode()
        if not self.out.exists():
            raise RuntimeError(f"wrk wrote no answers:\n{output}")
        for line in self.out.read_text().splitlines():
            kind, client, server = line.split()
            kind = {"waited": WAITED, "refused": REFUSED}.get(kind, OTHER)
            self.answers.append((kind, float(client)))
            if float(server) >= 0:
                self.server_seconds.append((kind, float(server)))


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
            hanging_spec = Path(directory) / "hanging.spec"
            hanging_spec.write_text("\n".join([
                "body " + SEND.replace("{gift}", gift),
                *(f"token {token}" for token in data.tokens[options.viewers:]),
                *(f"session {session}" for session in data.sessions)]) + "\n")
            for _ in range(options.rounds):
                alone = run_wrk(spread, core, server, options, Path(directory))
                with HangingSenders(port, hanging_spec, Path(directory),
                                    options.in_flight) as senders:
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
