"""Documented rules that had no test of their own: payout rounding, the default page size,
what the rate limits cover, the event bus's buffer, tokens for another audience or with an
unknown role, which plugin a sponsored send asks, what a plugin's ``None`` means, sponsored
skus that collide, a bad date on ``/earnings.csv``, the minimum age and the platform's
monthly cap as settings, and the codes of subscription errors over a real WebSocket.

Each test shows what a user sees (codes, messages, statuses) and, where state could change,
that nothing else did (database snapshots before and after). The in-process tests run on the
core's services and schema; the others on a real ``livegifts serve`` and real HTTP or
WebSocket clients. Everything that touches a database runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from contextlib import AsyncExitStack
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import httpx
import jwt
import pytest
from sqlalchemy import select
from strawberry.relay import to_base64

from app import hookimpl
from app.auth import Role, mint_token
from app.errors import DomainError, ErrorCode
from app.events import QUEUE_SIZE, MemoryEventBus, session_channel
from app.graphql import broadcast
from app.graphql.context import Context
from app.graphql.schema import schema
from app.models import Account, Brand, Gift
from app.ratelimit import WINDOW_SECONDS
from app.services import catalogue, safeguards
from app.services.brands import budget_balance
from app.services.catalogue import GiftFields, seed_default_gifts
from app.services.coins import seed_default_packages
from app.services.gifting import written
from app.services.rates import current_rate_card
from app.settings import Settings
from tests.conftest import BACKENDS, fresh_database
from tests.gifting_support import give_coins, new_viewer, send, stage
from tests.money_support import buy, earn_diamonds, request
from tests.sample_plugins.acme import Acme, Globex
from tests.support import (
    JWT_SECRET,
    GraphQLClient,
    ServerProcess,
    Subscription,
    bearer,
    in_one_window,
    settings_for,
    snapshot,
    token,
)
from tests.test_http_gifting import go_live as go_live_over_http
from tests.test_plugins import core_with, funded_stage

_names = itertools.count()


def fresh(prefix: str) -> str:
    """A user name no other test of the module uses."""
    return f"{prefix}-{next(_names)}"


async def refused(runtime, code: ErrorCode, action) -> DomainError:
    """Await ``action``, which must be refused with ``code`` and change nothing."""
    before = await snapshot(runtime.settings.database_url)
    with pytest.raises(DomainError) as refusal:
        await action
    assert refusal.value.code is code, refusal.value.message
    assert await snapshot(runtime.settings.database_url) == before
    return refusal.value


async def balances(runtime, user_id: int) -> dict[str, int]:
    async with runtime.sessions() as session:
        rows = await session.execute(select(Account.code, Account.balance).where(
            Account.owner_user_id == user_id))
        return {code.split(":")[-1]: balance for code, balance in rows}


def years_ago(years: int, days: int = 0) -> date:
    """The birthdate of someone who turns ``years`` today (``days`` later: not yet)."""
    today = datetime.now(UTC).date()
    try:
        birthday = today.replace(year=today.year - years)
    except ValueError:  # 29 February
        birthday = today.replace(year=today.year - years, day=28)
    return birthday + timedelta(days=days)


# Payouts ----------------------------------------------------------------------------------

async def test_payout_cash_is_rounded_down_to_the_cent(runtime):
    """1,999 diamonds at 50 cents a hundred are worth 999.5 cents: the payout is 999 (not
    1,000, as rounding half up or half to even would give), and all 1,999 are held."""
    creator = await new_viewer(runtime, "creator")
    await earn_diamonds(runtime, creator, 5_000)
    async with runtime.sessions() as session:
        assert (await current_rate_card(session)).cash_minor_per_100_diamonds == 50
    payout = (await request(runtime, creator, 1_999, "odd-amount")).payout
    assert (payout.diamonds, payout.cash_minor, payout.currency) == (1_999, 999, "USD")
    assert await balances(runtime, creator) == {"wallet": 0, "earnings": 3_001,
                                                "payout_hold": 1_999}


# Pagination -------------------------------------------------------------------------------

async def _execute(runtime, document: str, variables: dict | None = None,
                   bearer: str | None = None):
    context = Context(runtime=runtime,
                      authorization=f"Bearer {bearer}" if bearer else None)
    result = await schema.execute(document, variables, context_value=context)
    assert result.errors is None, result.errors
    return result


async def test_connections_return_20_items_when_first_is_omitted(runtime):
    """docs/api.md: "Ask for `first` items (1 to 100; 20 when omitted)", and a connection's
    cost is multiplied by 20 when it is omitted. The catalogue (23 gifts on sale) answers 20
    and a next page with the other 3; a viewer's 21 transactions answer 20 and a next page."""
    async with runtime.sessions() as session, session.begin():
        assert await seed_default_gifts(session) == 13
        for n in range(10):
            await catalogue.create_gift(session, f"extra-{n}", GiftFields(
                name=f"Extra {n}", coin_price=10 + n, category="classic",
                image_url="https://cdn.example.com/extra.webp", sort_order=1000 + n))
    page = """query($after: String) { gifts(after: $after) { edges { node { sku } }
        pageInfo { hasNextPage endCursor } } }"""
    first = await _execute(runtime, page)
    gifts = first.data["gifts"]
    assert (len(gifts["edges"]), gifts["pageInfo"]["hasNextPage"]) == (20, True)
    # gifts, then 20 times what is inside it: edges, node, sku, pageInfo and its 2 fields
    assert first.extensions["cost"]["requested"] == 1 + 20 * 6
    rest = (await _execute(runtime, page, {"after": gifts["pageInfo"]["endCursor"]})
            ).data["gifts"]
    assert [e["node"]["sku"] for e in rest["edges"]] == ["extra-7", "extra-8", "extra-9"]
    assert rest["pageInfo"]["hasNextPage"] is False

    fan = await new_viewer(runtime, "fan")
    for _ in range(21):
        await give_coins(runtime, fan, 1)
    mine = (await _execute(runtime, "{ viewer { transactions { edges { node { kind } } "
                                    "pageInfo { hasNextPage } } } }", bearer=token("fan"))
            ).data["viewer"]["transactions"]
    assert [e["node"]["kind"] for e in mine["edges"]] == ["test_grant"] * 20
    assert mine["pageInfo"]["hasNextPage"] is True


