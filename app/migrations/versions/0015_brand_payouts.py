"""Brand payouts: a payout is a creator's (diamonds) or a brand's (revenue coins).

Revision ID: 0015
Revises: 0014
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

ONE_PAYEE = ("creator_id IS NOT NULL AND brand_id IS NULL AND diamonds > 0 AND coins = 0 "
             "OR brand_id IS NOT NULL AND creator_id IS NULL AND coins > 0 AND diamonds = 0")


def upgrade() -> None:
    with op.batch_alter_table('payout') as batch:
        batch.add_column(sa.Column('brand_id', sa.BigInteger().with_variant(
            sa.Integer(), 'sqlite'), nullable=True))
        batch.add_column(sa.Column('coins', sa.BigInteger(), nullable=False,
                                   server_default='0'))
        batch.alter_column('creator_id', existing_type=sa.BigInteger().with_variant(
            sa.Integer(), 'sqlite'), nullable=True)
        batch.drop_constraint(op.f('ck_payout_diamonds_positive'), type_='check')
        batch.create_check_constraint('one_payee', ONE_PAYEE)
        batch.create_foreign_key(batch.f('fk_payout_brand_id_brand'), 'brand', ['brand_id'],
                                 ['id'])
    with op.batch_alter_table('payout') as batch:
        batch.alter_column('coins', server_default=None)


def downgrade() -> None:
    op.execute("DELETE FROM payout WHERE brand_id IS NOT NULL")
    with op.batch_alter_table('payout') as batch:
        batch.drop_constraint(op.f('fk_payout_brand_id_brand'), type_='foreignkey')
        batch.drop_constraint(op.f('ck_payout_one_payee'), type_='check')
        batch.create_check_constraint('diamonds_positive', 'diamonds > 0')
        batch.alter_column('creator_id', existing_type=sa.BigInteger().with_variant(
            sa.Integer(), 'sqlite'), nullable=False)
        batch.drop_column('coins')
        batch.drop_column('brand_id')
