"""Leaderboard latency from ten thousand to a million gifts: maintained totals against GROUP BY.

    .venv/bin/python -m bench.leaderboards [--sizes 10000,100000,1000000] [--repeat 300]

For each size, loads that many gift rows (popularity skewed towards a few creators)
into a fresh PostgreSQL database, builds the totals that sendGift maintains and
checks they rank as GROUP BY over the gift rows does. Then times each leaderboard
query, one request after another: through its service function with a real
session, and as a GraphQL query over HTTP against the real server
(``livegifts serve``). Prints p50 and p99 per size, how much p99 grew from the
smallest size to the largest, and the p50 of the same ranking computed with
GROUP BY over the (indexed) gift rows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from sqlalchemy import func, select, text
from strawberry.relay import to_base64

from app.auth import Role, mint_token
from app.models import GiftSend, User
from app.runtime import Runtime
from app.services import recognition
from app.services.gifting import period_starts
from app.services.recognition import Period
from app.settings import Settings
from bench.common import fresh_runtime
from bench.http_gifting import JWT_SECRET, Server

CREATORS, VIEWERS = 1_000, 50_000
HOTTEST = 1  # the skew puts most gifts on creator 1, whose session is session 1
BASELINE_REPEAT = 20  # GROUP BY over a million rows is slow; its median needs few samples

LOAD = """
INSERT INTO app_user (name, created_at)
  SELECT 'user' || n, now() FROM generate_series(1, {creators} + {viewers}) AS n;
INSERT INTO gift (sku, name, coin_price, image_url, category, sort_order, active, created_at)
  SELECT 'g' || n, 'Gift ' || n, (ARRAY[1, 5, 30, 100, 299, 1000])[n], 'https://x.example/g.png',
         'classic', n, true, now() FROM generate_series(1, 6) AS n;
INSERT INTO live_session (creator_id, title, status, started_at)
  SELECT n, 'Show', 'ended', now() FROM generate_series(1, {creators}) AS n;
INSERT INTO ledger_transaction (kind, memo, created_at, digest) VALUES ('bench', '', now(), '');
INSERT INTO gift_combo (session_id, sender_id, gift_id, count, sends, coins, started_at, last_at,
                        ended_at) VALUES (1, 1, 1, 1, 1, 1, now(), now(), now());
INSERT INTO gift_send (session_id, gift_id, sender_id, creator_id, quantity, unit_price,
    coins_paid, brand_subsidy, creator_coins, platform_coins, brand_coins, creator_diamonds,
    rate_card_version, transaction_id, combo_id, combo_count, created_at)
  SELECT c, g, s, c, 1, price, price, 0, price / 2, price - price / 2, 0, price / 2, 1, 1, 1, 1,
         now() - (random() * interval '40 days')
  FROM (SELECT 1 + floor({creators} * power(random(), 3))::int AS c,
               {creators} + 1 + floor({viewers} * random())::int AS s,
               1 + floor(6 * power(random(), 2))::int AS g
        FROM generate_series(1, {gifts})) AS draw
  JOIN gift ON gift.id = draw.g,
  LATERAL (SELECT gift.coin_price AS price) AS p;
"""

TOTALS = """
INSERT INTO supporter_total (creator_id, period, period_start, sender_id, coins, diamonds, gifts)
  SELECT creator_id, :period, :day, sender_id, sum(coins_paid), sum(creator_diamonds), count(*)
  FROM gift_send WHERE created_at >= :start GROUP BY creator_id, sender_id;
INSERT INTO creator_total (period, period_start, creator_id, diamonds, coins, gifts)
  SELECT :period, :day, creator_id, sum(creator_diamonds), sum(coins_paid), count(*)
  FROM gift_send WHERE created_at >= :start GROUP BY creator_id;
