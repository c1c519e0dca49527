"""The purchase flow, authentication and bad input over real HTTP against `livegifts serve`.

Every refused request is checked against a database snapshot: no balance and no row changed.
"""

from __future__ import annotations

import base64
import itertools
import json

import pytest
from strawberry.relay import to_base64

from app.sandbox import SandboxPaymentProvider
from tests.support import sandbox, snapshot, token

PURCHASE = """
mutation($input: PurchaseCoinsInput!) { purchaseCoins(input: $input) {
  purchase { id coins price { amount currency } provider providerTransactionId
             transaction { kind entries { account currency amount } } }
  wallet { coins diamonds } replayed userErrors { code field message } } }"""
VIEWER = """{ viewer { id name roles wallet { coins diamonds }
  transactions(first: 10) { edges { node { id kind entries { account currency amount } } }
                            pageInfo { hasNextPage endCursor } } } }"""
CREATE_PACKAGE = """
mutation($input: CreateCoinPackageInput!) { createCoinPackage(input: $input) {
  coinPackage { id sku coins price { amount currency } } userErrors { code field message } } }"""
ADMIN = token("ops-admin", "admin")
_names = itertools.count()


def new_user(prefix: str = "viewer") -> str:
    return token(f"{prefix}-{next(_names)}")


async def registered_user(gql, prefix: str = "viewer") -> str:
    """A token for a user who already exists, so snapshots see only the request's effect."""
    bearer = new_user(prefix)
    await gql("{ viewer { id } }", token=bearer)
    return bearer


async def packages(gql) -> dict[str, dict]:
    """The default ladder, created through the admin API on first use."""
    listed = await gql("{ coinPackages(includeInactive: true) { id sku coins price { amount } } }",
                       token=ADMIN)
    found = {p["sku"]: p for p in listed["data"]["coinPackages"]}
    for sku, coins, cents in [("coins-70", 70, 99), ("coins-350", 350, 499),
                              ("retired-10", 10, 19)]:
        if sku not in found:
            made = await gql(CREATE_PACKAGE, {"input": {"sku": sku, "name": f"{coins} Coins",
                                                        "coins": coins, "priceMinor": cents}},
                             token=ADMIN)
            assert made["data"]["createCoinPackage"]["userErrors"] == []
            found[sku] = made["data"]["createCoinPackage"]["coinPackage"]
    retired = found["retired-10"]["id"]
    await gql("mutation($id: ID!) { updateCoinPackage(input: {id: $id, active: false}) "
              "{ userErrors { code } } }", {"id": retired}, token=ADMIN)
    return found


def receipt_for(package: dict, txn: str | None = None, provider: SandboxPaymentProvider = None
                ) -> str:
    return (provider or sandbox()).make_receipt(package["sku"], package["price"]["amount"],
                                                "USD", txn)


def purchase_input(package_id: str, receipt: str, key: str = "key-1", **extra) -> dict:
    return {"input": {"packageId": package_id, "provider": "sandbox", "receipt": receipt,
                      "idempotencyKey": key, **extra}}


async def test_purchase_credits_coins_once_and_replays(gql, server):
    catalogue = await packages(gql)
    buyer = new_user("buyer")
    assert (await gql(VIEWER, token=buyer))["data"]["viewer"]["wallet"] == {"coins": 0,
                                                                            "diamonds": 0}
    receipt = receipt_for(catalogue["coins-350"], "store-flow-1")
    first = (await gql(PURCHASE, purchase_input(catalogue["coins-350"]["id"], receipt),
                       token=buyer))["data"]["purchaseCoins"]
    assert first["userErrors"] == [] and first["replayed"] is False
    assert first["wallet"] == {"coins": 350, "diamonds": 0}
    assert first["purchase"]["coins"] == 350
    assert first["purchase"]["price"] == {"amount": 499, "currency": "USD"}
    assert first["purchase"]["providerTransactionId"] == "store-flow-1"
    assert sorted(e["amount"] for e in first["purchase"]["transaction"]["entries"]) == \
        [-499, -350, 350, 499]

    before = await snapshot(server.database_url)
    again = (await gql(PURCHASE, purchase_input(catalogue["coins-350"]["id"], receipt),
                       token=buyer))["data"]["purchaseCoins"]
    assert again["replayed"] is True
    assert again["purchase"] == first["purchase"]
    assert again["wallet"] == {"coins": 350, "diamonds": 0}
    assert await snapshot(server.database_url) == before

    viewer = (await gql(VIEWER, token=buyer))["data"]["viewer"]
    assert viewer["roles"] == ["viewer"]
    [edge] = viewer["transactions"]["edges"]
    assert edge["node"]["kind"] == "coin_purchase"
    assert {"account": "wallet", "currency": "COIN", "amount": 350} in edge["node"]["entries"]

    node = await gql("query($id: ID!) { node(id: $id) { id ... on Purchase { coins } } }",
                     {"id": first["purchase"]["id"]}, token=buyer)
    assert node["data"]["node"] == {"id": first["purchase"]["id"], "coins": 350}
    stranger = await gql("query($id: ID!) { node(id: $id) { id } }",
                         {"id": first["purchase"]["id"]}, token=new_user())
    assert stranger["data"]["node"] is None


