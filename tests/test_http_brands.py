"""Brand partners and plugin operators over a real server: catalogue, budgets, reports, scope."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from app.seed import DEMO_BRAND_BUDGET
from tests.conftest import fresh_database
from tests.support import GraphQLClient, ServerProcess, failure, snapshot, token
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


async def test_a_plugin_s_own_picture_is_served_with_an_absolute_url(gql, brand_server):
    """Globex ships its gift's picture in its package: the catalogue gives an absolute URL
    on this server, which serves the file with its type and a day's caching; the default
    gifts' pictures likewise; an unknown picture is a 404 in the one error body."""
    body = await gql('{ gifts(first: 100) { edges { node { sku imageUrl } } } }')
    urls = {e["node"]["sku"]: e["node"]["imageUrl"] for e in body["data"]["gifts"]["edges"]}
    base = brand_server.url.removesuffix("/graphql")
    assert urls["globex-globe"] == f"{base}/static/brands/globex-globe.svg"
    assert urls["rose"] == f"{base}/static/gifts/rose.svg"
    assert urls["acme-rocket"] == "https://cdn.example.com/rocket.webp"  # hosted elsewhere
    async with httpx.AsyncClient() as http:
        for url in (urls["globex-globe"], urls["rose"]):
            picture = await http.get(url)
            assert (picture.status_code, picture.headers["content-type"]) == (
                200, "image/svg+xml"), url
            assert picture.content.startswith(b"<svg ")
            assert picture.headers["cache-control"] == "public, max-age=86400"
            # Opened on its own, a picture (an SVG may hold script) runs nothing.
            assert picture.headers["content-security-policy"].endswith("; sandbox")
            assert picture.headers["x-content-type-options"] == "nosniff"
        missing = await http.get(f"{base}/static/brands/acme-rocket.svg")
        assert failure(missing) == (404, "No brand picture has this name.", "NOT_FOUND")
        for path in ("/static/gifts/nope.svg", "/static/gifts/..%2Fmedia.py"):
            status, _, code = failure(await http.get(base + path))
            assert (status, code) == (404, "NOT_FOUND"), path


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
               "(mint one with '.venv/bin/livegifts token --user NAME', or "
               "'livegifts token --user NAME' where livegifts is on your PATH)."),
    ]:
        body = await gql(REPORT, {"brand": "acme"}, token=bearer, expect_errors=True)
        assert body["errors"][0]["message"] == message
        assert body["data"] is None
    admin_view = await gql(REPORT, {"brand": "acme"}, token=ADMIN)
    assert admin_view["data"]["campaignReport"]["total"]["sends"] == 1


SETTLE = """mutation($brand: String!, $coins: Long!, $key: String!) {
  settleBrandRevenue(input: {brand: $brand, coins: $coins, idempotencyKey: $key}) {
    revenue budget userErrors { code field message } } }"""
REVENUE = """query($month: String!) { brands { slug revenue budget statement(month: $month) {
  csvUrl lines { section label count coins } } } }"""


