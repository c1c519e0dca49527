"""Fan-out: one gift event delivered to many WebSocket subscribers of a live session.

    .venv/bin/python -m bench.fanout [--subscribers 1000] [--gifts 50] [--workers 2]

Starts the real server (``livegifts serve --workers N``) on a scratch PostgreSQL
database with Redis as the event bus, so subscribers connected to different
worker processes all get every event. Client processes open the subscribers to
``liveSessionEvents`` over graphql-transport-ws, selecting what a stream overlay
shows of a gift. One viewer then sends Roses over HTTP one at a time, one every
``--interval`` seconds, and every subscriber stamps when each ``GiftSent``
arrives (``time.time()``: one clock on one machine). The delivery latency of a
(gift, subscriber) pair is its arrival minus the start of the ``sendGift``
request. The baseline, measured first in the same run, is the ``sendGift``
round trip with no subscriber connected.

Prints the subscribers connected, deliveries received against expected, the
p50, p99 and max delivery latency, and the baseline, against the target.
``--profile DIR`` also records the server workers with py-spy while the
subscribers receive (raw stacks, one file a worker).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
from strawberry.relay import to_base64

from app.auth import Role, mint_token
from app.settings import Settings
from app.testing import go_live, new_viewer
from bench.common import fresh_runtime
from bench.http_gifting import JWT_SECRET, Server

CLIENT_PROCESSES = 4
CONNECTING_AT_ONCE = 25  # per client process: a crowd arriving, not one at a time
ADULT = date(1990, 1, 1)
SEND_GIFT = """
mutation Send($input: SendGiftInput!) {
  sendGift(input: $input) { receipt { id } userErrors { code message } }
}"""
# What an overlay shows of a gift; the other events arrive too, with no fields selected.
EVENTS = """
subscription Overlay($id: ID!) {
  liveSessionEvents(sessionId: $id) {
    __typename
    ... on GiftSent {
      receiptId sender { name } gift { name imageUrl } quantity comboCount coins
    }
  }
}"""


# Subscribers: run in client processes ----------------------------------------------------


def watch(pipe: Any, url: str, tokens: list[str], session_id: str, sender: str,
          gifts: int) -> None:
    """A client process: subscribe with every token, report arrivals when told to finish."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent ends us
    asyncio.run(_watch(pipe, url, tokens, session_id, sender, gifts))


async def _watch(pipe: Any, url: str, tokens: list[str], session_id: str, sender: str,
                 gifts: int) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    arrivals: list[list[tuple[str, float]]] = [[] for _ in tokens]
    other_events = 0  # combos, top gifters: they reach every subscriber too
    sockets: list[Any] = []
    failures: list[str] = []
    gate = asyncio.Semaphore(CONNECTING_AT_ONCE)

    async def subscribe(token: str) -> Any:
        async with gate:
            ws = await connect(url, subprotocols=["graphql-transport-ws"], ping_interval=None,
                               open_timeout=60, close_timeout=5)
            await ws.send(json.dumps({"type": "connection_init",
                                      "payload": {"Authorization": f"Bearer {token}"}}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
                "query": EVENTS, "variables": {"id": session_id}}}))
            # The first event (the viewer count) comes once the subscription listens.
            first = json.loads(await asyncio.wait_for(ws.recv(), 60))
            assert first["type"] == "next", first
            return ws

    async def listen(ws: Any, received: list[tuple[str, float]]) -> None:
        with contextlib.suppress(ConnectionClosed):  # counted as missing deliveries
            await receive(ws, received)

    async def receive(ws: Any, received: list[tuple[str, float]]) -> None:
        nonlocal other_events
        async for raw in ws:  # until this subscriber has every gift
            arrived = time.time()
            message = json.loads(raw)
            if message["type"] == "ping":
                await ws.send(json.dumps({"type": "pong"}))
            elif message["type"] == "next":
                event = message["payload"]["data"]["liveSessionEvents"]
                # Redis channels are shared by every database: count only this run's gifts.
                if event["__typename"] == "GiftSent" and event["sender"]["name"] == sender:
                    received.append((event["receiptId"], arrived))
                    if len(received) == gifts:
                        return
                else:
                    other_events += 1

    for outcome in await asyncio.gather(*(subscribe(t) for t in tokens), return_exceptions=True):
        if isinstance(outcome, BaseException):
            failures.append(repr(outcome))
        else:
            sockets.append(outcome)
    listeners = [asyncio.create_task(listen(ws, arrivals[n])) for n, ws in enumerate(sockets)]
    pipe.send((len(sockets), failures))
    try:
        grace = await asyncio.to_thread(pipe.recv)  # the sender has finished
    except EOFError:  # the parent gave up: just close
        grace = None
    if listeners and grace:
        await asyncio.wait(listeners, timeout=grace)
    for listener in listeners:
        listener.cancel()
    await asyncio.gather(*listeners, return_exceptions=True)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    if grace:
        pipe.send((arrivals[:len(sockets)], other_events))


