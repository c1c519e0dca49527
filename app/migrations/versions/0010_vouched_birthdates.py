"""Birthdates vouched for by the identity provider win over declared ones; conflicts kept.

Revision ID: 0010
Revises: 0009
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.models.base import UTCDateTime

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Birthdates on file so far count as declared: the next token vouching one decides.
    with op.batch_alter_table('user_profile', schema=None) as batch_op:
        batch_op.add_column(sa.Column('vouched', sa.Boolean(), server_default='0',
                                      nullable=False))
        batch_op.add_column(sa.Column('declared_birthdate', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('conflict_at', UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('user_profile', schema=None) as batch_op:
        batch_op.drop_column('conflict_at')
        batch_op.drop_column('declared_birthdate')
        batch_op.drop_column('vouched')
