"""The authorization matrix: every query, mutation, subscription and node type against every
role, on SQLite and PostgreSQL, through a real server over HTTP (queries and mutations) and
WebSocket (subscriptions), and in this process against the schema. A new operation or node
type fails ``test_the_matrix_covers_the_whole_schema`` until it gets a row here."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import pytest
from strawberry.relay import to_base64

from app.graphql.context import Context
from app.graphql.schema import schema
from app.plugins import PluginHost
from app.runtime import Runtime
from app.services import matches
from app.services.brands import fund_budget
from app.testing import go_live, new_viewer
from tests.gifting_support import send
from tests.money_support import buy, earn_diamonds, request
from tests.support import ServerProcess, Subscription, settings_for, token

ROLES = {
    "anonymous": None,
    "viewer": token("mx-viewer"),
    "other viewer": token("mx-other-viewer"),
    "creator": token("mx-creator", "creator"),
    "other creator": token("mx-other-creator", "creator"),
    "brand": token("mx-acme-rep", "brand", brand="acme"),
    "other brand": token("mx-globex-rep", "brand", brand="globex"),
    "admin": token("mx-admin", "admin"),
}
EVERYONE = set(ROLES)
SIGNED_IN = EVERYONE - {"anonymous"}
CREATORS = {"creator", "other creator", "admin"}
ADMIN = {"admin"}
HOOK_OWNERS = CREATORS | {"brand", "other brand"}  # webhooks: their own events

# operation -> (document, roles allowed). Refusals a user can act on (userErrors) count as
# allowed: the matrix is about who may ask at all.
OPERATIONS = {
    "Query.viewer": ("{ viewer { name wallet { coins } } }", SIGNED_IN),
    "Query.node": ("query($id: ID!) { node(id: $id) { id } }", EVERYONE),
    "Query.coinPackages": ("{ coinPackages { sku } }", EVERYONE),
    "Query.gifts": ("{ gifts { edges { node { sku } } } }", EVERYONE),
    "Query.rateCard": ("{ rateCard { version } }", EVERYONE),
    "Query.rateCards": ("{ rateCards { version } }", EVERYONE),
    "Query.brands": ("{ brands { slug } }", EVERYONE),
    "Query.liveSessions": ("{ liveSessions { edges { node { id } } } }", SIGNED_IN),
    "Query.liveSession": ("query($session: ID!) { liveSession(id: $session) { id } }",
                          SIGNED_IN),
    "Query.topSupporters": ("query($creator: ID!) { topSupporters(creatorId: $creator, "
                            "period: ALL) { edges { node { rank } } } }", SIGNED_IN),
    "Query.topCreators": ("{ topCreators(period: ALL) { edges { node { rank } } } }",
                          SIGNED_IN),
    "Query.match": ("query($match: ID!) { match(id: $match) { id status } }", SIGNED_IN),
    "Query.matches": ("query($creator: ID!) { matches(creatorId: $creator) { edges { node "
                      "{ id } } } }", SIGNED_IN),
    "Query.matchRecord": ("query($creator: ID!) { matchRecord(creatorId: $creator) { wins } }",
                          SIGNED_IN),
    "Query.matchInvitations": ("{ matchInvitations { id } }", CREATORS),
    "Query.plugins": ("{ plugins { name } }", ADMIN),
    "Query.campaignReport": ('{ campaignReport(brand: "acme") { total { sends } } }',
                             {"brand", "admin"}),
    "Query.campaignSends": ('{ campaignSends(brand: "acme") { edges { node { receiptId } } } }',
                            {"brand", "admin"}),
    "Query.webhookSubscriptions": ("{ webhookSubscriptions { id } }", HOOK_OWNERS),
    "Mutation.createWebhookSubscription": (
        'mutation { createWebhookSubscription(input: {url: "ftp://x", eventTypes: []}) '
        '{ userErrors { code } } }', HOOK_OWNERS),
    "Mutation.deleteWebhookSubscription": (
        'mutation { deleteWebhookSubscription(input: {id: "x"}) { userErrors { code } } }',
        HOOK_OWNERS),
    "Mutation.enableWebhookSubscription": (
        'mutation { enableWebhookSubscription(input: {id: "x"}) { userErrors { code } } }',
        HOOK_OWNERS),
    "Mutation.redeliverWebhook": (
        'mutation { redeliverWebhook(input: {deliveryId: "x"}) { userErrors { code } } }',
        HOOK_OWNERS),
    "Mutation.settleBrandRevenue": ('mutation { settleBrandRevenue(input: {brand: "acme", '
                                    'coins: 0, idempotencyKey: "mx"}) { userErrors { code } } }',
                                    ADMIN),
    "Mutation.payBrandRevenue": ('mutation { payBrandRevenue(input: {brand: "acme", '
                                 'coins: 0, idempotencyKey: "mx"}) { userErrors { code } } }',
                                 ADMIN),
    "Mutation.purchaseCoins": ('mutation { purchaseCoins(input: {packageId: "x", provider: '
                               '"sandbox", receipt: "x", idempotencyKey: "mx"}) '
                               '{ userErrors { code } } }', SIGNED_IN),
    "Mutation.createCoinPackage": ('mutation { createCoinPackage(input: {sku: "mx", name: "Mx", '
                                   'coins: 1, priceMinor: 1}) { userErrors { code } } }', ADMIN),
    "Mutation.updateCoinPackage": ('mutation { updateCoinPackage(input: {id: "x"}) '
                                   '{ userErrors { code } } }', ADMIN),
    "Mutation.createGift": ('mutation { createGift(input: {sku: "mx", name: "Mx", coinPrice: 1, '
                            'imageUrl: "https://x.example/x.png", category: "mx"}) '
                            '{ userErrors { code } } }', ADMIN),
    "Mutation.updateGift": ('mutation { updateGift(input: {id: "x"}) { userErrors { code } } }',
                            ADMIN),
    "Mutation.publishRateCard": ('mutation { publishRateCard(input: {creatorShareBps: 1, '
                                 'diamondsPerCoin: 1, cashMinorPer100Diamonds: 1, '
                                 'effectiveFrom: "2020-01-01T00:00:00+00:00"}) '
                                 '{ userErrors { code } } }', ADMIN),
    "Mutation.fundBrandBudget": ('mutation { fundBrandBudget(input: {brand: "acme", coins: 0, '
                                 'idempotencyKey: "mx"}) { userErrors { code } } }', ADMIN),
    "Mutation.sendGift": ('mutation($session: ID!) { sendGift(input: {sessionId: $session, '
                          'giftId: "x", idempotencyKey: "mx"}) { userErrors { code } } }',
                          SIGNED_IN),
    "Mutation.startLiveSession": ('mutation { startLiveSession(input: {title: ""}) '
                                  '{ userErrors { code } } }', CREATORS),
    "Mutation.endLiveSession": ('mutation { endLiveSession(input: {sessionId: "x"}) '
                                '{ userErrors { code } } }', CREATORS),
    "Mutation.joinLiveSession": ('mutation { joinLiveSession(input: {sessionId: "x"}) '
                                 '{ userErrors { code } } }', SIGNED_IN),
    "Mutation.leaveLiveSession": ('mutation { leaveLiveSession(input: {sessionId: "x"}) '
                                  '{ userErrors { code } } }', SIGNED_IN),
    "Mutation.requestPayout": ('mutation { requestPayout(input: {diamonds: 1, '
                               'idempotencyKey: "mx"}) { userErrors { code } } }', CREATORS),
    "Mutation.cancelPayout": ('mutation { cancelPayout(input: {payoutId: "x"}) '
                              '{ userErrors { code } } }', CREATORS),
    "Mutation.setLiveGoal": ('mutation($session: ID!) { setLiveGoal(input: {sessionId: '
                             '$session, title: "Dance", kind: COINS, target: 100}) '
                             '{ userErrors { code } } }', CREATORS),
    "Mutation.inviteToMatch": ('mutation($session: ID!) { inviteToMatch(input: {sessionId: '
                               '$session, opponentSessionId: $session, durationSeconds: 60}) '
                               '{ userErrors { code } } }', CREATORS),
    "Mutation.acceptMatch": ('mutation($match: ID!) { acceptMatch(input: {matchId: $match}) '
                             '{ userErrors { code } } }', CREATORS),
    "Mutation.declineMatch": ('mutation($match: ID!) { declineMatch(input: {matchId: $match}) '
                              '{ userErrors { code } } }', CREATORS),
    "Mutation.updateProfile": ('mutation { updateProfile(input: {birthdate: "1900-01-01"}) '
                               '{ userErrors { code } } }', SIGNED_IN),
    "Mutation.setSpendingLimits": ('mutation { setSpendingLimits(input: {dailyCapCoins: -1}) '
                                   '{ userErrors { code } } }', SIGNED_IN),
    "Subscription.liveSessionEvents": ('subscription($session: ID!) { liveSessionEvents('
                                       'sessionId: $session) { __typename } }', SIGNED_IN),
}

# node type -> (which object, roles that see it); everyone else gets null or an auth error.
NODES = {
    "CoinPackage": EVERYONE, "Gift": EVERYONE, "Brand": EVERYONE,
    "User": SIGNED_IN, "LiveSession": SIGNED_IN, "Match": SIGNED_IN,
    "Purchase": {"viewer", "admin"}, "LedgerTransaction": {"viewer", "admin"},
    "GiftReceipt": {"viewer", "creator", "admin"}, "Payout": {"creator", "admin"},
}


PLUGINS = "tests.sample_plugins.acme:plugin,tests.sample_plugins.acme:globex"


@pytest.fixture
async def world(database_url):
    # The plugins load by import path, as the server process loads them: one identity.
    config = settings_for(database_url).model_copy(update={"plugins": "none",
                                                           "plugin_modules": PLUGINS})
    runtime = Runtime.build(config, PluginHost(config))
    await runtime.prepare_database()
    viewer = await new_viewer(runtime, "mx-viewer")
    stage = await go_live(runtime, "mx-creator")
    admin = await new_viewer(runtime, "mx-admin")
    await fund_budget(runtime.sessions, admin_id=admin, slug="acme", coins=100,
                      idempotency_key="mx")
    purchase = (await buy(runtime, viewer, "coins-700")).purchase
    receipt = (await send(runtime, viewer, stage, "hand-hearts")).receipt
    await earn_diamonds(runtime, stage.creator_id, 5_000)
    payout = (await request(runtime, stage.creator_id, 1_000, "mx")).payout
    # The matrix's match: an invitation nobody answers, dated a day ahead so that it is
    # still waiting however long the matrix takes.
    rival = await go_live(runtime, "mx-rival")
    match = await matches.invite(runtime.sessions, runtime.relay, creator_id=stage.creator_id,
                                 session_id=stage.session_id,
                                 opponent_session_id=rival.session_id, duration_seconds=60,
                                 now=datetime.now(UTC) + timedelta(days=1))
    from sqlalchemy import select

    from app.models import Brand, CoinPackage
    async with runtime.sessions() as session:
        package = await session.scalar(select(CoinPackage.id))
        brand = await session.scalar(select(Brand.id))
    ids = {"CoinPackage": package, "Gift": stage.gifts["rose"], "Brand": brand,
           "User": stage.creator_id, "LiveSession": stage.session_id,
           "Purchase": purchase.id, "LedgerTransaction": purchase.transaction_id,
           "GiftReceipt": receipt.id, "Payout": payout.id, "Match": match.id}
    yield runtime, {name: to_base64(name, value) for name, value in ids.items()}, stage
    await runtime.close()


def _denied(result) -> bool:
    codes = {(e.extensions or {}).get("code") for e in result.errors or []}
    return bool(codes & {"UNAUTHENTICATED", "FORBIDDEN"})


async def _run(runtime, document: str, variables: dict, bearer: str | None):
    context = Context(runtime=runtime, authorization=f"Bearer {bearer}" if bearer else None)
    if document.startswith("subscription"):
        stream = await schema.subscribe(document, variable_values=variables,
                                        context_value=context)
        if not hasattr(stream, "__anext__"):
            return stream
        try:
            return await stream.__anext__()
        finally:
            await stream.aclose()
    return await schema.execute(document, variable_values=variables, context_value=context)


@dataclass
class Answer:
    """A GraphQL answer read off the wire, shaped like the schema's own results."""

    data: dict | None
    errors: list[SimpleNamespace]

    @classmethod
    def of(cls, data: dict | None, errors: list[dict] | None) -> Answer:
        return cls(data, [SimpleNamespace(message=e["message"], extensions=e.get("extensions"))
                          for e in errors or []])


