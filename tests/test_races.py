"""Races between real server processes on PostgreSQL.

Two ``livegifts serve`` processes share one database, each with its own gift writer and
connections, so PostgreSQL sees the writers contend: every viewer sends gifts through both
processes at once from the same wallet, to two creators, while some buy more coins, one's
purchase is refunded and the creators request payouts of the diamonds the gifts are
crediting. (The single-process tests in ``tests/test_concurrency.py`` prove the batching
writer's own checks; here the database's locks decide.)

Afterwards: every answer was a gift or a refusal a user can act on (no error, no
deadlock reaching a user); every answered gift is written once; each wallet holds what
its purchases, refund and receipts say and never went below zero; each creator's diamonds
are what the receipts credited less the payouts held; the audit is clean without
accepting any test grant.
"""

from __future__ import annotations

import asyncio
import itertools
import json

import httpx
from sqlalchemy import func, select
from strawberry.relay import from_base64

from app.ledger import audit
from app.models import GiftSend, Payout, Purchase, PurchaseReversal, User
from app.runtime import Runtime
from app.services import wallets
from tests.support import GraphQLClient, ServerProcess, sandbox, settings_for, token
from tests.test_http_gifting import SEND, gift_ids, go_live, send_input

FANS = 6
REFUSALS = {"INSUFFICIENT_COINS", "INSUFFICIENT_DIAMONDS", "MONTHLY_CAP_REACHED"}
PURCHASE = """mutation($input: PurchaseCoinsInput!) { purchaseCoins(input: $input) {
  wallet { coins } userErrors { code message } } }"""
PAYOUT = """mutation($input: RequestPayoutInput!) { requestPayout(input: $input) {
  payout { id } userErrors { code message } } }"""


class Answers:
    """Every answer of the race, checked as it comes: a result or a refusal a user can act
    on; never an error."""

    def __init__(self) -> None:
        self.gifts: set[int] = set()
        self.refused: dict[str, int] = {}
        self.keys = itertools.count()

    async def post(self, http: httpx.AsyncClient, url: str, query: str, variables: dict,
                   bearer: str, field: str) -> dict:
        answer = await http.post(url, json={"query": query, "variables": variables},
                                 headers={"authorization": f"Bearer {bearer}"})
        body = answer.json()
        assert answer.status_code == 200 and "errors" not in body, body
        payload = body["data"][field]
        for error in payload["userErrors"]:
            assert error["code"] in REFUSALS, payload
            self.refused[error["code"]] = self.refused.get(error["code"], 0) + 1
        return payload


async def purchase(http: httpx.AsyncClient, url: str, bearer: str, sku: str, price: int,
                   store_id: str, answers: Answers) -> None:
    packages = (await http.post(url, json={"query": "{ coinPackages { id sku } }"})).json()
    package = next(p["id"] for p in packages["data"]["coinPackages"] if p["sku"] == sku)
    receipt = sandbox().make_receipt(sku, price, transaction_id=store_id)
    payload = await answers.post(http, url, PURCHASE, {"input": {
        "packageId": package, "provider": "sandbox", "receipt": receipt,
        "idempotencyKey": store_id}}, bearer, "purchaseCoins")
    assert payload["userErrors"] == []


