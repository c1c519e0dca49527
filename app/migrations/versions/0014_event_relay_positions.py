"""Relay positions a stream instead of a published flag in every event.

Each stream's position starts before its first event not published (after its last one if
all were), so nothing unpublished is lost. A stream with an unpublished event before a
published one (a process died between commit and publish while another carried on) would
have that later event's webhooks queued again: the migration then stops and asks for the
previous release to run its relay first (it publishes such events within seconds).

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
    gaps = op.get_bind().execute(sa.text(
        "SELECT count(*) FROM event AS e WHERE NOT e.published AND EXISTS (SELECT 1 FROM "
        "event AS later WHERE later.stream = e.stream AND later.seq > e.seq AND "
        "later.published)")).scalar()
    if gaps:
        raise RuntimeError(
            f"{gaps} events were committed but not yet published while later events of their "
            "streams were: run the previous release of livegifts for a minute so its relay "
            "publishes them, then migrate again (nothing has been changed).")
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
