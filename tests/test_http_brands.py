"""Brand partners and plugin operators over a real server: catalogue, budgets, reports, scope."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from app.seed import DEMO_BRAND_BUDGET
from tests.conftest import fresh_database
from tests.support import GraphQLClient, ServerProcess, snapshot, token
from tests.test_http_gifting import SEND, buy_coins, gift_ids, go_live, send_input

ADMIN = token("brand-admin", "admin")
PLUGINS = "tests.sample_plugins.acme:plugin,tests.sample_plugins.acme:globex," \
          "tests.sample_plugins.broken_import"
REPORT = """query($brand: String) { campaignReport(brand: $brand) {
  brand { slug name } budgetLeft total { sends quantity coins viewerCoins subsidySpent brandCoins }
  byCreator { key sends coins subsidySpent } byDay { key sends } } }"""
FUND = """mutation($brand: String!, $coins: Long!, $key: String!) {
  fundBrandBudget(input: {brand: $brand, coins: $coins, idempotencyKey: $key}) {
    budget userErrors { code field message } } }"""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def brand_server(request, tmp_path_factory):
    url = fresh_database(request.param, request, tmp_path_factory.mktemp("brands"))
    process = ServerProcess(url, LIVEGIFTS_PLUGIN_MODULES=PLUGINS,
                            LIVEGIFTS_SEED_DEMO_DATA="true")
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def gql(brand_server):
    client = GraphQLClient(brand_server.url)
    yield client
    await client.close()


async def test_sponsored_gifts_are_in_the_catalogue_with_their_brand(gql):
    body = await gql('{ gifts(category: "sponsored") { edges { node { sku sponsored available '
                     'brand { slug name } } } } brands { slug name } }')
    gifts = {e["node"]["sku"]: e["node"] for e in body["data"]["gifts"]["edges"]}
    assert gifts["acme-rocket"] == {"sku": "acme-rocket", "sponsored": True, "available": True,
                                    "brand": {"slug": "acme", "name": "Acme"}}
    assert gifts["globex-globe"]["brand"]["slug"] == "globex"
    assert [b["slug"] for b in body["data"]["brands"]] == ["acme", "globex"]
    rose = await gql('{ gifts(first: 1) { edges { node { sku sponsored brand { slug } } } } }')
    assert rose["data"]["gifts"]["edges"][0]["node"] == {"sku": "rose", "sponsored": False,
                                                         "brand": None}


async def test_admins_see_the_plugins_and_their_health(gql):
    body = await gql("{ plugins { name version status hooks gifts brands error failures "
                     "timeouts breaker lastFailure } }", token=ADMIN)
    plugins = {p["name"]: p for p in body["data"]["plugins"]}
    assert plugins["tests.sample_plugins.acme:plugin"]["status"] == "active"
    assert {k: plugins["tests.sample_plugins.acme:plugin"][k] for k in (
        "failures", "timeouts", "breaker", "lastFailure")} == {
        "failures": 0, "timeouts": 0, "breaker": "closed", "lastFailure": None}
    assert plugins["tests.sample_plugins.acme:plugin"]["gifts"] == ["acme-rocket"]
    assert plugins["tests.sample_plugins.broken_import"]["status"] == "failed"
    assert "No module named 'acme_sdk'" in plugins["tests.sample_plugins.broken_import"]["error"]
    assert plugins["app.sandbox"]["hooks"] == ["register_payment_providers",
                                             "register_payout_providers"]
    denied = await gql("{ plugins { name } }", token=token("curious"), expect_errors=True)
    assert denied["errors"][0]["message"] == "Forbidden: this needs the admin role."


async def test_budgets_are_funded_by_admins_with_clear_errors(gql, brand_server):
    demo = DEMO_BRAND_BUDGET  # the demo seed gave every installed brand a budget
    funded = await gql(FUND, {"brand": "globex", "coins": 500, "key": "g-1"}, token=ADMIN)
    assert funded["data"]["fundBrandBudget"] == {"budget": demo + 500, "userErrors": []}
    replay = await gql(FUND, {"brand": "globex", "coins": 500, "key": "g-1"}, token=ADMIN)
    assert replay["data"]["fundBrandBudget"]["budget"] == demo + 500
    before = await snapshot(brand_server.database_url)
    for variables, code, message in [
        ({"brand": "initech", "coins": 5, "key": "x-1"}, "NOT_FOUND",
         "No brand 'initech' is installed."),
        ({"brand": "globex", "coins": 0, "key": "x-2"}, "INVALID_AMOUNT",
         "coins must be between 1 and 1,000,000,000."),
        ({"brand": "globex", "coins": -5, "key": "x-3"}, "INVALID_AMOUNT",
         "coins must be between 1 and 1,000,000,000."),
    ]:
        body = await gql(FUND, variables, token=ADMIN)
        assert body["data"]["fundBrandBudget"]["userErrors"][0]["code"] == code
        assert body["data"]["fundBrandBudget"]["userErrors"][0]["message"] == message
    partner = await gql(FUND, {"brand": "globex", "coins": 5, "key": "x-4"},
                        token=token("globex-rep", "brand", brand="globex"), expect_errors=True)
    assert partner["errors"][0]["message"] == "Forbidden: this needs the admin role."
    assert await snapshot(brand_server.database_url) == before


async def test_a_brand_partner_sees_its_own_report_and_no_other(gql):
    await gql(FUND, {"brand": "acme", "coins": 10_000, "key": "a-1"}, token=ADMIN)
    gifts = await gift_ids(gql)
    creator_name = "rocket-star"
    session_id = await go_live(gql, token(creator_name, "creator"))
    fan = token("rocket-fan")
    await buy_coins(gql, fan)
    sent = await gql(SEND, send_input(session_id, gifts["acme-rocket"], 4), token=fan)
    receipt = sent["data"]["sendGift"]["receipt"]
    assert (receipt["coinsPaid"], receipt["brandSubsidy"], receipt["brandCoins"]) == (100, 100, 20)

    acme_rep = token("acme-rep", "brand", brand="acme")
    report = (await gql(REPORT, token=acme_rep))["data"]["campaignReport"]
    assert report["brand"] == {"slug": "acme", "name": "Acme"}
    assert report["total"] == {"sends": 1, "quantity": 4, "coins": 200, "viewerCoins": 100,
                               "subsidySpent": 100, "brandCoins": 20}
    assert report["byCreator"] == [{"key": creator_name, "sends": 1, "coins": 200,
                                    "subsidySpent": 100}]
    assert len(report["byDay"]) == 1
    assert report["budgetLeft"] == DEMO_BRAND_BUDGET + 10_000 - 100
    budget = await gql('{ gifts(category: "sponsored") { edges { node { brand { budget } } } } }',
                       token=token("globex-rep", "brand", brand="globex"), expect_errors=True)
    assert budget["errors"][0]["message"] == \
        "Forbidden: a brand partner token sees only its own brand."

    for bearer, message in [
        (token("globex-rep", "brand", brand="globex"),
         "Forbidden: a brand partner token sees only its own brand."),
        (token("nosy-viewer"), "Forbidden: this needs the brand role."),
        (None, "Authentication required: send 'Authorization: Bearer <token>' "
               "(mint one with 'livegifts token')."),
    ]:
        body = await gql(REPORT, {"brand": "acme"}, token=bearer, expect_errors=True)
        assert body["errors"][0]["message"] == message
        assert body["data"] is None
    admin_view = await gql(REPORT, {"brand": "acme"}, token=ADMIN)
    assert admin_view["data"]["campaignReport"]["total"]["sends"] == 1


def livegifts_plugins(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "LIVEGIFTS_PLUGINS": "none",
           "LIVEGIFTS_PLUGIN_MODULES": PLUGINS + ",tests.sample_plugins.acme:flaky"}
    return subprocess.run([sys.executable, "-m", "app", "plugins", *args], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_plugin_health_is_added_up_over_server_processes(kind, request, tmp_path):
    """Two server processes write their plugins' health where every process can read it:
    a failed send on one shows in `livegifts plugins` (run apart from the servers), in the
    admin query and in the brand's own view; the command exits 1 as a plugin failed to
    load."""
    url = await asyncio.to_thread(fresh_database, kind, request, tmp_path)  # runs a loop
    server = ServerProcess(url, LIVEGIFTS_WORKERS="2", LIVEGIFTS_SEED_DEMO_DATA="true",
                           LIVEGIFTS_PLUGIN_MODULES=PLUGINS + ",tests.sample_plugins.acme:flaky")
    server.start()
    client = GraphQLClient(server.url)
    try:
        fan, star = token("flaky-fan", "viewer"), token("flaky-star", "creator")
        await buy_coins(client, fan)
        session = await go_live(client, star)
        gift = (await gift_ids(client))["flaky-fizz"]
        sent = await client(SEND, send_input(session, gift), token=fan)
        assert sent["data"]["sendGift"]["userErrors"][0]["message"] == (
            "The gift 'Flaky Rocket' is unavailable: its sponsor's plugin failed.")
        for _ in range(300):  # each process writes what changed every few seconds
            listed = livegifts_plugins(url, "--json")
            assert listed.stdout, listed.stderr
            flaky = {r["name"]: r for r in json.loads(listed.stdout)}[
                "tests.sample_plugins.acme:flaky"]
            if flaky["failures"] == 1 and flaky["processes"] == 2:
                break
            await asyncio.sleep(0.1)
        assert (flaky["status"], flaky["failures"], flaky["timeouts"], flaky["breaker"]) == (
            "active", 1, 0, "closed")
        assert flaky["last_failure"] == ("check_send: check_send raised RuntimeError: campaign "
                                         "service down")
        assert listed.returncode == 1  # tests.sample_plugins.broken_import failed to load
        table = livegifts_plugins(url)
        header, rule, *rows = table.stdout.splitlines()
        assert header.split() == ["name", "version", "status", "hooks", "gifts", "failures",
                                  "timeouts", "breaker", "error"]
        assert any(r.startswith("tests.sample_plugins.acme:flaky") and "campaign service down"
                   in r for r in rows)
        assert any("failed" in r and "No module named 'acme_sdk'" in r for r in rows)
        assert table.returncode == 1
        query = "{ plugins { name failures breaker breakerOpenIn lastFailure } }"
        admin = {p["name"]: p for p in (await client(query, token=ADMIN))["data"]["plugins"]}
        assert admin["tests.sample_plugins.acme:flaky"]["failures"] == 1
        partner = token("flaky-analyst", "brand", brand="flaky")
        own = await client("{ brands { slug plugin { status failures lastFailure } } }",
                           token=partner)
        assert own["data"]["brands"] == [{"slug": "flaky", "plugin": {
            "status": "active", "failures": 1,
            "lastFailure": "check_send: check_send raised RuntimeError: campaign service down"}}]
    finally:
        await client.close()
        server.stop()

