"""Payouts, webhooks, statements and safeguards over a real server."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import httpx
import pytest

from tests.conftest import fresh_database
from tests.support import GraphQLClient, ServerProcess, failure, sandbox, snapshot, token
from tests.test_http_gifting import SEND, buy_coins, gift_ids, go_live, send_input

PAYOUT = """mutation($diamonds: Long!, $key: String!) {
  requestPayout(input: {diamonds: $diamonds, idempotencyKey: $key}) {
    payout { id diamonds cash { amount currency } status providerPayoutId }
    replayed userErrors { code field message } } }"""
WALLET = "{ viewer { wallet { coins diamonds diamondsOnHold coinsOwed } } }"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def money_server(request, tmp_path_factory):
    url = fresh_database(request.param, request, tmp_path_factory.mktemp("money"))
    process = ServerProcess(url, LIVEGIFTS_SEED_DEMO_DATA="true")
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def gql(money_server):
    client = GraphQLClient(money_server.url)
    yield client
    await client.close()


def base(server) -> str:
    return server.url.removesuffix("/graphql")


async def creator_with_diamonds(gql, name: str) -> str:
    """A creator who earned 5,000 diamonds from a fan's Interstellar."""
    gifts = await gift_ids(gql)
    creator = token(name, "creator")
    session_id = await go_live(gql, creator)
    fan = token(f"{name}-fan")
    await buy_coins(gql, fan, "coins-17500")
    sent = await gql(SEND, send_input(session_id, gifts["interstellar"]), token=fan)
    assert sent["data"]["sendGift"]["receipt"]["creatorDiamonds"] == 5_000
    return creator


async def webhook(server, path: str, body: dict, signature: str | None = None):
    raw = json.dumps(body).encode()
    async with httpx.AsyncClient() as client:
        return await client.post(f"{base(server)}/webhooks/{path}/sandbox", content=raw,
                                 headers={"x-livegifts-signature":
                                          signature or sandbox().sign_webhook(raw)})


async def test_payout_flow_with_a_webhook_delivered_five_times(gql, money_server):
    creator = await creator_with_diamonds(gql, "payee")
    body = (await gql(PAYOUT, {"diamonds": 2_000, "key": "cash-1"}, token=creator))
    payout = body["data"]["requestPayout"]["payout"]
    assert (payout["status"], payout["cash"]) == ("PENDING", {"amount": 1000, "currency": "USD"})
    assert (await gql(WALLET, token=creator))["data"]["viewer"]["wallet"] == {
        "coins": 0, "diamonds": 3_000, "diamondsOnHold": 2_000, "coinsOwed": 0}

    responses = await asyncio.gather(*(webhook(money_server, "payouts", {
        "payout_id": payout["providerPayoutId"], "status": "paid"}) for _ in range(5)))
    assert [r.status_code for r in responses] == [200] * 5
    assert sorted(r.json()["changed"] for r in responses) == [False] * 4 + [True]
    listed = await gql("{ viewer { payouts { edges { node { status settledAt } } } } }",
                       token=creator)
    [edge] = listed["data"]["viewer"]["payouts"]["edges"]
    assert edge["node"]["status"] == "PAID" and edge["node"]["settledAt"]
    assert (await gql(WALLET, token=creator))["data"]["viewer"]["wallet"]["diamondsOnHold"] == 0


async def test_payout_refusals_are_explained_and_change_nothing(gql, money_server):
    creator = await creator_with_diamonds(gql, "refused")
    other = await creator_with_diamonds(gql, "other-creator")
    theirs = (await gql(PAYOUT, {"diamonds": 1_000, "key": "k"}, token=other)
              )["data"]["requestPayout"]["payout"]
    before = await snapshot(money_server.database_url)
    for diamonds, code, message in [
        (999, "PAYOUT_BELOW_MINIMUM", "A payout must be at least 1,000 diamonds."),
        (6_000, "INSUFFICIENT_DIAMONDS",
         "Not enough diamonds: this needs 6000 and the balance is 5000."),
    ]:
        body = await gql(PAYOUT, {"diamonds": diamonds, "key": f"bad-{diamonds}"}, token=creator)
        assert body["data"]["requestPayout"]["userErrors"] == [
            {"code": code, "field": None if code == "INSUFFICIENT_DIAMONDS" else "diamonds",
             "message": message}]
        if code == "INSUFFICIENT_DIAMONDS":
            before["rows"]["idempotency_record"] += 1
    cancel = await gql("mutation($id: ID!) { cancelPayout(input: {payoutId: $id}) "
                       "{ userErrors { code message } } }", {"id": theirs["id"]}, token=creator)
    assert cancel["data"]["cancelPayout"]["userErrors"] == [
        {"code": "NOT_FOUND", "message": "No payout of yours has this ID."}]
    peek = await gql("query($id: ID!) { node(id: $id) { id } }", {"id": theirs["id"]},
                     token=creator)
    assert peek["data"]["node"] is None
    forged = await webhook(money_server, "payouts", {"payout_id": theirs["providerPayoutId"],
                                                     "status": "paid"}, "sha256=forged")
    assert failure(forged) == (
        400, "webhook rejected: the signature does not match the body", "BAD_REQUEST")
    unknown = await webhook(money_server, "payouts", {"payout_id": "sbxpo_424242",
                                                      "status": "paid"})
    assert failure(unknown) == (404, "unknown payout 'sbxpo_424242'", "NOT_FOUND")
    viewer = await gql(PAYOUT, {"diamonds": 1_000, "key": "v"}, token=token("just-a-viewer"),
                       expect_errors=True)
    assert viewer["errors"][0]["message"] == "Forbidden: this needs the creator role."
    assert await snapshot(money_server.database_url) == before


