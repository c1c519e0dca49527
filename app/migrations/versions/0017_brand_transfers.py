"""Brand fundings and settlements get a record of their own, as every other movement of
money has: the audit checks each such ledger transaction against it.

Transfers made before keep their amounts and brands, read from their ledger entries (the
coins that reached the brand's budget); who made them was not kept, so ``admin_id`` is
empty for them.

Revision ID: 0017
Revises: 0016
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.models.base import UTCDateTime

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('brand_transfer',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('brand_id', BIG_ID, nullable=False),
    sa.Column('kind', sa.String(length=12), nullable=False),
    sa.Column('coins', sa.BigInteger(), nullable=False),
    sa.Column('admin_id', BIG_ID, nullable=True),
    sa.Column('transaction_id', BIG_ID, nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint("kind IN ('funding', 'settlement')",
                       name=op.f('ck_brand_transfer_kind_known')),
    sa.CheckConstraint('coins > 0', name=op.f('ck_brand_transfer_coins_positive')),
    sa.ForeignKeyConstraint(['admin_id'], ['app_user.id'],
                            name=op.f('fk_brand_transfer_admin_id_app_user')),
    sa.ForeignKeyConstraint(['brand_id'], ['brand.id'],
                            name=op.f('fk_brand_transfer_brand_id_brand')),
    sa.ForeignKeyConstraint(['transaction_id'], ['ledger_transaction.id'],
                            name=op.f('fk_brand_transfer_transaction_id_ledger_transaction')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_brand_transfer')),
    sa.UniqueConstraint('transaction_id', name=op.f('uq_brand_transfer_transaction_id'))
    )
    op.create_index(op.f('ix_brand_transfer_brand_id'), 'brand_transfer', ['brand_id'],
                    unique=False)
    op.execute("""
        INSERT INTO brand_transfer (brand_id, kind, coins, admin_id, transaction_id, created_at)
        SELECT b.id, CASE t.kind WHEN 'brand_funding' THEN 'funding' ELSE 'settlement' END,
               e.amount, NULL, t.id, t.created_at
        FROM ledger_transaction t
        JOIN ledger_entry e ON e.transaction_id = t.id AND e.amount > 0
        JOIN ledger_account a ON a.id = e.account_id
        JOIN brand b ON a.code = 'brand:' || b.slug || ':' || 'budget'
        WHERE t.kind IN ('brand_funding', 'brand_settlement')
        ORDER BY t.id""")


def downgrade() -> None:
    op.drop_index(op.f('ix_brand_transfer_brand_id'), table_name='brand_transfer')
    op.drop_table('brand_transfer')
