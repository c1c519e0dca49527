"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.models import metadata


async def test_migrated_database_matches_the_models(runtime):
    async with runtime.engine.connect() as connection:
        differences = await connection.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}), metadata))
        tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert differences == [], f"models and migrations disagree: {differences}"
    assert set(metadata.tables) <= tables
