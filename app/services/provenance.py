"""Every ledger transaction has a source record, and moves what that record says.

A coin purchase is posted for a ``coin_purchase`` row (with the store's transaction id), a
gift for its receipt, a payout's hold and settlement for the payout, a refund or
chargeback for its reversal, a clawback for its clawback row, a brand's funding or
settlement for its brand transfer. This module re-derives from each record alone the
legs its service posted, and :func:`check` names every transaction in a range of ids that
has no source, more than one, a source of another kind, another transaction reversed, or
other amounts on other accounts. So a transaction inserted by hand, balanced and digested
correctly, is still caught: nothing stands behind it.

Transactions of the test kit's kinds (``test_…``, coins granted without a purchase) are
accepted only when the caller says the database is a test database.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.ledger import AuditFinding, Currency, system_code, user_code
from app.models import (
    Account,
    Brand,
    BrandTransfer,
    Clawback,
    Entry,
    Gift,
    GiftSend,
    LedgerTransaction,
    Payout,
    Purchase,
    PurchaseReversal,
)
from app.services.brands import BUDGET, PAYOUT_HOLD, REVENUE, brand_code
from app.services.users import COIN_DEBT, EARNINGS, WALLET
from app.services.users import PAYOUT_HOLD as CREATOR_HOLD

TEST_KINDS = "test_"  # the prefix of the test kit's kinds of transaction
CHECK = "source record"


@dataclass(slots=True)
class Source:
    """A record a transaction was posted for: its kind of transaction, the transaction it
    reverses (if any), and its legs: each group of account codes and what they move
    together (a purchase credits the wallet and the debt it settles as one)."""

    name: str
    kind: str
    legs: dict[tuple[str, ...], int] = field(default_factory=dict)
    reverses: int | None = None

    def leg(self, amount: int, *codes: str) -> Source:
        self.legs[codes] = self.legs.get(codes, 0) + amount
        return self

    def differences(self, moved: dict[str, int]) -> list[str]:
        """What the transaction's entries (amount by account code) moved unlike this."""
        found = []
        for codes, amount in self.legs.items():
            actual = sum(moved.get(code, 0) for code in codes)
            if actual != amount:
                found.append(f"{' + '.join(codes)} moved {actual}, the {self.name} says "
                             f"{amount}")
        known = {code for codes in self.legs for code in codes}
        found += [f"{code} moved {amount}, which the {self.name} does not"
                  for code, amount in sorted(moved.items()) if code not in known]
        return found


async def check(session: AsyncSession, start: int, end: int, *, test_grants: bool = False
                ) -> list[AuditFinding]:
    """Check the transactions with ids in (start, end] against their source records."""
    sources: dict[int, list[Source]] = defaultdict(list)
    for transaction_id, source in await _sources(session, start, end):
        sources[transaction_id].append(source)
    moved: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for transaction_id, code, amount in await session.execute(
            select(Entry.transaction_id, Account.code, Entry.amount)
            .join(Account, Account.id == Entry.account_id)
            .where(Entry.transaction_id > start, Entry.transaction_id <= end)):
        moved[transaction_id][code] += amount
    findings = []
    for transaction_id, kind, reverses_id in await session.execute(
            select(LedgerTransaction.id, LedgerTransaction.kind, LedgerTransaction.reverses_id)
            .where(LedgerTransaction.id > start, LedgerTransaction.id <= end)
            .order_by(LedgerTransaction.id)):
        for problem in _problems(kind, reverses_id, sources.get(transaction_id, []),
                                 moved.get(transaction_id, {}), test_grants):
            findings.append(AuditFinding(CHECK, f"transaction {transaction_id} ({kind})",
                                         problem))
    return findings


def _problems(kind: str, reverses_id: int | None, sources: list[Source],
              moved: dict[str, int], test_grants: bool) -> list[str]:
    if kind.startswith(TEST_KINDS) and not sources:
        return [] if test_grants else ["a test kit's grant, which only a test database holds"]
    if not sources:
        return ["no record stands behind it (no purchase, gift, payout, reversal, clawback "
                "or brand transfer)"]
    if len(sources) > 1:
        return [f"claimed by several records: {', '.join(s.name for s in sources)}"]
    source = sources[0]
    if source.kind != kind:
        return [f"its source, {source.name}, is posted as {source.kind}"]
    problems = [] if source.reverses == reverses_id else [
        f"reverses transaction {reverses_id}, but its {source.name} reverses "
        f"transaction {source.reverses}"]
    return problems + source.differences({c: a for c, a in moved.items() if a})


