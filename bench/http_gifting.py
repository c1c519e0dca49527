"""sendGift end to end over HTTP against the same writes issued as raw SQL.

    .venv/bin/python -m bench.http_gifting [--workers 2] [--clients 64] [--seconds 10]
                                           [--redis redis://127.0.0.1:6379/7]

Starts the real server (``livegifts serve --workers N``) on a scratch PostgreSQL
database, with Redis as the event bus its workers share (as several processes are
deployed), then drives ``sendGift`` over HTTP from many concurrent clients, each
a viewer with plenty of coins sending Finger Hearts, first spread over 1,000 live
creators, then all to one hot creator. In the same run the baseline issues the
same writes a gift makes (idempotency claim, wallet debit, creator credit, ledger
transaction and entries, combo, receipt, leaderboard totals) directly as SQL
with asyncpg, one transaction per gift, at the same concurrency.

Prints throughput, p50 and p99 latency of each phase and the ratios the targets
speak of: end to end against the baseline, hot creator against spread.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
import asyncpg
import httpx
from sqlalchemy.engine import make_url
from strawberry.relay import to_base64

from app.auth import Role, mint_token
from app.ledger import system_account
from app.runtime import Runtime
from app.services.gifting import period_starts
from app.services.users import coin_account, diamond_account
from app.settings import Settings
from app.testing import audit, go_live, new_viewer
from bench.common import BENCH_URL, fresh_runtime

JWT_SECRET = "bench-jwt-secret-0123456789abcdef0123456789"
CREATORS = 1_000
SEND_GIFT = """
mutation Send($input: SendGiftInput!) {
  sendGift(input: $input) { receipt { id comboCount } walletCoins userErrors { code message } }
}"""


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, p: float) -> float:
        return statistics.quantiles(self.latencies, n=100)[p - 1] * 1000

    def line(self, against: Phase | None = None) -> str:
        ratio = f"  {self.rate / against.rate:5.2f}x {against.name}" if against else ""
        return (f"{self.name:<34} {self.rate:7.0f} gifts/s   p50 {self.percentile(50):6.1f} ms"
                f"   p99 {self.percentile(99):6.1f} ms{ratio}"
                + (f"   ({self.errors} errors)" if self.errors else ""))


async def drive(name: str, clients: int, seconds: float,
                send: Callable[[int, int], Awaitable[bool]]) -> Phase:
    """Run ``send(client, n)`` in a loop from ``clients`` concurrent clients for ``seconds``."""
    phase = Phase(name)
    deadline = time.perf_counter() + seconds

    async def client(number: int) -> None:
        sent = 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            if await send(number, sent):
                phase.latencies.append(time.perf_counter() - started)
            else:
                phase.errors += 1
            sent += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    phase.seconds = time.perf_counter() - started
    return phase


# The server, end to end ------------------------------------------------------------------


class Server:
    def __init__(self, workers: int, port: int = 8077, source: str | None = None) -> None:
        """``source``: serve the code of another checkout (a baseline), not this one."""
        self.workers, self.port = workers, port
        self.url = f"http://127.0.0.1:{port}/graphql"
        self.log = tempfile.TemporaryFile()
        env = {**os.environ, "DATABASE_URL": BENCH_URL, "LIVEGIFTS_JWT_SECRET": JWT_SECRET,
               "LIVEGIFTS_SEED_DEMO_DATA": "false", "LIVEGIFTS_PLUGINS": "none",
               "LIVEGIFTS_RATE_LIMIT_PER_USER": "100000000",
               "LIVEGIFTS_RATE_LIMIT_PER_IP": "100000000",
               # A worker serves up to 32 of wrk's 64 connections at once: a pool as large
               # keeps every connection (and its prepared statements) for the whole run.
               "LIVEGIFTS_DATABASE_POOL_SIZE": "32",
               # BENCH_LOG_LEVEL=INFO keeps the server's access and shutdown lines.
               "LIVEGIFTS_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING")}
        if source:
            env["PYTHONPATH"] = source
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port), "--workers",
             str(workers), "--no-migrate"], env=env, stdout=subprocess.DEVNULL,
            stderr=self.log, cwd=source)

    def wait(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.log.seek(0)
        raise RuntimeError("the server did not start:\n" + self.log.read().decode()[-3000:])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


async def http_phase(server: Server, name: str, clients: int, seconds: float,
                     sessions: list[str], gift: str, tokens: list[str]) -> Phase:
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as http:
        async def send(client: int, n: int) -> bool:
            variables = {"input": {"sessionId": sessions[(client + n * clients) % len(sessions)],
                                   "giftId": gift, "quantity": 1,
                                   "idempotencyKey": f"{name}-{client}-{n}"}}
            async with http.post(server.url, json={"query": SEND_GIFT, "variables": variables},
                                 headers={"authorization": f"Bearer {tokens[client]}"}) as reply:
                body = await reply.json()
            return reply.status == 200 and not body.get("errors") \
                and not body["data"]["sendGift"]["userErrors"]

        await drive(name + " warm-up", clients, 1, send)
        return await drive(name, clients, seconds, send)


# The baseline: the same writes as raw SQL, one transaction per gift ----------------------


async def sql_phase(pool: asyncpg.Pool, clients: int, seconds: float,
                    targets: list[tuple[int, int, int]], viewers: list[tuple[int, int]],
                    gift_id: int, price: int, platform: int, earnings: int,
                    issuance: int) -> Phase:
    diamonds, platform_coins = price // 2, price - price // 2
    periods = list(period_starts(datetime.now(UTC).date()).items())

    async def send(client: int, n: int) -> bool:
        session_id, creator_id, creator_account = targets[(client + n * clients) % len(targets)]
        viewer_id, wallet = viewers[client]
        now = datetime.now(UTC)
        async with pool.acquire() as db, db.transaction():
            claim = await db.fetchval(
                "INSERT INTO idempotency_record (scope, key, operation, fingerprint, status, "
                "created_at) VALUES ($1, $2, 'send_gift', 'f', 'pending', $3) "
                "ON CONFLICT DO NOTHING RETURNING id", f"user:{viewer_id}", f"sql-{client}-{n}",
                now)
            await db.execute("SELECT id FROM live_session WHERE id = $1 FOR KEY SHARE",
                             session_id)
            debited = await db.execute(
                "UPDATE ledger_account SET balance = balance - $2 WHERE id = $1 "
                "AND balance >= $2", wallet, price)
            if debited != "UPDATE 1":
                return False
            await db.execute("UPDATE ledger_account SET balance = balance + $2 WHERE id = $1",
                             creator_account, diamonds)
            transaction = await db.fetchval(
                "INSERT INTO ledger_transaction (kind, memo, created_at, digest) "
                "VALUES ('gift', 'finger-heart x1', $1, 'digest') RETURNING id", now)
            await db.executemany(
                "INSERT INTO ledger_entry (transaction_id, account_id, currency, amount) "
                "VALUES ($1, $2, $3, $4)",
                [(transaction, wallet, "COIN", -price), (transaction, platform, "COIN",
                 platform_coins), (transaction, earnings, "COIN", diamonds),
                 (transaction, issuance, "DIAMOND", -diamonds),
                 (transaction, creator_account, "DIAMOND", diamonds)])
            combo = await db.fetchval(
                "INSERT INTO gift_combo (session_id, sender_id, gift_id, count, sends, coins, "
                "started_at, last_at) VALUES ($1, $2, $3, 1, 1, $4, $5, $5) "
                "ON CONFLICT (session_id, sender_id, gift_id) WHERE ended_at IS NULL "
                "DO UPDATE SET count = gift_combo.count + 1, sends = gift_combo.sends + 1, "
                "coins = gift_combo.coins + excluded.coins, last_at = excluded.last_at "
                "RETURNING id", session_id, viewer_id, gift_id, price, now)
            await db.execute(
                "INSERT INTO gift_send (session_id, gift_id, sender_id, creator_id, quantity, "
                "unit_price, coins_paid, brand_subsidy, creator_coins, platform_coins, "
                "brand_coins, creator_diamonds, rate_card_version, transaction_id, combo_id, "
                "combo_count, created_at) VALUES ($1, $2, $3, $4, 1, $5, $5, 0, $6, $7, 0, $6, "
                "1, $8, $9, 1, $10)", session_id, gift_id, viewer_id, creator_id, price,
                diamonds, platform_coins, transaction, combo, now)
            await db.executemany(
                "INSERT INTO supporter_total AS t VALUES ($1, $2, $3, $4, $5, $6, 1) "
                "ON CONFLICT (creator_id, period, period_start, sender_id) DO UPDATE SET "
                "coins = t.coins + excluded.coins, diamonds = t.diamonds + excluded.diamonds, "
                "gifts = t.gifts + 1",
                [(creator_id, period, start, viewer_id, price, diamonds)
                 for period, start in periods])
            await db.executemany(
                "INSERT INTO creator_total AS t VALUES ($1, $2, $3, $4, $5, 1) "
                "ON CONFLICT (period, period_start, creator_id) DO UPDATE SET "
                "diamonds = t.diamonds + excluded.diamonds, coins = t.coins + excluded.coins, "
                "gifts = t.gifts + 1",
                [(period, start, creator_id, diamonds, price) for period, start in periods])
            await db.execute(
                "INSERT INTO session_gifter_total AS t VALUES ($1, $2, $3, $4, 1) "
                "ON CONFLICT (session_id, sender_id) DO UPDATE SET coins = t.coins + "
                "excluded.coins, diamonds = t.diamonds + excluded.diamonds, gifts = t.gifts + 1",
                session_id, viewer_id, price, diamonds)
            await db.execute("UPDATE idempotency_record SET status = 'succeeded', "
                             "result = '{}'::json WHERE id = $1", claim)
        return True

    await drive("raw SQL warm-up", clients, 1, send)
    return await drive("raw SQL, one transaction per gift", clients, seconds, send)


async def main(workers: int, clients: int, seconds: float, redis_url: str) -> None:
    runtime = await fresh_runtime()
    stages = [await go_live(runtime, f"creator-{n}") for n in range(CREATORS)]
    names = [f"viewer-{n}" for n in range(clients)]
    viewer_ids = [await new_viewer(runtime, name, 10**12) for name in names]
    settings = Settings(jwt_secret=JWT_SECRET)
    tokens = [mint_token(settings, name, [Role.VIEWER], 3600, None, datetime(1990, 1, 1).date())
              for name in names]
    finger_heart = stages[0].gifts["finger-heart"]
    accounts = {}
    async with runtime.sessions() as session:
        wallets = [(await coin_account(session, v)).id for v in viewer_ids]
        creator_accounts = [(await diamond_account(session, s.creator_id)).id for s in stages]
        for name, currency in (("platform_revenue", "COIN"), ("creator_earnings", "COIN"),
                               ("diamond_issuance", "DIAMOND")):
            accounts[name] = (await system_account(session, name, currency)).id
        await session.commit()
    price = 5  # a Finger Heart: 2 diamonds to the creator, 3 coins to the platform
    await runtime.close()

    if redis_url:  # Server passes the environment on
        os.environ["REDIS_URL"] = redis_url
    server = Server(workers)
    try:
        server.wait()
        spread_ids = [to_base64("LiveSession", s.session_id) for s in stages]
        gift = to_base64("Gift", finger_heart)
        spread = await http_phase(server, "sendGift over HTTP, 1,000 creators", clients,
                                  seconds, spread_ids, gift, tokens)
        hot = await http_phase(server, "sendGift over HTTP, one hot creator", clients, seconds,
                               spread_ids[:1], gift, tokens)
    finally:
        server.stop()
    runtime = Runtime.build(Settings(database_url=BENCH_URL))
    async with runtime.sessions() as session:
        findings = await audit(session)
    await runtime.close()
    verdict = "passed" if not findings else findings[:3]

    url = make_url(BENCH_URL)
    pool = await asyncpg.create_pool(user=url.username, host=url.host, port=url.port,
                                     database=url.database, min_size=clients, max_size=clients)
    targets = [(s.session_id, s.creator_id, a) for s, a in zip(stages, creator_accounts,
                                                                strict=True)]
    random.shuffle(targets)
    baseline = await sql_phase(pool, clients, seconds, targets, list(zip(viewer_ids, wallets,
                               strict=True)), finger_heart, price, accounts["platform_revenue"],
                               accounts["creator_earnings"], accounts["diamond_issuance"])
    await pool.close()

    print(f"{clients} concurrent clients, {seconds:.0f} s a phase, {workers} server workers, "
          f"PostgreSQL, {'Redis event bus' if redis_url else 'no Redis'}, {os.cpu_count()} "
          "cores shared by server, database and clients")
    print(baseline.line())
    print(spread.line(baseline))
    print(hot.line(spread))
    print(f"{'target':<34} end to end >= 0.5x raw SQL; hot creator >= 0.9x spread")
    print(f"audit after the server phases: {verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/7",
                        help="the event bus several workers share, as deployed; '' for none "
                             "(with --workers 1: several workers need one)")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.workers, arguments.clients, arguments.seconds, arguments.redis))