# The event bus ----------------------------------------------------------------------------

async def test_a_bus_subscriber_more_than_1000_events_behind_loses_the_oldest():
    """Unit level, with the real in-memory bus (its fan-out is the one the Redis bus uses
    too): of 1,001 events, a subscriber that read none keeps the newest 1,000 (the first
    is lost); a subscriber keeping up gets all 1,001."""
    assert QUEUE_SIZE == 1000
    bus, channel = MemoryEventBus(), session_channel(1)
    behind, keeping_up = bus.listen(channel), bus.listen(channel)
    kept_up = []
    for seq in range(1, QUEUE_SIZE + 2):
        await bus.publish(channel, {"type": "GiftSent", "stream": "session:1", "seq": seq})
        kept_up.append(keeping_up.get_nowait()["seq"])
    assert kept_up == list(range(1, 1002))
    assert [behind.get_nowait()["seq"] for _ in range(behind.qsize())] == list(range(2, 1002))


async def test_a_websocket_member_more_than_1000_messages_behind_loses_the_oldest():
    """Unit level, with the real watch member (the per-connection outbox a subscription's
    messages wait in until its WebSocket takes them): of 1,001 messages queued while it
    wrote none, the newest 1,000 are kept."""
    member = broadcast.Member(SimpleNamespace(operation_id="1"), watch=None, follower=None)
    for seq in range(1, QUEUE_SIZE + 2):
        member.deliver(seq, f'{{"seq":{seq}}}', False)
    assert [seq for seq, _, _ in member.outbox] == list(range(2, 1002))


# Plugins ----------------------------------------------------------------------------------

def counted(base: type[Acme]) -> type[Acme]:
    """``base``, counting the calls of each hook a send may make."""

    class Counted(base):
        def __init__(self) -> None:
            super().__init__()
            self.calls: Counter[str] = Counter()

        @hookimpl
        def check_send(self, send):
            self.calls["check_send"] += 1
            return super().check_send(send)

        @hookimpl
        def quote_gift(self, send):
            self.calls["quote_gift"] += 1
            return super().quote_gift(send)

        @hookimpl
        def split_revenue(self, quote, rate_card):
            self.calls["split_revenue"] += 1
            return super().split_revenue(quote, rate_card)

        @hookimpl
        def gift_sent(self, gift):
            self.calls["gift_sent"] += 1
            super().gift_sent(gift)

    return Counted


