"""Leaderboard totals maintained with every gift, so rankings stay fast at any volume.

Periods are ``day``, ``week`` (ISO, from Monday), ``month`` and ``all``, in UTC;
``period_start`` is the period's first day (1970-01-01 for ``all``). Rankings
order by the total, then by user id, both descending, so each index serves its
leaderboard by a backward scan that stops after one page.

The totals have no foreign keys: they are sums of the gift receipts, written in the
receipts' own transaction, and each id in them is the id of a receipt beside it. The
receipts have none either (revision 0021): the gift writer takes every id from a row it
read, locked or inserted, and the audit names any receipt whose rows are missing
(:mod:`app.ledger.references`). A key on each total cost every gift about ten more lookups,
each locking the user's or the session's row.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from app.models.base import Amount, BigId


class SupporterTotal(SQLModel, table=True):
    __tablename__ = "supporter_total"
    __table_args__ = (
        Index("ix_supporter_total_rank", "creator_id", "period", "period_start", "coins",
              "sender_id"),
    )

    creator_id: int = Field(primary_key=True, sa_type=BigId)
    period: str = Field(primary_key=True, max_length=5)
    period_start: date = Field(primary_key=True)
    sender_id: int = Field(primary_key=True, sa_type=BigId)
    coins: int = Field(sa_type=Amount)
    diamonds: int = Field(sa_type=Amount)
    gifts: int = Field(sa_type=Amount)


class CreatorTotal(SQLModel, table=True):
    __tablename__ = "creator_total"
    __table_args__ = (
        Index("ix_creator_total_rank", "period", "period_start", "diamonds", "creator_id"),
    )

    period: str = Field(primary_key=True, max_length=5)
    period_start: date = Field(primary_key=True)
    creator_id: int = Field(primary_key=True, sa_type=BigId)
    diamonds: int = Field(sa_type=Amount)
    coins: int = Field(sa_type=Amount)
    gifts: int = Field(sa_type=Amount)


class SessionGifterTotal(SQLModel, table=True):
    __tablename__ = "session_gifter_total"
    __table_args__ = (Index("ix_session_gifter_total_rank", "session_id", "coins", "sender_id"),)

    session_id: int = Field(primary_key=True, sa_type=BigId)
    sender_id: int = Field(primary_key=True, sa_type=BigId)
    coins: int = Field(sa_type=Amount)
    diamonds: int = Field(sa_type=Amount)
    gifts: int = Field(sa_type=Amount)
