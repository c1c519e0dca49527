"""Writing a drawn :class:`~app.seeding.plan.Plan` into the database in bulk, in one transaction.

Every gift becomes exactly the rows ``sendGift`` writes: a balanced ledger transaction with
its digest (viewer's coins out, the creator's share as diamonds, the remainder to the
platform, split by :func:`app.services.rates.split_gift` with the rate card in force at the
time), its entries, a ``gift_send`` receipt and its combo. Coin purchases are the rows
``purchaseCoins`` writes. Rows go in with ``COPY`` on PostgreSQL and batched
``executemany`` on SQLite; leaderboard totals and cached balances are then computed by SQL
from the rows just written, so they agree with them by construction.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.ledger import Currency, journal, system_account
from app.models import (
    Account,
    CoinPackage,
    Gift,
    GiftCombo,
    GiftSend,
    LedgerTransaction,
    LiveSession,
    Profile,
    Purchase,
    RateCard,
    User,
)
from app.models import Entry as LedgerEntry
from app.runtime import Runtime
from app.seeding.plan import DAY_US, Plan, ScaleOptions, draw_plan, to_datetime
from app.services.gifting import ALL_TIME
from app.services.rates import GiftSplit, split_gift
from app.services.users import EARNINGS, WALLET

Report = Callable[[str, int, int], None]  # (step, done, total)

CHUNK = 20_000  # gifts written per round trip
PROVIDER = "sandbox"
# Tables whose ids the seed assigns itself; locked on PostgreSQL so nothing else takes one.
ID_TABLES = (User, Account, LiveSession, LedgerTransaction, Purchase, GiftCombo, GiftSend)
PERIOD_STARTS = {
    "postgresql": {"day": "CAST(created_at AT TIME ZONE 'UTC' AS date)",
                   "week": "CAST(date_trunc('week', created_at AT TIME ZONE 'UTC') AS date)",
                   "month": "CAST(date_trunc('month', created_at AT TIME ZONE 'UTC') AS date)",
                   "all": f"DATE '{ALL_TIME.isoformat()}'"},
    "sqlite": {"day": "date(created_at)",
               "week": "date(created_at, 'weekday 0', '-6 days')",  # ISO weeks start Monday
               "month": "date(created_at, 'start of month')",
               "all": f"'{ALL_TIME.isoformat()}'"},
}
SUPPORTER_TOTALS = """
INSERT INTO supporter_total (creator_id, period, period_start, sender_id, coins, diamonds, gifts)
SELECT creator_id, '{period}', {start}, sender_id, sum(coins_paid + brand_subsidy),
       sum(creator_diamonds), sum(quantity)
FROM gift_send WHERE id BETWEEN :first AND :last GROUP BY 1, 3, 4"""
CREATOR_TOTALS = """
INSERT INTO creator_total (period, period_start, creator_id, diamonds, coins, gifts)
SELECT '{period}', {start}, creator_id, sum(creator_diamonds), sum(coins_paid + brand_subsidy),
       sum(quantity)
FROM gift_send WHERE id BETWEEN :first AND :last GROUP BY 2, 3"""
SESSION_TOTALS = """
INSERT INTO session_gifter_total (session_id, sender_id, coins, diamonds, gifts)
SELECT session_id, sender_id, sum(coins_paid + brand_subsidy), sum(creator_diamonds),
       sum(quantity)
FROM gift_send WHERE id BETWEEN :first AND :last GROUP BY 1, 2"""
VIEWER_SPEND = """
INSERT INTO viewer_spend (sender_id, period, period_start, coins)
SELECT sender_id, '{period}', {start}, sum(coins_paid)
FROM gift_send WHERE id BETWEEN :first AND :last GROUP BY 1, 3"""
BALANCES = """
UPDATE ledger_account SET balance = (
    SELECT coalesce(sum(amount), 0) FROM ledger_entry WHERE account_id = ledger_account.id)
WHERE id BETWEEN :first AND :last"""


class SeedRefused(Exception):
    """The database cannot take this data set; nothing was written."""


@dataclass(frozen=True, slots=True)
class ScaleSummary:
    creators: int
    viewers: int
    sessions: int
    live_sessions: int
    gifts: int
    combos: int
    purchases: int


def creator_name(n: int) -> str:
    return f"seed-creator-{n + 1}"


def viewer_name(n: int) -> str:
    return f"seed-viewer-{n + 1}"


class _Writer:
    """Bulk inserts of rows given as tuples: COPY on PostgreSQL, executemany on SQLite."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection
        self.postgres = connection.dialect.name == "postgresql"

    async def write(self, model: Any, columns: Sequence[str], rows: list[tuple[Any, ...]]
                    ) -> None:
        if not rows:
            return
        if self.postgres:
            raw = (await self.connection.get_raw_connection()).driver_connection
            await raw.copy_records_to_table(model.__tablename__, records=rows,
                                            columns=list(columns))
            return
        for start in range(0, len(rows), 5_000):
            await self.connection.execute(insert(model.__table__),
                                          [dict(zip(columns, row, strict=True))
                                           for row in rows[start:start + 5_000]])

    async def next_id(self, model: Any) -> int:
        return (await self.connection.scalar(select(func.max(model.id))) or 0) + 1


