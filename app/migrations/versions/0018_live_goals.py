"""Live goals: a creator's targets for a session, counted by its gifts.

Revision ID: 0018
Revises: 0017
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.models.base import UTCDateTime

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    # A plain ADD COLUMN (SQLite would otherwise copy the table, which gifts refer to).
    op.add_column('live_session', sa.Column('goals', sa.Integer(), nullable=False,
                                            server_default='0'))
    op.create_table('live_goal',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('session_id', BIG_ID, nullable=False),
    sa.Column('title', sa.String(length=80), nullable=False),
    sa.Column('kind', sa.String(length=12), nullable=False),
    sa.Column('gift_id', BIG_ID, nullable=True),
    sa.Column('target', sa.BigInteger(), nullable=False),
    sa.Column('progress', sa.BigInteger(), nullable=False),
    sa.Column('reached_at', UTCDateTime(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint("kind IN ('coins', 'gift_count')", name=op.f('ck_live_goal_kind_known')),
    sa.CheckConstraint("(kind = 'gift_count') = (gift_id IS NOT NULL)",
                       name=op.f('ck_live_goal_gift_for_gift_count')),
    sa.CheckConstraint('target > 0 AND progress >= 0',
                       name=op.f('ck_live_goal_amounts_in_range')),
    sa.ForeignKeyConstraint(['gift_id'], ['gift.id'], name=op.f('fk_live_goal_gift_id_gift')),
    sa.ForeignKeyConstraint(['session_id'], ['live_session.id'],
                            name=op.f('fk_live_goal_session_id_live_session')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_live_goal'))
    )
    op.create_index(op.f('ix_live_goal_session_id'), 'live_goal', ['session_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_live_goal_session_id'), table_name='live_goal')
    op.drop_table('live_goal')
    op.drop_column('live_session', 'goals')