async def test_a_brand_partner_reads_its_revenue_and_statement_and_admins_settle_it(
        gql, brand_server):
    """Acme's partner reads its revenue (a send's brand share of 20 coins added to what it
    had) and the month's statement (GraphQL and CSV, its own brand only); an admin settles
    part of it against the budget; settling more than is left is refused, moving nothing."""
    month = datetime.now(UTC).strftime("%Y-%m")
    acme_rep = token("acme-rep", "brand", brand="acme")
    earlier = (await gql(REVENUE, {"month": month}, token=acme_rep))["data"]["brands"][0]
    await gql(FUND, {"brand": "acme", "coins": 1_000, "key": "revenue-fund"}, token=ADMIN)
    session_id = await go_live(gql, token("revenue-star", "creator"))
    fan = token("revenue-fan")
    await buy_coins(gql, fan)
    sent = await gql(SEND, send_input(session_id, (await gift_ids(gql))["acme-rocket"], 4),
                     token=fan)
    assert sent["data"]["sendGift"]["receipt"]["brandCoins"] == 20
    brands = (await gql(REVENUE, {"month": month}, token=acme_rep))["data"]["brands"]
    assert [b["slug"] for b in brands] == ["acme"]
    revenue, budget = brands[0]["revenue"], brands[0]["budget"]
    assert revenue == earlier["revenue"] + 20
    lines = brands[0]["statement"]["lines"]
    assert (lines[0]["label"], lines[-1]["label"], lines[-1]["coins"]) == ("opening", "closing",
                                                                          revenue)
    settled = await gql(SETTLE, {"brand": "acme", "coins": revenue - 5, "key": "settle-a"},
                        token=ADMIN)
    assert settled["data"]["settleBrandRevenue"] == {"revenue": 5,
                                                     "budget": budget + revenue - 5,
                                                     "userErrors": []}
    before = await snapshot(brand_server.database_url)
    refused = await gql(SETTLE, {"brand": "acme", "coins": 6, "key": "settle-b"}, token=ADMIN)
    assert refused["data"]["settleBrandRevenue"] == {"revenue": None, "budget": None,
                                                     "userErrors": [{
        "code": "INSUFFICIENT_COINS", "field": "coins",
        "message": "The brand's revenue is 5 coins: it cannot settle 6."}]}
    after = await snapshot(brand_server.database_url)
    assert after["balances"] == before["balances"]
    denied = await gql(SETTLE, {"brand": "acme", "coins": 1, "key": "settle-c"}, token=acme_rep,
                       expect_errors=True)
    assert denied["errors"][0]["message"] == "Forbidden: this needs the admin role."

    base = brand_server.url.removesuffix("/graphql")
    async with httpx.AsyncClient(base_url=base) as http:
        own = await http.get(f"/brands/acme/statements/{month}.csv",
                             headers={"authorization": f"Bearer {acme_rep}"})
        assert own.status_code == 200
        assert own.headers["content-type"] == "text/csv; charset=utf-8"
        rows = own.text.splitlines()
        assert rows[0].startswith("section,label,count,coins")
        assert rows[-1] == "balance,closing,0,5,0,0,,"
        assert any(r.startswith("settled,") and f",{5 - revenue}," in r for r in rows)
        other = await http.get(f"/brands/globex/statements/{month}.csv",
                               headers={"authorization": f"Bearer {acme_rep}"})
        assert failure(other) == (
            403, "Forbidden: a brand partner token sees only its own brand.", "FORBIDDEN")
        anonymous = await http.get(f"/brands/acme/statements/{month}.csv")
        assert anonymous.status_code == 401
        bad_month = await http.get("/brands/acme/statements/december.csv",
                                   headers={"authorization": f"Bearer {ADMIN}"})
        assert failure(bad_month) == (400, "month must look like 2026-11.", "INVALID_INPUT")


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
    from tests.test_multiprocess import start_redis

    url = await asyncio.to_thread(fresh_database, kind, request, tmp_path)  # runs a loop
    bus, bus_url = start_redis(tmp_path)  # several workers need a bus they share
    server = ServerProcess(url, LIVEGIFTS_WORKERS="2", LIVEGIFTS_SEED_DEMO_DATA="true",
                           REDIS_URL=bus_url,
                           LIVEGIFTS_PLUGIN_MODULES=PLUGINS + ",tests.sample_plugins.acme:flaky")
    client = GraphQLClient(server.url)
    try:
        server.start()
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
        bus.kill()
        bus.wait()



PAY = """mutation($brand: String!, $coins: Long!, $key: String!) {
  payBrandRevenue(input: {brand: $brand, coins: $coins, idempotencyKey: $key}) {
    payout { id coins diamonds brandSlug status cash { amount currency } }
    userErrors { code field message } } }"""
BRAND_PAYOUTS = """{ brands { slug revenue
  payouts(first: 5) { edges { node { id coins status } } } } }"""
PAYOUT_NODE = "query($id: ID!) { node(id: $id) { ... on Payout { coins brandSlug } } }"