async def seed_at_scale(runtime: Runtime, options: ScaleOptions, report: Report) -> ScaleSummary:
    """Add the data set ``options`` describe to a database holding the demo data."""
    until = options.until or datetime.now(UTC)
    async with runtime.sessions() as session, session.begin():
        connection = await session.connection()
        writer = _Writer(connection)
        if writer.postgres:
            tables = ", ".join(model.__tablename__ for model in ID_TABLES)
            await connection.execute(text(f"LOCK TABLE {tables} IN SHARE ROW EXCLUSIVE MODE"))
        taken = await session.scalar(select(User.name).where(
            User.name.in_([creator_name(0), viewer_name(0)])).limit(1))
        if taken is not None:
            raise SeedRefused(f"this database already holds a seeded data set (user {taken!r} "
                              "exists); seed an empty database instead")
        gifts = list((await session.scalars(
            select(Gift).where(Gift.plugin.is_(None), Gift.active, Gift.available_from.is_(None),
                               Gift.available_until.is_(None)).order_by(Gift.id))).all())
        packages = list((await session.scalars(
            select(CoinPackage).where(CoinPackage.active).order_by(CoinPackage.id))).all())
        if not gifts or not packages:
            raise SeedRefused("the catalogue needs at least one gift on sale at all times and "
                              "one coin package to seed gifts")
        cards = list((await session.scalars(
            select(RateCard).order_by(RateCard.effective_from, RateCard.version))).all())
        report("drawing the data set", 0, 1)
        plan = draw_plan(options, until, [g.coin_price for g in gifts],
                         [p.coins for p in packages])
        report("drawing the data set", 1, 1)
        loader = _Loader(session, writer, plan, options, gifts, packages, cards,
                         timedelta(seconds=runtime.settings.combo_window_seconds), report)
        await loader.load()
    return ScaleSummary(options.creators, options.viewers, len(plan.sessions),
                        plan.live_sessions, options.gifts, len(plan.bursts),
                        len(plan.purchases))


