"""The default gifts' pictures come with livegifts: their URLs become paths on this server.

Only the URLs the default catalogue was seeded with (the placeholder CDN) change; a picture
an admin set stays.

Revision ID: 0016
Revises: 0015
"""
from __future__ import annotations

from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

OLD = "'https://cdn.example.com/livegifts/gifts/' || sku || '.webp'"
NEW = "'/static/gifts/' || sku || '.svg'"


def upgrade() -> None:
    op.execute(f"UPDATE gift SET image_url = {NEW} WHERE image_url = {OLD}")


def downgrade() -> None:
    op.execute(f"UPDATE gift SET image_url = {OLD} WHERE image_url = {NEW}")
