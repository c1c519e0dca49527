"""Gifting over a real server: the API, every sendGift refusal, and live events over WebSocket."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import fresh_database
from tests.support import GraphQLClient, ServerProcess, Subscription, sandbox, snapshot, token

SEND = """mutation($input: SendGiftInput!) { sendGift(input: $input) {
  receipt { id quantity unitPrice coinsPaid creatorCoins creatorDiamonds platformCoins brandCoins
            brandSubsidy rateCardVersion comboCount gift { sku } sender { name } }
  walletCoins replayed userErrors { code field message } } }"""
START = """mutation($title: String!) { startLiveSession(input: {title: $title}) {
  liveSession { id status title creator { name } } userErrors { code field message } } }"""
END = """mutation($id: ID!) { endLiveSession(input: {sessionId: $id}) {
  liveSession { id status endedAt } userErrors { code field message } } }"""
JOIN = """mutation($id: ID!) { joinLiveSession(input: {sessionId: $id}) {
  liveSession { totals { viewers } } userErrors { code } } }"""
EVENTS = """subscription($id: ID!) { liveSessionEvents(sessionId: $id) {
  __typename
  ... on ViewerCountChanged { viewers }
  ... on GiftSent { sender { name } gift { sku } quantity coins diamonds comboId comboCount }
  ... on ComboEnded { comboId sender { name } gift { sku } totalCount sends totalCoins }
  ... on TopGiftersChanged { top { rank user { name } coins } }
  ... on SessionEnded { totals { gifts coins diamonds peakViewers } } } }"""
ADMIN = token("gift-admin", "admin")
_names = itertools.count()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gifting_server(request, tmp_path_factory):
    url = fresh_database(request.param, request, tmp_path_factory.mktemp("gifting"))
    # A window no machine is slow enough to miss: two sends in a row always combo, and
    # the combo ends with its session (the reaper's window is tested under a moved clock).
    process = ServerProcess(url, LIVEGIFTS_COMBO_WINDOW_SECONDS="600",
                            LIVEGIFTS_SEED_DEMO_DATA="true")
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def gql(gifting_server):
    client = GraphQLClient(gifting_server.url)
    yield client
    await client.close()


def person(prefix: str, *roles: str) -> str:
    return token(f"{prefix}-{next(_names)}", *roles)


async def gift_ids(gql) -> dict[str, str]:
    body = await gql("{ gifts(first: 100, includeUnavailable: true) "
                     "{ edges { node { id sku } } } }", token=ADMIN)
    return {e["node"]["sku"]: e["node"]["id"] for e in body["data"]["gifts"]["edges"]}


async def buy_coins(gql, bearer: str, sku: str = "coins-350") -> int:
    packages = (await gql("{ coinPackages { id sku price { amount } } }"))["data"]["coinPackages"]
    package = next(p for p in packages if p["sku"] == sku)
    receipt = sandbox().make_receipt(sku, package["price"]["amount"])
    body = await gql("""mutation($input: PurchaseCoinsInput!) { purchaseCoins(input: $input) {
        wallet { coins } userErrors { code } } }""", {"input": {
        "packageId": package["id"], "provider": "sandbox", "receipt": receipt,
        "idempotencyKey": receipt[-16:]}}, token=bearer)
    assert body["data"]["purchaseCoins"]["userErrors"] == []
    return body["data"]["purchaseCoins"]["wallet"]["coins"]


async def go_live(gql, creator: str) -> str:
    body = await gql(START, {"title": "Late show"}, token=creator)
    assert body["data"]["startLiveSession"]["userErrors"] == []
    return body["data"]["startLiveSession"]["liveSession"]["id"]


def send_input(session_id: str, gift_id: str, quantity: int = 1, key: str | None = None):
    return {"input": {"sessionId": session_id, "giftId": gift_id, "quantity": quantity,
                      "idempotencyKey": key or f"key-{next(_names)}"}}


async def test_the_catalogue_and_rate_card_are_public(gql):
    page1 = (await gql("{ gifts(first: 5) { edges { cursor node { sku coinPrice available } } "
                       "pageInfo { hasNextPage endCursor } } }"))["data"]["gifts"]
    assert [e["node"]["sku"] for e in page1["edges"]] == \
        ["rose", "tiktok", "finger-heart", "perfume", "doughnut"]
    page2 = (await gql("query($after: String) { gifts(first: 100, after: $after) { edges { node "
                       "{ sku coinPrice } } pageInfo { hasNextPage } } }",
                       {"after": page1["pageInfo"]["endCursor"]}))["data"]["gifts"]
    prices = [e["node"]["coinPrice"] for e in page2["edges"]]
    assert page2["pageInfo"]["hasNextPage"] is False and max(prices) >= 10_000
    animals = (await gql('{ gifts(category: "animals") { edges { node { sku } } } }'))
    assert [e["node"]["sku"] for e in animals["data"]["gifts"]["edges"]] == ["corgi", "lion"]
    card = (await gql("{ rateCard { version creatorShareBps platformShareBps diamondsPerCoin "
                      "cashPer100Diamonds { amount currency } } }"))["data"]["rateCard"]
    assert card == {"version": 1, "creatorShareBps": 5000, "platformShareBps": 5000,
                    "diamondsPerCoin": 1, "cashPer100Diamonds": {"amount": 50, "currency": "USD"}}


async def test_admins_manage_gifts_and_rate_cards_over_the_api(gql, gifting_server):
    created = await gql("""mutation { createGift(input: {sku: "comet", name: "Comet",
        coinPrice: 250, imageUrl: "https://cdn.example.com/comet.webp", category: "space"}) {
        gift { id sku available } userErrors { code field message } } }""", token=ADMIN)
    assert created["data"]["createGift"]["gift"]["available"] is True
    before = await snapshot(gifting_server.database_url)
    for gift_input, field, message in [
        ('sku: "free", name: "Free", coinPrice: 0, imageUrl: "https://x.example/a.png", '
         'category: "space"', "coinPrice", "coinPrice must be between 1 and 1,000,000."),
        ('sku: "bad", name: "Bad", coinPrice: 5, imageUrl: "javascript:alert(1)", '
         'category: "space"', "imageUrl", "imageUrl must be an http(s) URL."),
        ('sku: "comet", name: "Again", coinPrice: 5, imageUrl: "https://x.example/a.png", '
         'category: "space"', "sku", "A gift with sku 'comet' exists."),
    ]:
        body = await gql(f"mutation {{ createGift(input: {{{gift_input}}}) {{ gift {{ id }} "
                         "userErrors { code field message } } }", token=ADMIN)
        assert body["data"]["createGift"]["userErrors"][0]["field"] == field
        assert body["data"]["createGift"]["userErrors"][0]["message"] == message
    assert await snapshot(gifting_server.database_url) == before

    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    published = await gql("""mutation($at: DateTime!) { publishRateCard(input: {
        creatorShareBps: 6000, diamondsPerCoin: 1, cashMinorPer100Diamonds: 50,
        effectiveFrom: $at, note: "Raise" }) { rateCard { version creatorShareBps }
        userErrors { code message } } }""", {"at": later}, token=ADMIN)
    assert published["data"]["publishRateCard"]["rateCard"]["creatorShareBps"] == 6000
    current = await gql("{ rateCard { version } rateCards { version } }")
    assert current["data"]["rateCard"]["version"] == 1  # not yet in force
    assert [c["version"] for c in current["data"]["rateCards"]][:2] == \
        [published["data"]["publishRateCard"]["rateCard"]["version"], 1]
    forbidden = await gql("mutation { createGift(input: {sku: \"x\", name: \"X\", coinPrice: 1, "
                          "imageUrl: \"https://x.example/x.png\", category: \"space\"}) "
                          "{ gift { id } } }", token=person("viewer"), expect_errors=True)
    assert forbidden["errors"][0]["message"] == "Forbidden: this needs the admin role."


async def test_only_creators_go_live_once_and_only_they_end_their_session(gql, gifting_server):
    viewer = person("viewer")
    body = await gql(START, {"title": "Hi"}, token=viewer, expect_errors=True)
    assert body["errors"][0]["message"] == "Forbidden: this needs the creator role."
    creator, rival = person("creator", "creator"), person("rival", "creator")
    session_id = await go_live(gql, creator)
    again = await gql(START, {"title": "Twice"}, token=creator)
    assert again["data"]["startLiveSession"]["userErrors"][0]["code"] == "ALREADY_LIVE"
    stolen = await gql(END, {"id": session_id}, token=rival)
    assert stolen["data"]["endLiveSession"]["userErrors"] == [{
        "code": "NOT_SESSION_CREATOR", "field": "sessionId",
        "message": "Only the creator of a session can end it."}]
    ended = await gql(END, {"id": session_id}, token=creator)
    assert ended["data"]["endLiveSession"]["liveSession"]["status"] == "ENDED"
    twice = await gql(END, {"id": session_id}, token=creator)
    assert twice["data"]["endLiveSession"]["userErrors"][0]["code"] == "SESSION_NOT_LIVE"
    listed = await gql("{ liveSessions(status: LIVE, first: 100) { edges { node { id } } } }",
                       token=viewer)
    assert session_id not in [e["node"]["id"] for e in listed["data"]["liveSessions"]["edges"]]


async def test_every_send_gift_refusal_is_explained_and_moves_nothing(gql, gifting_server):
    gifts = await gift_ids(gql)
    creator = person("creator", "creator")
    session_id = await go_live(gql, creator)
    fan = person("fan")
    assert await buy_coins(gql, fan, "coins-70") == 70
    await gql("mutation($id: ID!) { updateGift(input: {id: $id, active: false}) "
              "{ userErrors { code } } }", {"id": gifts["lion"]}, token=ADMIN)
    ended_creator = person("gone", "creator")
    ended_session = await go_live(gql, ended_creator)
    await gql(END, {"id": ended_session}, token=ended_creator)

    cases = [
        (fan, send_input(session_id, gifts["hand-hearts"]), "INSUFFICIENT_COINS", "",
         "Not enough coins: this needs 100 and the balance is 70."),
        (fan, send_input(ended_session, gifts["rose"]), "SESSION_NOT_LIVE", "sessionId",
         "This session is not live; gifts can only be sent during a live session."),
        (fan, send_input(session_id, gifts["lion"]), "GIFT_UNAVAILABLE", "giftId",
         "The gift 'Lion' is not available right now."),
        (creator, send_input(session_id, gifts["rose"]), "CANNOT_GIFT_SELF", "sessionId",
         "You cannot send gifts to your own live session."),
        (fan, send_input(session_id, gifts["rose"], quantity=0), "INVALID_QUANTITY", "quantity",
         "quantity must be between 1 and 1000."),
        (fan, send_input(session_id, gifts["rose"], quantity=1001), "INVALID_QUANTITY",
         "quantity", "quantity must be between 1 and 1000."),
        (fan, send_input(session_id, "bogus"), "INVALID_ID", "giftId",
         "giftId is not a valid Gift ID."),
        (fan, send_input(gifts["rose"], gifts["rose"]), "INVALID_ID", "sessionId",
         "sessionId is not a valid LiveSession ID."),
    ]
    for sender, variables, code, field, message in cases:
        before = await snapshot(gifting_server.database_url)
        payload = (await gql(SEND, variables, token=sender))["data"]["sendGift"]
        assert payload["receipt"] is None
        assert payload["userErrors"] == [{"code": code, "field": field or None,
                                          "message": message}]
        after = await snapshot(gifting_server.database_url)
        if code == "INSUFFICIENT_COINS":  # recorded so that the key stays failed
            before["rows"]["idempotency_record"] += 1
        assert after == before, code
    anonymous = await gql(SEND, send_input(session_id, gifts["rose"]), expect_errors=True)
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_subscribers_see_gifts_combos_viewers_and_the_end_live(gql, gifting_server):
    gifts = await gift_ids(gql)
    creator = person("star", "creator")
    session_id = await go_live(gql, creator)
    fan, overlay = person("fan"), person("overlay")
    await buy_coins(gql, fan)

    async with Subscription(gifting_server.url, overlay, EVENTS, {"id": session_id}) as events:
        assert (await events.next_data())["liveSessionEvents"] == {
            "__typename": "ViewerCountChanged", "viewers": 0}
        await gql(JOIN, {"id": session_id}, token=fan)
        assert (await events.next_data())["liveSessionEvents"]["viewers"] == 1

        first = (await gql(SEND, send_input(session_id, gifts["rose"], 2), token=fan))
        second = (await gql(SEND, send_input(session_id, gifts["rose"], 3), token=fan))
        assert first["data"]["sendGift"]["receipt"]["comboCount"] == 2
        assert second["data"]["sendGift"]["receipt"]["comboCount"] == 5
        received = [(await events.next_data())["liveSessionEvents"] for _ in range(4)]
        assert [e["__typename"] for e in received] == [
            "GiftSent", "TopGiftersChanged", "GiftSent", "TopGiftersChanged"]
        sent = [e for e in received if e["__typename"] == "GiftSent"]
        assert [(e["quantity"], e["comboCount"]) for e in sent] == [(2, 2), (3, 5)]
        assert sent[0]["comboId"] == sent[1]["comboId"]
        assert sent[0]["sender"]["name"] == first["data"]["sendGift"]["receipt"]["sender"]["name"]
        assert received[-1]["top"][0]["coins"] == 5

        await gql(END, {"id": session_id}, token=creator)  # ends the running combo too
        combo, ended = [(await events.next_data())["liveSessionEvents"] for _ in range(2)]
        assert combo["__typename"] == "ComboEnded"
        assert (combo["totalCount"], combo["sends"], combo["totalCoins"]) == (5, 2, 5)
        assert combo["comboId"] == sent[0]["comboId"]
        assert ended["__typename"] == "SessionEnded"
        assert ended["totals"] == {"gifts": 5, "coins": 5, "diamonds": 2, "peakViewers": 1}
        assert (await events.receive())["type"] == "complete"


async def test_many_watchers_of_one_session_each_get_every_event_under_their_own_id(
        gql, gifting_server):
    """Watchers asking the same share one execution of each event; each message still
    carries the watcher's own operation id, and one watcher leaving leaves the rest."""
    import websockets

    gifts = await gift_ids(gql)
    creator = person("crowd-star", "creator")
    session_id = await go_live(gql, creator)
    fan = person("crowd-fan")
    await buy_coins(gql, fan)
    brief = """subscription($id: ID!) { liveSessionEvents(sessionId: $id) {
      __typename ... on GiftSent { quantity } } }"""
    same = [Subscription(gifting_server.url, person("w"), EVENTS, {"id": session_id})
            for _ in range(3)]
    other = Subscription(gifting_server.url, person("w"), brief, {"id": session_id})
    watchers = [await s.__aenter__() for s in [*same, other]]
    socket = await websockets.connect(gifting_server.url.replace("http://", "ws://"),
                                      subprotocols=["graphql-transport-ws"])
    await socket.send(json.dumps({"type": "connection_init",
                                  "payload": {"Authorization": f"Bearer {person('raw')}"}}))
    assert json.loads(await socket.recv())["type"] == "connection_ack"
    await socket.send(json.dumps({"id": "op-7", "type": "subscribe", "payload": {
        "query": brief, "variables": {"id": session_id}}}))
    try:
        for watcher in watchers:
            assert (await watcher.next_data())["liveSessionEvents"]["__typename"] == \
                "ViewerCountChanged"
        assert json.loads(await socket.recv())["id"] == "op-7"  # its viewer count
        await gql(SEND, send_input(session_id, gifts["rose"], 2), token=fan)
        seen = [(await w.next_data())["liveSessionEvents"] for w in watchers]
        assert [e["quantity"] for e in seen] == [2, 2, 2, 2]
        assert seen[0] == seen[1] == seen[2] and seen[0]["sender"]["name"]
        assert seen[3] == {"__typename": "GiftSent", "quantity": 2}
        raw = json.loads(await asyncio.wait_for(socket.recv(), 15))
        assert raw == {"id": "op-7", "type": "next", "payload": {
            "data": {"liveSessionEvents": {"__typename": "GiftSent", "quantity": 2}}}}

        await watchers[0].socket.send(json.dumps({"id": "1", "type": "complete"}))
        await same[0].__aexit__(None, None, None)
        await gql(SEND, send_input(session_id, gifts["rose"], 1), token=fan)
        for watcher in watchers[1:]:
            event = (await watcher.next_data())["liveSessionEvents"]
            while event["__typename"] != "GiftSent":  # the podium may come in between
                event = (await watcher.next_data())["liveSessionEvents"]
            assert event["quantity"] == 1
        await gql(END, {"id": session_id}, token=creator)
        for watcher in watchers[1:]:
            while (message := await watcher.receive())["type"] == "next":
                pass
            assert message["type"] == "complete"
    finally:
        await socket.close()
        for subscription in [*same[1:], other]:
            await subscription.__aexit__(None, None, None)


