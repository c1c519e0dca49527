"""Protections a viewer has: a birthdate for age rules, and spending limits with history."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from app.models.base import Amount, BigId, UTCDateTime, created_at_field


class Profile(SQLModel, table=True):
    """A user's birthdate for the age rules. One rule: a birthdate the identity provider
    vouches for (in a token) wins over one the user declared; when the two differ the
    declared one is kept beside it and the conflict's time recorded."""

    __tablename__ = "user_profile"

    user_id: int = Field(primary_key=True, foreign_key="app_user.id", sa_type=BigId)
    birthdate: date | None = None  # the one the age rules use
    vouched: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})
    declared_birthdate: date | None = None  # when it differs from the vouched one
    conflict_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class LimitChange(SQLModel, table=True):
    """One change to a viewer's daily cap, monthly cap or cool-off.

    The limit in force is the latest change (by id) whose ``effective_at`` has passed:
    tightening is effective at once, loosening 24 hours later, and a later change
    supersedes a pending one.
    """

    __tablename__ = "limit_change"
    __table_args__ = (Index("ix_limit_change_user_kind", "user_id", "kind", "id"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    user_id: int = Field(foreign_key="app_user.id", sa_type=BigId)
    kind: str = Field(max_length=12)  # daily_cap | monthly_cap | cooloff
    amount: int | None = Field(default=None, sa_type=Amount)  # coins; None: no cap
    until: datetime | None = Field(default=None, sa_type=UTCDateTime)  # cool-off end
    effective_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = created_at_field()


class ViewerSpend(SQLModel, table=True):
    """Coins a viewer paid for gifts in one UTC day or month, maintained with every gift so
    that spending caps are checked by reading one row, however many gifts the viewer sent.
    Like the leaderboard totals (see :mod:`app.models.recognition`), no foreign key: it sums
    the receipts written in the same transaction, whose sender the audit checks."""

    __tablename__ = "viewer_spend"

    sender_id: int = Field(primary_key=True, sa_type=BigId)
    period: str = Field(primary_key=True, max_length=5)  # day | month
    period_start: date = Field(primary_key=True)
    coins: int = Field(sa_type=Amount)
