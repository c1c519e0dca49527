"""Schema migrations (Alembic), run by ``livegifts migrate`` and on server start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(connection: Any = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    async with engine.begin() as connection:
        await connection.run_sync(
            lambda sync_connection: command.upgrade(alembic_config(sync_connection), revision))


async def revision(engine: AsyncEngine, message: str) -> None:
    """Autogenerate a new migration from the difference between models and database."""
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync_connection: command.revision(
            alembic_config(sync_connection), message=message, autogenerate=True))
