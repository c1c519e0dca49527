"""Payouts, purchase reversals, clawbacks, profiles and spending limits.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 18:08:03.698285
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.models.base import UTCDateTime

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('limit_change',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=12), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=True),
    sa.Column('until', UTCDateTime(), nullable=True),
    sa.Column('effective_at', UTCDateTime(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], name=op.f('fk_limit_change_user_id_app_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_limit_change'))
    )
    with op.batch_alter_table('limit_change', schema=None) as batch_op:
        batch_op.create_index('ix_limit_change_user_kind', ['user_id', 'kind', 'id'], unique=False)

    op.create_table('payout',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('creator_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('diamonds', sa.BigInteger(), nullable=False),
    sa.Column('cash_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('rate_card_version', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('provider', sa.String(length=40), nullable=False),
    sa.Column('provider_payout_id', sa.String(length=200), nullable=True),
    sa.Column('failure_reason', sa.String(length=300), nullable=True),
    sa.Column('hold_transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('settle_transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('settled_at', UTCDateTime(), nullable=True),
    sa.CheckConstraint('diamonds > 0', name=op.f('ck_payout_diamonds_positive')),
    sa.ForeignKeyConstraint(['creator_id'], ['app_user.id'], name=op.f('fk_payout_creator_id_app_user')),
    sa.ForeignKeyConstraint(['hold_transaction_id'], ['ledger_transaction.id'], name=op.f('fk_payout_hold_transaction_id_ledger_transaction')),
    sa.ForeignKeyConstraint(['rate_card_version'], ['rate_card.version'], name=op.f('fk_payout_rate_card_version_rate_card')),
    sa.ForeignKeyConstraint(['settle_transaction_id'], ['ledger_transaction.id'], name=op.f('fk_payout_settle_transaction_id_ledger_transaction')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payout')),
    sa.UniqueConstraint('provider', 'provider_payout_id', name='uq_payout_provider_id')
    )
    with op.batch_alter_table('payout', schema=None) as batch_op:
        batch_op.create_index('ix_payout_creator_created', ['creator_id', 'created_at'], unique=False)

    op.create_table('user_profile',
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('birthdate', sa.Date(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], name=op.f('fk_user_profile_user_id_app_user')),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_user_profile'))
    )
    op.create_table('purchase_reversal',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('purchase_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=12), nullable=False),
    sa.Column('coins_removed', sa.BigInteger(), nullable=False),
    sa.Column('debt_recorded', sa.BigInteger(), nullable=False),
    sa.Column('transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['purchase_id'], ['coin_purchase.id'], name=op.f('fk_purchase_reversal_purchase_id_coin_purchase')),
    sa.ForeignKeyConstraint(['transaction_id'], ['ledger_transaction.id'], name=op.f('fk_purchase_reversal_transaction_id_ledger_transaction')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_purchase_reversal')),
    sa.UniqueConstraint('purchase_id', name=op.f('uq_purchase_reversal_purchase_id'))
    )
    op.create_table('clawback',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('creator_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('gift_send_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('reversal_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('diamonds', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.String(length=300), nullable=False),
    sa.Column('transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['creator_id'], ['app_user.id'], name=op.f('fk_clawback_creator_id_app_user')),
    sa.ForeignKeyConstraint(['gift_send_id'], ['gift_send.id'], name=op.f('fk_clawback_gift_send_id_gift_send')),
    sa.ForeignKeyConstraint(['reversal_id'], ['purchase_reversal.id'], name=op.f('fk_clawback_reversal_id_purchase_reversal')),
    sa.ForeignKeyConstraint(['transaction_id'], ['ledger_transaction.id'], name=op.f('fk_clawback_transaction_id_ledger_transaction')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_clawback'))
    )
    with op.batch_alter_table('clawback', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_clawback_creator_id'), ['creator_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('clawback', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_clawback_creator_id'))

    op.drop_table('clawback')
    op.drop_table('purchase_reversal')
    op.drop_table('user_profile')
    with op.batch_alter_table('payout', schema=None) as batch_op:
        batch_op.drop_index('ix_payout_creator_created')

    op.drop_table('payout')
    with op.batch_alter_table('limit_change', schema=None) as batch_op:
        batch_op.drop_index('ix_limit_change_user_kind')

    op.drop_table('limit_change')