async def test_transactions_paginate_with_cursors(gql):
    catalogue = await packages(gql)
    buyer = new_user("pager")
    for n in range(3):
        bought = await gql(PURCHASE, purchase_input(catalogue["coins-70"]["id"],
                                                    receipt_for(catalogue["coins-70"]),
                                                    key=f"page-{n}"), token=buyer)
        assert bought["data"]["purchaseCoins"]["userErrors"] == []
    query = """query($after: String) { viewer { transactions(first: 2, after: $after) {
        edges { node { id } } pageInfo { hasNextPage endCursor } } } }"""
    page1 = (await gql(query, token=buyer))["data"]["viewer"]["transactions"]
    page2 = (await gql(query, {"after": page1["pageInfo"]["endCursor"]}, token=buyer)
             )["data"]["viewer"]["transactions"]
    assert len(page1["edges"]) == 2 and page1["pageInfo"]["hasNextPage"] is True
    assert len(page2["edges"]) == 1 and page2["pageInfo"]["hasNextPage"] is False
    ids = [e["node"]["id"] for e in page1["edges"] + page2["edges"]]
    assert len(set(ids)) == 3


@pytest.mark.parametrize("arguments, message", [
    ("first: 0", "first must be between 1 and 100."),
    ("first: 101", "first must be between 1 and 100."),
    ('after: "bm9wZQ=="', "after is not a cursor returned by this connection."),
    (f'after: "{to_base64("cursor", 2**63)}"', "after is not a cursor returned by this "
                                               "connection."),
])
async def test_bad_pagination_arguments_are_explained(gql, arguments, message):
    body = await gql(f"{{ viewer {{ transactions({arguments}) {{ edges {{ cursor }} }} }} }}",
                     token=new_user(), expect_errors=True)
    assert [e["message"] for e in body["errors"]] == [message]
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_ids_and_cursors_beyond_the_database_range_are_explained_not_masked(gql):
    """Out-of-range numbers in global ids and cursors are no object, or a bad cursor; never
    a query the driver cannot send (a masked error)."""
    for number in (2**63, 2**64 + 1, 10**30):
        for kind in ("Gift", "LiveSession", "User", "CoinPackage"):
            body = await gql("query($id: ID!) { node(id: $id) { id } }",
                             {"id": to_base64(kind, number)}, token=new_user())
            assert body["data"] == {"node": None}
    for cursor in (f"0/{2**63}", f"{2**40}/1"):
        body = await gql("query($after: String) { gifts(after: $after) { edges { cursor } } }",
                         {"after": to_base64("cursor", cursor)}, expect_errors=True)
        assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]


async def test_anonymous_callers_read_public_data_only(gql, server):
    catalogue = await packages(gql)
    public = await gql("{ coinPackages { sku coins price { amount currency } } }")
    skus = [p["sku"] for p in public["data"]["coinPackages"]]
    assert "coins-70" in skus and "retired-10" not in skus
    node = await gql("query($id: ID!) { node(id: $id) { ... on CoinPackage { sku } } }",
                     {"id": catalogue["coins-70"]["id"]})
    assert node["data"]["node"] == {"sku": "coins-70"}

    before = await snapshot(server.database_url)
    for query, variables in [
        (VIEWER, None),
        (PURCHASE, purchase_input(catalogue["coins-70"]["id"], receipt_for(catalogue["coins-70"]))),
        ("{ coinPackages(includeInactive: true) { sku } }", None),
        ("query($id: ID!) { node(id: $id) { id } }", {"id": to_base64("User", 1)}),
    ]:
        body = await gql(query, variables, expect_errors=True)
        assert body["errors"][0]["message"].startswith(
            "Authentication required: send 'Authorization: Bearer <token>'"), body
        assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert await snapshot(server.database_url) == before


def _tampered(receipt: str) -> str:
    prefix, payload, signature = receipt.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["amount"] = 1
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    return f"{prefix}.{forged}.{signature}"


