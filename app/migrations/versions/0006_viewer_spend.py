"""Each viewer's coins spent on gifts per UTC day and month, for spending caps.

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

PERIOD_STARTS = {
    "postgresql": {"day": "CAST(created_at AT TIME ZONE 'UTC' AS date)",
                   "month": "CAST(date_trunc('month', created_at AT TIME ZONE 'UTC') AS date)"},
    "sqlite": {"day": "date(created_at)", "month": "date(created_at, 'start of month')"},
}


def upgrade() -> None:
    op.create_table('viewer_spend',
    sa.Column('sender_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('period', sa.String(length=5), nullable=False),
    sa.Column('period_start', sa.Date(), nullable=False),
    sa.Column('coins', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['sender_id'], ['app_user.id'], name=op.f('fk_viewer_spend_sender_id_app_user')),
    sa.PrimaryKeyConstraint('sender_id', 'period', 'period_start', name=op.f('pk_viewer_spend'))
    )
    # What the receipts already say, so that caps count the gifts sent before this revision.
    for period, start in PERIOD_STARTS[op.get_bind().dialect.name].items():
        op.execute(f"INSERT INTO viewer_spend (sender_id, period, period_start, coins) "
                   f"SELECT sender_id, '{period}', {start}, sum(coins_paid) FROM gift_send "
                   f"GROUP BY 1, 3")


def downgrade() -> None:
    op.drop_table('viewer_spend')
