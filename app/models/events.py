"""The event log: every live event, written in the transaction of the change it reports.

Each event belongs to a *stream* (``session:<id>`` for a live session's events) and has a
sequence number in it, assigned under the stream's counter row, so that within a stream
sequence order is commit order, without gaps. The global ``id`` names an event anywhere.
A stream's *relay position* (:class:`EventRelay`) says how far its events are relayed:
every event up to it reached the bus and was queued for the matching webhook
subscriptions; the relay publishes the ones after it that their process did not. (One
small row a stream, moved forward a few times a second, instead of a flag rewritten in
every event row.) Webhook subscriptions and their deliveries live here too.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.models.base import Amount, BigId, UTCDateTime, created_at_field


class Event(SQLModel, table=True):
    __tablename__ = "event"
    __table_args__ = (UniqueConstraint("stream", "seq"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    stream: str = Field(max_length=80)
    seq: int = Field(sa_type=Amount)
    type: str = Field(max_length=40)
    body: str = Field(sa_column=Column(Text, nullable=False))  # the event, JSON
    created_at: datetime = created_at_field()


class EventStream(SQLModel, table=True):
    """A stream's last sequence number: the row every writer to the stream takes turns on."""

    __tablename__ = "event_stream"

    stream: str = Field(max_length=80, primary_key=True)
    last_seq: int = Field(sa_type=Amount)


class EventRelay(SQLModel, table=True):
    """How far a stream is relayed: every event numbered up to ``relayed_seq`` reached the
    bus and its webhook deliveries are queued. Apart from :class:`EventStream`, so that
    relaying never waits on the writers' counter rows."""

    __tablename__ = "event_relay"

    stream: str = Field(max_length=80, primary_key=True)
    relayed_seq: int = Field(sa_type=Amount)


class WebhookSubscription(SQLModel, table=True):
    """An HTTPS endpoint that receives the events its owner may see, signed, in order."""

    __tablename__ = "webhook_subscription"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    scope: str = Field(max_length=10)  # creator | brand | admin: whose events it receives
    owner_user_id: int | None = Field(default=None, foreign_key="app_user.id", sa_type=BigId)
    owner_brand: str | None = Field(default=None, max_length=40)
    url: str = Field(sa_column=Column(Text, nullable=False))
    secret: str = Field(max_length=80)
    event_types: str = Field(sa_column=Column(Text, nullable=False))  # JSON list
    status: str = Field(max_length=10)  # active | disabled
    disabled_reason: str | None = Field(default=None, sa_column=Column(Text))
    failures_in_a_row: int = 0
    failing_since: datetime | None = Field(default=None, sa_type=UTCDateTime)
    next_attempt_at: datetime = Field(sa_type=UTCDateTime)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = created_at_field()


class WebhookDelivery(SQLModel, table=True):
    """One event for one subscription: its message id, attempts and last response."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        Index("ix_webhook_delivery_subscription_status_event", "subscription_id", "status",
              "event_id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    subscription_id: int = Field(foreign_key="webhook_subscription.id", sa_type=BigId)
    event_id: int = Field(sa_type=Amount)
    stream: str = Field(max_length=80)
    seq: int = Field(sa_type=Amount)
    type: str = Field(max_length=40)
    body: str = Field(sa_column=Column(Text, nullable=False))  # the event, JSON
    status: str = Field(max_length=10)  # pending | delivered
    attempts: int = 0
    last_status: int | None = None
    last_response: str | None = Field(default=None, sa_column=Column(Text))
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    last_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = created_at_field()