@pytest.fixture
async def over_the_wire(world):
    """The world's database served by a real server process, with the same plugins: runs a
    document over HTTP, or a subscription over WebSocket up to its first message."""
    runtime, _, _ = world
    server = ServerProcess(runtime.settings.database_url, LIVEGIFTS_PLUGINS="none",
                           LIVEGIFTS_PLUGIN_MODULES=PLUGINS,
                           LIVEGIFTS_RATE_LIMIT_PER_USER="100000",
                           LIVEGIFTS_RATE_LIMIT_PER_IP="100000")
    await asyncio.to_thread(server.start)
    http = httpx.AsyncClient(timeout=30)

    async def run(_runtime, document: str, variables: dict, bearer: str | None) -> Answer:
        if document.startswith("subscription"):
            async with Subscription(server.url, bearer, document, variables) as subscription:
                message = await subscription.receive()
            if message["type"] == "error":
                return Answer.of(None, message["payload"])
            return Answer.of(message["payload"].get("data"), message["payload"].get("errors"))
        headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
        answer = await http.post(server.url, headers=headers,
                                 json={"query": document, "variables": variables})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        return Answer.of(body.get("data"), body.get("errors"))

    yield run
    await http.aclose()
    await asyncio.to_thread(server.stop)


@pytest.fixture(params=["in this process", "over the wire"])
def ask(request):
    """How the matrix asks: the schema in this process, or a real server."""
    return _run if request.param == "in this process" else \
        request.getfixturevalue("over_the_wire")