@pytest.mark.parametrize("bad_token, message", [
    (token("late", ttl=-10), "Invalid bearer token: it has expired; get a new one."),
    (token("mallory", "admin", secret="x" * 40), "Invalid bearer token: its signature does not "
                                                 "match: it was not issued for this server."),
    ("garbage", "Invalid bearer token: it is not a well-formed JWT."),
    ("t7e3.t7e3.t7e3", "Invalid bearer token: it is not a well-formed JWT."),  # not UTF-8
])
@pytest.mark.parametrize("query", [VIEWER, "{ gifts(first: 1) { edges { node { id } } } }"],
                         ids=["private", "public"])
async def test_bad_tokens_are_refused_clearly_even_on_public_queries(gql, server, bad_token,
                                                                     message, query):
    """A bad token is refused with 401 and its reason in the API's words, on public fields
    too (a client whose token expired learns it), and nothing changes."""
    before = await snapshot(server.database_url)
    response = await gql.http.post(gql.url, json={"query": query},
                                   headers={"authorization": f"Bearer {bad_token}"})
    assert (response.status_code, response.headers["www-authenticate"]) == (
        401, 'Bearer error="invalid_token"')
    assert response.json() == {"errors": [{"message": message,
                                           "extensions": {"code": "UNAUTHENTICATED"}}]}
    assert await snapshot(server.database_url) == before


async def test_non_bearer_authorization_is_refused(gql):
    response = await gql.http.post(gql.url, json={"query": "{ viewer { name } }"},
                                   headers={"authorization": "Basic dXNlcjpwYXNz"})
    assert (response.status_code, response.json()["errors"][0]["message"]) == (
        401, "Invalid Authorization header: expected 'Bearer <token>'.")


async def test_viewers_cannot_manage_coin_packages(gql, server):
    await packages(gql)
    viewer = await registered_user(gql)
    before = await snapshot(server.database_url)
    body = await gql(CREATE_PACKAGE, {"input": {"sku": "cheap", "name": "Cheap", "coins": 10**6,
                                                "priceMinor": 1}},
                     token=viewer, expect_errors=True)
    assert body["errors"][0]["message"] == "Forbidden: this needs the admin role."
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert await snapshot(server.database_url) == before


BAD_PURCHASES = {
    "unknown package": (lambda c: purchase_input(to_base64("CoinPackage", 987654),
                                                 receipt_for(c["coins-70"])),
                        "NOT_FOUND", "packageId", "No coin package has this ID."),
    "malformed id": (lambda c: purchase_input("not-an-id", receipt_for(c["coins-70"])),
                     "INVALID_ID", "packageId", "packageId is not a valid CoinPackage ID."),
    "id of another type": (lambda c: purchase_input(to_base64("User", 1),
                                                    receipt_for(c["coins-70"])),
                           "INVALID_ID", "packageId", "packageId is not a valid CoinPackage ID."),
    "forged receipt": (lambda c: purchase_input(c["coins-70"]["id"], receipt_for(
        c["coins-70"], provider=SandboxPaymentProvider("not-the-server-secret"))),
        "INVALID_RECEIPT", "receipt",
        "The receipt was rejected: the signature does not match: forged or altered receipt."),
    "tampered receipt": (lambda c: purchase_input(c["coins-70"]["id"],
                                                  _tampered(receipt_for(c["coins-70"]))),
                         "INVALID_RECEIPT", "receipt",
                         "The receipt was rejected: the signature does not match: forged or "
                         "altered receipt."),
    "unreadable receipt": (lambda c: purchase_input(c["coins-70"]["id"], "hello"),
                           "INVALID_RECEIPT", "receipt",
                           "The receipt was rejected: not a sandbox receipt "
                           "(expected sbx1.<payload>.<signature>)."),
    "empty receipt": (lambda c: purchase_input(c["coins-70"]["id"], ""),
                      "INVALID_RECEIPT", "receipt", "The receipt is empty or too long."),
    "receipt for another package": (lambda c: purchase_input(c["coins-350"]["id"],
                                                             receipt_for(c["coins-70"])),
                                    "RECEIPT_MISMATCH", "receipt",
                                    "The receipt is for 'coins-70' at 99 USD, not for "
                                    "'coins-350' at 499 USD."),
    "unknown provider": (lambda c: purchase_input(c["coins-70"]["id"], receipt_for(c["coins-70"]),
                                                  provider="applepay"),
                         "UNKNOWN_PROVIDER", "provider",
                         "Unknown payment provider 'applepay'; installed: sandbox."),
    "empty idempotency key": (lambda c: purchase_input(c["coins-70"]["id"],
                                                       receipt_for(c["coins-70"]), key=""),
                              "INVALID_IDEMPOTENCY_KEY", "idempotencyKey",
                              "idempotencyKey must be 1 to 255 printable characters."),
    "package off sale": (lambda c: purchase_input(c["retired-10"]["id"],
                                                  receipt_for(c["retired-10"])),
                         "PACKAGE_UNAVAILABLE", "packageId",
                         "The package '10 Coins' is no longer on sale."),
}


