"""What the server does with a GraphQL request before GraphQL runs: bodies it cannot read,
public answers it keeps, conditional GETs, and documents sent by hash, against real server
processes on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.public_data import PublicData
from tests.conftest import fresh_database
from tests.support import (
    ServerProcess,
    execute_sql,
    failure,
    node_with_packages,
    snapshot,
    token,
)

CATALOGUE = "{ gifts(first: 20) { edges { node { id sku name coinPrice } } } }"
ADMIN = token("cache-admin", "admin")
APOLLO = Path(__file__).parent / "apollo_client"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    url = fresh_database(request.param, request, tmp_path_factory.mktemp("cache"))
    process = ServerProcess(url, LIVEGIFTS_SEED_DEMO_DATA="true",
                            LIVEGIFTS_PUBLIC_MAX_AGE_SECONDS="30")
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def http():
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


def sha256(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def answered_from(server: ServerProcess) -> dict[str, float]:
    """How many anonymous public queries the server answered from its cache and by GraphQL."""
    text = httpx.get(server.url.removesuffix("/graphql") + "/metrics", timeout=30).text
    counts = {"cache": 0.0, "graphql": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "livegifts_public_answers_total":
                counts[sample.labels["source"]] += sample.value
    return counts


async def price_of(http, server: ServerProcess, sku: str, *, until: int | None = None,
                   headers: dict[str, str] | None = None) -> int:
    """A gift's price in the public catalogue; with ``until``, asks again (up to 10 s) until
    the answer shows that price: on PostgreSQL a change reaches the server by a notification
    that travels beside the HTTP request."""
    for _ in range(200):
        body = (await http.post(server.url, json={"query": CATALOGUE}, headers=headers)).json()
        price = next(edge["node"]["coinPrice"] for edge in body["data"]["gifts"]["edges"]
                     if edge["node"]["sku"] == sku)
        if until is None or price == until:
            return price
        await asyncio.sleep(0.05)
    return price


@pytest.mark.parametrize(("body", "message"), [
    (b"null", 'The request body must be a JSON object: {"query": "...", "variables": {...}}.'),
    (b"17", 'The request body must be a JSON object: {"query": "...", "variables": {...}}.'),
    (b'"{ rateCard { version } }"',
     'The request body must be a JSON object: {"query": "...", "variables": {...}}.'),
    (b'{"query": ', "Unable to parse request body as JSON."),
    (b'{"query": "{ __typename }", "variables": {"a": ' + b"[" * 100_000 + b"]" * 100_000
     + b"}}", "Unable to parse request body as JSON."),
])
async def test_a_body_that_is_no_graphql_request_is_a_400_and_changes_nothing(
        http, server, body, message):
    before = await snapshot(server.database_url)
    answer = await http.post(server.url, content=body, headers={
        "content-type": "application/json", "authorization": f"Bearer {token('body-viewer')}"})
    assert (answer.status_code, answer.json()) == (
        400, {"errors": [{"message": message, "extensions": {"code": "BAD_REQUEST"}}]})
    deep = '{"a": ' + "[" * 3000 + "]" * 3000 + "}"
    answer = await http.get(server.url, params={"query": "{ __typename }", "variables": deep})
    assert (answer.status_code, answer.json()) == (400, {"errors": [{
        "message": "The variables parameter is nested too deep.",
        "extensions": {"code": "BAD_REQUEST"}}]})
    assert await snapshot(server.database_url) == before


async def test_text_with_a_nul_character_is_refused_before_anything_runs(http, server):
    """NUL cannot be stored by PostgreSQL (and would be by SQLite): refused alike, whether
    it comes in a variable, as an escape in the document, or in a GET parameter."""
    before = await snapshot(server.database_url)
    creator = {"authorization": f"Bearer {token('nul-creator', 'creator')}"}
    start = "mutation($title: String!) { startLiveSession(input: {title: $title}) { " \
            "userErrors { code } } }"
    refusals = [
        await http.post(server.url, json={"query": start, "variables": {"title": "a\x00b"}},
                        headers=creator),
        await http.post(server.url, headers=creator, json={
            "query": 'mutation { startLiveSession(input: {title: "a\\u0000b"}) '
                     "{ userErrors { code } } }"}),
        await http.get(server.url, params={"query": "{ gifts(category: \"a\x00\") "
                                                    "{ edges { cursor } } }"}),
    ]
    for answer in refusals:
        assert (answer.status_code, answer.json()) == (400, {"errors": [{
            "message": "Text may not contain the NUL character (\\u0000).",
            "extensions": {"code": "BAD_REQUEST"}}]})
    assert await snapshot(server.database_url) == before


async def test_a_kept_answer_is_given_without_running_graphql(http, server):
    await price_of(http, server, "rose")  # the server may know it already: make sure
    before = answered_from(server)
    first = await http.post(server.url, json={"query": CATALOGUE})
    again = await http.post(server.url, json={"query": CATALOGUE})
    after = answered_from(server)
    assert first.json() == again.json() and "errors" not in again.json()
    assert after["cache"] - before["cache"] == 2 and after["graphql"] == before["graphql"]


async def test_any_change_to_the_catalogue_reaches_the_kept_answers(http, server):
    rose = await price_of(http, server, "rose")
    # Behind the server's back, as an operator's SQL would: the database tells the server.
    await execute_sql(server.database_url, "UPDATE gift SET coin_price = 3 WHERE sku = 'rose'")
    assert await price_of(http, server, "rose", until=3) == 3
    # Through the API, as an admin.
    ids = (await http.post(server.url, json={"query": "{ gifts(first: 50) { edges { node { id "
                                                      "sku } } } }"})).json()
    rose_id = next(e["node"]["id"] for e in ids["data"]["gifts"]["edges"]
                   if e["node"]["sku"] == "rose")
    changed = await http.post(server.url, headers={"authorization": f"Bearer {ADMIN}"}, json={
        "query": "mutation($id: ID!) { updateGift(input: {id: $id, coinPrice: 2}) "
                 "{ userErrors { message } } }", "variables": {"id": rose_id}})
    assert changed.json()["data"]["updateGift"]["userErrors"] == []
    assert await price_of(http, server, "rose", until=2) == 2
    await execute_sql(server.database_url, f"UPDATE gift SET coin_price = {rose} "
                                           "WHERE sku = 'rose'")
    assert await price_of(http, server, "rose", until=rose) == rose


async def test_callers_with_a_token_and_answers_with_errors_are_never_kept(http, server):
    viewer = {"authorization": f"Bearer {token('cache-viewer')}"}
    before = answered_from(server)
    for _ in range(2):
        assert await price_of(http, server, "rose", headers=viewer) > 0
    assert answered_from(server) == before  # not even counted: never looked up
    refused = {"query": "{ gifts(first: 5, includeUnavailable: true) { edges { node { id } } } }"}
    for _ in range(2):
        body = (await http.post(server.url, json=refused)).json()
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    after = answered_from(server)
    assert after["graphql"] - before["graphql"] == 2 and after["cache"] == before["cache"]


async def test_get_answers_carry_validators_and_an_unchanged_one_is_304(http, server):
    url = f"{server.url}?{urlencode({'query': '{ rateCard { version creatorShareBps } }'})}"
    first = await http.get(url)
    assert first.status_code == 200 and first.json()["data"]["rateCard"]["version"] >= 1
    assert first.headers["cache-control"] == "public, max-age=30"
    assert "Authorization" in first.headers["vary"]
    etag = first.headers["etag"]
    unchanged = await http.get(url, headers={"if-none-match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["etag"] == etag
    stale = await http.get(url, headers={"if-none-match": '"something-else"'})
    assert stale.status_code == 200 and stale.json() == first.json()

    viewer = {"authorization": f"Bearer {token('etag-viewer')}"}
    mine = f"{server.url}?{urlencode({'query': '{ viewer { name wallet { coins } } }'})}"
    private = await http.get(mine, headers=viewer)
    assert private.json()["data"]["viewer"]["name"] == "etag-viewer"
    assert private.headers["cache-control"] == "private, no-cache"
    again = await http.get(mine, headers={**viewer, "if-none-match": private.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize(("document", "variables", "caller"), [
    ("{ viewer { name wallet { coins diamonds } } }", None, "viewer"),
    ("query Mine($first: Int) { viewer { wallet { coins } } gifts(first: $first) "
     "{ edges { node { sku } } } }", {"first": 2}, "viewer"),
    ("{ viewer { wallet { coins } } }", None, None),  # a resolver's error: not signed in
    ("{ viewer { nothingHere } }", None, "viewer"),  # a validation error
    ("query A { __typename } query B { rateCard { version } }", None, "viewer"),  # no name
    ("{ viewer { payouts(first: 1) { edges { node { id } } } } }", None, "viewer"),
], ids=["wallet", "variables", "anonymous", "invalid", "which-operation", "connection"])
async def test_a_posted_query_is_answered_as_the_graphql_endpoint_answers_it(
        http, server, document, variables, caller):
    """Queries and mutations POSTed as JSON are executed before the framework's GraphQL
    endpoint, which still serves GET: both give the same status and the same answer,
    errors and extensions included."""
    headers = {"authorization": f"Bearer {token('parity-fan')}"} if caller else {}
    posted = await http.post(server.url, json={"query": document, "variables": variables},
                             headers=headers)
    params = {"query": document, **({"variables": json.dumps(variables)} if variables else {})}
    got = await http.get(f"{server.url}?{urlencode(params)}", headers=headers)
    assert posted.status_code == got.status_code
    assert posted.headers["content-type"] == got.headers["content-type"]
    assert posted.json() == got.json()


async def test_a_mutation_over_get_is_refused_and_changes_nothing(http, server):
    before = await snapshot(server.database_url)
    query = 'mutation { startLiveSession(input: {title: "GET"}) { userErrors { code } } }'
    answer = await http.get(f"{server.url}?{urlencode({'query': query})}",
                            headers={"authorization": f"Bearer {token('get-creator', 'creator')}"})
    assert failure(answer) == (400, "Mutations are not allowed over GET: send them with POST.",
                               "BAD_REQUEST")
    assert await snapshot(server.database_url) == before


async def test_persisted_queries_by_hash_over_post_and_get(http, server):
    document = "query PersistedRates { rateCards { version note } }"
    by_hash = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha256(document)}}}
    unknown = (await http.post(server.url, json=by_hash)).json()
    assert unknown == {"errors": [{"message": "PersistedQueryNotFound",
                                   "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}]}
    registered = (await http.post(server.url, json={"query": document, **by_hash})).json()
    assert registered["data"]["rateCards"][0]["version"] >= 1
    assert (await http.post(server.url, json=by_hash)).json() == registered
    got = await http.get(server.url, params={"extensions": json.dumps(by_hash["extensions"])})
    assert got.json() == registered and got.headers["etag"]


@pytest.fixture(scope="module")
def apollo_client() -> Path:
    """Node, with Apollo Client installed (pinned in tests/apollo_client)."""
    return node_with_packages(APOLLO, "@apollo/client", "the Apollo Client test")


def test_apollo_client_sends_hashes_and_registers_a_document_once(apollo_client, server):
    ran = subprocess.run([str(apollo_client), "persisted.mjs", server.url], cwd=APOLLO,
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    # Unknown hash by GET; the document once by POST; then the hash alone by GET.
    assert [(r["method"], r["sentDocument"], r["sentHash"]) for r in result["requests"]] == [
        ("GET", False, True), ("POST", True, True), ("GET", False, True)]
    assert result["requests"][-1]["status"] == 200
    edges = result["second"]["gifts"]["edges"]
    assert result["first"] == result["second"] and len(edges) == 3
    assert [edge["node"]["name"] for edge in edges][:1] == ["Rose"]


async def test_a_hash_that_is_not_the_documents_is_refused_and_changes_nothing(http, server):
    before = await snapshot(server.database_url)
    document = 'mutation { startLiveSession(input: {title: "hash"}) { userErrors { code } } }'
    body = (await http.post(server.url, headers={
        "authorization": f"Bearer {token('hash-creator', 'creator')}"}, json={
        "query": document, "extensions": {"persistedQuery": {
            "version": 1, "sha256Hash": sha256(document + " ")}}})).json()
    assert body["errors"] == [{"message": "provided sha does not match query",
                               "extensions": {"code": "PERSISTED_QUERY_HASH_MISMATCH"}}]
    assert await snapshot(server.database_url) == before


def documents(database_url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "app", "documents", *arguments],
                          env={**os.environ, "DATABASE_URL": database_url},
                          capture_output=True, text=True, timeout=60)


async def test_only_trusted_documents_run_where_the_operator_says_so(http, request, tmp_path):
    url = fresh_database("sqlite", request, tmp_path)
    server = ServerProcess(url, LIVEGIFTS_TRUSTED_DOCUMENTS_ONLY="true")
    server.start()
    try:
        wallet = "query Wallet { viewer { wallet { coins } } }"
        viewer = {"authorization": f"Bearer {token('trusting-viewer')}"}
        before = await snapshot(url)
        refused = (await http.post(server.url, json={"query": wallet}, headers=viewer)).json()
        assert refused["errors"][0]["extensions"]["code"] == "DOCUMENT_NOT_TRUSTED"
        assert "livegifts documents add" in refused["errors"][0]["message"]
        assert await snapshot(url) == before  # not even the caller's user was created

        forged = tmp_path / "forged.json"
        forged.write_text(json.dumps({"0" * 64: wallet}))
        bad = documents(url, "add", str(forged))
        assert bad.returncode == 1
        assert "is not the SHA-256 of its document. Nothing was added." in bad.stderr
        assert await snapshot(url) == before

        manifest = tmp_path / "manifest.json"
        manifest.write_text(json.dumps({"format": "apollo-persisted-query-manifest",
                                        "version": 1, "operations": [
                                            {"id": sha256(wallet), "name": "Wallet",
                                             "type": "query", "body": wallet}]}))
        added = documents(url, "add", str(manifest))
        assert added.returncode == 0 and "1 document(s) added" in added.stdout
        assert documents(url, "list").stdout.split() == [sha256(wallet), "Wallet"]
        by_hash = {"extensions": {"persistedQuery": {"version": 1,
                                                     "sha256Hash": sha256(wallet)}}}
        for request_body in (by_hash, {"query": wallet}):
            body = (await http.post(server.url, json=request_body, headers=viewer)).json()
            assert body["data"] == {"viewer": {"wallet": {"coins": 0}}}
    finally:
        server.stop()


async def test_a_change_made_through_one_server_reaches_another(http, postgres_database_url):
    url = postgres_database_url
    servers = [ServerProcess(url, LIVEGIFTS_SEED_DEMO_DATA="true"), ServerProcess(url)]
    for server in servers:
        server.start()
    try:
        first, second = servers
        price = await price_of(http, second, "doughnut")
        assert await price_of(http, second, "doughnut") == price  # kept by the second
        ids = (await http.post(first.url, json={"query": "{ gifts(first: 50) { edges { node "
                                                         "{ id sku } } } }"})).json()
        doughnut = next(e["node"]["id"] for e in ids["data"]["gifts"]["edges"]
                        if e["node"]["sku"] == "doughnut")
        changed = await http.post(first.url, headers={"authorization": f"Bearer {ADMIN}"},
                                  json={"query": "mutation($id: ID!) { updateGift(input: "
                                                 "{id: $id, coinPrice: 31}) { userErrors "
                                                 "{ message } } }", "variables": {"id": doughnut}})
        assert changed.json()["data"]["updateGift"]["userErrors"] == []
        assert await price_of(http, second, "doughnut", until=31) == 31
    finally:
        for server in servers:
            server.stop()


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_the_public_data_key_changes_when_a_sale_window_opens(runtime):
    """The answers change with time, without a write: the key must change with them."""
    from app.models import Gift

    clock = Clock()
    public = PublicData(runtime.engine, clock)
    await public.start()
    try:
        opens = clock.now + timedelta(hours=1)
        async with runtime.sessions() as session, session.begin():
            session.add(Gift(sku="comet", name="Comet", coin_price=9, category="classic",
                             image_url="https://cdn.example.com/comet.webp",
                             available_from=opens))
        for _ in range(200):  # PostgreSQL: until the listener has connected and been told
            before = await public.key()
            if before is not None and before[1] == opens:
                break
            await asyncio.sleep(0.05)
        assert before is not None and before[1] == opens
        assert await public.key() == before
        clock.now = opens + timedelta(seconds=1)
        after = await public.key()
        assert after is not None and after != before and after[1] is None
    finally:
        await public.close()


async def test_while_its_notifications_are_cut_the_version_is_unknown(pg_runtime):
    """The listening connection is killed by the server: no key (so nothing is answered from
    a cache that might be stale) until it has reconnected, and then the key shows the
    change made meanwhile."""
    from sqlalchemy import text

    public = PublicData(pg_runtime.engine)
    await public.start()

    async def key_when(wanted):
        for _ in range(400):
            found = await public.key()
            if wanted(found):
                return found
            await asyncio.sleep(0.025)
        raise AssertionError(f"the key never became as expected; last {found}")

    try:
        before = await key_when(lambda key: key is not None)
        async with pg_runtime.engine.begin() as connection:
            killed = await connection.scalar(text("SELECT pg_terminate_backend(:pid)"),
                                             {"pid": public.listener_pid})
        assert killed is True
        assert await key_when(lambda key: key is None) is None
        async with pg_runtime.engine.begin() as connection:
            await connection.execute(text("UPDATE coin_package SET name = name"))
        after = await key_when(lambda key: key is not None)
        assert after[0] > before[0]
    finally:
        await public.close()