async def test_a_refused_gift_never_appears_as_an_event(gql, gifting_server):
    gifts = await gift_ids(gql)
    creator = person("star", "creator")
    session_id = await go_live(gql, creator)
    broke, fan = person("broke"), person("fan")
    await buy_coins(gql, fan, "coins-70")
    async with Subscription(gifting_server.url, fan, EVENTS, {"id": session_id}) as events:
        await events.next_data()  # the initial viewer count
        refused = await gql(SEND, send_input(session_id, gifts["doughnut"]), token=broke)
        assert refused["data"]["sendGift"]["userErrors"][0]["code"] == "INSUFFICIENT_COINS"
        await gql(SEND, send_input(session_id, gifts["finger-heart"]), token=fan)
        event = (await events.next_data())["liveSessionEvents"]
        assert event["__typename"] == "GiftSent" and event["gift"]["sku"] == "finger-heart"


async def test_subscriptions_need_a_token_and_a_real_session(gifting_server):
    async with Subscription(gifting_server.url, None, EVENTS, {"id": "TGl2ZVNlc3Npb246MQ=="}) \
            as events:
        message = await events.receive()
        assert message["type"] in ("error", "next")
        errors = message["payload"] if message["type"] == "error" else \
            message["payload"]["errors"]
        assert errors[0]["message"].startswith("Authentication required")
    async with Subscription(gifting_server.url, person("x"), EVENTS,
                            {"id": "TGl2ZVNlc3Npb246OTk5OQ=="}) as events:
        message = await events.receive()
        errors = message["payload"] if message["type"] == "error" else \
            message["payload"]["errors"]
        assert errors[0]["message"] == "No live session has this ID."


