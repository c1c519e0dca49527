"""GraphiQL opens on the example document, whose operations validate and run against the
demo data of a real ``livegifts serve``; it works offline, from the server's own files,
under a strict Content-Security-Policy (headless Chromium with every other host blocked);
production serves no GraphiQL."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import httpx
import pytest
from graphql import OperationDefinitionNode, parse, print_ast, validate

from app.graphiql import DEFAULT_HEADERS, example_document, graphiql_page
from app.graphql.schema import schema
from tests.conftest import REQUIRE_POSTGRES, fresh_database
from tests.support import ServerProcess, Subscription, token
from tests.test_overlay import (
    chromium,  # noqa: F401 - the fixture: Chromium's path
    only_from_its_server,
)

OPERATIONS = {"Wallet": "query", "GiftCatalogue": "query", "LiveNow": "query",
              "GoalsAndMatch": "query", "SendGift": "mutation",
              "LiveSessionEvents": "subscription"}


def operation(name: str) -> str:
    """One operation of the example document, on its own."""
    [found] = [d for d in parse(example_document()).definitions
               if isinstance(d, OperationDefinitionNode) and d.name and d.name.value == name]
    return print_ast(found)


def test_every_example_operation_validates_against_the_schema():
    document = parse(example_document())
    assert validate(schema._schema, document) == []
    operations = {d.name.value: d.operation.value for d in document.definitions
                  if isinstance(d, OperationDefinitionNode)}
    assert operations == OPERATIONS


def test_the_example_tells_how_to_authenticate():
    text = example_document()
    assert ".venv/bin/livegifts token --user demo-viewer --role viewer" in text
    assert '{"Authorization": "Bearer <token>"}' in text


def test_the_page_data_cannot_end_its_block():
    """The example and headers ride in a JSON block: a '</script>' in them stays data."""
    page = graphiql_page("# </script><script>alert(1)</script>", DEFAULT_HEADERS)
    assert "</script><script>alert(1)" not in page
    assert json.loads(_config(page))["document"] == "# </script><script>alert(1)</script>"


def _config(page: str) -> str:
    return re.search(r'<script id="livegifts-graphiql-config" type="application/json">'
                     r"(.*?)</script>", page, re.S).group(1)


@pytest.fixture(scope="module")
def demo_server(request, tmp_path_factory):
    # The page and the demo seed do not depend on the database: SQLite is enough.
    url = fresh_database("sqlite", request, tmp_path_factory.mktemp("graphiql"))
    process = ServerProcess(url, LIVEGIFTS_SEED_DEMO_DATA="true")
    process.start()
    yield process
    process.stop()


def graphiql_html(url: str) -> httpx.Response:
    return httpx.get(url, headers={"accept": "text/html"}, timeout=30)


def test_graphiql_opens_on_the_example_from_its_own_files(demo_server):
    page = graphiql_html(demo_server.url)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"].startswith("default-src 'none'; "
                                                              "script-src 'self';")
    assert "<title>livegifts GraphiQL</title>" in page.text
    assert "https://" not in page.text  # every file from this server
    config = json.loads(_config(page.text))
    assert config["document"] == example_document()
    assert json.loads(config["headers"]) == {}  # the token goes there; public queries work
    files = httpx.get(demo_server.url.removesuffix("/graphql") +
                      "/static/graphiql/graphiql.min.js", timeout=30)
    assert files.status_code == 200
    assert files.headers["cache-control"] == "max-age=86400, public"


def test_graphiql_page_script_is_valid_javascript(demo_server, tmp_path):
    node = shutil.which("node")
    if node is None:
        if REQUIRE_POSTGRES:  # CI runs every external check
            pytest.fail("node is needed to check the GraphiQL page's script", pytrace=False)
        pytest.skip("node is not installed: the GraphiQL script check was skipped")
    script = httpx.get(demo_server.url.removesuffix("/graphql") +
                       "/static/graphiql/livegifts-graphiql.js", timeout=30)
    (tmp_path / "graphiql.js").write_text(script.text)
    check = subprocess.run([node, "--check", str(tmp_path / "graphiql.js")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


async def test_graphiql_runs_the_example_offline_in_a_browser(demo_server, chromium):  # noqa: F811
    """Headless Chromium with every host but the server blocked: the page renders, runs the
    example's GiftCatalogue and shows the result; no request leaves the server, no script
    error, nothing the Content-Security-Policy refuses."""
    from playwright.async_api import expect

    async with only_from_its_server(chromium, demo_server.url, height=800) as (page, elsewhere):
        await expect(page.locator(".graphiql-container")).to_be_visible(timeout=30_000)
        # The button becomes a menu of operations once the editor has parsed the document;
        # clicked before that, it runs nothing and opens no menu.
        operations = page.locator('.graphiql-execute-button[aria-haspopup="menu"]')
        await expect(operations).to_be_visible(timeout=30_000)
        await operations.click()
        await page.get_by_role("menuitem", name="GiftCatalogue").click()
        await expect(page.locator(".result-window")).to_contain_text('"name": "Rose"',
                                                                      timeout=30_000)
    assert elsewhere == []


async def test_the_examples_run_against_the_demo_data(demo_server):
    viewer, fan = token("demo-viewer"), token("demo-fan")

    async def run(name: str, variables: dict | None = None, bearer: str | None = None) -> dict:
        # As GraphiQL sends it: the whole document and the chosen operation's name.
        headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.post(demo_server.url, headers=headers, json={
                "query": example_document(), "operationName": name, "variables": variables})
        body = response.json()
        assert "errors" not in body, body
        return body["data"]

    wallet = await run("Wallet", bearer=viewer)
    assert wallet["viewer"]["wallet"]["coins"] == 1400
    assert {t["node"]["kind"] for t in wallet["viewer"]["transactions"]["edges"]} == \
        {"coin_purchase"}
    catalogue = await run("GiftCatalogue")
    rose = next(e["node"] for e in catalogue["gifts"]["edges"] if e["node"]["name"] == "Rose")
    assert rose["coinPrice"] == 1 and rose["available"]
    async with httpx.AsyncClient(timeout=30) as http:  # served by the server itself
        picture = await http.get(rose["imageUrl"])
    assert rose["imageUrl"] == demo_server.url.removesuffix("/graphql") + \
        "/static/gifts/rose.svg"
    assert (picture.status_code, picture.headers["content-type"]) == (200, "image/svg+xml")
    assert picture.headers["cache-control"] == "public, max-age=86400"
    live = await run("LiveNow", bearer=viewer)
    [stream] = [e["node"] for e in live["liveSessions"]["edges"]]
    assert (stream["title"], stream["creator"]["name"]) == ("Demo stream: say hi!",
                                                           "demo-creator")

    async with httpx.AsyncClient(timeout=30) as http:  # the demo creator sets a goal
        goal = (await http.post(demo_server.url, headers={
            "authorization": f"Bearer {token('demo-creator', 'creator')}"}, json={
            "query": "mutation($input: SetLiveGoalInput!) { setLiveGoal(input: $input) "
                     "{ userErrors { code } } }",
            "variables": {"input": {"sessionId": stream["id"], "title": "Ten roses",
                                    "kind": "GIFT_COUNT", "target": 10,
                                    "giftId": rose["id"]}}})).json()
    assert goal["data"]["setLiveGoal"]["userErrors"] == []
    board = await run("GoalsAndMatch", {"sessionId": stream["id"]}, bearer=viewer)
    assert board["liveSession"] == {"goals": [{"title": "Ten roses", "kind": "GIFT_COUNT",
                                              "target": 10, "progress": 0, "status": "OPEN"}],
                                    "match": None}
    async with Subscription(demo_server.url, fan, operation("LiveSessionEvents"),
                            {"sessionId": stream["id"]}) as events:
        assert await events.next_data() == {"liveSessionEvents": {
            "__typename": "ViewerCountChanged", "viewers": 0}}
        send = {"sessionId": stream["id"], "giftId": rose["id"], "quantity": 5,
                "idempotencyKey": "gift-1"}
        sent = (await run("SendGift", send, bearer=viewer))["sendGift"]
        assert sent["userErrors"] == [] and not sent["replayed"]
        assert sent["receipt"]["coinsPaid"] == 5 and sent["walletCoins"] == 1395
        event = (await events.next_data())["liveSessionEvents"]
        assert (event["__typename"], event["sender"]["name"], event["gift"]["name"],
                event["quantity"]) == ("GiftSent", "demo-viewer", "Rose", 5)
        goal_moved = (await events.next_data())["liveSessionEvents"]
        while goal_moved["__typename"] == "TopGiftersChanged":
            goal_moved = (await events.next_data())["liveSessionEvents"]
        assert goal_moved == {"__typename": "GoalProgress", "title": "Ten roses",
                              "progress": 5, "target": 10}
    again = (await run("SendGift", send, bearer=viewer))["sendGift"]
    assert again["replayed"] and again["walletCoins"] == 1395


def test_production_serves_no_graphiql(request, tmp_path):
    url = fresh_database("sqlite", request, tmp_path)
    production = ServerProcess(url, LIVEGIFTS_ENVIRONMENT="production")
    production.start()
    try:
        page = graphiql_html(production.url)
        assert page.status_code == 404
        assert "EXAMPLE_QUERY" not in page.text and "GraphiQL" not in page.text
        api = httpx.post(production.url, json={"query": "{ rateCard { version } }"}, timeout=30)
        assert api.json()["data"] == {"rateCard": {"version": 1}}
    finally:
        production.stop()
