"""The public data version, bumped by triggers, and the operator's trusted documents.

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.models.base import UTCDateTime

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

# What anonymous callers can read; a change to any of them changes the public answers.
PUBLIC_TABLES = ("brand", "gift", "rate_card", "coin_package")
# Every process listening on PostgreSQL learns of a change at its commit.
NOTIFY_CHANNEL = "livegifts_public_data"


def upgrade() -> None:
    op.create_table('public_data_version',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_public_data_version_single_row')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_public_data_version'))
    )
    op.execute("INSERT INTO public_data_version (id, version) VALUES (1, 1)")
    op.create_table('trusted_document',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('document', sa.Text(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_trusted_document'))
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""CREATE FUNCTION livegifts_public_data_changed() RETURNS trigger
                       LANGUAGE plpgsql AS $$ BEGIN
                       UPDATE public_data_version SET version = version + 1 WHERE id = 1;
                       PERFORM pg_notify('{NOTIFY_CHANNEL}', '');
                       RETURN NULL; END $$""")
        for table in PUBLIC_TABLES:
            op.execute(f"CREATE TRIGGER {table}_public_data_changed AFTER INSERT OR UPDATE OR "
                       f"DELETE OR TRUNCATE ON {table} FOR EACH STATEMENT "
                       "EXECUTE FUNCTION livegifts_public_data_changed()")
    else:
        for table in PUBLIC_TABLES:
            for action in ("INSERT", "UPDATE", "DELETE"):
                op.execute(f"CREATE TRIGGER {table}_public_data_{action.lower()} AFTER {action} "
                           f"ON {table} BEGIN UPDATE public_data_version "
                           "SET version = version + 1 WHERE id = 1; END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in PUBLIC_TABLES:
            op.execute(f"DROP TRIGGER {table}_public_data_changed ON {table}")
        op.execute("DROP FUNCTION livegifts_public_data_changed()")
    else:
        for table in PUBLIC_TABLES:
            for action in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER {table}_public_data_{action}")
    op.drop_table('trusted_document')
    op.drop_table('public_data_version')