async def test_the_creator_sees_diamonds_and_leaderboards(gql):
    gifts = await gift_ids(gql)
    creator_name = f"leader-{next(_names)}"
    creator = token(creator_name, "creator")
    session_id = await go_live(gql, creator)
    fans = [person("fan") for _ in range(3)]
    for n, fan in enumerate(fans):
        await buy_coins(gql, fan)
        await gql(SEND, send_input(session_id, gifts["perfume"], quantity=n + 1), token=fan)
    me = (await gql("{ viewer { id wallet { diamonds } } }", token=creator))["data"]["viewer"]
    assert me["wallet"]["diamonds"] == 60  # (20 + 40 + 60) / 2
    query = """query($creator: ID!, $session: ID!) {
      topSupporters(creatorId: $creator, period: MONTH, first: 2) {
        edges { node { rank coins } } pageInfo { hasNextPage endCursor } }
      liveSession(id: $session) { totals { gifts coins diamonds }
        topGifters(first: 10) { edges { node { rank coins gifts } } } } }"""
    board = (await gql(query, {"creator": me["id"], "session": session_id}, token=fans[0]))["data"]
    assert [e["node"]["coins"] for e in board["topSupporters"]["edges"]] == [60, 40]
    assert board["topSupporters"]["pageInfo"]["hasNextPage"] is True
    assert board["liveSession"]["totals"] == {"gifts": 6, "coins": 120, "diamonds": 60}
    assert [e["node"]["rank"] for e in board["liveSession"]["topGifters"]["edges"]] == [1, 2, 3]
    creators = (await gql("{ topCreators(period: DAY, first: 100) { edges { node { user { name } "
                          "diamonds } } } }", token=fans[0]))["data"]["topCreators"]["edges"]
    assert {"user": {"name": creator_name}, "diamonds": 60} in [e["node"] for e in creators]


async def test_fifty_identical_requests_at_once_give_one_gift_and_one_receipt(gql,
                                                                               gifting_server):
    gifts = await gift_ids(gql)
    session_id = await go_live(gql, person("replay-star", "creator"))
    fan = person("replay-fan")
    await buy_coins(gql, fan)
    variables = send_input(session_id, gifts["doughnut"], 2, key="the-same-key")
    before = await snapshot(gifting_server.database_url)
    bodies = await asyncio.gather(*(gql(SEND, variables, token=fan) for _ in range(50)))
    payloads = [body["data"]["sendGift"] for body in bodies]
    assert sum(not p["replayed"] for p in payloads) == 1
    assert all(p["userErrors"] == [] for p in payloads)
    assert len({str(p["receipt"]) for p in payloads}) == 1  # the same receipt, field for field
    after = await snapshot(gifting_server.database_url)
    assert after["rows"]["gift_send"] == before["rows"]["gift_send"] + 1
    assert after["rows"]["ledger_transaction"] == before["rows"]["ledger_transaction"] + 1
