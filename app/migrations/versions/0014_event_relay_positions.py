"""Relay positions a stream instead of a published flag in every event.

Each stream's position starts after its last event published (before its first one not
published), so nothing relayed before is relayed again and nothing unpublished is lost.

Revision ID: 0014
Revises: 0013
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('event_relay',
    sa.Column('stream', sa.String(length=80), nullable=False),
    sa.Column('relayed_seq', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('stream', name=op.f('pk_event_relay'))
    )
    op.execute("INSERT INTO event_relay (stream, relayed_seq) "
               "SELECT s.stream, COALESCE((SELECT MIN(e.seq) - 1 FROM event AS e "
               "WHERE e.stream = s.stream AND NOT e.published), s.last_seq) "
               "FROM event_stream AS s")
    op.drop_index('ix_event_unpublished', table_name='event')
    with op.batch_alter_table('event') as batch:
        batch.drop_column('published')


def downgrade() -> None:
    with op.batch_alter_table('event') as batch:
        batch.add_column(sa.Column('published', sa.Boolean(), nullable=False,
                                   server_default=sa.true()))
    op.execute("UPDATE event SET published = false WHERE seq > (SELECT r.relayed_seq "
               "FROM event_relay AS r WHERE r.stream = event.stream)")
    with op.batch_alter_table('event') as batch:
        batch.alter_column('published', server_default=None)
    op.create_index('ix_event_unpublished', 'event', ['id'], unique=False,
                    postgresql_where=sa.text('NOT published'),
                    sqlite_where=sa.text('NOT published'))
    op.drop_table('event_relay')
