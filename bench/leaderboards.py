"""Leaderboards at a million gifts: maintained totals against aggregating the gifts each time.

    .venv/bin/python -m bench.leaderboards [--gifts 1000000]

Loads N gift rows (popularity skewed towards a few creators) into a scratch
PostgreSQL database, builds the totals that sendGift maintains, then times the
leaderboard queries livegifts serves against the same ranking computed with
GROUP BY over the gift rows (indexed), and checks both agree.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime

from sqlalchemy import func, select, text

from app.models import GiftSend, User
from app.services import recognition
from app.services.gifting import period_starts
from app.services.recognition import Period
from bench.common import fresh_runtime, median_ms

CREATORS, VIEWERS = 1_000, 50_000

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


async def main(gifts: int, repeat: int) -> None:
    runtime = await fresh_runtime()
    started = time.perf_counter()
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
    async with runtime.engine.connect() as connection:
        await connection.execute(text("ANALYZE"))
    print(f"loaded {gifts:,} gifts to {CREATORS:,} creators from {VIEWERS:,} viewers "
          f"in {time.perf_counter() - started:.1f} s")

    month_start = datetime.combine(period_starts(datetime.now(UTC).date())["month"],
                                   datetime.min.time(), tzinfo=UTC)
    hottest = 1  # the skew puts most gifts on creator 1

    async def maintained_supporters():
        async with runtime.sessions() as session:
            return await recognition.top_supporters(session, hottest, Period.MONTH, limit=10,
                                                    offset=0)

    async def aggregated_supporters():
        async with runtime.sessions() as session:
            return (await session.execute(
                select(GiftSend.sender_id, User.name, func.sum(GiftSend.coins_paid).label("c"))
                .join(User, User.id == GiftSend.sender_id)
                .where(GiftSend.creator_id == hottest, GiftSend.created_at >= month_start)
                .group_by(GiftSend.sender_id, User.name)
                .order_by(text("c DESC"), GiftSend.sender_id.desc()).limit(10))).all()

    async def maintained_creators():
        async with runtime.sessions() as session:
            return await recognition.top_creators(session, Period.ALL, limit=10, offset=0)

    async def aggregated_creators():
        async with runtime.sessions() as session:
            return (await session.execute(
                select(GiftSend.creator_id, func.sum(GiftSend.creator_diamonds).label("d"))
                .group_by(GiftSend.creator_id).order_by(text("d DESC"), GiftSend.creator_id.desc())
                .limit(10))).all()

    async def maintained_gifters():
        async with runtime.sessions() as session:
            return await recognition.top_gifters(session, hottest, limit=10, offset=0)

    async def aggregated_gifters():
        async with runtime.sessions() as session:
            return (await session.execute(
                select(GiftSend.sender_id, func.sum(GiftSend.coins_paid).label("c"))
                .where(GiftSend.session_id == hottest).group_by(GiftSend.sender_id)
                .order_by(text("c DESC"), GiftSend.sender_id.desc()).limit(10))).all()

    assert [r.coins for r in await maintained_supporters()] == \
        [r.c for r in await aggregated_supporters()]
    assert [r.diamonds for r in await maintained_creators()] == \
        [r.d for r in await aggregated_creators()]
    assert [r.coins for r in await maintained_gifters()] == \
        [r.c for r in await aggregated_gifters()]

    print(f"{'query':<42}{'maintained':>12}{'GROUP BY':>12}{'speed-up':>10}")
    for name, fast, slow in [
        ("top supporters, hottest creator, month", maintained_supporters, aggregated_supporters),
        ("top creators, all time", maintained_creators, aggregated_creators),
        ("top gifters, hottest session", maintained_gifters, aggregated_gifters),
    ]:
        quick, baseline = await median_ms(fast, repeat), await median_ms(slow, repeat)
        print(f"{name:<42}{quick:>10.2f}ms{baseline:>10.2f}ms{baseline / quick:>9.0f}x")
    await runtime.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gifts", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.gifts, arguments.repeat))
