"""The event log: every live event, written in the transaction of the change it reports.

Each event belongs to a *stream* (``session:<id>`` for a live session's events) and has a
sequence number in it, assigned under the stream's counter row, so that within a stream
sequence order is commit order, without gaps. The global ``id`` names an event anywhere.
``published`` says the event reached the bus; the relay publishes those that did not.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from app.models.base import Amount, BigId, created_at_field


class Event(SQLModel, table=True):
    __tablename__ = "event"
    __table_args__ = (
        UniqueConstraint("stream", "seq"),
        # What the relay looks for: few rows, the index stays small.
        Index("ix_event_unpublished", "id", postgresql_where=text("NOT published"),
              sqlite_where=text("NOT published")),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    stream: str = Field(max_length=80)
    seq: int = Field(sa_type=Amount)
    type: str = Field(max_length=40)
    body: str = Field(sa_column=Column(Text, nullable=False))  # the event, JSON
    created_at: datetime = created_at_field()
    published: bool = False


class EventStream(SQLModel, table=True):
    """A stream's last sequence number: the row every writer to the stream takes turns on."""

    __tablename__ = "event_stream"

    stream: str = Field(max_length=80, primary_key=True)
    last_seq: int = Field(sa_type=Amount)
