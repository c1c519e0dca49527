"""The typed web client for front-end teams (docs/examples/web): its types are generated from
schema.graphql by GraphQL Code Generator, it type-checks with tsc, and run with Node against a
real server it buys coins, sends a gift and sees it arrive over graphql-ws. Its documents are
validated against the schema by the generator, so a schema change that breaks them fails
here. npm packages are installed by the test run (pinned in its package.json)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import fresh_database
from tests.support import ServerProcess, node_with_packages, sandbox, token
from tests.test_http_gifting import START

WEB = Path(__file__).resolve().parent.parent / "docs" / "examples" / "web"


@pytest.fixture(scope="module")
def built() -> Path:
    """The client, generated and compiled (a failure is the generator's or tsc's report)."""
    node = node_with_packages(WEB, "typescript", "the typed web client test")
    npm = shutil.which("npm")
    assert npm is not None
    build = subprocess.run([npm, "run", "build"], cwd=WEB, capture_output=True, text=True,
                           timeout=300)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    return node


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    process = ServerProcess(fresh_database("sqlite", request, tmp_path_factory.mktemp("web")),
                            LIVEGIFTS_SEED_DEMO_DATA="true")
    process.start()
    yield process
    process.stop()


def graphql(server: ServerProcess, query: str, variables: dict | None = None,
            bearer: str | None = None) -> dict:
    headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
    body = httpx.post(server.url, json={"query": query, "variables": variables},
                      headers=headers, timeout=30).json()
    assert "errors" not in body, body
    return body["data"]


def test_the_typed_client_buys_coins_sends_a_gift_and_sees_it_live(built, server):
    started = graphql(server, START, {"title": "Late show"}, token("web-star", "creator"))
    session_id = started["startLiveSession"]["liveSession"]["id"]
    packages = graphql(server, "{ coinPackages { sku price { amount } } }")["coinPackages"]
    price = next(p["price"]["amount"] for p in packages if p["sku"] == "coins-70")
    ran = subprocess.run(
        [str(built), "dist/main.js"], cwd=WEB, capture_output=True, text=True, timeout=120,
        env={**os.environ, "LIVEGIFTS_API": server.url, "LIVEGIFTS_TOKEN": token("web-fan"),
             "LIVEGIFTS_SESSION": session_id,
             "LIVEGIFTS_RECEIPT": sandbox().make_receipt("coins-70", price)})
    assert ran.returncode == 0, ran.stdout + ran.stderr
    outcome = json.loads(ran.stdout.strip().splitlines()[-1])
    base = server.url.removesuffix("/graphql")
    assert outcome == {"firstEvent": "ViewerCountChanged", "coinsAfterPurchase": 70,
                       "coinsPaid": 1, "walletCoins": 69,
                       "giftImage": f"{base}/static/gifts/rose.svg",
                       "arrived": {"sender": "web-fan", "gift": "Rose", "quantity": 1}}


def test_a_document_the_schema_does_not_answer_fails_the_build(built, tmp_path):
    """The generator validates the client's documents against schema.graphql: a field the
    schema does not have stops the build, naming it."""
    broken = tmp_path / "web"
    shutil.copytree(WEB, broken, ignore=shutil.ignore_patterns("node_modules", "dist", "gql"),
                    symlinks=True)
    (broken / "node_modules").symlink_to(WEB / "node_modules")
    main = broken / "src" / "main.ts"
    main.write_text(main.read_text().replace("coinPrice imageUrl", "coinPrice imageURL"))
    codegen = (broken / "codegen.ts")
    codegen.write_text(codegen.read_text().replace(
        '"../../../schema.graphql"', json.dumps(str(WEB.parent.parent.parent / "schema.graphql"))))
    build = subprocess.run([str(built), "node_modules/.bin/graphql-codegen", "--config",
                            "codegen.ts"], cwd=broken, capture_output=True, text=True,
                           timeout=300)
    assert build.returncode != 0
    assert 'Cannot query field "imageURL" on type "Gift"' in build.stdout + build.stderr
