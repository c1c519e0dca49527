"""The documentation cannot drift: every GraphQL example in docs/ and the README validates
against the schema, every reading one runs against a real server with the demo data, and so
do the API guide's mutations and its subscription (over a real WebSocket); every JavaScript
example parses, the operator guide lists every setting with its default, and every relative
link resolves.

The README's mutations and subscription are validated only: they hold placeholders
(``"<session id>"``) for the reader to fill in, so they cannot run as written."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from graphql import GraphQLSyntaxError, parse, validate

from app.graphql.schema import schema
from app.settings import DEVELOPMENT_SECRET, Settings
from tests.conftest import REQUIRE_POSTGRES

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.M)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def fences(language: str) -> list[tuple[str, str]]:
    """(page:line, code) of every fenced block of ``language`` in the pages."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(rf"^```{language}\n(.*?)^```", text, re.M | re.S):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{page.relative_to(ROOT)}:{line}", match.group(1)))
    return found


@pytest.mark.parametrize(("where", "example"), fences("graphql"),
                         ids=[where for where, _ in fences("graphql")])
def test_graphql_example_validates_against_the_schema(where, example):
    try:
        document = parse(example)
    except GraphQLSyntaxError as error:
        pytest.fail(f"{where}: the example does not parse: {error.message}", pytrace=False)
    errors = [error.message for error in validate(schema._schema, document)]
    assert errors == [], f"{where}: the example does not validate: {errors}"


def test_the_documentation_has_graphql_examples():
    pages = {where.split(":")[0] for where, _ in fences("graphql")}
    assert {"docs/api.md", "README.md"} <= pages


@pytest.mark.parametrize(("where", "example"), fences("js"),
                         ids=[where for where, _ in fences("js")])