@pytest.mark.parametrize("case", list(BAD_PURCHASES))
async def test_bad_purchase_input_is_refused_and_changes_nothing(gql, server, case):
    catalogue = await packages(gql)
    build, code, field, message = BAD_PURCHASES[case]
    buyer = await registered_user(gql)
    before = await snapshot(server.database_url)
    body = await gql(PURCHASE, build(catalogue), token=buyer)
    payload = body["data"]["purchaseCoins"]
    assert payload["userErrors"] == [{"code": code, "field": field, "message": message}]
    assert payload["purchase"] is None and payload["wallet"] is None
    assert await snapshot(server.database_url) == before


async def test_a_receipt_redeemed_by_one_user_is_refused_for_another(gql, server):
    catalogue = await packages(gql)
    receipt = receipt_for(catalogue["coins-70"], "store-shared-1")
    owner, thief = new_user("owner"), await registered_user(gql, "thief")
    bought = await gql(PURCHASE, purchase_input(catalogue["coins-70"]["id"], receipt), token=owner)
    assert bought["data"]["purchaseCoins"]["userErrors"] == []
    before = await snapshot(server.database_url)
    for who, key in [(thief, "key-1"), (owner, "another-key")]:
        body = await gql(PURCHASE, purchase_input(catalogue["coins-70"]["id"], receipt, key=key),
                         token=who)
        assert body["data"]["purchaseCoins"]["userErrors"] == [{
            "code": "RECEIPT_ALREADY_REDEEMED", "field": "receipt",
            "message": "This receipt was already redeemed; its coins were credited once."}]
    assert await snapshot(server.database_url) == before
    assert (await gql(VIEWER, token=thief))["data"]["viewer"]["wallet"]["coins"] == 0


async def test_an_idempotency_key_cannot_be_reused_for_another_purchase(gql, server):
    catalogue = await packages(gql)
    buyer = new_user("reuser")
    first = await gql(PURCHASE, purchase_input(catalogue["coins-70"]["id"],
                                               receipt_for(catalogue["coins-70"]), key="k"),
                      token=buyer)
    assert first["data"]["purchaseCoins"]["userErrors"] == []
    before = await snapshot(server.database_url)
    other = await gql(PURCHASE, purchase_input(catalogue["coins-70"]["id"],
                                               receipt_for(catalogue["coins-70"]), key="k"),
                      token=buyer)
    assert other["data"]["purchaseCoins"]["userErrors"] == [{
        "code": "IDEMPOTENCY_KEY_REUSED", "field": "idempotencyKey",
        "message": "This idempotencyKey was already used with a different request; "
                   "use a new key for a new request."}]
    assert await snapshot(server.database_url) == before


@pytest.mark.parametrize("coins, price, field, message", [
    (0, 99, "coins", "coins must be between 1 and 10,000,000."),
    (-70, 99, "coins", "coins must be between 1 and 10,000,000."),
    (10**12, 99, "coins", "coins must be between 1 and 10,000,000."),
    (70, 0, "priceMinor", "priceMinor must be between 1 and 10,000,000 minor units."),
    (70, -1, "priceMinor", "priceMinor must be between 1 and 10,000,000 minor units."),
    (70, 10**9, "priceMinor", "priceMinor must be between 1 and 10,000,000 minor units."),
])
async def test_zero_negative_or_huge_package_amounts_are_refused(gql, server, coins, price,
                                                                 field, message):
    before = await snapshot(server.database_url)
    body = await gql(CREATE_PACKAGE, {"input": {"sku": "odd", "name": "Odd", "coins": coins,
                                                "priceMinor": price}}, token=ADMIN)
    assert body["data"]["createCoinPackage"]["userErrors"] == [
        {"code": "INVALID_AMOUNT", "field": field, "message": message}]
    assert await snapshot(server.database_url) == before


@pytest.mark.parametrize("value", [2**63, 1.5, "70"])
async def test_amounts_that_are_not_safe_integers_fail_validation(gql, server, value):
    before = await snapshot(server.database_url)
    body = await gql(CREATE_PACKAGE, {"input": {"sku": "odd", "name": "Odd", "coins": value,
                                                "priceMinor": 99}},
                     token=ADMIN, expect_errors=True)
    assert "Long" in body["errors"][0]["message"]
    assert "data" not in body or body["data"] is None
    assert await snapshot(server.database_url) == before