class _Loader:
    def __init__(self, session: AsyncSession, writer: _Writer, plan: Plan,
                 options: ScaleOptions, gifts: list[Gift], packages: list[CoinPackage],
                 cards: list[RateCard], combo_window: timedelta, report: Report) -> None:
        self.session, self.writer, self.plan, self.options = session, writer, plan, options
        self.gifts, self.packages, self.cards = gifts, packages, cards
        self.card_starts = [card.effective_from for card in cards]
        self.combo_window, self.report = combo_window, report
        self.splits: dict[tuple[int, int], GiftSplit] = {}
        # Filled as the rows are written: system account ids, the next free id per table,
        # and the ids given to the plan's users, accounts and sessions.
        self.system: dict[str, int] = {}
        self.next: dict[Any, int] = {}
        self.user_ids = self.session_ids = range(0)
        self.first_account = 0

    async def load(self) -> None:
        for name, currency in [("platform_revenue", Currency.COIN),
                               ("creator_earnings", Currency.COIN),
                               ("diamond_issuance", Currency.DIAMOND),
                               ("coin_issuance", Currency.COIN)]:
            self.system[name] = (await system_account(self.session, name, currency)).id
        for currency in sorted({p.currency for p in self.packages}):
            self.system[f"receivable:{currency}"] = (await system_account(
                self.session, f"receivable:{PROVIDER}", currency)).id
            self.system[f"sales:{currency}"] = (await system_account(
                self.session, "coin_sales", currency)).id
        for model in ID_TABLES:
            self.next[model] = await self.writer.next_id(model)
        await self._users()
        await self._sessions()
        await self._purchases()
        first_send = self.next[GiftSend]
        await self._gifts()
        await self._totals(first_send, self.next[GiftSend] - 1)
        self.report("cached balances", 0, 1)
        await self.session.execute(text(BALANCES), {"first": self.first_account,
                                                    "last": self.next[Account] - 1})
        self.report("cached balances", 1, 1)
        if self.writer.postgres:
            await self._advance_sequences()

    def _take(self, model: Any, count: int = 1) -> int:
        first = self.next[model]
        self.next[model] += count
        return first

    async def _users(self) -> None:
        creators, viewers = self.options.creators, self.options.viewers
        names = [creator_name(n) for n in range(creators)] + \
            [viewer_name(n) for n in range(viewers)]
        self.report("users", 0, len(names))
        first = self._take(User, len(names))
        self.user_ids = range(first, first + len(names))
        # Before the first purchase, which comes up to a day before the first gift.
        at = to_datetime(self.plan.until_us - (self.options.days + 2) * DAY_US)
        await self.writer.write(User, ("id", "name", "created_at"),
                                [(first + n, name, at) for n, name in enumerate(names)])
        await self.writer.write(Profile, ("user_id", "birthdate"),
                                [(first + n, born) for n, born in enumerate(self.plan.birthdates)])
        # Every user gets a coin wallet and a diamond earnings account, as on first sight.
        self.first_account = self._take(Account, 2 * len(names))
        rows = []
        for n, user_id in enumerate(self.user_ids):
            rows.append((self.first_account + 2 * n, f"user:{user_id}:{WALLET}",
                         Currency.COIN.value, user_id, True, True, 0, at))
            rows.append((self.first_account + 2 * n + 1, f"user:{user_id}:{EARNINGS}",
                         Currency.DIAMOND.value, user_id, True, True, 0, at))
        await self.writer.write(Account, ("id", "code", "currency", "owner_user_id", "cached",
                                          "limited", "balance", "created_at"), rows)
        self.report("users", len(names), len(names))

    def _wallet(self, viewer: int) -> int:
        return self.first_account + 2 * (self.options.creators + viewer)

    def _earnings(self, creator: int) -> int:
        return self.first_account + 2 * creator + 1

    async def _sessions(self) -> None:
        first = self._take(LiveSession, len(self.plan.sessions))
        self.session_ids = range(first, first + len(self.plan.sessions))
        hosted: dict[int, int] = {}
        rows = []
        for n, planned in enumerate(self.plan.sessions):
            hosted[planned.creator] = hosted.get(planned.creator, 0) + 1
            title = f"{creator_name(planned.creator)} live #{hosted[planned.creator]}"
            ended = None if planned.ended_us is None else to_datetime(planned.ended_us)
            rows.append((first + n, self.user_ids[planned.creator], title,
                         "ended" if ended else "live", to_datetime(planned.started_us), ended))
        await self.writer.write(LiveSession, ("id", "creator_id", "title", "status",
                                              "started_at", "ended_at"), rows)

    async def _purchases(self) -> None:
        total = len(self.plan.purchases)
        self.report("coin purchases", 0, total)
        for start in range(0, total, CHUNK):
            transactions, entries, purchases = [], [], []
            for planned in self.plan.purchases[start:start + CHUNK]:
                package = self.packages[planned.package]
                at = to_datetime(planned.at_us)
                transaction_id = self._take(LedgerTransaction)
                legs = [(self.system["coin_issuance"], Currency.COIN.value, -package.coins),
                        (self._wallet(planned.viewer), Currency.COIN.value, package.coins),
                        (self.system[f"receivable:{package.currency}"], package.currency,
                         package.price_minor),
                        (self.system[f"sales:{package.currency}"], package.currency,
                         -package.price_minor)]
                transactions.append((transaction_id, "coin_purchase", package.sku, at,
                                     journal.digest("coin_purchase", package.sku, None, at,
                                                    legs)))
                entries.extend((transaction_id, *leg) for leg in legs)
                user_id = self.user_ids[self.options.creators + planned.viewer]
                purchase_id = self._take(Purchase)
                purchases.append((purchase_id, user_id, package.id, PROVIDER,
                                  f"seed-{purchase_id}", package.coins, package.price_minor,
                                  package.currency, transaction_id, at))
            await self._write_ledger(transactions, entries)
            await self.writer.write(Purchase, (
                "id", "user_id", "package_id", "provider", "provider_transaction_id", "coins",
                "price_minor", "currency", "transaction_id", "created_at"), purchases)
            self.report("coin purchases", min(total, start + CHUNK), total)

    async def _write_ledger(self, transactions: list[tuple[Any, ...]],
                            entries: list[tuple[Any, ...]]) -> None:
        await self.writer.write(LedgerTransaction, ("id", "kind", "memo", "created_at",
                                                    "digest"), transactions)
        await self.writer.write(LedgerEntry, ("transaction_id", "account_id", "currency",
                                              "amount"), entries)

    def _split(self, value: int, at: datetime) -> tuple[RateCard, GiftSplit]:
        card = self.cards[bisect.bisect(self.card_starts, at) - 1]
        key = (value, card.version)
        if key not in self.splits:
            self.splits[key] = split_gift(value, card)
        return card, self.splits[key]

    async def _gifts(self) -> None:
        total, written = self.options.gifts, 0
        self.report("gifts", 0, total)
        rows: dict[str, list[tuple[Any, ...]]] = {"transactions": [], "entries": [],
                                                  "combos": [], "sends": []}
        until = to_datetime(self.plan.until_us)
        for burst in self.plan.bursts:
            planned = self.plan.sessions[burst.session]
            session_id = self.session_ids[burst.session]
            creator_id = self.user_ids[planned.creator]
            sender_id = self.user_ids[self.options.creators + burst.sender]
            gift = self.gifts[burst.gift]
            value = gift.coin_price * burst.quantity
            memo = f"{gift.sku} x{burst.quantity}"
            combo_id = self._take(GiftCombo)
            started = to_datetime(burst.start_us)
            at = started
            for send in range(burst.sends):
                at = to_datetime(burst.start_us + send * burst.gap_us)
                card, split = self._split(value, at)
                transaction_id = self._take(LedgerTransaction)
                legs = [leg for leg in [
                    (self._wallet(burst.sender), Currency.COIN.value, -split.coins_paid),
                    (self.system["platform_revenue"], Currency.COIN.value, split.platform_coins),
                    (self.system["creator_earnings"], Currency.COIN.value, split.creator_coins),
                    (self.system["diamond_issuance"], Currency.DIAMOND.value,
                     -split.creator_diamonds),
                    (self._earnings(planned.creator), Currency.DIAMOND.value,
                     split.creator_diamonds),
                ] if leg[2] != 0]
                rows["transactions"].append((transaction_id, "gift", memo, at,
                                             journal.digest("gift", memo, None, at, legs)))
                rows["entries"].extend((transaction_id, *leg) for leg in legs)
                rows["sends"].append((
                    self._take(GiftSend), session_id, gift.id, sender_id, creator_id,
                    burst.quantity, gift.coin_price, split.coins_paid, split.brand_subsidy,
                    split.creator_coins, split.platform_coins, split.brand_coins,
                    split.creator_diamonds, card.version, transaction_id, combo_id,
                    (send + 1) * burst.quantity, at))
            rows["combos"].append((combo_id, session_id, sender_id, gift.id,
                                   burst.sends * burst.quantity, burst.sends,
                                   burst.sends * value, started, at,
                                   min(at + self.combo_window, until)))
            if len(rows["sends"]) >= CHUNK:
                written += await self._write_gifts(rows)
                self.report("gifts", written, total)
        written += await self._write_gifts(rows)
        self.report("gifts", written, total)

    async def _write_gifts(self, rows: dict[str, list[tuple[Any, ...]]]) -> int:
        await self._write_ledger(rows["transactions"], rows["entries"])
        await self.writer.write(GiftCombo, (
            "id", "session_id", "sender_id", "gift_id", "count", "sends", "coins",
            "started_at", "last_at", "ended_at"), rows["combos"])
        await self.writer.write(GiftSend, (
            "id", "session_id", "gift_id", "sender_id", "creator_id", "quantity", "unit_price",
            "coins_paid", "brand_subsidy", "creator_coins", "platform_coins", "brand_coins",
            "creator_diamonds", "rate_card_version", "transaction_id", "combo_id",
            "combo_count", "created_at"), rows["sends"])
        written = len(rows["sends"])
        for kept in rows.values():
            kept.clear()
        return written

    async def _totals(self, first: int, last: int) -> None:
        """The totals sendGift maintains (leaderboards, viewers' spending), summed from the
        receipts just written."""
        starts = PERIOD_STARTS[self.writer.connection.dialect.name]
        statements = [template.format(period=period, start=start)
                      for period, start in starts.items()
                      for template in (SUPPORTER_TOTALS, CREATOR_TOTALS)] + [SESSION_TOTALS] + \
            [VIEWER_SPEND.format(period=period, start=starts[period])
             for period in ("day", "month")]
        for done, statement in enumerate(statements):
            self.report("leaderboard totals", done, len(statements))
            await self.session.execute(text(statement), {"first": first, "last": last})
        self.report("leaderboard totals", len(statements), len(statements))

    async def _advance_sequences(self) -> None:
        """Ids were assigned here, so move each table's sequence past them; then refresh the
        planner's statistics, which a bulk load leaves stale."""
        for model in ID_TABLES:
            table = model.__tablename__
            await self.session.execute(text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"))
        await self.session.execute(text("ANALYZE"))