EVERY_SEND_HOOK = {"check_send": 1, "quote_gift": 1, "split_revenue": 1, "gift_sent": 1}


async def _sent_and_told(runtime, fan, where, sku, quantity=1):
    receipt = (await send(runtime, fan, where, sku, quantity=quantity)).receipt
    await written(runtime.sessions)  # gift_sent is told from the event log, after the send
    await runtime.deliver_events()
    return receipt


async def test_a_sponsored_gift_calls_only_its_owning_plugins_hooks(database_url):
    """With Acme and Globex installed, a send of Acme's gift asks Acme once for each hook and
    never Globex (and draws on Acme's budget only); Globex's gift the other way round; a
    core gift asks neither."""
    acme, globex = counted(Acme)(), counted(Globex)()
    async with core_with(database_url, ("acme", acme), ("globex", globex)) as runtime:
        where, fan = await funded_stage(runtime, budget=1_000)
        rocket = await _sent_and_told(runtime, fan, where, "acme-rocket", 2)
        assert (rocket.coins_paid, rocket.brand_subsidy) == (50, 50)
        assert (acme.calls, globex.calls) == (EVERY_SEND_HOOK, {})
        async with runtime.sessions() as session:
            assert (await budget_balance(session, "acme"),
                    await budget_balance(session, "globex")) == (950, 1_000)

        await _sent_and_told(runtime, fan, where, "globex-globe")
        assert (acme.calls, globex.calls) == (EVERY_SEND_HOOK, EVERY_SEND_HOOK)
        async with runtime.sessions() as session:
            assert (await budget_balance(session, "acme"),
                    await budget_balance(session, "globex")) == (950, 975)

        await _sent_and_told(runtime, fan, where, "rose")
        assert (acme.calls, globex.calls) == (EVERY_SEND_HOOK, EVERY_SEND_HOOK)
        assert [g.gift_sku for g in acme.sent] == ["acme-rocket"]
        assert [g.gift_sku for g in globex.sent] == ["globex-globe"]


class ListPrice(Acme):
    """Implements ``quote_gift`` and ``split_revenue``, and answers None to both."""

    @hookimpl
    def quote_gift(self, send):
        return None

    @hookimpl
    def split_revenue(self, quote, rate_card):
        return None


RECEIPT = ("quantity", "unit_price", "coins_paid", "brand_subsidy", "creator_coins",
           "platform_coins", "brand_coins", "creator_diamonds", "rate_card_version")


async def test_quote_and_split_answering_none_mean_list_price_and_the_rate_card_split(
        database_url):
    """A sponsored gift whose plugin answers None to quote_gift and split_revenue is priced
    and split exactly as a core gift of the same price: list price, no subsidy, no brand
    share; the brand's budget and revenue do not move."""
    async with core_with(database_url, ("acme", ListPrice())) as runtime:
        assert {"quote_gift", "split_revenue"} <= set(runtime.plugins.records["acme"].hooks)
        async with runtime.sessions() as session, session.begin():
            await catalogue.create_gift(session, "fifty", GiftFields(
                name="Fifty", coin_price=50, category="classic",
                image_url="https://cdn.example.com/fifty.webp"))
        where, fan = await funded_stage(runtime, budget=1_000)
        sponsored = (await send(runtime, fan, where, "acme-rocket", quantity=3)).receipt
        core = (await send(runtime, fan, where, "fifty", quantity=3)).receipt
        assert [getattr(sponsored, name) for name in RECEIPT] == \
            [getattr(core, name) for name in RECEIPT] == [3, 50, 150, 0, 75, 75, 0, 75, 1]
        async with runtime.sessions() as session:
            assert await budget_balance(session, "acme") == 1_000
            revenue = await session.scalar(select(Account.balance).where(
                Account.code == "brand:acme:revenue"))
        assert revenue == 0
        assert (await balances(runtime, fan))["wallet"] == 10_000 - 300


class Copycat(Acme):
    """Declares a sponsored gift under the core's Rose's sku."""

    brand, sku = "copycat", "rose"


class Rival(Acme):
    """Declares a sponsored gift under Acme's sku, for a brand of its own."""

    brand, sku = "rival", "acme-rocket"


async def _gift_row(runtime, sku: str) -> tuple:
    async with runtime.sessions() as session:
        return tuple((await session.execute(
            select(Gift.name, Gift.coin_price, Gift.brand_id, Gift.plugin)
            .where(Gift.sku == sku))).one())


