"""Posting balanced transactions atomically, one or many at a time."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import case, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import ArrayStatement, execute_arrays, insert_rows
from app.errors import BusinessRefusal, ErrorCode
from app.ledger import journal
from app.ledger.accounts import AccountRef, lock_accounts
from app.models import Account, Entry, LedgerTransaction

# Far above any real movement and far below where sums could overflow BIGINT.
MAX_LEG_AMOUNT = 10**15


class UnbalancedTransaction(ValueError):
    """The legs do not form a valid double-entry transaction (a programming error)."""


class InsufficientFunds(BusinessRefusal):
    """A limited account would go below zero; nothing was posted."""

    def __init__(self, account: AccountRef, needed: int, available: int) -> None:
        noun, code = {"COIN": ("coins", ErrorCode.INSUFFICIENT_COINS),
                      "DIAMOND": ("diamonds", ErrorCode.INSUFFICIENT_DIAMONDS)}.get(
            account.currency, (account.currency, ErrorCode.INSUFFICIENT_FUNDS))
        super().__init__(code, f"Not enough {noun}: this needs {needed} and the balance is "
                               f"{available}.")
        self.account = account


@dataclass(frozen=True, slots=True)
class Leg:
    account: AccountRef
    amount: int


def _check_legs(legs: Sequence[Leg]) -> None:
    if len(legs) < 2:
        raise UnbalancedTransaction("a transaction needs at least two legs")
    totals: dict[str, int] = defaultdict(int)
    for leg in legs:
        if type(leg.amount) is not int:
            raise UnbalancedTransaction(f"amount {leg.amount!r} is not an integer")
        if leg.amount == 0 or abs(leg.amount) > MAX_LEG_AMOUNT:
            raise UnbalancedTransaction(f"amount {leg.amount} is zero or out of range")
        totals[leg.account.currency] += leg.amount
    unbalanced = {currency: total for currency, total in totals.items() if total != 0}
    if unbalanced:
        raise UnbalancedTransaction(f"legs do not sum to zero: {unbalanced}")


@dataclass(frozen=True, slots=True)
class Posting:
    """One balanced transaction to post."""

    kind: str
    legs: Sequence[Leg]
    memo: str = ""
    reverses_id: int | None = None


async def post_transaction(session: AsyncSession, *, kind: str, legs: Sequence[Leg],
                           memo: str = "", reverses_id: int | None = None,
                           balances: dict[int, int] | None = None,
                           before_balances: Callable[[int], Awaitable[None]] | None = None
                           ) -> int:
    """Post one balanced transaction (see :func:`post_transactions`); return its id."""
    async def before(ids: list[int]) -> None:
        if before_balances is not None:
            await before_balances(ids[0])

    ids, moved = await post_transactions(session, [Posting(kind, legs, memo, reverses_id)],
                                         before_balances=before)
    if balances is not None:
        balances.update(moved)
    return ids[0]


async def post_transactions(session: AsyncSession, postings: Sequence[Posting], *,
                            before_balances: Callable[[list[int]], Awaitable[None]] | None = None
                            ) -> tuple[list[int], dict[int, int]]:
    """Post balanced transactions in the caller's database transaction, with a constant
    number of statements however many there are.

    Returns their ids (in order) and the new balance of every cached account they
    moved, by account id. ``before_balances(ids)`` runs after the rows are written and
    before the balances move: work that needs the ids and locks no shared row goes
    there, so that the rows other writers share (a popular creator's account) are held
    briefly. Raises :class:`UnbalancedTransaction` for malformed legs and
    :class:`InsufficientFunds` when a limited account would go negative. On either,
    nothing is written (the caller's transaction rolls back).
    """
    for posting in postings:
        _check_legs(posting.legs)
    # Rows first, balances last: the balance UPDATE locks rows other writers share
    # (a popular creator's account), so it comes as late as possible.
    created_at = datetime.now(UTC)
    # Core tables, not ORM entities, for the many-row INSERTs: far less work per row.
    ids = [row[0] for row in await insert_rows(session, LedgerTransaction.__table__, [
        dict(kind=p.kind, memo=p.memo, reverses_id=p.reverses_id, created_at=created_at,
             digest=journal.digest(p.kind, p.memo, p.reverses_id, created_at,
                                   [(leg.account.id, leg.account.currency, leg.amount)
                                    for leg in p.legs]))
        for p in postings], returning=("id",))]
    await insert_rows(session, Entry.__table__, [
        dict(transaction_id=transaction_id, account_id=leg.account.id,
             currency=leg.account.currency, amount=leg.amount)
        for transaction_id, posting in zip(ids, postings, strict=True) for leg in posting.legs
    ])
    if before_balances is not None:
        await before_balances(ids)
    net: dict[int, int] = defaultdict(int)
    accounts: dict[int, AccountRef] = {}
    for posting in postings:
        for leg in posting.legs:
            if leg.account.cached:
                net[leg.account.id] += leg.amount
                accounts[leg.account.id] = leg.account
    balances = await _move_balances(session, {a: d for a, d in net.items() if d}, accounts)
    postings_noted = session.info.setdefault("ledger_postings", [])  # counted at commit
    postings_noted.extend((posting.kind, posting.legs) for posting in postings)
    return ids, balances


# PostgreSQL: one statement text however many accounts move (see _move_balances).
_MOVE_BALANCES = ArrayStatement.of(lambda parameter: f"""
UPDATE ledger_account AS a SET balance = a.balance + d.delta
FROM unnest(CAST({parameter("ids")} AS BIGINT[]), CAST({parameter("deltas")} AS BIGINT[]))
    AS d(id, delta)
WHERE a.id = d.id AND (NOT a.limited OR a.balance + d.delta >= 0)
RETURNING a.id, a.balance""", ("ids", "deltas"))


async def _move_balances(session: AsyncSession, net: dict[int, int],
                         accounts: dict[int, AccountRef]) -> dict[int, int]:
    """Add ``net`` to the cached balances in one conditional UPDATE; a limited account
    that would go below zero is left out by its WHERE clause and refused."""
    if not net:
        return {}
    if len(net) > 1:
        # Sorted ids give every writer the same lock order: no deadlock between two posts.
        await lock_accounts(session, [accounts[account_id] for account_id in net])
    if session.get_bind().dialect.name == "postgresql":
        ids = sorted(net)
        moved = dict(await execute_arrays(session, _MOVE_BALANCES, {
            "ids": ids, "deltas": [net[account_id] for account_id in ids]}))
    else:
        delta = case(net, value=Account.id) if len(net) > 1 else next(iter(net.values()))
        moved = dict((await session.execute(
            update(Account).where(Account.id.in_(net),
                                  or_(Account.limited.is_(False), Account.balance + delta >= 0))
            .values(balance=Account.balance + delta).returning(Account.id, Account.balance)
            .execution_options(synchronize_session=False))).all())
    for account_id in sorted(net.keys() - moved.keys()):
        available = await session.scalar(select(Account.balance).where(Account.id == account_id))
        raise InsufficientFunds(accounts[account_id], needed=-net[account_id],
                                available=available or 0)
    return moved
