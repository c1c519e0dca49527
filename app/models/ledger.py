"""Ledger tables: accounts, transactions, immutable entries and idempotency records.

The rules these tables serve are described in :mod:`app.ledger`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import Amount, BigId, created_at_field


class Account(SQLModel, table=True):
    __tablename__ = "ledger_account"
    __table_args__ = (
        CheckConstraint("NOT limited OR balance >= 0", name="limited_not_negative"),
        CheckConstraint("cached OR balance = 0", name="derived_has_no_cached_balance"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    code: str = Field(max_length=120, unique=True)
    currency: str = Field(max_length=8)
    owner_user_id: int | None = Field(default=None, foreign_key="app_user.id", index=True,
                                      sa_type=BigId)
    # The balance column is maintained only when `cached`; system accounts that
    # every gift credits derive theirs from entries, so no row is written by all.
    cached: bool
    # A limited account must never go negative, checked in the same UPDATE.
    limited: bool
    balance: int = Field(default=0, sa_type=Amount)
    created_at: datetime = created_at_field()


class LedgerTransaction(SQLModel, table=True):
    __tablename__ = "ledger_transaction"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    kind: str = Field(max_length=40)
    memo: str = Field(default="", max_length=500)
    reverses_id: int | None = Field(default=None, foreign_key="ledger_transaction.id",
                                    sa_type=BigId)
    created_at: datetime = created_at_field()
    # SHA-256 of the content and entries, taken when posted (see app.ledger.journal).
    digest: str = Field(max_length=64)


class LedgerSeal(SQLModel, table=True):
    """A link of the journal's hash chain, covering transactions up to one id."""

    __tablename__ = "ledger_seal"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    through_transaction_id: int = Field(sa_type=BigId)
    chain: str = Field(max_length=64)
    created_at: datetime = created_at_field()


class Entry(SQLModel, table=True):
    """One leg of a ledger transaction. Its transaction and account ids are not declared
    foreign keys (revision 0021): :func:`app.ledger.posting.post_transactions` is the only
    writer, with the transaction's id the database returned in the same transaction and
    accounts' ids it returned when they were opened (a user's read in the transaction, a
    system account's once a process); neither row can be deleted or renumbered (the
    ledger's triggers), and the audit names any entry whose rows are missing
    (:mod:`app.ledger.references`)."""

    __tablename__ = "ledger_entry"
    __table_args__ = (
        CheckConstraint("amount <> 0", name="amount_not_zero"),
        Index("ix_ledger_entry_account_transaction", "account_id", "transaction_id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    transaction_id: int = Field(index=True, sa_type=BigId)
    account_id: int = Field(sa_type=BigId)
    currency: str = Field(max_length=8)
    amount: int = Field(sa_type=Amount)


class IdempotencyRecord(SQLModel, table=True):
    __tablename__ = "idempotency_record"
    __table_args__ = (UniqueConstraint("scope", "key", name="uq_idempotency_scope_key"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    scope: str = Field(max_length=80)
    key: str = Field(max_length=255)
    operation: str = Field(max_length=60)
    fingerprint: str = Field(max_length=64)
    status: str = Field(max_length=16)  # pending | succeeded | failed
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = created_at_field()
