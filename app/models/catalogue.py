"""The gift catalogue and the published, versioned rate card."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Text
from sqlmodel import Field, SQLModel

from app.models.base import Amount, BigId, UTCDateTime, created_at_field


class Brand(SQLModel, table=True):
    """A sponsoring brand, declared by the plugin named in ``plugin``."""

    __tablename__ = "brand"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    slug: str = Field(max_length=40, unique=True)
    name: str = Field(max_length=80)
    plugin: str = Field(max_length=100)
    created_at: datetime = created_at_field()


class BrandOwner(SQLModel, table=True):
    """Which distribution (installed package) a brand slug belongs to, and whether an
    operator approved it. Only that distribution's plugin may declare the brand; a slug
    with no distribution yet (a brand from before bindings) is bound at its next start to
    the distribution of the plugin named in its ``brand`` row."""

    __tablename__ = "brand_owner"

    slug: str = Field(primary_key=True, max_length=40)
    distribution: str | None = Field(default=None, max_length=200)
    approved_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    bound_at: datetime = created_at_field()


class BrandTransfer(SQLModel, table=True):
    """Coins an admin moved into a brand's budget (``funding``) or from its revenue into
    its budget (``settlement``): the source record of that ledger transaction."""

    __tablename__ = "brand_transfer"
    __table_args__ = (
        CheckConstraint("kind IN ('funding', 'settlement')", name="kind_known"),
        CheckConstraint("coins > 0", name="coins_positive"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    brand_id: int = Field(foreign_key="brand.id", index=True, sa_type=BigId)
    kind: str = Field(max_length=12)
    coins: int = Field(sa_type=Amount)
    # Who moved them; unknown for transfers made before these records were kept.
    admin_id: int | None = Field(default=None, foreign_key="app_user.id", sa_type=BigId)
    transaction_id: int = Field(foreign_key="ledger_transaction.id", unique=True,
                                sa_type=BigId)
    created_at: datetime = created_at_field()


class BrandShareCarry(SQLModel, table=True):
    """The part of a coin of revenue share a brand is owed from its sends so far, in
    1/10,000 coin, carried to its next send (see :class:`app.sponsorship.BrandShare`)."""

    __tablename__ = "brand_share_carry"

    brand_id: int = Field(primary_key=True, foreign_key="brand.id", sa_type=BigId)
    carry: int = Field(default=0, sa_type=Amount)


class PluginHealth(SQLModel, table=True):
    """One server process's view of one plugin, written by that process every few seconds
    when it changed: what ``livegifts plugins`` and the ``plugins`` query add up."""

    __tablename__ = "plugin_health"

    instance: str = Field(primary_key=True, max_length=100)  # host:pid of the process
    plugin: str = Field(primary_key=True, max_length=200)
    status: str = Field(max_length=20)
    error: str | None = Field(default=None, sa_type=Text)
    failures: int = Field(default=0, sa_type=Amount)
    timeouts: int = Field(default=0, sa_type=Amount)
    breaker: str = Field(max_length=12)
    last_failure: str | None = Field(default=None, sa_type=Text)
    last_failure_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime, index=True)


class Gift(SQLModel, table=True):
    __tablename__ = "gift"
    __table_args__ = (
        CheckConstraint("coin_price > 0", name="price_positive"),
        CheckConstraint("available_until IS NULL OR available_from IS NULL "
                        "OR available_until > available_from", name="window_ordered"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    sku: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=80)
    coin_price: int = Field(sa_type=Amount)
    image_url: str = Field(max_length=500)
    animation_url: str | None = Field(default=None, max_length=500)
    category: str = Field(max_length=40, index=True)
    available_from: datetime | None = Field(default=None, sa_type=UTCDateTime)
    available_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    sort_order: int = 0
    active: bool = True
    # Sponsored gifts belong to a brand and are priced by the plugin that declared them.
    brand_id: int | None = Field(default=None, foreign_key="brand.id", index=True, sa_type=BigId)
    plugin: str | None = Field(default=None, max_length=100)
    created_at: datetime = created_at_field()


class RateCard(SQLModel, table=True):
    """How a gift's coins are shared and what diamonds are worth, from ``effective_from`` on."""

    __tablename__ = "rate_card"
    __table_args__ = (
        CheckConstraint("creator_share_bps BETWEEN 0 AND 10000", name="share_in_range"),
        CheckConstraint("diamonds_per_coin > 0", name="diamond_rate_positive"),
        CheckConstraint("cash_minor_per_100_diamonds > 0", name="cash_value_positive"),
    )

    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    creator_share_bps: int
    diamonds_per_coin: int
    cash_minor_per_100_diamonds: int
    cash_currency: str = Field(max_length=3)
    effective_from: datetime = Field(sa_type=UTCDateTime, index=True)
    note: str = Field(default="", max_length=300)
    created_at: datetime = created_at_field()


class PublicDataVersion(SQLModel, table=True):
    """One row whose ``version`` database triggers bump on every change to what anonymous
    callers can read (brands, gifts, rate cards, coin packages), whoever makes it: the key
    under which public responses are cached."""

    __tablename__ = "public_data_version"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: int = Field(default=1, primary_key=True, sa_column_kwargs={"autoincrement": False})
    version: int = Field(default=0, sa_type=Amount)


class TrustedDocument(SQLModel, table=True):
    """A GraphQL document an operator allowed (``livegifts documents add``), by its SHA-256."""

    __tablename__ = "trusted_document"

    sha256: str = Field(primary_key=True, max_length=64)
    name: str = Field(default="", max_length=200)
    document: str = Field(sa_type=Text)
    created_at: datetime = created_at_field()