async def test_two_processes_racing_on_the_same_wallets_keep_the_books(
        postgres_database_url):
    limits = {"LIVEGIFTS_RATE_LIMIT_PER_USER": "100000"}
    first = ServerProcess(postgres_database_url, LIVEGIFTS_SEED_DEMO_DATA="true", **limits)
    second = ServerProcess(postgres_database_url, **limits)
    await asyncio.to_thread(first.start)  # migrates and seeds; then the second
    await asyncio.to_thread(second.start)
    urls = [first.url, second.url]
    answers = Answers()
    client = GraphQLClient(first.url)
    http = httpx.AsyncClient(timeout=60)
    try:
        gifts = await gift_ids(client)
        creators = [token(f"race-creator-{n}", "creator") for n in range(2)]
        sessions = [await go_live(client, creator) for creator in creators]
        patron = token("race-patron")  # gives each creator 5,000 diamonds to pay out
        for m in range(2):
            await purchase(http, first.url, patron, "coins-17500", 24_999, f"patron-{m}",
                           answers)
        for session in sessions:
            sent = await answers.post(http, first.url, SEND, send_input(
                session, gifts["interstellar"]), patron, "sendGift")
            answers.gifts.add(int(from_base64(sent["receipt"]["id"])[1]))
        fans = [token(f"race-fan-{n}") for n in range(FANS)]
        for n, fan in enumerate(fans):
            await purchase(http, urls[n % 2], fan, "coins-350", 499, f"fan-{n}", answers)

        async def sender(fan: str, url: str) -> None:
            """Doughnuts (30 coins) to both creators in turn until the wallet runs dry."""
            for turn in itertools.count():
                payload = await answers.post(http, url, SEND, send_input(
                    sessions[turn % 2], gifts["doughnut"], key=f"race-{next(answers.keys)}"),
                    fan, "sendGift")
                if payload["receipt"] is None:
                    return
                answers.gifts.add(int(from_base64(payload["receipt"]["id"])[1]))

        async def buyer(n: int) -> None:  # two more purchases mid-race, one per process
            for m in range(2):
                await purchase(http, urls[m], fans[n], "coins-70", 99, f"more-{n}-{m}",
                               answers)

        async def refunder() -> None:  # fan 2's first purchase refunded mid-race
            raw = json.dumps({"type": "refund", "transaction_id": "fan-2"}).encode()
            answer = await http.post(
                second.url.removesuffix("/graphql") + "/webhooks/payments/sandbox",
                content=raw, headers={"x-livegifts-signature": sandbox().sign_webhook(raw)})
            assert answer.status_code == 200, answer.text

        async def payee(creator: str) -> None:  # payouts while gifts credit the diamonds
            for m in range(6):
                await answers.post(http, urls[m % 2], PAYOUT, {"input": {
                    "diamonds": 1_000, "idempotencyKey": f"payout-{m}"}}, creator,
                    "requestPayout")

        await asyncio.gather(
            *(sender(fan, url) for fan in fans for url in urls),
            buyer(0), buyer(1), refunder(), *(payee(creator) for creator in creators))
    finally:
        await http.aclose()
        await client.close()
        await asyncio.to_thread(first.stop)
        await asyncio.to_thread(second.stop)
    assert answers.refused.get("INSUFFICIENT_COINS", 0) >= FANS  # every wallet ran dry
    assert answers.refused.get("INSUFFICIENT_DIAMONDS", 0) >= 1  # payouts met their limit

    runtime = Runtime.build(settings_for(postgres_database_url))
    try:
        async with runtime.sessions() as session:
            written = set((await session.scalars(select(GiftSend.id))).all())
            assert written == answers.gifts  # every answered gift, once; nothing unanswered
            bought = dict((await session.execute(
                select(Purchase.user_id, func.sum(Purchase.coins))
                .group_by(Purchase.user_id))).all())
            refunded = dict((await session.execute(
                select(Purchase.user_id, func.sum(PurchaseReversal.coins_removed))
                .join(Purchase, Purchase.id == PurchaseReversal.purchase_id)
                .group_by(Purchase.user_id))).all())
            spent = dict((await session.execute(
                select(GiftSend.sender_id, func.sum(GiftSend.coins_paid))
                .group_by(GiftSend.sender_id))).all())
            for user in bought:
                coins = (await wallets.wallet(session, user)).coins
                assert coins == bought[user] - refunded.get(user, 0) - spent.get(user, 0)
                assert coins >= 0
            earned = dict((await session.execute(
                select(GiftSend.creator_id, func.sum(GiftSend.creator_diamonds))
                .group_by(GiftSend.creator_id))).all())
            held = dict((await session.execute(
                select(Payout.creator_id, func.sum(Payout.diamonds))
                .group_by(Payout.creator_id))).all())
            names = dict((await session.execute(select(User.id, User.name))).all())
            assert sorted(names[c] for c in earned) == ["race-creator-0", "race-creator-1"]
            for creator, diamonds in earned.items():
                assert (await wallets.wallet(session, creator)).diamonds == \
                    diamonds - held.get(creator, 0)
            assert await audit(session) == []  # no test grant accepted: all bought
    finally:
        await runtime.close()