async def test_refund_webhooks_and_the_debt_they_leave(gql, money_server):
    fan = token("refunded-fan")
    gifts = await gift_ids(gql)
    session_id = await go_live(gql, token("refund-star", "creator"))
    packages = (await gql("{ coinPackages { id sku price { amount } } }"))["data"]
    package = next(p for p in packages["coinPackages"] if p["sku"] == "coins-700")
    receipt = sandbox().make_receipt("coins-700", 999, transaction_id="refund-me")
    await gql("""mutation($input: PurchaseCoinsInput!) { purchaseCoins(input: $input) {
        userErrors { code } } }""", {"input": {"packageId": package["id"], "provider": "sandbox",
                                               "receipt": receipt, "idempotencyKey": "r"}},
              token=fan)
    await gql(SEND, send_input(session_id, gifts["money-gun"]), token=fan)
    refunded = await webhook(money_server, "payments", {"type": "refund",
                                                        "transaction_id": "refund-me"})
    assert refunded.json() == {"reversed": "refund", "coins_removed": 200,
                               "debt_recorded": 500, "diamonds_clawed_back": 0}
    assert (await gql(WALLET, token=fan))["data"]["viewer"]["wallet"] == {
        "coins": 0, "diamonds": 0, "diamondsOnHold": 0, "coinsOwed": 500}
    before = await snapshot(money_server.database_url)
    for body, signature, status in [
        ({"type": "chargeback", "transaction_id": "refund-me"}, None, 409),
        ({"type": "refund", "transaction_id": "never-bought"}, None, 404),
        ({"type": "refund", "transaction_id": "refund-me"}, "sha256=bad", 400),
        ({"type": "gift", "transaction_id": "refund-me"}, None, 400),
    ]:
        response = await webhook(money_server, "payments", body, signature)
        assert response.status_code == status, response.text
        assert failure(response)[0] == status
    assert await snapshot(money_server.database_url) == before


async def test_statements_as_csv_over_http(gql, money_server):
    creator_name = "csv-star"
    creator = await creator_with_diamonds(gql, creator_name)
    fan = token(f"{creator_name}-fan")
    month = datetime.now(UTC).strftime("%Y-%m")
    async with httpx.AsyncClient(base_url=base(money_server)) as http:
        statement = await http.get(f"/statements/{month}.csv",
                                   headers={"authorization": f"Bearer {fan}"})
        assert statement.status_code == 200
        assert statement.headers["content-type"] == "text/csv; charset=utf-8"
        lines = statement.text.splitlines()
        assert lines[0] == "section,label,count,coins,diamonds,money_minor,currency,at"
        assert any(line.startswith('purchase,"17,500 Coins",1,17500,0,24999,USD')
                   for line in lines)
        assert f"gifts to creator,{creator_name},1,10000,0,0,," in lines
        earnings = await http.get("/earnings.csv", params={"from": f"{month}-01"},
                                  headers={"authorization": f"Bearer {creator}"})
        assert "by gift,Interstellar,1,10000,5000,0,," in earnings.text.splitlines()
        anonymous = await http.get(f"/statements/{month}.csv")
        assert anonymous.status_code == 401
        bad = await http.get("/statements/nope.csv", headers={"authorization": f"Bearer {fan}"})
        assert failure(bad) == (400, "month must look like 2026-11.", "INVALID_INPUT")
    graph = await gql("query($m: String!) { viewer { statement(month: $m) { csvUrl "
                      "lines { section label coins money { amount } } } } }", {"m": month},
                      token=fan)
    assert graph["data"]["viewer"]["statement"]["csvUrl"] == f"/statements/{month}.csv"


