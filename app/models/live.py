"""Live sessions, who is watching them, their goals and matches, the gifts sent in them and
their combos."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Column, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from app.models.base import Amount, BigId, UTCDateTime, created_at_field


class LiveSession(SQLModel, table=True):
    __tablename__ = "live_session"
    __table_args__ = (
        # A creator is live in at most one session at a time.
        Index("uq_live_session_one_live_per_creator", "creator_id", unique=True,
              postgresql_where=text("status = 'live'"), sqlite_where=text("status = 'live'")),
        Index("ix_live_session_status_id", "status", "id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    creator_id: int = Field(foreign_key="app_user.id", sa_type=BigId)
    title: str = Field(max_length=120)
    status: str = Field(max_length=10)  # live | ended
    started_at: datetime = created_at_field()
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # How many goals the creator set: a batch of gifts reads goals only where there are.
    goals: int = Field(default=0, sa_column_kwargs={"server_default": text("0")})
    # The session's latest accepted match (live_match.id; no foreign key, the tables refer to
    # each other): a batch of gifts reads matches only where there is one.
    match_id: int | None = Field(default=None, sa_type=BigId)


class LiveGoal(SQLModel, table=True):
    """A creator's target for a live session: coins gifted into it (``coins``, sponsored
    gifts at their full value) or a number of one gift (``gift_count``). Every gift into the
    session adds to ``progress`` in the gift's own transaction; ``reached_at`` is set once,
    by the gift that reaches the target."""

    __tablename__ = "live_goal"
    __table_args__ = (
        CheckConstraint("kind IN ('coins', 'gift_count')", name="kind_known"),
        CheckConstraint("(kind = 'gift_count') = (gift_id IS NOT NULL)",
                        name="gift_for_gift_count"),
        CheckConstraint("target > 0 AND progress >= 0", name="amounts_in_range"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    session_id: int = Field(foreign_key="live_session.id", index=True, sa_type=BigId)
    title: str = Field(max_length=80)
    kind: str = Field(max_length=12)
    gift_id: int | None = Field(default=None, foreign_key="gift.id", sa_type=BigId)
    target: int = Field(sa_type=Amount)
    progress: int = Field(default=0, sa_type=Amount)
    reached_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = created_at_field()


class LiveMatch(SQLModel, table=True):
    """Two live creators' timed contest: the inviter's and the invitee's sessions score the
    coins gifted into them while it runs (sponsored gifts at their full value, a boosting
    brand's gifts times its multiplier). ``status``: invited (until ``expires_at``),
    declined, expired, running (from ``started_at`` to ``ends_at``), ended. ``boosts`` is a
    JSON list of the brands' boosts: ``{"brand", "multiplier", "until"}``."""

    __tablename__ = "live_match"
    __table_args__ = (
        CheckConstraint("status IN ('invited', 'declined', 'expired', 'running', 'ended')",
                        name="status_known"),
        CheckConstraint("duration_seconds BETWEEN 60 AND 600", name="duration_in_range"),
        CheckConstraint("inviter_id <> invitee_id", name="two_creators"),
        CheckConstraint("inviter_score >= 0 AND invitee_score >= 0", name="scores_in_range"),
        Index("ix_live_match_status_ends_at", "status", "ends_at"),
        Index("ix_live_match_inviter_id", "inviter_id", "id"),
        Index("ix_live_match_invitee_id", "invitee_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    inviter_id: int = Field(foreign_key="app_user.id", sa_type=BigId)
    invitee_id: int = Field(foreign_key="app_user.id", sa_type=BigId)
    inviter_session_id: int = Field(foreign_key="live_session.id", sa_type=BigId)
    invitee_session_id: int = Field(foreign_key="live_session.id", sa_type=BigId)
    duration_seconds: int
    status: str = Field(max_length=10)
    invited_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    ends_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    inviter_score: int = Field(default=0, sa_type=Amount)
    invitee_score: int = Field(default=0, sa_type=Amount)
    boosts: str = Field(default="[]", sa_column=Column(Text, nullable=False))


class MatchSupporter(SQLModel, table=True):
    """What one viewer added to one side's score in a match (boosts included)."""

    __tablename__ = "match_supporter"
    __table_args__ = (Index("ix_match_supporter_rank", "match_id", "session_id", "score"),)

    match_id: int = Field(primary_key=True, foreign_key="live_match.id", sa_type=BigId)
    session_id: int = Field(primary_key=True, foreign_key="live_session.id", sa_type=BigId)
    sender_id: int = Field(primary_key=True, foreign_key="app_user.id", sa_type=BigId)
    score: int = Field(sa_type=Amount)


class SessionViewer(SQLModel, table=True):
    __tablename__ = "live_session_viewer"
    __table_args__ = (UniqueConstraint("session_id", "user_id"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    session_id: int = Field(foreign_key="live_session.id", sa_type=BigId)
    user_id: int = Field(foreign_key="app_user.id", sa_type=BigId)
    joined_at: datetime = created_at_field()
    left_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class GiftCombo(SQLModel, table=True):
    """Consecutive sends of one gift by one viewer in one session, within the combo window."""

    __tablename__ = "gift_combo"
    __table_args__ = (
        Index("uq_gift_combo_open", "session_id", "sender_id", "gift_id", unique=True,
              postgresql_where=text("ended_at IS NULL"), sqlite_where=text("ended_at IS NULL")),
        Index("ix_gift_combo_open_last", "last_at", postgresql_where=text("ended_at IS NULL"),
              sqlite_where=text("ended_at IS NULL")),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    session_id: int = Field(foreign_key="live_session.id", sa_type=BigId)
    sender_id: int = Field(foreign_key="app_user.id", sa_type=BigId)
    gift_id: int = Field(foreign_key="gift.id", sa_type=BigId)
    count: int = Field(sa_type=Amount)
    sends: int
    coins: int = Field(sa_type=Amount)
    started_at: datetime = Field(sa_type=UTCDateTime)
    last_at: datetime = Field(sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class GiftSend(SQLModel, table=True):
    """One sendGift: the receipt of where every coin went, and the rate card it used.

    Its ids are not declared foreign keys (revision 0021): the gift writer takes each from
    the row it read, locked or inserted in the same transaction, none of those rows is ever
    deleted, and the ledger audit names any receipt whose rows are missing
    (:mod:`app.ledger.references`)."""

    __tablename__ = "gift_send"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("coins_paid + brand_subsidy = creator_coins + platform_coins "
                        "+ brand_coins", name="receipt_balanced"),
        Index("ix_gift_send_session_id", "session_id", "id"),
        Index("ix_gift_send_creator_created", "creator_id", "created_at"),
        Index("ix_gift_send_sender_created", "sender_id", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    session_id: int = Field(sa_type=BigId)
    gift_id: int = Field(sa_type=BigId)
    sender_id: int = Field(sa_type=BigId)
    creator_id: int = Field(sa_type=BigId)
    quantity: int
    unit_price: int = Field(sa_type=Amount)
    coins_paid: int = Field(sa_type=Amount)
    brand_subsidy: int = Field(default=0, sa_type=Amount)
    creator_coins: int = Field(sa_type=Amount)
    platform_coins: int = Field(sa_type=Amount)
    brand_coins: int = Field(default=0, sa_type=Amount)
    creator_diamonds: int = Field(sa_type=Amount)
    rate_card_version: int
    transaction_id: int = Field(sa_type=BigId)
    combo_id: int = Field(sa_type=BigId)
    combo_count: int = Field(sa_type=Amount)
    created_at: datetime = created_at_field()