async def test_every_operation_against_every_role(world, ask):
    runtime, ids, stage = world
    variables = {"id": ids["Gift"], "session": ids["LiveSession"], "creator": ids["User"],
                 "match": ids["Match"]}
    wrong = []
    for operation, (document, allowed) in OPERATIONS.items():
        for role, bearer in ROLES.items():
            result = await ask(runtime, document, variables, bearer)
            unexpected = [e.message for e in result.errors or []
                          if (e.extensions or {}).get("code") not in
                          ("UNAUTHENTICATED", "FORBIDDEN", "BAD_USER_INPUT")]
            if unexpected:
                wrong.append(f"{operation} as {role}: {unexpected}")
            if _denied(result) == (role in allowed):
                wrong.append(f"{operation} as {role}: expected "
                             f"{'allow' if role in allowed else 'deny'}")
    assert wrong == []


async def test_every_node_type_against_every_role(world, ask):
    runtime, ids, _ = world
    wrong = []
    for type_name, allowed in NODES.items():
        for role, bearer in ROLES.items():
            result = await ask(runtime, "query($id: ID!) { node(id: $id) { id } }",
                               {"id": ids[type_name]}, bearer)
            seen = result.data is not None and result.data["node"] is not None
            if seen != (role in allowed):
                wrong.append(f"node({type_name}) as {role}: expected "
                             f"{'visible' if role in allowed else 'hidden'}")
            if not seen and result.errors:
                assert all(ids[type_name] not in e.message for e in result.errors)
    assert wrong == []