async def test_birthdates_and_spending_limits_over_the_api(gql, money_server):
    gifts = await gift_ids(gql)
    session_id = await go_live(gql, token("limits-star", "creator"))
    newcomer = token("newcomer", birthdate=None)
    await buy_coins(gql, token("limits-buyer"))  # an adult's purchase works
    body = await gql(SEND, send_input(session_id, gifts["rose"]), token=newcomer)
    assert body["data"]["sendGift"]["userErrors"][0]["code"] == "BIRTHDATE_REQUIRED"
    profile = """mutation($d: Date!) { updateProfile(input: {birthdate: $d}) {
        birthdate userErrors { code message } } }"""
    teen = (await gql(profile, {"d": "2015-03-01"}, token=newcomer))["data"]["updateProfile"]
    assert teen["userErrors"] == []
    again = (await gql(profile, {"d": "1990-03-01"}, token=newcomer))["data"]["updateProfile"]
    assert again["userErrors"][0]["message"] == ("Your birthdate is already on file; contact "
                                                 "support to correct it.")
    body = await gql(SEND, send_input(session_id, gifts["rose"]), token=newcomer)
    assert body["data"]["sendGift"]["userErrors"][0] == {
        "code": "AGE_RESTRICTED", "field": None,
        "message": "Sending gifts needs you to be at least 18."}

    fan = token("capped-fan")
    await buy_coins(gql, fan, "coins-70")
    limits = await gql("""mutation { setSpendingLimits(input: {dailyCapCoins: 5}) {
        spendingLimits { dailyCapCoins monthlyCapCoins platformDailyCapCoins pending { kind } }
        userErrors { code } } }""", token=fan)
    assert limits["data"]["setSpendingLimits"]["spendingLimits"]["dailyCapCoins"] == 5
    await gql(SEND, send_input(session_id, gifts["finger-heart"]), token=fan)  # 5 coins
    capped = await gql(SEND, send_input(session_id, gifts["rose"]), token=fan)
    assert capped["data"]["sendGift"]["userErrors"][0]["code"] == "DAILY_CAP_REACHED"
    loosened = await gql("""mutation { setSpendingLimits(input: {dailyCapCoins: null}) {
        spendingLimits { dailyCapCoins pending { kind coins effectiveAt } } } }""", token=fan)
    state = loosened["data"]["setSpendingLimits"]["spendingLimits"]
    assert state["dailyCapCoins"] == 5 and state["pending"][0]["kind"] == "daily_cap"


PROFILE = """mutation($d: Date!) { updateProfile(input: {birthdate: $d}) {
    birthdate userErrors { code message } } }"""
PURCHASE = """mutation($input: PurchaseCoinsInput!) { purchaseCoins(input: $input) {
    wallet { coins } userErrors { code message } } }"""


async def purchase(gql, bearer: str, sku: str = "coins-70") -> dict:
    packages = (await gql("{ coinPackages { id sku price { amount } } }"))["data"]["coinPackages"]
    package = next(p for p in packages if p["sku"] == sku)
    receipt = sandbox().make_receipt(sku, package["price"]["amount"])
    body = await gql(PURCHASE, {"input": {"packageId": package["id"], "provider": "sandbox",
                                          "receipt": receipt, "idempotencyKey": receipt[-16:]}},
                     token=bearer)
    return body["data"]["purchaseCoins"]


async def profile_row(database_url: str, name: str) -> tuple:
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import create_async_engine

    from app.models import Profile, User

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            return tuple((await connection.execute(
                select(Profile.birthdate, Profile.vouched, Profile.declared_birthdate,
                       Profile.conflict_at.is_not(None))
                .join(User, User.id == Profile.user_id).where(User.name == name))).one())
    finally:
        await engine.dispose()


async def test_a_birthdate_the_identity_provider_vouches_for_wins_over_a_declared_one(
        gql, money_server):
    """Declared first, then a token vouching a minor's birthdate: the vouched one rules (no
    buying, sending or receiving) and the conflict is recorded. Vouched first: a different
    declaration is refused and changes nothing. Declared minor, then vouched adult: adult."""
    from datetime import date

    gifts = await gift_ids(gql)
    session_id = await go_live(gql, token("age-star", "creator"))
    declared = token("age-declared", birthdate=None)
    assert (await gql(PROFILE, {"d": "1990-01-01"}, token=declared))["data"][
        "updateProfile"]["userErrors"] == []
    minor = token("age-declared", birthdate=date(2012, 5, 5))
    refusal = {"code": "AGE_RESTRICTED", "message": "Buying coins needs you to be at least 18."}
    assert (await purchase(gql, minor))["userErrors"] == [refusal]
    sent = await gql(SEND, send_input(session_id, gifts["rose"]), token=minor)
    assert sent["data"]["sendGift"]["userErrors"][0]["code"] == "AGE_RESTRICTED"
    assert await profile_row(money_server.database_url, "age-declared") == (
        date(2012, 5, 5), True, date(1990, 1, 1), True)

    vouched = token("age-vouched", birthdate=date(2012, 5, 5))
    await gql("{ viewer { name } }", token=vouched)  # the user, first seen
    before = await snapshot(money_server.database_url)
    again = (await gql(PROFILE, {"d": "1990-01-01"}, token=vouched))["data"]["updateProfile"]
    assert again["userErrors"] == [{"code": "INVALID_INPUT", "message": (
        "Your birthdate is already on file; contact support to correct it.")}]
    assert await snapshot(money_server.database_url) == before
    assert (await purchase(gql, vouched))["userErrors"] == [refusal]

    grown = token("age-grown", birthdate=None)
    await gql(PROFILE, {"d": "2013-01-01"}, token=grown)
    adult = token("age-grown", birthdate=date(1991, 2, 3))
    assert (await purchase(gql, adult))["userErrors"] == []
    assert await profile_row(money_server.database_url, "age-grown") == (
        date(1991, 2, 3), True, date(2013, 1, 1), True)