@pytest.mark.parametrize("seeded_first", [True, False], ids=["seeded", "not seeded yet"])
async def test_a_sponsored_sku_colliding_with_a_core_gift_is_not_taken(database_url,
                                                                      seeded_first):
    """The plugin's gift is refused (its record says why), whether the core catalogue was
    seeded before the plugin's first start or after; the core's Rose stays the core's, and
    sending it asks the plugin nothing."""
    if seeded_first:
        async with core_with(database_url) as runtime:
            async with runtime.sessions() as session, session.begin():
                await seed_default_gifts(session)
    else:  # the plugin starts first on a fresh database; the catalogue is seeded later
        async with core_with(database_url, ("copycat", Copycat())) as runtime:
            assert runtime.plugins.records["copycat"].error == \
                "gift sku 'rose' already belongs to the core catalogue"
            async with runtime.sessions() as session, session.begin():
                await seed_default_gifts(session)
    copycat = counted(Copycat)()
    async with core_with(database_url, ("copycat", copycat)) as runtime:
        record = runtime.plugins.records["copycat"]
        assert record.error == "gift sku 'rose' already belongs to the core catalogue"
        assert await _gift_row(runtime, "rose") == ("Rose", 1, None, None)
        assert runtime.plugins.sponsored == {}
        where, fan = await funded_stage(runtime, budget=1_000)
        receipt = (await send(runtime, fan, where, "rose", quantity=2)).receipt
        assert (receipt.coins_paid, receipt.brand_subsidy, receipt.brand_coins) == (2, 0, 0)
        assert copycat.calls == {}
        async with runtime.sessions() as session:
            assert await budget_balance(session, "copycat") == 1_000


async def test_a_sponsored_sku_another_plugin_declared_refuses_the_later_plugin(
        database_url):
    """Two plugins declaring one sku: the one loaded later is refused whole (status
    ``failed``, naming the other), its brand is not created, and the gift stays the first
    plugin's, priced by its rules."""
    rival = counted(Rival)()
    async with core_with(database_url, ("acme", Acme()), ("rival", rival)) as runtime:
        records = runtime.plugins.records
        assert (records["acme"].status, records["acme"].error) == ("active", None)
        assert (records["rival"].status, records["rival"].error) == (
            "failed", "declaration refused: gift 'acme-rocket' is declared by 'acme' too")
        async with runtime.sessions() as session:
            assert list(await session.scalars(select(Brand.slug))) == ["acme"]
        name, price, brand_id, plugin = await _gift_row(runtime, "acme-rocket")
        assert (name, price, plugin) == ("Acme Rocket", 50, "acme")
        where, fan = await funded_stage(runtime, budget=1_000)
        receipt = (await send(runtime, fan, where, "acme-rocket")).receipt
        assert (receipt.coins_paid, receipt.brand_subsidy) == (25, 25)  # Acme's 50 %
        assert rival.calls == {}


# Safeguards -------------------------------------------------------------------------------

async def test_a_raised_minimum_age_refuses_a_user_below_it_and_admits_one_at_it(
        runtime, monkeypatch):
    """With LIVEGIFTS_MINIMUM_AGE=21, a 20-year-old (21 tomorrow) may neither send gifts nor
    buy coins (AGE_RESTRICTED, nothing moved); someone turning 21 today may do both."""
    monkeypatch.setenv("LIVEGIFTS_MINIMUM_AGE", "21")
    runtime.settings = settings_for(runtime.settings.database_url)
    assert runtime.settings.minimum_age == 21
    where = await stage(runtime)
    async with runtime.sessions() as session, session.begin():
        await seed_default_packages(session)  # for sale before the snapshots
    almost = await new_viewer(runtime, "almost", 100, birthdate=years_ago(21, 1))
    of_age = await new_viewer(runtime, "of-age", 100, birthdate=years_ago(21))
    error = await refused(runtime, ErrorCode.AGE_RESTRICTED, send(runtime, almost, where))
    assert error.message == "Sending gifts needs you to be at least 21."
    error = await refused(runtime, ErrorCode.AGE_RESTRICTED, buy(runtime, almost, "coins-70"))
    assert error.message == "Buying coins needs you to be at least 21."
    assert (await send(runtime, of_age, where)).receipt.coins_paid == 1
    assert (await buy(runtime, of_age, "coins-70")).purchase.coins == 70


