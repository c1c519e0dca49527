"""The event log: live events written with the changes they report, and their streams.

Revision ID: 0012
Revises: 0011
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.models.base import UTCDateTime

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('event',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('stream', sa.String(length=80), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('type', sa.String(length=40), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('published', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_event')),
    sa.UniqueConstraint('stream', 'seq', name=op.f('uq_event_stream'))
    )
    op.create_index('ix_event_unpublished', 'event', ['id'], unique=False,
                    postgresql_where=sa.text('NOT published'),
                    sqlite_where=sa.text('NOT published'))
    op.create_table('event_stream',
    sa.Column('stream', sa.String(length=80), nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('stream', name=op.f('pk_event_stream'))
    )


def downgrade() -> None:
    op.drop_table('event_stream')
    op.drop_index('ix_event_unpublished', table_name='event')
    op.drop_table('event')
