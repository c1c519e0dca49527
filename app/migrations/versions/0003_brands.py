"""Brands and sponsored gifts: the brand table, and gifts owned by a brand's plugin.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 17:52:16.115054
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.models.base import UTCDateTime

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('brand',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('slug', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('plugin', sa.String(length=100), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_brand')),
    sa.UniqueConstraint('slug', name=op.f('uq_brand_slug'))
    )
    with op.batch_alter_table('gift', schema=None) as batch_op:
        batch_op.add_column(sa.Column('brand_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.add_column(sa.Column('plugin', sa.String(length=100), nullable=True))
        batch_op.create_index(batch_op.f('ix_gift_brand_id'), ['brand_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_gift_brand_id_brand'), 'brand', ['brand_id'], ['id'])



def downgrade() -> None:
    with op.batch_alter_table('gift', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_gift_brand_id_brand'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_gift_brand_id'))
        batch_op.drop_column('plugin')
        batch_op.drop_column('brand_id')

    op.drop_table('brand')