async def test_the_platform_monthly_cap_refuses_sends_past_it_and_moves_nothing(runtime):
    """The platform's monthly cap (Settings.default_monthly_cap_coins) bounds a viewer whose
    own monthly cap is looser: a send reaching it exactly goes, the next is refused with
    MONTHLY_CAP_REACHED and moves nothing."""
    runtime.settings = runtime.settings.model_copy(update={"default_monthly_cap_coins": 40})
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 1_000)
    async with runtime.sessions() as session, session.begin():
        await safeguards.change_limit(session, fan, safeguards.MONTHLY, amount=500)
    await send(runtime, fan, where, "doughnut")  # 30
    error = await refused(runtime, ErrorCode.MONTHLY_CAP_REACHED,
                          send(runtime, fan, where, "doughnut"))
    assert error.message == ("This gift costs 30 coins and would pass your monthly limit of 40 "
                             "(spent so far: 30).")
    await send(runtime, fan, where, "rose", quantity=10)  # 40: exactly at the cap
    error = await refused(runtime, ErrorCode.MONTHLY_CAP_REACHED, send(runtime, fan, where))
    assert error.message == ("This gift costs 1 coins and would pass your monthly limit of 40 "
                             "(spent so far: 40).")
    assert (await balances(runtime, fan))["wallet"] == 1_000 - 40


# Over a real server -----------------------------------------------------------------------

def base(server: ServerProcess) -> str:
    return server.url.removesuffix("/graphql")


OTHER_AUDIENCE = mint_token(Settings(jwt_secret=JWT_SECRET, jwt_audience="another-app"),
                            "audience-fan", [Role.VIEWER])
UNKNOWN_ROLE = jwt.encode({"sub": "role-fan", "roles": ["viewer", "superuser"],
                           "aud": "livegifts", "exp": int(time.time()) + 24 * 3600},
                          JWT_SECRET, algorithm="HS256")


@pytest.mark.parametrize("bad_token, message", [
    (OTHER_AUDIENCE, "Invalid bearer token: it was issued for another audience ('aud')."),
    (UNKNOWN_ROLE, "Invalid bearer token: unknown role in 'roles'."),
], ids=["another-audience", "unknown-role"])
@pytest.mark.parametrize("query", ["{ viewer { name } }",
                                   "{ gifts(first: 1) { edges { node { id } } } }"],
                         ids=["private", "public"])
async def test_a_token_for_another_audience_or_with_an_unknown_role_is_unauthenticated(
        server, bad_token, message, query):
    """Refused with 401, ``WWW-Authenticate: Bearer error="invalid_token"`` and the reason in
    the one error body, on public fields too; no user is created."""
    before = await snapshot(server.database_url)
    async with httpx.AsyncClient() as http:
        response = await http.post(server.url, json={"query": query},
                                   headers=bearer(bad_token))
    assert (response.status_code, response.headers["www-authenticate"]) == (
        401, 'Bearer error="invalid_token"')
    assert response.json() == {"errors": [{"message": message,
                                           "extensions": {"code": "UNAUTHENTICATED"}}]}
    assert await snapshot(server.database_url) == before


@pytest.mark.parametrize("params", [
    {"from": "yesterday"},
    {},
    {"from": "2026-11-01", "to": "2026-13-01"},
    {"from": "2026-11-01", "to": ""},
    {"from": "2026-02-30"},
], ids=["words", "no-from", "month-13", "empty-to", "no-such-day"])
async def test_a_malformed_date_on_earnings_csv_is_a_clear_400_and_changes_nothing(
        gql, server, params):
    creator = token(fresh("earner"), "creator")
    await gql("{ viewer { id } }", token=creator)  # the user exists: only the request counts
    before = await snapshot(server.database_url)
    async with httpx.AsyncClient(base_url=base(server)) as http:
        response = await http.get("/earnings.csv", params=params, headers=bearer(creator))
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"errors": [{
        "message": "from and to must be dates like 2026-11-01.",
        "extensions": {"code": "BAD_REQUEST"}}]}
    assert await snapshot(server.database_url) == before


def _errors(reply: dict) -> list[dict]:
    """A refused subscription's errors: an ``error`` message, or a ``next`` with errors."""
    return reply["payload"] if reply["type"] == "error" else reply["payload"]["errors"]


