"""Gifting: catalogue, rate cards, live sessions, gift sends, combos and leaderboard totals.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 17:32:35.698146
"""
from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from app.models.base import UTCDateTime

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_RATE_CARD = {
    "version": 1, "creator_share_bps": 5000, "diamonds_per_coin": 1,
    "cash_minor_per_100_diamonds": 50, "cash_currency": "USD", "effective_from": EPOCH,
    "note": "Launch rate card", "created_at": EPOCH,
}


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('gift',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('sku', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('coin_price', sa.BigInteger(), nullable=False),
    sa.Column('image_url', sa.String(length=500), nullable=False),
    sa.Column('animation_url', sa.String(length=500), nullable=True),
    sa.Column('category', sa.String(length=40), nullable=False),
    sa.Column('available_from', UTCDateTime(), nullable=True),
    sa.Column('available_until', UTCDateTime(), nullable=True),
    sa.Column('sort_order', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint('available_until IS NULL OR available_from IS NULL OR available_until > available_from', name=op.f('ck_gift_window_ordered')),
    sa.CheckConstraint('coin_price > 0', name=op.f('ck_gift_price_positive')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gift')),
    sa.UniqueConstraint('sku', name=op.f('uq_gift_sku'))
    )
    with op.batch_alter_table('gift', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_gift_category'), ['category'], unique=False)

    op.create_table('rate_card',
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('creator_share_bps', sa.Integer(), nullable=False),
    sa.Column('diamonds_per_coin', sa.Integer(), nullable=False),
    sa.Column('cash_minor_per_100_diamonds', sa.Integer(), nullable=False),
    sa.Column('cash_currency', sa.String(length=3), nullable=False),
    sa.Column('effective_from', UTCDateTime(), nullable=False),
    sa.Column('note', sa.String(length=300), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint('cash_minor_per_100_diamonds > 0', name=op.f('ck_rate_card_cash_value_positive')),
    sa.CheckConstraint('creator_share_bps BETWEEN 0 AND 10000', name=op.f('ck_rate_card_share_in_range')),
    sa.CheckConstraint('diamonds_per_coin > 0', name=op.f('ck_rate_card_diamond_rate_positive')),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_rate_card'))
    )
    with op.batch_alter_table('rate_card', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rate_card_effective_from'), ['effective_from'], unique=False)

    op.create_table('creator_total',
    sa.Column('period', sa.String(length=5), nullable=False),
    sa.Column('period_start', sa.Date(), nullable=False),
    sa.Column('creator_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('diamonds', sa.BigInteger(), nullable=False),
    sa.Column('coins', sa.BigInteger(), nullable=False),
    sa.Column('gifts', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['creator_id'], ['app_user.id'], name=op.f('fk_creator_total_creator_id_app_user')),
    sa.PrimaryKeyConstraint('period', 'period_start', 'creator_id', name=op.f('pk_creator_total'))
    )
    with op.batch_alter_table('creator_total', schema=None) as batch_op:
        batch_op.create_index('ix_creator_total_rank', ['period', 'period_start', 'diamonds', 'creator_id'], unique=False)

    op.create_table('live_session',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('creator_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('title', sa.String(length=120), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('started_at', UTCDateTime(), nullable=False),
    sa.Column('ended_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['creator_id'], ['app_user.id'], name=op.f('fk_live_session_creator_id_app_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_live_session'))
    )
    with op.batch_alter_table('live_session', schema=None) as batch_op:
        batch_op.create_index('ix_live_session_status_id', ['status', 'id'], unique=False)
        batch_op.create_index('uq_live_session_one_live_per_creator', ['creator_id'], unique=True, postgresql_where=sa.text("status = 'live'"), sqlite_where=sa.text("status = 'live'"))

    op.create_table('supporter_total',
    sa.Column('creator_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('period', sa.String(length=5), nullable=False),
    sa.Column('period_start', sa.Date(), nullable=False),
    sa.Column('sender_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('coins', sa.BigInteger(), nullable=False),
    sa.Column('diamonds', sa.BigInteger(), nullable=False),
    sa.Column('gifts', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['creator_id'], ['app_user.id'], name=op.f('fk_supporter_total_creator_id_app_user')),
    sa.ForeignKeyConstraint(['sender_id'], ['app_user.id'], name=op.f('fk_supporter_total_sender_id_app_user')),
    sa.PrimaryKeyConstraint('creator_id', 'period', 'period_start', 'sender_id', name=op.f('pk_supporter_total'))
    )
    with op.batch_alter_table('supporter_total', schema=None) as batch_op:
        batch_op.create_index('ix_supporter_total_rank', ['creator_id', 'period', 'period_start', 'coins', 'sender_id'], unique=False)

    op.create_table('gift_combo',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('session_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('sender_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('gift_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('sends', sa.Integer(), nullable=False),
    sa.Column('coins', sa.BigInteger(), nullable=False),
    sa.Column('started_at', UTCDateTime(), nullable=False),
    sa.Column('last_at', UTCDateTime(), nullable=False),
    sa.Column('ended_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['gift_id'], ['gift.id'], name=op.f('fk_gift_combo_gift_id_gift')),
    sa.ForeignKeyConstraint(['sender_id'], ['app_user.id'], name=op.f('fk_gift_combo_sender_id_app_user')),
    sa.ForeignKeyConstraint(['session_id'], ['live_session.id'], name=op.f('fk_gift_combo_session_id_live_session')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gift_combo'))
    )
    with op.batch_alter_table('gift_combo', schema=None) as batch_op:
        batch_op.create_index('ix_gift_combo_open_last', ['last_at'], unique=False, postgresql_where=sa.text('ended_at IS NULL'), sqlite_where=sa.text('ended_at IS NULL'))
        batch_op.create_index('uq_gift_combo_open', ['session_id', 'sender_id', 'gift_id'], unique=True, postgresql_where=sa.text('ended_at IS NULL'), sqlite_where=sa.text('ended_at IS NULL'))

    op.create_table('live_session_viewer',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('session_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('joined_at', UTCDateTime(), nullable=False),
    sa.Column('left_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['session_id'], ['live_session.id'], name=op.f('fk_live_session_viewer_session_id_live_session')),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], name=op.f('fk_live_session_viewer_user_id_app_user')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_live_session_viewer')),
    sa.UniqueConstraint('session_id', 'user_id', name=op.f('uq_live_session_viewer_session_id'))
    )
    op.create_table('session_gifter_total',
    sa.Column('session_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('sender_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('coins', sa.BigInteger(), nullable=False),
    sa.Column('diamonds', sa.BigInteger(), nullable=False),
    sa.Column('gifts', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['sender_id'], ['app_user.id'], name=op.f('fk_session_gifter_total_sender_id_app_user')),
    sa.ForeignKeyConstraint(['session_id'], ['live_session.id'], name=op.f('fk_session_gifter_total_session_id_live_session')),
    sa.PrimaryKeyConstraint('session_id', 'sender_id', name=op.f('pk_session_gifter_total'))
    )
    with op.batch_alter_table('session_gifter_total', schema=None) as batch_op:
        batch_op.create_index('ix_session_gifter_total_rank', ['session_id', 'coins', 'sender_id'], unique=False)

    op.create_table('gift_send',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('session_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('gift_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('sender_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('creator_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('unit_price', sa.BigInteger(), nullable=False),
    sa.Column('coins_paid', sa.BigInteger(), nullable=False),
    sa.Column('brand_subsidy', sa.BigInteger(), nullable=False),
    sa.Column('creator_coins', sa.BigInteger(), nullable=False),
    sa.Column('platform_coins', sa.BigInteger(), nullable=False),
    sa.Column('brand_coins', sa.BigInteger(), nullable=False),
    sa.Column('creator_diamonds', sa.BigInteger(), nullable=False),
    sa.Column('rate_card_version', sa.Integer(), nullable=False),
    sa.Column('transaction_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('combo_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('combo_count', sa.BigInteger(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.CheckConstraint('coins_paid + brand_subsidy = creator_coins + platform_coins + brand_coins', name=op.f('ck_gift_send_receipt_balanced')),
    sa.CheckConstraint('quantity > 0', name=op.f('ck_gift_send_quantity_positive')),
    sa.ForeignKeyConstraint(['combo_id'], ['gift_combo.id'], name=op.f('fk_gift_send_combo_id_gift_combo')),
    sa.ForeignKeyConstraint(['creator_id'], ['app_user.id'], name=op.f('fk_gift_send_creator_id_app_user')),
    sa.ForeignKeyConstraint(['gift_id'], ['gift.id'], name=op.f('fk_gift_send_gift_id_gift')),
    sa.ForeignKeyConstraint(['rate_card_version'], ['rate_card.version'], name=op.f('fk_gift_send_rate_card_version_rate_card')),
    sa.ForeignKeyConstraint(['sender_id'], ['app_user.id'], name=op.f('fk_gift_send_sender_id_app_user')),
    sa.ForeignKeyConstraint(['session_id'], ['live_session.id'], name=op.f('fk_gift_send_session_id_live_session')),
    sa.ForeignKeyConstraint(['transaction_id'], ['ledger_transaction.id'], name=op.f('fk_gift_send_transaction_id_ledger_transaction')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_gift_send'))
    )
    with op.batch_alter_table('gift_send', schema=None) as batch_op:
        batch_op.create_index('ix_gift_send_creator_created', ['creator_id', 'created_at'], unique=False)
        batch_op.create_index('ix_gift_send_sender_created', ['sender_id', 'created_at'], unique=False)
        batch_op.create_index('ix_gift_send_session_id', ['session_id', 'id'], unique=False)



    # The rate card in force until an admin publishes another: creators earn half of a
    # gift's coins as diamonds (1 diamond per coin), and 100 diamonds are worth 50 cents.
    op.bulk_insert(sa.table(
        'rate_card', sa.column('version', sa.Integer), sa.column('creator_share_bps', sa.Integer),
        sa.column('diamonds_per_coin', sa.Integer),
        sa.column('cash_minor_per_100_diamonds', sa.Integer), sa.column('cash_currency', sa.String),
        sa.column('effective_from', UTCDateTime()), sa.column('note', sa.String),
        sa.column('created_at', UTCDateTime()),
    ), [DEFAULT_RATE_CARD])


def downgrade() -> None:
    with op.batch_alter_table('gift_send', schema=None) as batch_op:
        batch_op.drop_index('ix_gift_send_session_id')
        batch_op.drop_index('ix_gift_send_sender_created')
        batch_op.drop_index('ix_gift_send_creator_created')

    op.drop_table('gift_send')
    with op.batch_alter_table('session_gifter_total', schema=None) as batch_op:
        batch_op.drop_index('ix_session_gifter_total_rank')

    op.drop_table('session_gifter_total')
    op.drop_table('live_session_viewer')
    with op.batch_alter_table('gift_combo', schema=None) as batch_op:
        batch_op.drop_index('uq_gift_combo_open', postgresql_where=sa.text('ended_at IS NULL'), sqlite_where=sa.text('ended_at IS NULL'))
        batch_op.drop_index('ix_gift_combo_open_last', postgresql_where=sa.text('ended_at IS NULL'), sqlite_where=sa.text('ended_at IS NULL'))

    op.drop_table('gift_combo')
    with op.batch_alter_table('supporter_total', schema=None) as batch_op:
        batch_op.drop_index('ix_supporter_total_rank')

    op.drop_table('supporter_total')
    with op.batch_alter_table('live_session', schema=None) as batch_op:
        batch_op.drop_index('uq_live_session_one_live_per_creator', postgresql_where=sa.text("status = 'live'"), sqlite_where=sa.text("status = 'live'"))
        batch_op.drop_index('ix_live_session_status_id')

    op.drop_table('live_session')
    with op.batch_alter_table('creator_total', schema=None) as batch_op:
        batch_op.drop_index('ix_creator_total_rank')

    op.drop_table('creator_total')
    with op.batch_alter_table('rate_card', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rate_card_effective_from'))

    op.drop_table('rate_card')
    with op.batch_alter_table('gift', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_gift_category'))

    op.drop_table('gift')
