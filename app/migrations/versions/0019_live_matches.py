"""Live matches: two creators' timed contests, scored by their sessions' gifts.

Revision ID: 0019
Revises: 0018
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.models.base import UTCDateTime

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    # A plain ADD COLUMN (SQLite would otherwise copy the table, which gifts refer to).
    op.add_column('live_session', sa.Column('match_id', BIG_ID, nullable=True))
    op.create_table('live_match',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('inviter_id', BIG_ID, nullable=False),
    sa.Column('invitee_id', BIG_ID, nullable=False),
    sa.Column('inviter_session_id', BIG_ID, nullable=False),
    sa.Column('invitee_session_id', BIG_ID, nullable=False),
    sa.Column('duration_seconds', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('invited_at', UTCDateTime(), nullable=False),
    sa.Column('expires_at', UTCDateTime(), nullable=False),
    sa.Column('started_at', UTCDateTime(), nullable=True),
    sa.Column('ends_at', UTCDateTime(), nullable=True),
    sa.Column('ended_at', UTCDateTime(), nullable=True),
    sa.Column('inviter_score', sa.BigInteger(), nullable=False),
    sa.Column('invitee_score', sa.BigInteger(), nullable=False),
    sa.Column('boosts', sa.Text(), nullable=False),
    sa.CheckConstraint("status IN ('invited', 'declined', 'expired', 'running', 'ended')",
                       name=op.f('ck_live_match_status_known')),
    sa.CheckConstraint('duration_seconds BETWEEN 60 AND 600',
                       name=op.f('ck_live_match_duration_in_range')),
    sa.CheckConstraint('inviter_id <> invitee_id', name=op.f('ck_live_match_two_creators')),
    sa.CheckConstraint('inviter_score >= 0 AND invitee_score >= 0',
                       name=op.f('ck_live_match_scores_in_range')),
    sa.ForeignKeyConstraint(['inviter_id'], ['app_user.id'],
                            name=op.f('fk_live_match_inviter_id_app_user')),
    sa.ForeignKeyConstraint(['invitee_id'], ['app_user.id'],
                            name=op.f('fk_live_match_invitee_id_app_user')),
    sa.ForeignKeyConstraint(['inviter_session_id'], ['live_session.id'],
                            name=op.f('fk_live_match_inviter_session_id_live_session')),
    sa.ForeignKeyConstraint(['invitee_session_id'], ['live_session.id'],
                            name=op.f('fk_live_match_invitee_session_id_live_session')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_live_match'))
    )
    op.create_index('ix_live_match_status_ends_at', 'live_match', ['status', 'ends_at'])
    op.create_index('ix_live_match_inviter_id', 'live_match', ['inviter_id', 'id'])
    op.create_index('ix_live_match_invitee_id', 'live_match', ['invitee_id', 'id'])
    op.create_table('match_supporter',
    sa.Column('match_id', BIG_ID, nullable=False),
    sa.Column('session_id', BIG_ID, nullable=False),
    sa.Column('sender_id', BIG_ID, nullable=False),
    sa.Column('score', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['match_id'], ['live_match.id'],
                            name=op.f('fk_match_supporter_match_id_live_match')),
    sa.ForeignKeyConstraint(['session_id'], ['live_session.id'],
                            name=op.f('fk_match_supporter_session_id_live_session')),
    sa.ForeignKeyConstraint(['sender_id'], ['app_user.id'],
                            name=op.f('fk_match_supporter_sender_id_app_user')),
    sa.PrimaryKeyConstraint('match_id', 'session_id', 'sender_id',
                            name=op.f('pk_match_supporter'))
    )
    op.create_index('ix_match_supporter_rank', 'match_supporter',
                    ['match_id', 'session_id', 'score'])


def downgrade() -> None:
    op.drop_index('ix_match_supporter_rank', table_name='match_supporter')
    op.drop_table('match_supporter')
    op.drop_index('ix_live_match_invitee_id', table_name='live_match')
    op.drop_index('ix_live_match_inviter_id', table_name='live_match')
    op.drop_index('ix_live_match_status_ends_at', table_name='live_match')
    op.drop_table('live_match')
    op.drop_column('live_session', 'match_id')