class Subscribers:
    """Client processes holding the subscribers, spread evenly; always joined by :meth:`stop`."""

    def __init__(self, url: str, tokens: list[str], session_id: str, sender: str, gifts: int,
                 processes: int) -> None:
        context = multiprocessing.get_context("spawn")  # no inherited event loop or sockets
        self.pipes, self.processes = [], []
        for n in range(processes):
            ours, theirs = context.Pipe()
            process = context.Process(target=watch, daemon=True, args=(
                theirs, url.replace("http://", "ws://"), tokens[n::processes], session_id,
                sender, gifts))
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)

    async def connected(self) -> tuple[int, list[str]]:
        reports = [await asyncio.to_thread(pipe.recv) for pipe in self.pipes]
        return sum(n for n, _ in reports), [f for _, fails in reports for f in fails]

    async def arrivals(self, grace: float) -> tuple[list[list[tuple[str, float]]], int]:
        """Each subscriber's (receipt id, arrival) pairs, once complete or after ``grace`` s,
        and how many other events they received."""
        for pipe in self.pipes:
            pipe.send(grace)
        reports = [await asyncio.to_thread(pipe.recv) for pipe in self.pipes]
        return [s for subscribers, _ in reports for s in subscribers], sum(n for _, n in reports)

    def stop(self) -> None:
        for pipe in self.pipes:
            pipe.close()  # a client process still waiting to be told to finish stops
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join()


# The sender ------------------------------------------------------------------------------


async def send_gifts(url: str, token: str, session_id: str, gift_id: str, count: int,
                     interval: float, tag: str) -> tuple[dict[str, float], list[float]]:
    """Send ``count`` gifts one at a time; return receipt id -> send start, and round trips."""
    started_at, round_trips = {}, []
    async with aiohttp.ClientSession() as http:
        for n in range(count):
            tick = time.perf_counter()
            variables = {"input": {"sessionId": session_id, "giftId": gift_id, "quantity": 1,
                                   "idempotencyKey": f"{tag}-{n}"}}
            started = time.time()
            async with http.post(url, json={"query": SEND_GIFT, "variables": variables},
                                 headers={"authorization": f"Bearer {token}"}) as reply:
                body = await reply.json()
            round_trips.append(time.time() - started)
            sent = body.get("data") and body["data"]["sendGift"]
            if not sent or sent["userErrors"]:
                raise RuntimeError(f"sendGift failed: {body}")
            started_at[sent["receipt"]["id"]] = started
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - tick)))
    return started_at, round_trips


# Figures ---------------------------------------------------------------------------------


def percentile(samples: list[float], p: int) -> float:
    """The p-th percentile in milliseconds."""
    return statistics.quantiles(samples, n=100, method="inclusive")[p - 1] * 1000


def spread(samples: list[float]) -> str:
    return (f"p50 {percentile(samples, 50):7.1f} ms   p99 {percentile(samples, 99):7.1f} ms"
            f"   max {max(samples) * 1000:7.1f} ms")


