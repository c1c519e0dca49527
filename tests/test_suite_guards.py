"""The test suite cannot pass for the wrong reason: a migration that fails on PostgreSQL
fails the run, named as a migration failure, also outside CI (where an unreachable
PostgreSQL is only skipped)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.conftest import run_autocommit

ROOT = Path(__file__).resolve().parent.parent
REFUSING_DDL = ["CREATE FUNCTION no_ddl() RETURNS event_trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'no DDL in this database'; END $$",
                "CREATE EVENT TRIGGER no_ddl ON ddl_command_start EXECUTE FUNCTION no_ddl()"]


def test_a_migration_failing_on_postgresql_fails_the_run_even_outside_ci(postgres_url):
    base = make_url(postgres_url)
    name = f"livegifts_refuses_ddl_{os.getpid()}"
    maintenance = base.set(database="postgres").render_as_string(hide_password=False)
    asyncio.run(run_autocommit(maintenance, [f"DROP DATABASE IF EXISTS {name}",
                                             f"CREATE DATABASE {name}"]))
    broken = base.set(database=name).render_as_string(hide_password=False)
    try:
        asyncio.run(run_autocommit(broken, REFUSING_DDL))
        environment = {key: value for key, value in os.environ.items()
                       if key not in ("CI", "LIVEGIFTS_REQUIRE_POSTGRES")}
        ran = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "tests/test_migrations.py::test_migrated_database_matches_the_models"],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
            env={**environment, "LIVEGIFTS_TEST_POSTGRES_URL": broken})
    finally:
        asyncio.run(run_autocommit(maintenance,
                                   [f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"]))
    assert ran.returncode != 0, ran.stdout
    assert f"MIGRATION FAILED on PostgreSQL at {broken}" in ran.stdout
    assert "no DDL in this database" in ran.stdout
    assert "1 passed" in ran.stdout  # the SQLite half still ran
