"""``livegifts seed`` at scale, run as a user runs it: a real process per call, on SQLite and
PostgreSQL. The data set must keep the books, agree with the leaderboards, be skewed like real
traffic, repeat exactly for a random seed, and refuse bad options without writing anything."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine

from app.models import GiftSend
from app.runtime import Runtime
from app.services import recognition
from app.services.gifting import send_gift
from app.services.recognition import Period
from tests.conftest import fresh_database
from tests.support import settings_for, snapshot
from tests.test_cli import livegifts

CREATORS, VIEWERS, GIFTS = 40, 1_500, 20_000
SCALE = ["--creators", str(CREATORS), "--viewers", str(VIEWERS), "--gifts", str(GIFTS),
         "--random-seed", "3"]


def seed(database_url: str, *args: str) -> None:
    done = livegifts(database_url, "seed", *args)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no progress unless asked for: stderr is not a terminal here


async def query(database_url: str, sql: str) -> list[Any]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            return list((await connection.execute(text(sql))).all())
    finally:
        await engine.dispose()


@pytest.fixture
def seeded(database_url: str) -> str:
    seed(database_url, *SCALE)
    return database_url


async def test_seeded_books_pass_the_audit_with_the_counts_asked_for(seeded):
    audited = livegifts(seeded, "audit")
    assert audited.returncode == 0 and "audit passed" in audited.stdout, audited.stderr

    [(creators, viewers)] = await query(seeded, """
        SELECT sum(CASE WHEN name LIKE 'seed-creator-%' THEN 1 ELSE 0 END),
               sum(CASE WHEN name LIKE 'seed-viewer-%' THEN 1 ELSE 0 END) FROM app_user""")
    assert (creators, viewers) == (CREATORS, VIEWERS)
    assert (await query(seeded, "SELECT count(*) FROM gift_send"))[0][0] == GIFTS
    sessions = dict(await query(seeded, """
        SELECT status, count(*) FROM live_session JOIN app_user ON app_user.id = creator_id
        WHERE name LIKE 'seed-%' GROUP BY status"""))
    assert sum(sessions.values()) == 4 * CREATORS  # the default: four per creator
    assert sessions["live"] >= 1 and sessions["ended"] >= 1

    # Every gift's transaction moved exactly its receipt: coins out of the sender's wallet,
    # its diamonds into the creator's earnings.
    [(mismatched,)] = await query(seeded, """
        SELECT count(*) FROM gift_send g
        JOIN ledger_account w ON w.code = 'user:' || g.sender_id || '\\:wallet'
        JOIN ledger_account d ON d.code = 'user:' || g.creator_id || '\\:earnings'
        WHERE (SELECT coalesce(sum(amount), 0) FROM ledger_entry e
               WHERE e.transaction_id = g.transaction_id AND e.account_id = w.id)
              <> -g.coins_paid
           OR (SELECT coalesce(sum(amount), 0) FROM ledger_entry e
               WHERE e.transaction_id = g.transaction_id AND e.account_id = d.id)
              <> g.creator_diamonds""")
    assert mismatched == 0

    # Combos: a combo's count is the sum of its sends, and some combos have many sends.
    combos = await query(seeded, """
        SELECT c.count, c.sends, sum(g.quantity), count(g.id), max(g.combo_count)
        FROM gift_combo c JOIN gift_send g ON g.combo_id = c.id GROUP BY c.id, c.count, c.sends""")
    assert all(count == quantity == top and sends == rows
               for count, sends, quantity, rows, top in combos)
    assert max(sends for _, sends, *_ in combos) >= 5

    # Viewers bought their coins before their first gift, and some bought without gifting.
    [(late,)] = await query(seeded, """
        SELECT count(*) FROM (SELECT sender_id, min(created_at) AS first FROM gift_send
                              GROUP BY sender_id) s
        WHERE NOT EXISTS (SELECT 1 FROM coin_purchase p
                          WHERE p.user_id = s.sender_id AND p.created_at < s.first)""")
    assert late == 0
    [(idle_buyers,)] = await query(seeded, """
        SELECT count(DISTINCT user_id) FROM coin_purchase p WHERE provider_transaction_id
        LIKE 'seed-%' AND NOT EXISTS (SELECT 1 FROM gift_send g WHERE g.sender_id = p.user_id)""")
    assert idle_buyers > 0


async def test_gifts_are_skewed_priced_and_spread_like_real_traffic(seeded):
    per_creator = [n for (n,) in await query(
        seeded, "SELECT count(*) FROM gift_send GROUP BY creator_id ORDER BY 1 DESC")]
    assert per_creator[0] > 0.15 * GIFTS, f"top creator got only {per_creator[0]} gifts"
    assert sum(per_creator[:CREATORS // 10]) > GIFTS / 2  # the top tenth get most gifts
    per_viewer = [n for (n,) in await query(
        seeded, "SELECT count(*) FROM gift_send GROUP BY sender_id ORDER BY 1 DESC")]
    assert per_viewer[0] > 20 * GIFTS / VIEWERS  # whales
    prices = dict(await query(seeded, "SELECT unit_price, count(*) FROM gift_send GROUP BY 1"))
    assert len(prices) >= 6 and prices[1] > prices[max(prices)]  # cheap gifts are common
    days = {at.date() if hasattr(at, "date") else at[:10] for (at,) in await query(
        seeded, "SELECT created_at FROM gift_send")}
    assert len(days) >= 14


def periods_of(day: date) -> dict[str, date]:
    """The first day of each leaderboard period containing ``day``, worked out here, not by
    the product's code: the ISO week (from Monday) by the calendar, the month's first day,
    all time from 1970-01-01."""
    year, week, _ = day.isocalendar()
    return {"day": day, "week": date.fromisocalendar(year, week, 1),
            "month": date(day.year, day.month, 1), "all": date(1970, 1, 1)}


def expected_totals(sends: list[Any]) -> dict[str, Counter[tuple[Any, ...]]]:
    """The totals sendGift should have maintained, by the documented periods."""
    totals: dict[str, Counter[tuple[Any, ...]]] = defaultdict(Counter)
    for session_id, sender, creator, coins, diamonds, quantity, at in sends:
        for period, start in periods_of(at.date()).items():
            for name, key in [("supporter", (creator, period, start, sender)),
                              ("creator", (period, start, creator))]:
                for column, amount in [("coins", coins), ("diamonds", diamonds),
                                       ("gifts", quantity)]:
                    totals[name][(*key, column)] += amount
        for column, amount in [("coins", coins), ("diamonds", diamonds), ("gifts", quantity)]:
            totals["session"][(session_id, sender, column)] += amount
    return totals


def stored_totals(rows: list[Any]) -> Counter[tuple[Any, ...]]:
    stored: Counter[tuple[Any, ...]] = Counter()
    for row in rows:
        *key, coins, diamonds, gifts = row
        key = [date_of(k) for k in key]
        for column, amount in [("coins", coins), ("diamonds", diamonds), ("gifts", gifts)]:
            stored[(*key, column)] += amount
    return stored


def date_of(value: Any) -> Any:
    """Dates come back from raw SQL as text on SQLite."""
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\d", value):
        return date.fromisoformat(value)
    return value


async def test_leaderboards_agree_with_the_gift_receipts(seeded):
    runtime = Runtime.build(settings_for(seeded))
    try:
        async with runtime.sessions() as session:
            sends = [(s.session_id, s.sender_id, s.creator_id, s.coins_paid + s.brand_subsidy,
                      s.creator_diamonds, s.quantity, s.created_at)
                     for s in (await session.scalars(select(GiftSend))).all()]
        expected = expected_totals(sends)
        supporters = await query(seeded, "SELECT creator_id, period, period_start, sender_id, "
                                         "coins, diamonds, gifts FROM supporter_total")
        creators = await query(seeded, "SELECT period, period_start, creator_id, coins, "
                                       "diamonds, gifts FROM creator_total")
        gifters = await query(seeded, "SELECT session_id, sender_id, coins, diamonds, gifts "
                                      "FROM session_gifter_total")
        assert stored_totals(supporters) == expected["supporter"]
        assert stored_totals(creators) == expected["creator"]
        assert stored_totals(gifters) == expected["session"]
        async with runtime.sessions() as session:
            paid = (await session.execute(select(GiftSend.sender_id, GiftSend.coins_paid,
                                                 GiftSend.created_at))).all()
        spend: Counter[tuple[Any, ...]] = Counter()
        for sender, coins, at in paid:  # what spending caps count, by the rule in safeguards
            spend[(sender, "day", at.date())] += coins
            spend[(sender, "month", at.date().replace(day=1))] += coins
        stored_spend = await query(seeded, "SELECT sender_id, period, period_start, coins "
                                           "FROM viewer_spend")
        assert Counter({(sender, period, date_of(start)): coins
                        for sender, period, start, coins in stored_spend}) == spend

        # The leaderboards served, for the current periods, against GROUP BY over the gifts.
        hottest = max(Counter(creator for _, _, creator, *_ in sends).items(),
                      key=lambda item: item[1])[0]
        async with runtime.sessions() as session:
            today = datetime.now(UTC).date()
            for period in Period:
                start = periods_of(today)[period.value]
                coins: Counter[int] = Counter()
                diamonds: Counter[int] = Counter()
                for _, sender, creator, value, earned, _, at in sends:
                    if at.date() >= start:
                        diamonds[creator] += earned
                        if creator == hottest:
                            coins[sender] += value
                served = await recognition.top_supporters(session, hottest, period, limit=10,
                                                          offset=0)
                assert [(r.user_id, r.coins) for r in served] == sorted(
                    coins.items(), key=lambda item: (item[1], item[0]), reverse=True)[:10]
                served = await recognition.top_creators(session, period, limit=10, offset=0)
                assert [(r.user_id, r.diamonds) for r in served] == sorted(
                    diamonds.items(), key=lambda item: (item[1], item[0]), reverse=True)[:10]
    finally:
        await runtime.close()


async def test_seeded_data_takes_real_gifts_afterwards(seeded):
    """Ids and sequences are consistent: the API writes new rows next to the seeded ones."""
    [(viewer, session_id, gift_id)] = await query(seeded, """
        SELECT (SELECT id FROM app_user WHERE name = 'seed-viewer-1'),
               (SELECT min(id) FROM live_session WHERE status = 'live' AND creator_id IN
                   (SELECT id FROM app_user WHERE name LIKE 'seed-creator-%')),
               (SELECT id FROM gift WHERE sku = 'rose')""")
    before = await snapshot(seeded)
    runtime = Runtime.build(settings_for(seeded))
    try:
        result = await send_gift(runtime.sessions, runtime.relay, sender_id=viewer,
                                 session_id=session_id, gift_id=gift_id, quantity=1,
                                 idempotency_key="after-seed", combo_window=runtime.combo_window,
                                 settings=runtime.settings)
    finally:
        await runtime.close()
    assert result.receipt.id == before["rows"]["gift_send"] + 1
    audited = livegifts(seeded, "audit")
    assert audited.returncode == 0, audited.stderr


async def test_the_same_random_seed_gives_the_same_data(request, tmp_path: Path):
    options = ["--creators", "12", "--viewers", "300", "--gifts", "3000",
               "--until", "2026-03-01T12:00:00"]
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    urls = [fresh_database("sqlite", request, tmp_path / name) for name in ("a", "b", "c")]
    for url, random_seed in zip(urls, ["5", "5", "6"], strict=True):
        seed(url, *options, "--random-seed", random_seed)

    async def content(url: str) -> list[list[Any]]:
        return [await query(url, sql) for sql in [
            "SELECT * FROM gift_send ORDER BY id",
            "SELECT * FROM gift_combo ORDER BY id",
            "SELECT * FROM live_session WHERE title LIKE 'seed-%' ORDER BY id",
            "SELECT p.*, t.digest FROM coin_purchase p JOIN ledger_transaction t "
            "ON t.id = p.transaction_id WHERE provider_transaction_id LIKE 'seed-%' ORDER BY p.id",
            "SELECT t.* FROM ledger_transaction t JOIN gift_send g ON g.transaction_id = t.id "
            "ORDER BY t.id",
            "SELECT code, balance FROM ledger_account WHERE code LIKE 'user:%' ORDER BY code",
        ]]

    first, again, other = [await content(url) for url in urls]
    assert len(first[0]) == 3000
    assert first == again
    assert first[0] != other[0]


def test_progress_shows_on_stderr_only_when_asked(tmp_path: Path, request):
    url = fresh_database("sqlite", request, tmp_path)
    quiet = livegifts(url, "seed", "--creators", "3", "--viewers", "20", "--gifts", "200")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout.startswith("demo data is in place\nseeded 3 creators, 20 viewers")

    shown = livegifts(url, "audit", "--progress")
    assert shown.returncode == 0 and "audit passed" in shown.stdout
    assert "balanced transactions" in shown.stderr and "accounts" in shown.stderr
    assert "balanced transactions" not in shown.stdout
    quiet = livegifts(url, "audit")
    assert quiet.returncode == 0 and quiet.stderr == ""

    (tmp_path / "other").mkdir()
    other = fresh_database("sqlite", request, tmp_path / "other")
    shown = livegifts(other, "seed", "--creators", "3", "--viewers", "20", "--gifts", "200",
                      "--progress")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"gifts\s+\S+\s+200/200", shown.stderr), shown.stderr
    assert "coin purchases" in shown.stderr and "gifts" not in shown.stdout.split("\n")[0]


@pytest.mark.parametrize("args, message", [
    (["--gifts", "-5"], "Invalid value for '--gifts': -5 is not in the range x>=0."),
    (["--creators", "-1"], "Invalid value for '--creators': -1 is not in the range x>=0."),
    (["--creators", "3", "--gifts", "100"], "--gifts needs viewers to send them (--viewers)"),
    (["--viewers", "3", "--gifts", "100"],
     "--gifts needs live sessions to send them in (--creators, --sessions)"),
    (["--creators", "2", "--sessions", "0", "--viewers", "3", "--gifts", "10"],
     "--gifts needs live sessions to send them in (--creators, --sessions)"),
    (["--sessions", "3"], "--sessions needs creators to host them (--creators)"),
    (["--days", "0"], "Invalid value for '--days': 0 is not in the range x>=1."),
    (["--creators", "1", "--until", "2999-01-01"], "--until cannot be in the future"),
])
async def test_bad_options_are_refused_and_change_nothing(database_url, args, message):
    seed(database_url)
    before = await snapshot(database_url)
    refused = livegifts(database_url, "seed", *args)
    assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    assert await snapshot(database_url) == before


async def test_a_second_data_set_is_refused_and_changes_nothing(seeded):
    before = await snapshot(seeded)
    refused = livegifts(seeded, "seed", "--creators", "1", "--viewers", "1", "--gifts", "1")
    assert refused.returncode == 1
    assert ("this database already holds a seeded data set (user 'seed-creator-1' exists); "
            "seed an empty database instead") in refused.stderr
    assert await snapshot(seeded) == before
