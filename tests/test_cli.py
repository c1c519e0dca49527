"""The ``livegifts`` command, run as a user runs it: a real process per call."""

from __future__ import annotations

import os
import subprocess
import sys

import jwt
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from strawberry import relay

from app.auth import verify_token
from app.settings import Settings
from tests.support import JWT_SECRET, execute_sql, sandbox, snapshot
from tests.support import livegifts_cli as livegifts


def test_token_mints_a_verifiable_token():
    done = livegifts("sqlite+aiosqlite:///unused.db", "token", "--user", "ana", "--role",
                     "creator", "--role", "viewer")
    assert done.returncode == 0, done.stderr
    principal = verify_token(Settings(jwt_secret=JWT_SECRET), done.stdout.strip())
    assert principal.name == "ana" and {r.value for r in principal.roles} == {"creator", "viewer"}


@pytest.mark.parametrize("args, message", [
    (["--user", "ana", "--role", "owner"],
     "'owner' is not one of 'viewer', 'creator', 'admin', 'brand'"),
    (["--user", "ana", "--role", "brand"], "a brand partner token needs --brand"),
    (["--user", "no spaces"], "user name must be 1-64 letters"),
])
def test_token_refuses_bad_arguments(args, message):
    done = livegifts("sqlite+aiosqlite:///unused.db", "token", *args)
    assert done.returncode == 2 and message in done.stderr


def test_hints_name_the_command_as_the_user_can_run_it(tmp_path, monkeypatch):
    """Off the PATH (a fresh checkout's .venv/bin/livegifts), hints give that path; on the
    PATH, just livegifts."""
    from app.cli import command_name

    script = tmp_path / ".venv" / "bin" / "livegifts"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script), "serve"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert command_name() == ".venv/bin/livegifts"
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    assert command_name() == "livegifts"


def test_webhook_takes_the_base_url_as_overlay_url_does():
    """``--base-url`` names the server for every command; ``--url`` still works."""
    for flag in ("--base-url", "--url"):
        done = livegifts("sqlite+aiosqlite:///unused.db", "webhook", "paid", "--id", "sbxpo_1",
                         flag, "https://live.example.com")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(
            "curl -s -X POST https://live.example.com/webhooks/payouts/sandbox "), done.stdout


async def test_seed_receipt_and_audit(database_url):
    assert livegifts(database_url, "seed").returncode == 0
    seeded = await snapshot(database_url)
    assert livegifts(database_url, "seed").returncode == 0  # a second seed changes nothing
    assert await snapshot(database_url) == seeded
    assert seeded["balances"]["user:1:wallet"] == 1400

    receipt = livegifts(database_url, "receipt", "--package", "coins-70", "--transaction-id", "t1")
    assert receipt.returncode == 0
    verified = await sandbox().verify_receipt(receipt.stdout.strip())
    assert (verified.sku, verified.amount_minor, verified.transaction_id) == ("coins-70", 99, "t1")
    unknown = livegifts(database_url, "receipt", "--package", "nope")
    assert unknown.returncode == 2 and "no coin package with sku 'nope'" in unknown.stderr

    passed = livegifts(database_url, "audit")
    assert passed.returncode == 0 and "audit passed" in passed.stdout


async def test_audit_fails_naming_the_account(database_url):
    assert livegifts(database_url, "seed").returncode == 0
    await execute_sql(database_url, "UPDATE ledger_account SET balance = balance + 1 "
                                    "WHERE code = 'user:2:wallet'")
    failed = livegifts(database_url, "audit")
    assert failed.returncode == 1
    assert "FAIL cached balance: user:2:wallet: balance 701 but entries sum to 700" in failed.stderr


def test_export_schema_prints_the_sdl():
    done = livegifts("sqlite+aiosqlite:///unused.db", "export-schema")
    assert done.returncode == 0 and "purchaseCoins(input: PurchaseCoinsInput!)" in done.stdout


async def live_session_id(database_url: str) -> str:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            number = await connection.scalar(text("SELECT min(id) FROM live_session"))
    finally:
        await engine.dispose()
    return relay.to_base64("LiveSession", number)


async def test_overlay_url_prints_the_page_with_a_long_lived_viewer_token(database_url):
    assert livegifts(database_url, "seed").returncode == 0  # the demo creator is live
    session_id = await live_session_id(database_url)
    done = livegifts(database_url, "overlay-url", session_id,
                     "--base-url", "https://live.example.com/")
    assert done.returncode == 0, done.stderr
    prefix = f"https://live.example.com/overlay/{session_id}#token="
    assert done.stdout.startswith(prefix) and done.stderr == ""
    minted = done.stdout.strip().removeprefix(prefix)
    principal = verify_token(Settings(jwt_secret=JWT_SECRET), minted)
    assert principal.name == "overlay" and {r.value for r in principal.roles} == {"viewer"}
    claims = jwt.decode(minted, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 365 * 24 * 3600

    await execute_sql(database_url, "UPDATE live_session SET status = 'ended'")
    ended = livegifts(database_url, "overlay-url", session_id, "--days", "1")
    assert ended.returncode == 0 and ended.stdout.startswith("http://127.0.0.1:8000/overlay/")
    assert "note: this session has ended; the overlay will say so" in ended.stderr


async def test_overlay_url_refuses_bad_arguments(database_url):
    assert livegifts(database_url, "seed").returncode == 0
    session_id = await live_session_id(database_url)
    for args, message in [
        (["TGl2ZVNlc3Npb246OTk5OQ=="], "Invalid value for SESSION_ID: no live session has this ID"),
        (["nope"], "Invalid value for SESSION_ID: SESSION_ID is not a valid LiveSession ID."),
        ([session_id, "--base-url", "live.example.com"],
         "Invalid value for --base-url: must start with http:// or https://"),
        ([session_id, "--user", "no spaces"], "Invalid value for --user: user name must be 1-64"),
        ([session_id, "--days", "0"], "Invalid value for '--days': 0 is not in the range"),
    ]:
        done = livegifts(database_url, "overlay-url", *args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
        assert done.stdout == ""


def test_several_workers_without_a_bus_refuse_to_start(tmp_path):
    env = {name: value for name, value in os.environ.items() if name != "REDIS_URL"}
    env.update(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}",
               LIVEGIFTS_PLUGINS="none")
    done = subprocess.run([sys.executable, "-m", "app", "serve", "--workers", "2", "--port", "1"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert ("Error: --workers 2 needs an event bus the workers share, or each viewer sees only "
            "the gifts its own worker served: set REDIS_URL (for example "
            "redis://127.0.0.1:6379/0), or serve with --workers 1.") in done.stderr
    assert not (tmp_path / "bus.db").exists()  # refused before touching anything