def test_the_matrix_covers_the_whole_schema():
    graphql = schema._schema
    fields = {f"{root}.{name}" for root in ("Query", "Mutation", "Subscription")
              for name in graphql.get_type(root).fields}
    assert sorted(fields ^ set(OPERATIONS)) == []
    nodes = {t.name for t in graphql.get_possible_types(graphql.get_type("Node"))}
    assert sorted(nodes ^ set(NODES)) == []


def test_a_token_verified_before_is_still_refused_once_it_expires(monkeypatch):
    """Tokens are verified once and remembered; their expiry and the secret still count."""
    import time

    from app.auth import AuthError, Role, mint_token, verify_token
    from app.settings import Settings

    settings = Settings(jwt_secret="first secret, at least 32 bytes long")
    issued = mint_token(settings, "expiring-fan", [Role.VIEWER], ttl_seconds=60)
    assert verify_token(settings, issued).name == "expiring-fan"
    assert verify_token(settings, issued).name == "expiring-fan"  # remembered
    rotated = Settings(jwt_secret="second secret, at least 32 bytes long")
    with pytest.raises(AuthError, match="its signature does not match"):
        verify_token(rotated, issued)
    later = time.time() + 61
    monkeypatch.setattr("app.auth.time.time", lambda: later)
    with pytest.raises(AuthError, match=r"^Invalid bearer token: it has expired; get a new one\.$"):
        verify_token(settings, issued)
