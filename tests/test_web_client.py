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
from graphql import ObjectTypeDefinitionNode, parse

from tests.conftest import fresh_database
from tests.support import ServerProcess, node_with_packages, sandbox, token
from tests.test_http_gifting import START

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "docs" / "examples" / "web"
SCHEMA = ROOT / "schema.graphql"


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


def build_copy(node: Path, directory: Path, schema: str,
               main_ts: str | None = None) -> subprocess.CompletedProcess[str]:
    """Generate and type-check a copy of the client in ``directory`` against ``schema`` (an
    SDL text) and, when given, another ``src/main.ts``: the reports of both steps."""
    copy = directory / "web"
    shutil.copytree(WEB, copy, ignore=shutil.ignore_patterns("node_modules", "dist", "gql"),
                    symlinks=True)
    (copy / "node_modules").symlink_to(WEB / "node_modules")  # installed once, by `built`
    (copy / "schema.graphql").write_text(schema)
    codegen = copy / "codegen.ts"
    codegen.write_text(codegen.read_text().replace('"../../../schema.graphql"',
                                                   '"schema.graphql"'))
    if main_ts is not None:
        (copy / "src" / "main.ts").write_text(main_ts)
    steps = [["node_modules/.bin/graphql-codegen", "--config", "codegen.ts"],
             ["node_modules/typescript/bin/tsc"]]
    for step in steps:
        done = subprocess.run([str(node), *step], cwd=copy, capture_output=True, text=True,
                              timeout=300)
        if done.returncode != 0:
            break
    return done


def test_a_document_the_schema_does_not_answer_fails_the_build(built, tmp_path):
    """The generator validates the client's documents against schema.graphql: a field the
    schema does not have stops the build, naming it."""
    main = (WEB / "src" / "main.ts").read_text()
    build = build_copy(built, tmp_path, SCHEMA.read_text(),
                       main.replace("coinPrice imageUrl", "coinPrice imageURL"))
    assert build.returncode != 0
    assert 'Cannot query field "imageURL" on type "Gift"' in build.stdout + build.stderr


def without_field(sdl: str, type_name: str, field: str) -> str:
    """``sdl`` with one field of one type removed, as a breaking release would."""
    [kind] = [d for d in parse(sdl).definitions
              if isinstance(d, ObjectTypeDefinitionNode) and d.name.value == type_name]
    [node] = [f for f in kind.fields if f.name.value == field]
    return sdl[:node.loc.start] + sdl[node.loc.end:]  # its description goes with it


def test_a_schema_change_that_breaks_a_document_fails_the_build(built, tmp_path):
    """A schema.graphql that no longer has a field the client selects (``Gift.imageUrl``)
    stops the build, naming the field; the same copy builds with the schema as it is."""
    assert build_copy(built, tmp_path / "as-is", SCHEMA.read_text()).returncode == 0
    build = build_copy(built, tmp_path / "broken",
                       without_field(SCHEMA.read_text(), "Gift", "imageUrl"))
    assert build.returncode != 0
    assert 'Cannot query field "imageUrl" on type "Gift"' in build.stdout + build.stderr
