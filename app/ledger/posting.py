"""Posting balanced transactions atomically."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import BusinessRefusal, ErrorCode
from app.ledger import journal
from app.ledger.accounts import AccountRef
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


async def post_transaction(session: AsyncSession, *, kind: str, legs: Sequence[Leg],
                           memo: str = "", reverses_id: int | None = None,
                           balances: dict[int, int] | None = None,
                           before_balances: Callable[[int], Awaitable[None]] | None = None
                           ) -> int:
    """Post one balanced transaction in the caller's database transaction; return its id.

    When ``balances`` is given, it receives the new balance of every cached account
    the transaction moved, by account id (read in the same UPDATE, no extra query).
    ``before_balances(transaction_id)`` runs after the rows are written and before the
    balances are updated: work that needs the id and locks no shared row goes there, so
    that the rows other writers share (a popular creator's account) are held briefly.
    Raises :class:`UnbalancedTransaction` for malformed legs and
    :class:`InsufficientFunds` when a limited account would go negative. On either,
    nothing of this transaction is written (the caller's transaction rolls back).
    """
    _check_legs(legs)
    # Rows first, balances last: the balance UPDATEs lock rows other writers share
    # (a popular creator's account), so they come as late as possible.
    created_at = datetime.now(UTC)
    transaction_id = await session.scalar(
        insert(LedgerTransaction)
        .values(kind=kind, memo=memo, reverses_id=reverses_id, created_at=created_at,
                digest=journal.digest(kind, memo, reverses_id, created_at,
                                      [(leg.account.id, leg.account.currency, leg.amount)
                                       for leg in legs]))
        .returning(LedgerTransaction.id)
    )
    await session.execute(insert(Entry), [
        dict(transaction_id=transaction_id, account_id=leg.account.id,
             currency=leg.account.currency, amount=leg.amount)
        for leg in legs
    ])
    if before_balances is not None:
        await before_balances(transaction_id)
    net: dict[int, int] = defaultdict(int)
    accounts = {leg.account.id: leg.account for leg in legs}
    for leg in legs:
        if leg.account.cached:
            net[leg.account.id] += leg.amount
    # Sorted ids give every writer the same lock order: no deadlock between two posts.
    for account_id in sorted(net):
        delta = net[account_id]
        if delta == 0:
            continue
        account = accounts[account_id]
        statement = update(Account).where(Account.id == account_id)
        if account.limited and delta < 0:
            statement = statement.where(Account.balance >= -delta)
        balance = await session.scalar(
            statement.values(balance=Account.balance + delta).returning(Account.balance)
            .execution_options(synchronize_session=False)
        )
        if balance is None:
            available = await session.scalar(
                select(Account.balance).where(Account.id == account_id))
            raise InsufficientFunds(account, needed=-delta, available=available or 0)
        if balances is not None:
            balances[account_id] = balance
    session.info.setdefault("ledger_postings", []).append((kind, legs))  # counted at commit
    return transaction_id
