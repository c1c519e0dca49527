"""The part of a coin of revenue share each brand is owed, carried to its next send.

Revision ID: 0009
Revises: 0008
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('brand_share_carry',
    sa.Column('brand_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('carry', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['brand_id'], ['brand.id'],
                            name=op.f('fk_brand_share_carry_brand_id_brand')),
    sa.PrimaryKeyConstraint('brand_id', name=op.f('pk_brand_share_carry'))
    )


def downgrade() -> None:
    op.drop_table('brand_share_carry')