async def test_an_admin_pays_brand_revenue_out_and_only_its_partner_sees_the_payout(
        gql, brand_server):
    """The admin pays 20 revenue coins out (held, the cash at 50 cents a hundred coins
    handed to the provider); Acme's partner lists the payout and reads it by id, another
    brand's partner cannot, and a partner cannot pay itself."""
    acme_rep = token("acme-payout-rep", "brand", brand="acme")
    await gql(FUND, {"brand": "acme", "coins": 1_000, "key": "payout-fund"}, token=ADMIN)
    session_id = await go_live(gql, token("payout-star", "creator"))
    fan = token("payout-fan")
    await buy_coins(gql, fan)
    await gql(SEND, send_input(session_id, (await gift_ids(gql))["acme-rocket"], 4), token=fan)
    revenue = (await gql(BRAND_PAYOUTS, token=acme_rep))["data"]["brands"][0]["revenue"]
    assert revenue >= 20
    paid = (await gql(PAY, {"brand": "acme", "coins": 20, "key": "pay-http"},
                      token=ADMIN))["data"]["payBrandRevenue"]
    payout = paid["payout"]
    assert (paid["userErrors"], payout["coins"], payout["diamonds"], payout["brandSlug"],
            payout["status"], payout["cash"]) == ([], 20, 0, "acme", "PENDING",
                                                  {"amount": 10, "currency": "USD"})
    [brand] = (await gql(BRAND_PAYOUTS, token=acme_rep))["data"]["brands"]
    assert brand["revenue"] == revenue - 20
    assert brand["payouts"]["edges"][0]["node"] == {"id": payout["id"], "coins": 20,
                                                    "status": "PENDING"}
    own = await gql(PAYOUT_NODE, {"id": payout["id"]}, token=acme_rep)
    assert own["data"]["node"] == {"coins": 20, "brandSlug": "acme"}
    other = await gql(PAYOUT_NODE, {"id": payout["id"]},
                      token=token("globex-rep", "brand", brand="globex"))
    assert other["data"]["node"] is None
    before = await snapshot(brand_server.database_url)
    denied = await gql(PAY, {"brand": "acme", "coins": 1, "key": "pay-self"}, token=acme_rep,
                       expect_errors=True)
    assert denied["errors"][0]["message"] == "Forbidden: this needs the admin role."
    after = await snapshot(brand_server.database_url)
    # (Webhook deliveries of the earlier send may be queued meanwhile: not the refusal's.)
    changed = {k for k, v in after["rows"].items() if before["rows"][k] != v}
    assert (changed - {"webhook_delivery"}, after["balances"]) == (set(), before["balances"])


SENDS = """query($brand: String, $first: Int, $after: String) {
  campaignSends(brand: $brand, first: $first, after: $after) {
    edges { node { receiptId giftSku quantity viewerPaid brandSubsidy brandCoins } }
    pageInfo { hasNextPage endCursor } } }"""


async def test_a_brand_partner_lists_its_sends_to_reconcile_page_by_page_and_as_csv(
        gql, brand_server):
    """Acme's partner pages through its sends oldest first, two a page (its two
    new sends come last), each with the receipt id gift_sent carried; the same rows come
    as CSV for a window of days; other brands and bad windows are refused."""
    gifts = await gift_ids(gql)
    session_id = await go_live(gql, token("reconcile-star", "creator"))
    fan = token("reconcile-fan")
    await buy_coins(gql, fan)
    receipts = []
    for quantity in (1, 2):
        sent = await gql(SEND, send_input(session_id, gifts["acme-rocket"], quantity), token=fan)
        receipts.append(sent["data"]["sendGift"]["receipt"])
    acme_rep = token("acme-rep", "brand", brand="acme")
    seen, after = [], None
    while True:
        page = (await gql(SENDS, {"first": 2, "after": after}, token=acme_rep))["data"][
            "campaignSends"]
        seen += [edge["node"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert [node["quantity"] for node in seen][-2:] == [1, 2]
    ids = [node["receiptId"] for node in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) >= 2
    assert seen[-1] == {"receiptId": seen[-1]["receiptId"], "giftSku": "acme-rocket",
                        "quantity": 2, "viewerPaid": receipts[1]["coinsPaid"],
                        "brandSubsidy": receipts[1]["brandSubsidy"],
                        "brandCoins": receipts[1]["brandCoins"]}
    other = await gql(SENDS, {"brand": "globex"}, token=acme_rep, expect_errors=True)
    assert other["errors"][0]["message"] == \
        "Forbidden: a brand partner token sees only its own brand."

    today = datetime.now(UTC).date()
    window = {"from": today.isoformat(), "to": (today + timedelta(days=1)).isoformat()}
    base = brand_server.url.removesuffix("/graphql")
    async with httpx.AsyncClient(base_url=base) as http:
        exported = await http.get("/brands/acme/sends.csv", params=window,
                                  headers={"authorization": f"Bearer {acme_rep}"})
        assert exported.status_code == 200
        header, *rows = exported.text.splitlines()
        assert header == ("receipt_id,at,gift_sku,quantity,viewer_id,creator_id,session_id,"
                          "viewer_paid,brand_subsidy,brand_coins")
        assert [int(row.split(",")[0]) for row in rows] == ids
        for params, message in [
                ({"from": "yesterday", "to": window["to"]},
                 "from and to must be dates like 2026-11-01."),
                ({"from": window["to"], "to": window["from"]},
                 "from must be before to, at most 366 days apart.")]:
            refused = await http.get("/brands/acme/sends.csv", params=params,
                                     headers={"authorization": f"Bearer {acme_rep}"})
            assert failure(refused)[:2] == (400, message)
        forbidden = await http.get("/brands/globex/sends.csv", params=window,
                                   headers={"authorization": f"Bearer {acme_rep}"})
        assert forbidden.status_code == 403