def test_javascript_example_parses(where, example, tmp_path):
    node = shutil.which("node")
    if node is None:
        if REQUIRE_POSTGRES:  # CI runs every external check
            pytest.fail("node is needed to check the JavaScript examples", pytrace=False)
        pytest.skip("node is not installed: the JavaScript examples were not checked")
    script = tmp_path / "example.mjs"
    script.write_text(example)
    check = subprocess.run([node, "--check", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, f"{where}: {check.stderr}"


def _documented_default(value: object) -> str | None:
    """How the operator guide writes a default, or None where it explains it in words."""
    if value is None or value == "" or value == DEVELOPMENT_SECRET:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(getattr(value, "value", value))


def test_every_setting_is_documented_with_its_default():
    guide = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \| (.+?) \|", guide, re.M))
    for name, field in Settings.model_fields.items():
        variable = field.validation_alias.choices[0] if field.validation_alias \
            else f"LIVEGIFTS_{name.upper()}"
        assert variable in rows, f"docs/operations.md does not document {variable}"
        default = _documented_default(field.default)
        if default is not None:
            assert rows[variable] == f"`{default}`", \
                f"docs/operations.md gives {variable} the default {rows[variable]}, not {default}"


def _prose(page: Path) -> str:
    """The page without its code blocks."""
    return FENCE.sub("", page.read_text(encoding="utf-8"))


def _anchor(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading, as GitHub makes it."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _links() -> list[tuple[Path, str]]:
    return [(page, target) for page in PAGES
            for target in LINK.findall(_prose(page))
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]  # skip https:, mailto: ...


@pytest.mark.parametrize(("page", "target"), _links(),
                         ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else v)
def test_relative_link_resolves(page, target):
    path, _, anchor = target.partition("#")
    linked = (page.parent / path).resolve() if path else page
    assert linked.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"
    if anchor and linked.suffix == ".md":
        anchors = {_anchor(heading) for heading in HEADING.findall(_prose(linked))}
        assert anchor in anchors, \
            f"{page.relative_to(ROOT)} links to #{anchor}, not a heading of {linked.name}"


@pytest.mark.parametrize("page", ["docs/api.md", "docs/quickstart.md", "README.md"])
def test_no_example_hard_codes_a_month(page):
    """A month written into an example is soon a past one, with nothing in it: examples take
    this month from a variable or the shell (``date -u +%Y-%m``), or say ``YYYY-MM``. Quoted
    server messages may show a date as a format."""
    text = re.sub(r'"message": "[^"]*"', "", (ROOT / page).read_text(encoding="utf-8"))
    months = [(text.count("\n", 0, m.start()) + 1, m.group())
              for m in re.finditer(r"\b20\d\d-[01]\d\b", text)]
    assert months == [], f"{page} hard-codes months at (line, month): {months}"


def _operations(kind: str, page: str = "") -> list[tuple[str, str]]:
    """Every example of one ``kind`` (query, mutation, subscription) on ``page`` (every
    page when empty), with where it is."""
    from graphql import OperationDefinitionNode

    return [(where, example) for where, example in fences("graphql")
            if where.startswith(page)
            and all(isinstance(d, OperationDefinitionNode) and d.operation.value == kind
                    for d in parse(example).definitions)]


def _queries() -> list[tuple[str, str]]:
    """Every example that reads (a query), with where it is."""
    return _operations("query")


# The guide's brand revenue examples name the example partner package, when installed.
SPARKLE_COLA = importlib.util.find_spec("livegifts_sparkle_cola") is not None


@pytest.fixture(scope="module")
def demo(request, tmp_path_factory):
    from tests.conftest import fresh_database
    from tests.support import ServerProcess

    process = ServerProcess(fresh_database("sqlite", request, tmp_path_factory.mktemp("docs")),
                            LIVEGIFTS_SEED_DEMO_DATA="true",
                            LIVEGIFTS_PLUGIN_MODULES="tests.sample_plugins.acme:plugin",
                            LIVEGIFTS_PLUGINS="sparkle-cola" if SPARKLE_COLA else "none")
    process.start()
    yield process
    process.stop()


@pytest.mark.parametrize(("where", "example"), _queries(), ids=[w for w, _ in _queries()])
def test_every_query_example_runs_against_a_real_server(demo, where, example):
    """Each reading example, as written, answers without an error from a server with the
    demo data: an admin's token (a brand partner's for a brand's own fields), and the
    variables a reader would pass (this month, the demo stream's ids)."""
    from datetime import UTC, datetime

    import httpx

    from tests.support import token

    def run(query: str, variables: dict | None, bearer: str) -> dict:
        return httpx.post(demo.url, json={"query": query, "variables": variables},
                          headers={"authorization": f"Bearer {bearer}"}, timeout=30).json()

    admin = token("docs-admin", "admin")
    found = run("{ gifts(first: 1) { edges { node { id } } } brands { slug } "
                "liveSessions(status: LIVE, first: 1) { edges { node { id creator { id } } } } }",
                None, admin)["data"]
    [stream] = [edge["node"] for edge in found["liveSessions"]["edges"]]
    today = datetime.now(UTC).date()
    variables = {"id": found["gifts"]["edges"][0]["node"]["id"], "after": None,
                 "endCursor": None, "session": stream["id"], "creator": stream["creator"]["id"],
                 "month": today.strftime("%Y-%m"), "from": today.replace(day=1).isoformat(),
                 "to": None}
    bearer = admin
    if "campaign" in example:  # a brand partner's own report
        bearer = token("docs-rep", "brand", brand="acme")
    body = run(example, variables, bearer)
    assert "errors" not in body, f"{where}: {body['errors']}"
    assert body["data"], where


def _post(server, query: str, variables: dict | None, bearer: str | None) -> dict:
    import httpx

    headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
    body = httpx.post(server.url, json={"query": query, "variables": variables},
                      headers=headers, timeout=30).json()
    assert "errors" not in body, body
    return body["data"]


@pytest.fixture(scope="module")
def demo_ids(demo) -> dict:
    """The demo stream, and the gifts and coin packages by sku."""
    from tests.support import token

    found = _post(demo, "{ gifts(first: 100) { edges { node { id sku } } } "
                        "coinPackages { id sku price { amount } } "
                        "liveSessions(status: LIVE, first: 1) { edges { node { id } } } }",
                  None, token("docs-admin", "admin"))
    [stream] = [edge["node"]["id"] for edge in found["liveSessions"]["edges"]]
    return {"stream": stream,
            "gifts": {e["node"]["sku"]: e["node"]["id"] for e in found["gifts"]["edges"]},
            "packages": {p["sku"]: (p["id"], p["price"]["amount"])
                         for p in found["coinPackages"]}}


def _buy(demo, ids: dict, bearer: str, sku: str) -> dict:
    """Variables of the guide's ``Buy``: a sandbox receipt for the package ``sku``."""
    from tests.support import sandbox

    package, price = ids["packages"][sku]
    return {"package": package, "receipt": sandbox().make_receipt(sku, price),
            "key": str(uuid.uuid4())}


def _mutation_setup(field: str, demo, ids: dict, request,
                    tmp_path: Path) -> tuple[dict, str, list[str], dict[str, str]]:
    """For the guide's mutation of root ``field``: the variables a reader would pass, the
    token of who may call it (with the data it needs made first), the user error codes
    expected (none, unless the demo data cannot make it succeed), and what a reader would
    put in place of the example's own text (their endpoint for example.com)."""
    from tests.support import token

    stream, rose = ids["stream"], ids["gifts"]["rose"]
    creator = token("demo-creator", "creator")
    if field == "updateProfile":  # a user whose identity provider vouches for no birthdate
        return {}, token("docs-newcomer", birthdate=None), [], {}
    if field == "sendGift":
        return {"session": stream, "gift": rose,
                "input": {"sessionId": stream, "giftId": rose, "quantity": 5,
                          "idempotencyKey": str(uuid.uuid4())}}, token("demo-viewer"), [], {}
    if field == "createWebhookSubscription":  # the reader's endpoint answers the challenge
        from tests.test_webhooks import Receiver

        receiver = Receiver(tmp_path).start()
        request.addfinalizer(receiver.stop)
        return {}, token("docs-hooked", "creator"), [], \
            {"https://example.com/livegifts": receiver.url}
    if field == "purchaseCoins":
        buyer = token("docs-buyer")
        return _buy(demo, ids, buyer, "coins-70"), buyer, [], {}
    if field == "setLiveGoal":
        return {"input": {"sessionId": stream, "title": "100 Roses!", "kind": "GIFT_COUNT",
                          "target": 100, "giftId": rose}}, creator, [], {}
    if field == "requestPayout":  # a patron's 2,000 coins earn the creator 1,000 diamonds
        patron = token("docs-patron")
        _post(demo, "mutation($package: ID!, $receipt: String!, $key: String!) { "
                    "purchaseCoins(input: {packageId: $package, provider: \"sandbox\", "
                    "receipt: $receipt, idempotencyKey: $key}) { userErrors { code } } }",
              _buy(demo, ids, patron, "coins-3500"), patron)
        sent = _post(demo, "mutation($input: SendGiftInput!) { sendGift(input: $input) { "
                           "userErrors { code message } } }",
                     {"input": {"sessionId": stream, "giftId": ids["gifts"]["galaxy"],
                                "quantity": 2, "idempotencyKey": str(uuid.uuid4())}}, patron)
        assert sent["sendGift"]["userErrors"] == [], sent
        return {"key": str(uuid.uuid4())}, creator, [], {}
    if field == "inviteToMatch":  # another creator live at the same time
        from tests.test_http_gifting import START

        rival = _post(demo, START, {"title": "Rival stream"}, token("docs-rival", "creator"))
        return {"input": {"sessionId": stream, "durationSeconds": 300, "opponentSessionId":
                          rival["startLiveSession"]["liveSession"]["id"]}}, creator, [], {}
    if field in ("settleBrandRevenue", "payBrandRevenue"):
        if not SPARKLE_COLA:
            pytest.skip("the sparkle-cola partner package is not installed")
        # Sparkle Cola's plugin keeps no revenue share of its sends, so no demo data earns
        # the brand revenue: the example answers the refusal the guide shows next to it.
        return {}, token("docs-admin", "admin"), ["INSUFFICIENT_COINS"], {}
    if field == "setSpendingLimits":
        return {}, token("docs-saver"), [], {}
    if field == "inviteToMatch":  # another creator goes live to be invited
        rival = token("docs-rival", "creator")
        started = _post(demo, 'mutation { startLiveSession(input: {title: "Rival"}) { '
                              "liveSession { id } userErrors { code } } }", {}, rival)
        opponent = started["startLiveSession"]["liveSession"]["id"]
        return {"input": {"sessionId": stream, "opponentSessionId": opponent,
                          "durationSeconds": 300}}, creator, [], {}
    pytest.fail(f"docs/api.md has a mutation of {field}: give it its variables and token "
                "in _mutation_setup", pytrace=False)


@pytest.mark.parametrize(("where", "example"), _operations("mutation", "docs/api.md"),
                         ids=[w for w, _ in _operations("mutation", "docs/api.md")])
def test_every_mutation_example_of_the_api_guide_runs_against_a_real_server(
        demo, demo_ids, request, tmp_path, where, example):
    """Each of the API guide's mutations, as written, runs on a server with the demo data
    with the variables and the token a reader would use, and answers without an error (the
    webhook example with a local endpoint in place of example.com, which a test cannot
    reach to answer the challenge)."""
    [operation] = parse(example).definitions
    field = operation.selection_set.selections[0].name.value
    variables, bearer, expected, replaced = _mutation_setup(field, demo, demo_ids, request,
                                                            tmp_path)
    for text, reader_s in replaced.items():
        assert text in example, f"{where}: no {text} to replace"
        example = example.replace(text, reader_s)
    data = _post(demo, example, variables, bearer)
    assert data and data[field], f"{where}: {data}"
    codes = [error["code"] for error in data[field]["userErrors"]]
    assert codes == expected, f"{where}: {data[field]['userErrors']}"


async def test_the_api_guides_subscription_example_runs_over_a_real_websocket(demo, demo_ids):
    """The guide's overlay subscription, as written, over graphql-transport-ws: the viewer
    count first, then a gift sent over HTTP arrives with the fields it selects."""
    from tests.support import Subscription, token

    [(where, example)] = _operations("subscription", "docs/api.md")
    fan = token("demo-fan")
    async with Subscription(demo.url, fan, example,
                            {"session": demo_ids["stream"], "after": None}) as events:
        first = (await events.next_data())["liveSessionEvents"]
        assert first["__typename"] == "ViewerCountChanged", f"{where}: {first}"
        sent = _post(demo, "mutation($input: SendGiftInput!) { sendGift(input: $input) { "
                           "userErrors { code message } } }",
                     {"input": {"sessionId": demo_ids["stream"],
                                "giftId": demo_ids["gifts"]["rose"], "quantity": 1,
                                "idempotencyKey": str(uuid.uuid4())}}, fan)
        assert sent["sendGift"]["userErrors"] == [], sent
        while (event := (await events.next_data())["liveSessionEvents"])["__typename"] \
                != "GiftSent":
            pass
    assert (event["sender"]["name"], event["gift"]["name"], event["quantity"]) == \
        ("demo-fan", "Rose", 1), f"{where}: {event}"
    assert event["gift"]["imageUrl"].endswith("/static/gifts/rose.svg"), event
