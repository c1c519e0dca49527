"""Statements: what a viewer bought, gave and got back in a month; what a creator earned;
what a brand earned from its revenue share and was settled.

Each statement is a list of :class:`Line` per section, ready for GraphQL and for CSV.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import total
from app.errors import DomainError, ErrorCode
from app.models import (
    Account,
    Brand,
    Clawback,
    CoinPackage,
    Entry,
    Gift,
    GiftSend,
    LedgerTransaction,
    LiveSession,
    Purchase,
    PurchaseReversal,
    User,
)
from app.services.brands import REVENUE, brand_code

MAX_RANGE_DAYS = 366


@dataclass(frozen=True, slots=True)
class Line:
    section: str
    label: str
    count: int
    coins: int = 0
    diamonds: int = 0
    money_minor: int = 0
    currency: str = ""
    at: datetime | None = None


@dataclass
class Statement:
    title: str
    start: date
    end: date  # exclusive
    lines: list[Line] = field(default_factory=list)

    def section(self, name: str) -> list[Line]:
        return [line for line in self.lines if line.section == name]

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["section", "label", "count", "coins", "diamonds", "money_minor",
                         "currency", "at"])
        for line in self.lines:
            writer.writerow([line.section, line.label, line.count, line.coins, line.diamonds,
                             line.money_minor, line.currency,
                             line.at.isoformat() if line.at else ""])
        return out.getvalue()


def parse_month(month: str) -> tuple[date, date]:
    try:
        start = datetime.strptime(month, "%Y-%m").date()
        if start.year >= 9999:
            raise ValueError(month)
    except ValueError:
        raise DomainError(ErrorCode.INVALID_INPUT, "month must look like 2026-11.",
                          "month") from None
    end = date(start.year + (start.month == 12), start.month % 12 + 1, 1)
    return start, end


def check_range(start: date, end: date) -> None:
    if not start < end or (end - start).days > MAX_RANGE_DAYS:
        raise DomainError(ErrorCode.INVALID_INPUT, f"from must be before to, at most "
                          f"{MAX_RANGE_DAYS} days apart.", "from")


def day_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    return (datetime.combine(start, datetime.min.time(), tzinfo=UTC),
            datetime.combine(end, datetime.min.time(), tzinfo=UTC))


async def viewer_statement(session: AsyncSession, user_id: int, month: str) -> Statement:
    start, end = parse_month(month)
    since, until = day_bounds(start, end)
    statement = Statement(f"Statement for {month}", start, end)
    purchases = await session.execute(
        select(Purchase, CoinPackage.name).join(CoinPackage, CoinPackage.id == Purchase.package_id)
        .where(Purchase.user_id == user_id, Purchase.created_at >= since,
               Purchase.created_at < until).order_by(Purchase.id))
    for purchase, name in purchases:
        statement.lines.append(Line("purchase", name, 1, coins=purchase.coins,
                                    money_minor=purchase.price_minor,
                                    currency=purchase.currency, at=purchase.created_at))
    gifts = await session.execute(
        select(User.name, func.count(GiftSend.id), total(GiftSend.coins_paid))
        .join(User, User.id == GiftSend.creator_id)
        .where(GiftSend.sender_id == user_id, GiftSend.created_at >= since,
               GiftSend.created_at < until).group_by(User.name).order_by(User.name))
    for creator, sends, coins in gifts:
        statement.lines.append(Line("gifts to creator", creator, sends, coins=coins))
    refunds = await session.execute(
        select(PurchaseReversal, Purchase).join(Purchase, Purchase.id ==
                                                PurchaseReversal.purchase_id)
        .where(Purchase.user_id == user_id, PurchaseReversal.created_at >= since,
               PurchaseReversal.created_at < until).order_by(PurchaseReversal.id))
    for reversal, purchase in refunds:
        statement.lines.append(Line(reversal.kind, f"{purchase.coins} coins bought "
                                    f"{purchase.created_at:%Y-%m-%d}: {reversal.coins_removed}"
                                    f" removed, {reversal.debt_recorded} owed", 1,
                                    coins=-purchase.coins, money_minor=-purchase.price_minor,
                                    currency=purchase.currency, at=reversal.created_at))
    return statement


async def creator_earnings(session: AsyncSession, creator_id: int, start: date,
                           end: date | None = None) -> Statement:
    """Earnings from ``start`` up to ``end`` (exclusive; by default through today, UTC)."""
    end = end or datetime.now(UTC).date() + timedelta(days=1)
    check_range(start, end)
    since, until = day_bounds(start, end)
    statement = Statement(f"Earnings {start} to {end}", start, end)
    window = (GiftSend.creator_id == creator_id, GiftSend.created_at >= since,
              GiftSend.created_at < until)
    measures = (func.count(GiftSend.id), total(GiftSend.coins_paid + GiftSend.brand_subsidy),
                total(GiftSend.creator_diamonds))
    groups = [
        ("session", select(LiveSession.title, *measures)
         .join(LiveSession, LiveSession.id == GiftSend.session_id).group_by(LiveSession.title)),
        ("gift", select(Gift.name, *measures).join(Gift, Gift.id == GiftSend.gift_id)
         .group_by(Gift.name)),
        ("brand", select(func.coalesce(Brand.name, "(not sponsored)"), *measures)
         .join(Gift, Gift.id == GiftSend.gift_id).outerjoin(Brand, Brand.id == Gift.brand_id)
         .group_by(Brand.name)),
        ("day", select(func.date(GiftSend.created_at), *measures)
         .group_by(func.date(GiftSend.created_at))),
    ]
    for section, query in groups:
        for label, sends, coins, diamonds in await session.execute(
                query.where(*window).order_by(query.selected_columns[0])):
            statement.lines.append(Line(f"by {section}", str(label), sends, coins=coins,
                                        diamonds=diamonds))
    clawbacks = await session.execute(
        select(Clawback).where(Clawback.creator_id == creator_id, Clawback.created_at >= since,
                               Clawback.created_at < until).order_by(Clawback.id))
    for clawback in clawbacks.scalars():
        statement.lines.append(Line("clawback", clawback.reason, 1, diamonds=-clawback.diamonds,
                                    at=clawback.created_at))
    return statement


BRAND_SECTIONS = {"gift": "earned", "brand_settlement": "settled",
                  "brand_payout_hold": "paid out", "brand_payout_failed": "payout returned"}


async def brand_statement(session: AsyncSession, slug: str, month: str) -> Statement:
    """A brand's revenue for a month, from its ledger account: the opening balance, each
    day's revenue share earned, settled against the budget, paid out (held for the payout
    provider) and returned (a payout that failed), the closing balance."""
    start, end = parse_month(month)
    since, until = day_bounds(start, end)
    account = await session.scalar(select(Account.id).where(
        Account.code == brand_code(slug, REVENUE)))
    statement = Statement(f"Revenue of {slug} for {month}", start, end)
    moved = select(func.count(Entry.id), total(Entry.amount)).join(
        LedgerTransaction, LedgerTransaction.id == Entry.transaction_id).where(
        Entry.account_id == account)
    opening = (await session.execute(moved.where(LedgerTransaction.created_at < since))).one()
    statement.lines.append(Line("balance", "opening", 0, coins=opening[1]))
    day = func.date(LedgerTransaction.created_at)
    rows = await session.execute(
        moved.add_columns(day, LedgerTransaction.kind)
        .where(LedgerTransaction.created_at >= since, LedgerTransaction.created_at < until)
        .group_by(day, LedgerTransaction.kind)
        .order_by(day, func.min(LedgerTransaction.id)))  # each day's kinds as they came
    closing = opening[1]
    for count, coins, when, kind in rows:
        closing += coins
        statement.lines.append(Line(BRAND_SECTIONS.get(kind, kind), str(when), count,
                                    coins=coins))
    statement.lines.append(Line("balance", "closing", 0, coins=closing))
    return statement


async def clawbacks_of(session: AsyncSession, creator_id: int, *, limit: int,
                       before_id: int | None) -> list[Clawback]:
    query = select(Clawback).where(Clawback.creator_id == creator_id) \
        .order_by(Clawback.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(Clawback.id < before_id)
    return list((await session.scalars(query)).all())
