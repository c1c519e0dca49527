"""Money leaving and coming back: creator payouts, purchase reversals and clawbacks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import Amount, BigId, UTCDateTime, created_at_field


class Payout(SQLModel, table=True):
    """A cash-out: a hold until the provider settles it (paid) or not. A creator's holds
    diamonds (``creator_id``, ``diamonds``); a brand's holds revenue coins (``brand_id``,
    ``coins``). One table, so that every payout the provider sees has its own id."""

    __tablename__ = "payout"
    __table_args__ = (
        UniqueConstraint("provider", "provider_payout_id", name="uq_payout_provider_id"),
        CheckConstraint("creator_id IS NOT NULL AND brand_id IS NULL AND diamonds > 0 "
                        "AND coins = 0 OR brand_id IS NOT NULL AND creator_id IS NULL "
                        "AND coins > 0 AND diamonds = 0", name="one_payee"),
        Index("ix_payout_creator_created", "creator_id", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    creator_id: int | None = Field(default=None, foreign_key="app_user.id", sa_type=BigId)
    brand_id: int | None = Field(default=None, foreign_key="brand.id", sa_type=BigId)
    diamonds: int = Field(default=0, sa_type=Amount)
    coins: int = Field(default=0, sa_type=Amount)
    cash_minor: int = Field(sa_type=Amount)
    currency: str = Field(max_length=3)
    rate_card_version: int = Field(foreign_key="rate_card.version")
    status: str = Field(max_length=10)  # pending | paid | failed
    provider: str = Field(max_length=40)
    provider_payout_id: str | None = Field(default=None, max_length=200)
    failure_reason: str | None = Field(default=None, max_length=300)
    hold_transaction_id: int = Field(foreign_key="ledger_transaction.id", sa_type=BigId)
    settle_transaction_id: int | None = Field(default=None, foreign_key="ledger_transaction.id",
                                              sa_type=BigId)
    created_at: datetime = created_at_field()
    settled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class PurchaseReversal(SQLModel, table=True):
    """A refund or chargeback of a coin purchase; at most one per purchase."""

    __tablename__ = "purchase_reversal"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    purchase_id: int = Field(foreign_key="coin_purchase.id", unique=True, sa_type=BigId)
    kind: str = Field(max_length=12)  # refund | chargeback
    coins_removed: int = Field(sa_type=Amount)
    debt_recorded: int = Field(sa_type=Amount)
    transaction_id: int = Field(foreign_key="ledger_transaction.id", sa_type=BigId)
    created_at: datetime = created_at_field()


class Clawback(SQLModel, table=True):
    """Diamonds taken back from a creator because the coins behind a gift were charged back."""

    __tablename__ = "clawback"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    creator_id: int = Field(foreign_key="app_user.id", index=True, sa_type=BigId)
    gift_send_id: int = Field(foreign_key="gift_send.id", sa_type=BigId)
    reversal_id: int = Field(foreign_key="purchase_reversal.id", sa_type=BigId)
    diamonds: int = Field(sa_type=Amount)
    reason: str = Field(max_length=300)
    transaction_id: int = Field(foreign_key="ledger_transaction.id", sa_type=BigId)
    created_at: datetime = created_at_field()