WATCH = """subscription($id: ID!) { liveSessionEvents(sessionId: $id) {
  __typename ... on ViewerCountChanged { viewers } } }"""
OVER_HTTP = ("Over WebSocket only subscriptions are served; send queries and mutations over "
             "HTTP.")


async def test_subscription_errors_carry_their_codes_over_a_real_websocket(server):
    """A subscription to a live session that does not exist: NOT_FOUND; a query or a
    mutation sent over the WebSocket: BAD_REQUEST, and the mutation changes nothing."""
    watcher = token(fresh("ws-watcher"))
    before = await snapshot(server.database_url)
    async with Subscription(server.url, watcher, WATCH,
                            {"id": to_base64("LiveSession", 987_654_321)}) as events:
        missing = _errors(await events.receive())
    assert [(e["message"], e["extensions"]["code"]) for e in missing] == [
        ("No live session has this ID.", "NOT_FOUND")]
    for document in ("{ rateCard { version } }",
                     'mutation { updateProfile(input: {birthdate: "1990-01-01"}) '
                     '{ birthdate } }'):
        async with Subscription(server.url, watcher, document) as operation:
            errors = _errors(await operation.receive())
        assert [(e["message"], e["extensions"]["code"]) for e in errors] == [
            (OVER_HTTP, "BAD_REQUEST")], document
    assert await snapshot(server.database_url) == before


# Rate limits, on a server allowing 3 requests a minute per user -----------------------------

@pytest.fixture(scope="module", params=BACKENDS)
def limited(request, tmp_path_factory):
    url = fresh_database(request.param, request, tmp_path_factory.mktemp("rules-rate"))
    process = ServerProcess(url, LIVEGIFTS_RATE_LIMIT_PER_USER="3")
    process.start()
    yield process
    process.stop()


@pytest.mark.parametrize("path", ["/statements/{month}.csv", "/earnings.csv?from={month}-01"],
                         ids=["statements", "earnings"])
async def test_statements_and_earnings_csv_count_against_the_rate_limit(limited, path):
    """docs/api.md: "The limits apply to /graphql, /statements and /earnings.csv". The
    fourth request of a user in a minute is answered 429 with Retry-After and RATE_LIMITED,
    before it does anything."""
    url = path.format(month=datetime.now(UTC).strftime("%Y-%m"))

    async def attempt(n):
        user = token(fresh(f"csv-reader-{n}"))
        async with httpx.AsyncClient(base_url=base(limited)) as http:
            allowed = [(await http.get(url, headers=bearer(user))).status_code
                       for _ in range(3)]
            before = await snapshot(limited.database_url)
            over = await http.get(url, headers=bearer(user))
            after = await snapshot(limited.database_url)
        return allowed, over, before, after

    allowed, over, before, after = await in_one_window(attempt)
    assert allowed == [200, 200, 200]
    retry = int(over.headers["retry-after"])
    assert over.status_code == 429 and 0 < retry <= WINDOW_SECONDS + 1
    assert over.json() == {"data": None, "errors": [{
        "message": f"Rate limit reached: at most 3 requests a minute per user. Retry in "
                   f"{retry} s.", "extensions": {"code": "RATE_LIMITED"}}]}
    assert after == before


async def test_opening_subscriptions_does_not_count_against_the_rate_limit(limited):
    """docs/api.md: "opening a subscription does not count against them". A user opens five
    subscriptions (each answering its opening viewer count), then still has all 3 requests of
    the minute over HTTP; the fourth is refused."""
    gql = GraphQLClient(limited.url)
    try:
        session_id = await go_live_over_http(gql, token(fresh("rate-star"), "creator"))

        async def attempt(n):
            watcher = token(fresh(f"rate-watcher-{n}"))
            async with AsyncExitStack() as stack:
                openings = []
                for _ in range(5):
                    events = await stack.enter_async_context(
                        Subscription(limited.url, watcher, WATCH, {"id": session_id}))
                    openings.append((await events.next_data())["liveSessionEvents"])
            statuses = [(await gql.http.post(limited.url, json={"query": "{ viewer { name } }"},
                                             headers=bearer(watcher))).status_code
                        for _ in range(4)]
            return openings, statuses

        openings, statuses = await in_one_window(attempt)
        assert [o["__typename"] for o in openings] == ["ViewerCountChanged"] * 5
        assert statuses == [200, 200, 200, 429]
    finally:
        await gql.close()
