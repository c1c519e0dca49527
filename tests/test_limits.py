"""Limits of the public API, over a real server in production mode; the tests that run the
schema in this process (what the schema enforces before any server limit can, what the
log records, how tokens are verified) say so."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from app.graphql.schema import schema
from tests.conftest import fresh_database
from tests.support import GraphQLClient, ServerProcess, bearer, in_one_window, token

ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def production(request, tmp_path_factory):
    url = fresh_database("sqlite", request, tmp_path_factory.mktemp("limits"))
    process = ServerProcess(url, LIVEGIFTS_ENVIRONMENT="production",
                            LIVEGIFTS_SEED_DEMO_DATA="true", LIVEGIFTS_MAX_QUERY_COST="60",
                            LIVEGIFTS_MAX_REQUEST_BYTES="4000", LIVEGIFTS_CORS_ORIGINS=ORIGIN,
                            LIVEGIFTS_WEBSOCKET_ORIGINS=ORIGIN, LIVEGIFTS_MAX_QUERY_DEPTH="4")
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def gql(production):
    client = GraphQLClient(production.url)
    yield client
    await client.close()


async def test_aliases_are_limited(gql):
    aliases = "{ " + " ".join(f"a{n}: rateCard {{ version }}" for n in range(31)) + " }"
    body = await gql(aliases, expect_errors=True)
    assert body == {"data": None, "errors": [{"message": "31 aliases found. Allowed: 30"}]}


async def test_the_schema_stops_parsing_past_its_token_limit():
    """In this process: a document this long is refused by the production server's body
    size limit before it is parsed (test_request_size_and_batching); the schema's own limit
    holds where a deployment raises that one."""
    tokens = "{ " + " ".join("rateCard { version }" for _ in range(800)) + " }"
    assert [e.message for e in (await schema.execute(tokens)).errors] == [
        "Syntax Error: Document contains more than 3000 tokens. Parsing aborted."]


async def test_query_depth_is_limited(gql):
    deep = await gql("query Deep { viewer { transactions { edges { node { entries { account } } "
                     "} } } }", token=token("deep-diver"), expect_errors=True)
    assert deep == {"data": None, "errors": [{
        "message": "'Deep' exceeds maximum operation depth of 4",
        "locations": [{"line": 1, "column": 63}]}]}


async def test_query_cost_is_reported_and_enforced(gql):
    cheap = await gql("{ gifts(first: 5) { edges { node { name } } } }")
    assert cheap["extensions"]["cost"] == {"requested": 16, "maximum": 60}
    costly = await gql("{ gifts(first: 30) { edges { node { name sku } } } }",
                       expect_errors=True)
    assert costly["data"] is None
    assert costly["errors"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY"
    assert costly["errors"][0]["message"].startswith("This query would cost 121, over the "
                                                     "budget of 60")


async def test_the_same_document_costs_what_its_variables_ask_each_time(gql):
    """Costs are kept per document: the ``first`` a variable gives is priced on every
    request, whatever the one before it asked."""
    document = ("query Page($first: Int) { gifts(first: $first) "
                "{ edges { node { name sku } } } rateCard { version } }")
    costs = []
    for first in (5, 30, 5, 2, None):
        body = await gql(document, {"first": first}, expect_errors=True)
        costs.append(body["extensions"]["cost"]["requested"] if body["data"]
                     else body["errors"][0]["extensions"]["code"])
    # 1 + first x (edges, node, name, sku) + rateCard { version }; no first: 20 a page
    assert costs == [23, "QUERY_TOO_COSTLY", 23, 11, "QUERY_TOO_COSTLY"]


@pytest.mark.parametrize("document", [
    '{ node(id: "TGl2ZVNlc3Npb246MQ==") { ... on LiveSession { topGifters(first: 30) '
    '{ edges { node { rank } } } } } }',
    'query { node(id: "TGl2ZVNlc3Npb246MQ==") { ...Podium } } '
    'fragment Podium on LiveSession { topGifters(first: 30) { edges { node { rank } } } }',
])
async def test_fragments_are_priced_on_their_concrete_type(gql, document):
    """A fragment on LiveSession inside node(id:) costs what it would on liveSession(id:)."""
    body = await gql(document, token=token("fragment-pricer"), expect_errors=True)
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY"
    assert body["errors"][0]["message"].startswith("This query would cost 92, over the "
                                                   "budget of 60")


async def test_production_hides_the_schema_and_internals(gql, production):
    introspection = await gql("{ __schema { types { name } } }", expect_errors=True)
    assert "introspection" in introspection["errors"][0]["message"].lower()
    typo = await gql("{ rateCrad { version } }", expect_errors=True)
    assert typo["errors"][0]["message"] == "Cannot query field 'rateCrad' on type 'Query'."
    async with httpx.AsyncClient() as http:
        ide = await http.get(production.url, headers={"accept": "text/html"})
        assert (ide.status_code, ide.json()) == (404, {"errors": [
            {"message": "Not Found.", "extensions": {"code": "NOT_FOUND"}}]})


async def test_request_size_and_batching(production):
    async with httpx.AsyncClient() as http:
        big = await http.post(production.url, json={"query": "{ rateCard { version } }",
                                                    "variables": {"pad": "x" * 5000}})
        assert big.status_code == 413
        batch = await http.post(production.url, json=[{"query": "{ rateCard { version } }"}] * 2)
        assert batch.status_code == 400


async def test_cors_and_websocket_origins(production):
    async with httpx.AsyncClient() as http:
        allowed = await http.options(production.url, headers={
            "origin": ORIGIN, "access-control-request-method": "POST"})
        assert allowed.headers.get("access-control-allow-origin") == ORIGIN
        other = await http.options(production.url, headers={
            "origin": "https://evil.example", "access-control-request-method": "POST"})
        assert other.headers.get("access-control-allow-origin") is None
    ws_url = production.url.replace("http://", "ws://")
    with pytest.raises(InvalidStatus):
        async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"],
                                      origin="https://evil.example"):
            pass
    refusal = ("Refused a WebSocket from a page on 'https://evil.example': to let pages on it "
               "follow live events, add it to LIVEGIFTS_WEBSOCKET_ORIGINS")
    for _ in range(3000):  # the server's log reaches this process by a pipe, a moment later
        if any(refusal in line for line in production.log):
            break
        await asyncio.sleep(0.01)
    assert any(refusal in line for line in production.log), \
        [line for line in production.log if "WebSocket" in line]
    assert not any("allowed_origins" in line for line in production.log)
    async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"],
                                  origin=ORIGIN) as socket:
        await socket.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await socket.recv())["type"] == "connection_ack"


@pytest.fixture(scope="module")
def limited(request, tmp_path_factory):
    url = fresh_database("sqlite", request, tmp_path_factory.mktemp("rate"))
    process = ServerProcess(url, LIVEGIFTS_RATE_LIMIT_PER_USER="3",
                            LIVEGIFTS_RATE_LIMIT_PER_IP="5")
    process.start()
    yield process
    process.stop()


def from_address(address: str) -> httpx.AsyncClient:
    """An HTTP client whose connections come from ``address`` (any of 127.0.0.0/8): a
    client address of its own, so a budget of its own."""
    return httpx.AsyncClient(timeout=30, transport=httpx.AsyncHTTPTransport(
        local_address=address))


async def test_rate_limits_per_user_and_per_address(limited):
    query = {"query": "{ rateCard { version } }"}

    async def attempt(n):
        alice, bob = (bearer(token(f"rate-{name}-{n}")) for name in ("alice", "bob"))
        async with from_address(f"127.0.0.{n + 2}") as http:
            allowed = [(await http.post(limited.url, json=query, headers=alice)).status_code
                       for _ in range(3)]
            over_user = await http.post(limited.url, json=query, headers=alice)
            other_user = (await http.post(limited.url, json=query, headers=bob)).status_code
            over_address = await http.post(limited.url, json=query, headers=bob)
        return allowed, over_user, other_user, over_address

    allowed, over_user, other_user, over_address = await in_one_window(attempt)
    assert allowed == [200, 200, 200]
    assert over_user.status_code == 429 and int(over_user.headers["retry-after"]) > 0
    error = over_user.json()["errors"][0]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["message"].startswith("Rate limit reached: at most 3 requests a minute "
                                       "per user.")
    assert other_user == 200  # another user: still allowed, the fifth of the address
    assert over_address.status_code == 429  # the sixth of the address
    assert "per client address" in over_address.json()["errors"][0]["message"]


async def test_unexpected_errors_are_masked_and_logged_with_traceback_and_hash(caplog):
    """In this process, with a broken context: what the log records."""
    import hashlib

    from app.graphql.context import Context

    broken = Context(runtime=None)  # every resolver touching the runtime fails unexpectedly
    document = "query Card { rateCard { version } }"
    with caplog.at_level(logging.INFO, logger="livegifts.graphql"):
        result = await schema.execute(document, context_value=broken)
    assert [e.message for e in result.errors] == ["Unexpected error; please try again."]
    assert "NoneType" not in str(result.errors[0].formatted)
    [logged] = [r for r in caplog.records if r.name == "livegifts.graphql"]
    assert (logged.levelname, logged.path, logged.operation) == ("ERROR", "rateCard", "Card")
    assert logged.exc_info is not None and "NoneType" in str(logged.exc_info[1])
    assert logged.document_sha256 == hashlib.sha256(document.encode()).hexdigest()


async def test_client_errors_are_logged_at_info_with_the_documents_hash_not_its_text(caplog):
    """In this process: what the log records."""
    import hashlib

    document = "{ " + " ".join(f"a{n}: rateCard {{ nonsense }}" for n in range(200)) + " }"
    with caplog.at_level(logging.INFO):
        result = await schema.execute(document)
    assert result.errors
    logged = [r for r in caplog.records if r.name == "livegifts.graphql"]
    assert logged and {r.levelname for r in logged} == {"INFO"}
    assert all(r.exc_info is None for r in logged)
    assert logged[0].getMessage().startswith("client error: ")
    assert logged[0].document_sha256 == hashlib.sha256(document.encode()).hexdigest()
    assert not any(document in r.getMessage() or "a199" in r.getMessage()
                   for r in caplog.records)
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)


async def test_mutations_are_refused_over_websocket(production):
    ws_url = production.url.replace("http://", "ws://")
    async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"],
                                  origin=ORIGIN) as socket:
        await socket.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await socket.recv())["type"] == "connection_ack"
        await socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": 'mutation { updateProfile(input: {birthdate: "1990-01-01"}) '
                     '{ birthdate } }'}}))
        message = json.loads(await socket.recv())
        errors = message["payload"] if message["type"] == "error" else \
            message["payload"]["errors"]
        assert errors[0]["message"] == ("Over WebSocket only subscriptions are served; send "
                                        "queries and mutations over HTTP.")


async def test_production_serves_no_openapi_pages(production):
    async with httpx.AsyncClient() as http:
        base = production.url.removesuffix("/graphql")
        for path in ("/schema", "/schema/openapi.json"):
            assert (await http.get(base + path)).status_code == 404


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted", "trusted"])
async def test_forwarded_addresses_count_only_from_trusted_proxies(request, tmp_path, trusted):
    """From an untrusted address X-Forwarded-For is ignored: a client cannot spread its
    requests over made-up addresses. From a trusted proxy, the forwarded address counts."""
    url = fresh_database("sqlite", request, tmp_path)
    proxy = "127.0.0.2"
    server = ServerProcess(url, LIVEGIFTS_RATE_LIMIT_PER_IP="3",
                           LIVEGIFTS_TRUSTED_PROXIES=proxy if trusted else "")
    server.start()

    async def attempt(n):
        async with from_address(proxy if trusted else f"127.0.0.{n + 3}") as http:
            return [(await http.post(server.url, json={"query": "{ rateCard { version } }"},
                                     headers={"x-forwarded-for": f"10.0.{n}.{k}"})
                     ).status_code for k in range(5)]

    try:
        statuses = await in_one_window(attempt)
        assert statuses == ([200] * 5 if trusted else [200, 200, 200, 429, 429])
    finally:
        server.stop()


def test_a_configured_issuer_is_required_of_every_token():
    from app.auth import AuthError, mint_token, verify_token
    from app.settings import Settings

    ours = Settings(jwt_secret="s" * 40, jwt_issuer="https://id.example.com")
    theirs = ours.model_copy(update={"jwt_issuer": "https://elsewhere.example.com"})
    unsigned = ours.model_copy(update={"jwt_issuer": None})
    assert verify_token(ours, mint_token(ours, "issued", [])).name == "issued"
    with pytest.raises(AuthError, match=r"^Invalid bearer token: it was issued by another "
                                        r"issuer \('iss'\)\.$"):
        verify_token(ours, mint_token(theirs, "issued", []))
    with pytest.raises(AuthError, match=r"^Invalid bearer token: it has no 'iss' claim\.$"):
        verify_token(ours, mint_token(unsigned, "issued", []))
    assert verify_token(unsigned, mint_token(ours, "issued", [])).name == "issued"