async def _sources(session: AsyncSession, start: int, end: int
                   ) -> Iterable[tuple[int, Source]]:
    """Every source record of a transaction with an id in (start, end]."""
    def within(column):  # noqa: ANN001, ANN202 - a column of transaction ids
        return (column > start) & (column <= end)

    found: list[tuple[int, Source]] = []
    for p in await session.scalars(select(Purchase).where(within(Purchase.transaction_id))):
        found.append((p.transaction_id, _sale(Source(f"purchase {p.id}", "coin_purchase"), p, 1)))
    for r, p in await session.execute(
            select(PurchaseReversal, Purchase).join(
                Purchase, Purchase.id == PurchaseReversal.purchase_id)
            .where(within(PurchaseReversal.transaction_id))):
        reversal = Source(f"reversal {r.id}", f"purchase_{r.kind}", reverses=p.transaction_id)
        found.append((r.transaction_id, _sale(reversal, p, -1, r)))
    for g, slug in await session.execute(
            select(GiftSend, Brand.slug).join(Gift, Gift.id == GiftSend.gift_id)
            .outerjoin(Brand, Brand.id == Gift.brand_id)
            .where(within(GiftSend.transaction_id))):
        brand = slug or "(none)"
        found.append((g.transaction_id, Source(f"gift receipt {g.id}", "gift")
                      .leg(-g.coins_paid, user_code(g.sender_id, WALLET))
                      .leg(-g.brand_subsidy, brand_code(brand, BUDGET))
                      .leg(g.brand_coins, brand_code(brand, REVENUE))
                      .leg(g.platform_coins, system_code("platform_revenue", Currency.COIN))
                      .leg(g.creator_coins, system_code("creator_earnings", Currency.COIN))
                      .leg(-g.creator_diamonds, system_code("diamond_issuance", Currency.DIAMOND))
                      .leg(g.creator_diamonds, user_code(g.creator_id, EARNINGS))))
    for c, gift_transaction in await session.execute(
            select(Clawback, GiftSend.transaction_id)
            .join(GiftSend, GiftSend.id == Clawback.gift_send_id)
            .where(within(Clawback.transaction_id))):
        found.append((c.transaction_id, Source(f"clawback {c.id}", "clawback",
                                               reverses=gift_transaction)
                      .leg(-c.diamonds, user_code(c.creator_id, EARNINGS))
                      .leg(c.diamonds, system_code("diamond_clawback", Currency.DIAMOND))))
    payouts = select(Payout, Brand.slug).outerjoin(Brand, Brand.id == Payout.brand_id)
    for p, slug in await session.execute(payouts.where(within(Payout.hold_transaction_id))):
        found.append((p.hold_transaction_id, _payout_hold(p, slug)))
    for p, slug in await session.execute(payouts.where(within(Payout.settle_transaction_id))):
        assert p.settle_transaction_id is not None
        found.append((p.settle_transaction_id, _payout_settled(p, slug)))
    for t, slug in await session.execute(
            select(BrandTransfer, Brand.slug).join(Brand, Brand.id == BrandTransfer.brand_id)
            .where(within(BrandTransfer.transaction_id))):
        transfer = Source(f"brand transfer {t.id}", f"brand_{t.kind}") \
            .leg(t.coins, brand_code(slug, BUDGET))
        found.append((t.transaction_id, transfer.leg(
            -t.coins, system_code("sponsorship_funding", Currency.COIN) if t.kind == "funding"
            else brand_code(slug, REVENUE))))
    return found


def _sale(source: Source, p: Purchase, sign: int, reversal: PurchaseReversal | None = None
          ) -> Source:
    """A purchase's legs (``sign`` 1), or its reversal's (-1): the coins issued into the
    wallet (and the debt it settles), the price owed by the store."""
    source.leg(-sign * p.coins, system_code("coin_issuance", Currency.COIN))
    wallet, debt = user_code(p.user_id, WALLET), user_code(p.user_id, COIN_DEBT)
    if reversal is None:
        source.leg(p.coins, wallet, debt)
    else:
        source.leg(-reversal.coins_removed, wallet).leg(-reversal.debt_recorded, debt)
    return source.leg(sign * p.price_minor, system_code(f"receivable:{p.provider}", p.currency)) \
        .leg(-sign * p.price_minor, system_code("coin_sales", p.currency))


def _payout_hold(p: Payout, slug: str | None) -> Source:
    if slug is None:
        assert p.creator_id is not None
        return Source(f"payout {p.id}", "payout_hold") \
            .leg(-p.diamonds, user_code(p.creator_id, EARNINGS)) \
            .leg(p.diamonds, user_code(p.creator_id, CREATOR_HOLD))
    return Source(f"payout {p.id}", "brand_payout_hold") \
        .leg(-p.coins, brand_code(slug, REVENUE)).leg(p.coins, brand_code(slug, PAYOUT_HOLD))


def _payout_settled(p: Payout, slug: str | None) -> Source:
    """A payout paid (the held amount retired, the cash paid through the provider) or
    failed (the held amount returned: the hold reversed)."""
    if slug is None:
        assert p.creator_id is not None
        held, back, amount = user_code(p.creator_id, CREATOR_HOLD), \
            user_code(p.creator_id, EARNINGS), p.diamonds
        redeemed, cash_to = system_code("diamond_redemption", Currency.DIAMOND), "creator_payouts"
    else:
        held, back, amount = brand_code(slug, PAYOUT_HOLD), brand_code(slug, REVENUE), p.coins
        redeemed, cash_to = system_code("brand_revenue_redemption", Currency.COIN), "brand_payouts"
    kind = f"{'brand_' if slug else ''}payout_{p.status}"
    if p.status != "paid":
        return Source(f"payout {p.id}", kind, reverses=p.hold_transaction_id) \
            .leg(-amount, held).leg(amount, back)
    return Source(f"payout {p.id}", kind).leg(-amount, held).leg(amount, redeemed) \
        .leg(p.cash_minor, system_code(cash_to, p.currency)) \
        .leg(-p.cash_minor, system_code(f"payout_clearing:{p.provider}", p.currency))