def raise_open_files_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def profile(server: Server, seconds: float, directory: Path) -> list[subprocess.Popen[bytes]]:
    """Start py-spy on every server worker (the serving processes under the supervisor)."""
    directory.mkdir(parents=True, exist_ok=True)
    workers = subprocess.run(["ps", "-o", "pid=", "--ppid", str(server.process.pid)],
                             capture_output=True, text=True).stdout.split()
    py_spy = Path(sys.executable).with_name("py-spy")
    return [subprocess.Popen([str(py_spy), "record", "-p", pid, "-d", str(int(seconds)),
                              "-f", "raw", "-o", str(directory / f"worker-{pid}.raw"),
                              "--nonblocking"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for pid in workers]


async def main(subscribers: int, gifts: int, workers: int, interval: float, redis_url: str,
               processes: int, profile_to: Path | None) -> None:
    raise_open_files_limit(subscribers + 1024)  # the server's workers inherit it
    run = uuid.uuid4().hex[:8]
    runtime = await fresh_runtime()
    stage = await go_live(runtime, "fanout-creator")
    sender = f"fanout-fan-{run}"
    await new_viewer(runtime, sender, 10**9)
    await runtime.close()
    settings = Settings(jwt_secret=JWT_SECRET)
    fan = mint_token(settings, sender, [Role.VIEWER], 3600, None, ADULT)
    watchers = [mint_token(settings, f"fanout-watcher-{n}", [Role.VIEWER], 3600, None, ADULT)
                for n in range(subscribers)]
    session_id = to_base64("LiveSession", stage.session_id)
    rose = to_base64("Gift", stage.gifts["rose"])

    os.environ["REDIS_URL"] = redis_url  # Server passes the environment on
    server = Server(workers, port=free_port())
    clients = None
    spies: list[subprocess.Popen[bytes]] = []
    try:
        server.wait()
        await send_gifts(server.url, fan, session_id, rose, 5, interval, "warm-up")
        _, baseline = await send_gifts(server.url, fan, session_id, rose, gifts, interval,
                                       "alone")
        clients = Subscribers(server.url, watchers, session_id, sender, gifts, processes)
        connected, failures = await clients.connected()
        if profile_to:
            spies = profile(server, gifts * interval, profile_to)
        sent_at, loaded = await send_gifts(server.url, fan, session_id, rose, gifts, interval,
                                           "watched")
        arrivals, other_events = await clients.arrivals(grace=30)
    finally:
        for spy in spies:
            spy.wait()
        if clients:
            clients.stop()
        server.stop()

    per_gift: dict[str, list[float]] = {receipt: [] for receipt in sent_at}  # in send order
    for received in arrivals:
        for receipt, arrived in dict(reversed(received)).items():  # the first arrival counts
            if receipt in per_gift:
                per_gift[receipt].append(arrived - sent_at[receipt])
    latencies = [latency for gift in per_gift.values() for latency in gift]
    expected = connected * gifts
    missing = expected - len(latencies)
    # The slowest subscriber early and late in the run: growing means the server falls behind.
    last = [max(gift) for gift in per_gift.values() if gift]
    tenth = max(1, len(last) // 10)

    print(f"{subscribers} subscribers in {processes} client processes, {workers} server "
          f"workers, Redis event bus, PostgreSQL, one gift every {interval * 1000:.0f} ms, "
          f"{os.cpu_count()} cores shared by server, database, Redis and clients")
    print(f"subscribers connected            {connected} of {subscribers}"
          + (f"   ({len(failures)} failed, first: {failures[0]})" if failures else ""))
    print(f"deliveries received              {len(latencies)} of {expected}"
          + (f"   ({missing} MISSING)" if missing else "   (none missing)"))
    print(f"events per gift and subscriber   {1 + other_events / max(expected, 1):.1f}"
          "   (GiftSent and the events that come with it)")
    print(f"sendGift alone (baseline)        {spread(baseline)}")
    print(f"sendGift with subscribers        {spread(loaded)}")
    if latencies:
        print(f"delivery, each subscriber        {spread(latencies)}   "
              f"p99 {percentile(latencies, 99) / percentile(baseline, 99):.1f}x baseline p99")
        print(f"delivery, last subscriber        {spread(last)}")
        print(f"last subscriber, first {tenth} gifts   p50 "
              f"{statistics.median(last[:tenth]) * 1000:7.1f} ms   last {tenth} gifts   p50 "
              f"{statistics.median(last[-tenth:]) * 1000:7.1f} ms")
    print(f"{'target':<32} p99 delivery under 100 ms")
    if profile_to:
        print(f"server worker profiles (py-spy raw) in {profile_to}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--gifts", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.2,
                        help="seconds between the starts of two sends")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/7")
    parser.add_argument("--client-processes", type=int, default=CLIENT_PROCESSES)
    parser.add_argument("--profile", type=Path, default=None,
                        help="directory for py-spy profiles of the server workers while "
                             "the subscribers receive")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.subscribers, arguments.gifts, arguments.workers,
                     arguments.interval, arguments.redis, arguments.client_processes,
                     arguments.profile))
