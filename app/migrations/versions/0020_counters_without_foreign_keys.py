"""The leaderboard totals and the spending counters lose their foreign keys.

They are sums of the gift receipts, written in the receipts' own transaction: every id in
them is checked by the receipt beside it. Checking it again cost each gift about ten more
lookups, each locking the user's or the live session's row.

Revision ID: 0020
Revises: 0019
"""
from __future__ import annotations

from alembic import op

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None

# table -> (column, the table it referred to)
COUNTERS = {
    'supporter_total': [('creator_id', 'app_user'), ('sender_id', 'app_user')],
    'creator_total': [('creator_id', 'app_user')],
    'session_gifter_total': [('session_id', 'live_session'), ('sender_id', 'app_user')],
    'viewer_spend': [('sender_id', 'app_user')],
}


def _name(table: str, column: str, referred: str) -> str:
    return f'fk_{table}_{column}_{referred}'


def upgrade() -> None:
    # Batch mode: SQLite copies each table (none is referred to); PostgreSQL alters it.
    for table, keys in COUNTERS.items():
        with op.batch_alter_table(table) as batch:
            for column, referred in keys:
                batch.drop_constraint(_name(table, column, referred), type_='foreignkey')


def downgrade() -> None:
    for table, keys in COUNTERS.items():
        with op.batch_alter_table(table) as batch:
            for column, referred in keys:
                batch.create_foreign_key(_name(table, column, referred), referred,
                                         [column], ['id'])
