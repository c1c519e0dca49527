"""Alembic environment: runs on the connection handed over by :func:`app.migrate.upgrade`."""

from __future__ import annotations

from alembic import context

from app.models import metadata


def run_migrations_online() -> None:
    connection = context.config.attributes["connection"]
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite",
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
