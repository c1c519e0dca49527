"""Tamper-evident journal: transaction digests, the seal chain, and immutable rows.

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.ledger.journal import digest
from app.models.base import UTCDateTime

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

IMMUTABLE = ("ledger_entry", "ledger_transaction", "ledger_seal")
MESSAGE = "ledger rows are immutable: post a reversing transaction instead"


def upgrade() -> None:
    op.create_table('ledger_seal',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('through_transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('chain', sa.String(length=64), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_seal'))
    )
    with op.batch_alter_table('ledger_transaction', schema=None) as batch_op:
        batch_op.add_column(sa.Column('digest', sa.String(length=64), nullable=False,
                                      server_default=''))
    _digest_existing_transactions()
    with op.batch_alter_table('ledger_transaction', schema=None) as batch_op:
        batch_op.alter_column('digest', server_default=None)

    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""CREATE FUNCTION livegifts_refuse_change() RETURNS trigger
                       LANGUAGE plpgsql AS $$ BEGIN
                       RAISE EXCEPTION '{MESSAGE} (%)', TG_TABLE_NAME; END $$""")
        for table in IMMUTABLE:
            op.execute(f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION livegifts_refuse_change()")
    else:
        for table in IMMUTABLE:
            for action in ("UPDATE", "DELETE"):
                op.execute(f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON "
                           f"{table} BEGIN SELECT RAISE(ABORT, '{MESSAGE} ({table})'); END")


def _digest_existing_transactions() -> None:
    bind = op.get_bind()
    transactions = sa.table('ledger_transaction', sa.column('id'), sa.column('kind'),
                            sa.column('memo'), sa.column('reverses_id'),
                            sa.column('created_at', UTCDateTime()), sa.column('digest'))
    entries = sa.table('ledger_entry', sa.column('transaction_id'), sa.column('account_id'),
                       sa.column('currency'), sa.column('amount'))
    legs: dict[int, list[tuple[int, str, int]]] = {}
    for row in bind.execute(sa.select(entries)):
        legs.setdefault(row.transaction_id, []).append((row.account_id, row.currency,
                                                        row.amount))
    for row in bind.execute(sa.select(transactions)).all():
        bind.execute(transactions.update().where(transactions.c.id == row.id).values(
            digest=digest(row.kind, row.memo, row.reverses_id, row.created_at,
                          legs.get(row.id, []))))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in IMMUTABLE:
            op.execute(f"DROP TRIGGER {table}_immutable ON {table}")
        op.execute("DROP FUNCTION livegifts_refuse_change()")
    else:
        for table in IMMUTABLE:
            for action in ("update", "delete"):
                op.execute(f"DROP TRIGGER {table}_no_{action}")
    with op.batch_alter_table('ledger_transaction', schema=None) as batch_op:
        batch_op.drop_column('digest')
    op.drop_table('ledger_seal')