"""

RANKING = "edges { node { rank user { name } coins diamonds gifts } }"
SUPPORTERS_QUERY = f"""query Supporters($creator: ID!) {{
  topSupporters(creatorId: $creator, period: MONTH, first: 10) {{ {RANKING} }} }}"""
CREATORS_QUERY = f"query Creators {{ topCreators(period: ALL, first: 10) {{ {RANKING} }} }}"
GIFTERS_QUERY = f"""query Gifters($session: ID!) {{
  liveSession(id: $session) {{ topGifters(first: 10) {{ {RANKING} }} }} }}"""


@dataclass
class Leaderboard:
    name: str
    served: Callable[[], Awaitable[list]]  # the service function the resolver calls
    aggregated: Callable[[], Awaitable[list]]  # the same ranking by GROUP BY over gift rows
    ranks: str  # which column both rank by
    graphql: str  # the query a client sends
    variables: dict[str, str]


def leaderboards(runtime: Runtime) -> list[Leaderboard]:
    month_start = datetime.combine(period_starts(datetime.now(UTC).date())["month"],
                                   datetime.min.time(), tzinfo=UTC)

    def in_session(query: Callable) -> Callable[[], Awaitable[list]]:
        async def run() -> list:
            async with runtime.sessions() as session:
                return await query(session)
        return run

    async def aggregated_supporters(session):
        return (await session.execute(
            select(GiftSend.sender_id, User.name, func.sum(GiftSend.coins_paid).label("coins"))
            .join(User, User.id == GiftSend.sender_id)
            .where(GiftSend.creator_id == HOTTEST, GiftSend.created_at >= month_start)
            .group_by(GiftSend.sender_id, User.name)
            .order_by(text("coins DESC"), GiftSend.sender_id.desc()).limit(10))).all()

    async def aggregated_creators(session):
        return (await session.execute(
            select(GiftSend.creator_id, func.sum(GiftSend.creator_diamonds).label("diamonds"))
            .group_by(GiftSend.creator_id)
            .order_by(text("diamonds DESC"), GiftSend.creator_id.desc()).limit(10))).all()

    async def aggregated_gifters(session):
        return (await session.execute(
            select(GiftSend.sender_id, func.sum(GiftSend.coins_paid).label("coins"))
            .where(GiftSend.session_id == HOTTEST).group_by(GiftSend.sender_id)
            .order_by(text("coins DESC"), GiftSend.sender_id.desc()).limit(10))).all()

    return [
        Leaderboard("top supporters, hottest creator, month", in_session(
            lambda s: recognition.top_supporters(s, HOTTEST, Period.MONTH, limit=10, offset=0)),
            in_session(aggregated_supporters), "coins", SUPPORTERS_QUERY,
            {"creator": to_base64("User", HOTTEST)}),
        Leaderboard("top creators, all time", in_session(
            lambda s: recognition.top_creators(s, Period.ALL, limit=10, offset=0)),
            in_session(aggregated_creators), "diamonds", CREATORS_QUERY, {}),
        Leaderboard("top gifters, hottest session", in_session(
            lambda s: recognition.top_gifters(s, HOTTEST, limit=10, offset=0)),
            in_session(aggregated_gifters), "coins", GIFTERS_QUERY,
            {"session": to_base64("LiveSession", HOTTEST)}),
    ]


async def load(runtime: Runtime, gifts: int) -> None:
    async with runtime.engine.begin() as connection:
        for statement in filter(str.strip, LOAD.split(";")):
            # Whole numbers of our own, formatted in: asyncpg cannot type bare parameters here.
            await connection.execute(text(statement.format(
                creators=CREATORS, viewers=VIEWERS, gifts=int(gifts))))
        for period, start in period_starts(datetime.now(UTC).date()).items():
            for statement in filter(str.strip, TOTALS.split(";")):
                await connection.execute(text(statement), {
                    "period": period, "day": start,
                    "start": datetime.combine(start, datetime.min.time(), tzinfo=UTC)})
        await connection.execute(text(
            "INSERT INTO session_gifter_total (session_id, sender_id, coins, diamonds, gifts) "
            "SELECT session_id, sender_id, sum(coins_paid), sum(creator_diamonds), count(*) "
            "FROM gift_send GROUP BY session_id, sender_id"))
    # Time the steady state, not the bulk load's aftermath: no autovacuum or checkpoint
    # (of this load or the last run's) competing with the queries.
    async with runtime.engine.connect() as connection:
        connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("VACUUM ANALYZE"))
        await connection.execute(text("CHECKPOINT"))


async def latencies_ms(work: Callable[[], Awaitable[object]], repeat: int) -> list[float]:
    """Milliseconds of ``repeat`` sequential runs, after a few to warm caches, plans, pools."""
    for _ in range(10):
        await work()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await work()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def measure(gifts: int, repeat: int) -> dict[str, dict[str, list[float]]]:
    """Samples by leaderboard and way of asking, at one size."""
    runtime = await fresh_runtime()
    started = time.perf_counter()
    await load(runtime, gifts)
    print(f"loaded {gifts:,} gifts to {CREATORS:,} creators from {VIEWERS:,} viewers "
          f"in {time.perf_counter() - started:.1f} s", flush=True)
    boards = leaderboards(runtime)
    samples: dict[str, dict[str, list[float]]] = {board.name: {} for board in boards}
    for board in boards:
        maintained, aggregated = await board.served(), await board.aggregated()
        assert [getattr(r, board.ranks) for r in maintained] == \
            [getattr(r, board.ranks) for r in aggregated], f"{board.name}: totals disagree"
        samples[board.name]["service"] = await latencies_ms(board.served, repeat)
        samples[board.name]["GROUP BY"] = await latencies_ms(board.aggregated, BASELINE_REPEAT)
    await runtime.close()

    server = Server(workers=1, port=free_port())
    token = mint_token(Settings(jwt_secret=JWT_SECRET), "leaderboard-reader", [Role.VIEWER])
    try:
        server.wait()
        async with httpx.AsyncClient(headers={"authorization": f"Bearer {token}"}) as client:
            for board in boards:
                async def ask(board: Leaderboard = board) -> None:
                    reply = await client.post(server.url, json={
                        "query": board.graphql, "variables": board.variables})
                    body = reply.json()
                    assert reply.status_code == 200 and not body.get("errors"), body
                samples[board.name]["GraphQL over HTTP"] = await latencies_ms(ask, repeat)
    finally:
        server.stop()
    return samples


async def main(sizes: list[int], repeat: int) -> None:
    by_size = {gifts: await measure(gifts, repeat) for gifts in sizes}
    smallest, largest = sizes[0], sizes[-1]
    print(f"\nms, sequential requests: p50 / p99 of {repeat} runs; GROUP BY p50 of "
          f"{BASELINE_REPEAT}; PostgreSQL, {os.cpu_count()} cores shared with other work")
    print(f"{'':<42}" + "".join(f"{f'{n:,} gifts':>18}" for n in sizes)
          + f"{f'p99 {largest:,}/{smallest:,}':>22}")
    for name in by_size[smallest]:
        print(name)
        for way in ("service", "GraphQL over HTTP"):
            runs = [by_size[n][name][way] for n in sizes]
            print(f"  {way:<40}" + "".join(f"{f'{p50(s):.2f} / {p99(s):.2f}':>18}" for s in runs)
                  + f"{p99(runs[-1]) / p99(runs[0]):>21.2f}x")
        service = [p50(by_size[n][name]["service"]) for n in sizes]
        baseline = [p50(by_size[n][name]["GROUP BY"]) for n in sizes]
        print(f"  {'GROUP BY p50 (speed-up over service p50)':<40}" + "".join(
            f"{f'{b:.2f} ({b / s:.0f}x)':>18}" for b, s in zip(baseline, service, strict=True)))
    worst = max(p99(ways[way]) for runs in by_size.values() for ways in runs.values()
                for way in ("service", "GraphQL over HTTP"))
    print("target: p99 under 20 ms and flat from 10 thousand to 1 million gifts")
    print(f"measured: worst p99 of any query, any size: {worst:.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="gift counts, comma-separated, smallest first")
    parser.add_argument("--repeat", type=int, default=300)
    arguments = parser.parse_args()
    asyncio.run(main(sorted(int(n) for n in arguments.sizes.split(",")), arguments.repeat))
