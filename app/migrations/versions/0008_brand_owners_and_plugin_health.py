"""Brands bound to the distribution that owns them and approved by an operator; plugin
health as each server process sees it.

Revision ID: 0008
Revises: 0007
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.models.base import UTCDateTime

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('brand_owner',
    sa.Column('slug', sa.String(length=40), nullable=False),
    sa.Column('distribution', sa.String(length=200), nullable=True),
    sa.Column('approved_at', UTCDateTime(), nullable=True),
    sa.Column('bound_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('slug', name=op.f('pk_brand_owner'))
    )
    # Brands already live stay live: approved, and bound at their plugin's next start.
    op.execute("INSERT INTO brand_owner (slug, distribution, approved_at, bound_at) "
               "SELECT slug, NULL, created_at, created_at FROM brand")


    op.create_table('plugin_health',
    sa.Column('instance', sa.String(length=100), nullable=False),
    sa.Column('plugin', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('failures', sa.BigInteger(), nullable=False),
    sa.Column('timeouts', sa.BigInteger(), nullable=False),
    sa.Column('breaker', sa.String(length=12), nullable=False),
    sa.Column('last_failure', sa.Text(), nullable=True),
    sa.Column('last_failure_at', UTCDateTime(), nullable=True),
    sa.Column('updated_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('instance', 'plugin', name=op.f('pk_plugin_health'))
    )
    op.create_index(op.f('ix_plugin_health_updated_at'), 'plugin_health', ['updated_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_plugin_health_updated_at'), table_name='plugin_health')
    op.drop_table('plugin_health')
    op.drop_table('brand_owner')
