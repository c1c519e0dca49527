"""The ``livegifts`` command, run as a user runs it: a real process per call."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from app.auth import verify_token
from app.settings import Settings
from tests.support import JWT_SECRET, SANDBOX_SECRET, execute_sql, sandbox, snapshot


def livegifts(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "LIVEGIFTS_JWT_SECRET": JWT_SECRET,
           "LIVEGIFTS_SANDBOX_SECRET": SANDBOX_SECRET, "LIVEGIFTS_PLUGINS": "none"}
    return subprocess.run([sys.executable, "-m", "app", *args], env=env, capture_output=True,
                          text=True, timeout=120)


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
