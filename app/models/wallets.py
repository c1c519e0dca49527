"""Coin packages on sale and the coin purchases made with real money."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import Amount, BigId, created_at_field


class CoinPackage(SQLModel, table=True):
    __tablename__ = "coin_package"
    __table_args__ = (
        CheckConstraint("coins > 0", name="coins_positive"),
        CheckConstraint("price_minor > 0", name="price_positive"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    sku: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=80)
    coins: int = Field(sa_type=Amount)
    price_minor: int = Field(sa_type=Amount)
    currency: str = Field(max_length=3)
    active: bool = True
    sort_order: int = 0
    created_at: datetime = created_at_field()


class Purchase(SQLModel, table=True):
    __tablename__ = "coin_purchase"
    __table_args__ = (
        # A store transaction credits coins once, whoever sends the receipt.
        UniqueConstraint("provider", "provider_transaction_id",
                         name="uq_coin_purchase_provider_transaction"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    user_id: int = Field(foreign_key="app_user.id", index=True, sa_type=BigId)
    package_id: int = Field(foreign_key="coin_package.id", sa_type=BigId)
    provider: str = Field(max_length=40)
    provider_transaction_id: str = Field(max_length=200)
    coins: int = Field(sa_type=Amount)
    price_minor: int = Field(sa_type=Amount)
    currency: str = Field(max_length=3)
    transaction_id: int = Field(foreign_key="ledger_transaction.id", sa_type=BigId)
    created_at: datetime = created_at_field()
