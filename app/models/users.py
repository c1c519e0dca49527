"""Users: one row per person known to the platform, keyed by the token subject."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from app.models.base import BigId, created_at_field


class User(SQLModel, table=True):
    __tablename__ = "app_user"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    name: str = Field(max_length=64, unique=True)
    created_at: datetime = created_at_field()
