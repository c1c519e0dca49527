"""Webhooks against real components: a receiver process that fails at random and is killed
and restarted, real server processes (one killed), PostgreSQL and SQLite. Every event a
subscription may see reaches it, signed, in order, repeated only under its own message id;
refusals are explained and create nothing; retries back off on a moved clock until the
subscription is disabled, and enabling it delivers what waited."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from app.models import WebhookDelivery, WebhookSubscription
from app.services import webhooks
from app.services.webhooks import Owner, Policy, Targets
from tests.conftest import fresh_database
from tests.gifting_support import new_viewer, send, stage
from tests.support import GraphQLClient, ServerProcess, _free_port, token
from tests.test_http_gifting import END, SEND, buy_coins, gift_ids, go_live, send_input

RECEIVER = Path(__file__).with_name("webhook_receiver.py")
CREATE = """mutation($input: CreateWebhookSubscriptionInput!) {
  createWebhookSubscription(input: $input) {
    webhookSubscription { id url eventTypes status } secret
    userErrors { code field message } } }"""
SUBSCRIPTIONS = """{ webhookSubscriptions { id status failuresInARow
  deliveries(first: 100) { edges { node { id eventType sequence status attempts lastStatus
                                          lastError } } } } }"""


class Receiver:
    """tests/webhook_receiver.py in its own process, on one port across restarts."""

    def __init__(self, directory: Path, fail_rate: float = 0.0, seed: str = "7") -> None:
        self.port = _free_port()
        self.log = directory / f"received-{self.port}.jsonl"
        self.fail_rate, self.seed = fail_rate, seed
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        self.process = subprocess.Popen([sys.executable, str(RECEIVER), str(self.port),
                                         str(self.log), str(self.fail_rate), self.seed])
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def requests(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def accepted(self) -> list[dict]:
        """The event messages answered 200, in the order they were answered."""
        return [json.loads(r["body"]) | {"_headers": r["headers"]} for r in self.requests()
                if r["status"] == 200 and json.loads(r["body"]).get("type") !=
                "webhook.challenge"]

    async def until(self, done, timeout: float = 120) -> list[dict]:
        """Wait for the accepted messages to satisfy ``done``; they."""
        deadline = time.monotonic() + timeout
        while not done(accepted := self.accepted()):
            assert time.monotonic() < deadline, f"not delivered in time: {accepted}"
            await asyncio.sleep(0.2)
        return accepted


def signed_by(secret: str, request: dict) -> bool:
    """Checks a received request's signature as docs/api.md tells receivers to."""
    headers = {k.lower(): v for k, v in request["_headers"].items()}
    parts = dict(part.split("=", 1) for part in headers["livegifts-signature"].split(","))
    body = json.dumps({k: v for k, v in request.items() if k != "_headers"},
                      separators=(",", ":"))
    expected = hmac.new(secret.encode(), f"{parts['t']}.{body}".encode(), hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), parts["v1"])


def in_order_once_each(accepted: list[dict]) -> list[int]:
    """The sequences of the messages in the order first accepted; asserts a repeated
    message is the same message, and that no event overtook an earlier one of its stream."""
    first: dict[str, dict] = {}
    for message in accepted:
        kept = first.setdefault(message["id"], message)
        assert {k: v for k, v in kept.items() if k != "_headers"} == \
            {k: v for k, v in message.items() if k != "_headers"}
    sequences = [message["sequence"] for message in first.values()]
    assert sequences == sorted(sequences), sequences
    return sequences


@pytest.fixture
def receiver(tmp_path):
    started = Receiver(tmp_path).start()
    yield started
    started.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def hook_server(request, tmp_path_factory):
    url = fresh_database(request.param, request, tmp_path_factory.mktemp("webhooks"))
    process = ServerProcess(url, LIVEGIFTS_SEED_DEMO_DATA="true",
                            LIVEGIFTS_COMBO_WINDOW_SECONDS="600",
                            LIVEGIFTS_WEBHOOK_RETRY_BASE_SECONDS="0.1")
    process.start()
    yield process
    process.stop()


async def test_a_creator_gets_every_event_signed_in_order_through_a_failing_receiver(
        hook_server, tmp_path):
    receiver = Receiver(tmp_path, fail_rate=0.3).start()
    gql = GraphQLClient(hook_server.url)
    try:
        gifts = await gift_ids(gql)
        creator, fan = token("hook-star", "creator"), token("hook-fan")
        session_id = await go_live(gql, creator)
        await buy_coins(gql, fan)
        made = (await gql(CREATE, {"input": {"url": receiver.url, "eventTypes": [
            "GiftSent", "SessionEnded"]}}, token=creator))["data"]["createWebhookSubscription"]
        assert made["userErrors"] == [] and made["webhookSubscription"]["status"] == "ACTIVE"
        secret = made["secret"]
        for n in range(12):
            if n == 6:
                receiver.stop()  # away for a while: deliveries wait and are retried
            if n == 9:
                receiver.start()
            sent = await gql(SEND, send_input(session_id, gifts["rose"]), token=fan)
            assert sent["data"]["sendGift"]["userErrors"] == []
        await gql(END, {"id": session_id}, token=creator)
        accepted = await receiver.until(
            lambda got: any(m["type"] == "SessionEnded" for m in got))
        sequences = in_order_once_each(accepted)
        kinds = {m["id"]: m["type"] for m in accepted}
        assert sorted(kinds.values()).count("GiftSent") == 12
        assert [m["data"]["combo_count"] for m in accepted if m["type"] == "GiftSent"
                and m is next(a for a in accepted if a["id"] == m["id"])] == \
            list(range(1, 13))
        assert len(sequences) == 13 and all(signed_by(secret, m) for m in accepted)
        assert not any(signed_by("whsec_another", m) for m in accepted)
        [listed] = (await gql(SUBSCRIPTIONS, token=creator))["data"]["webhookSubscriptions"]
        deliveries = [e["node"] for e in listed["deliveries"]["edges"]]
        assert {d["status"] for d in deliveries} == {"delivered"} and len(deliveries) == 13
        assert any(d["attempts"] > 1 for d in deliveries)  # retried through the failures
    finally:
        await gql.close()
        receiver.stop()


@pytest.mark.parametrize("input, role, code, message", [
    ({"url": "ftp://example.com/hook", "eventTypes": ["GiftSent"]}, "creator", "INVALID_INPUT",
     "url must be an https:// URL (or http:// in development) of at most 2000 characters."),
    ({"url": "RECEIVER", "eventTypes": ["BrandGiftSent"]}, "creator", "INVALID_INPUT",
     "eventTypes must name one or more of SessionStarted, GiftSent, ComboEnded, "
     "ViewerCountChanged, TopGiftersChanged, GoalProgress, GoalReached, MatchInvited, "
     "MatchDeclined, MatchStarted, MatchScore, MatchEnded, SessionEnded, "
     "PayoutSettled; not BrandGiftSent."),
    ({"url": "RECEIVER", "eventTypes": []}, "creator", "INVALID_INPUT",
     "eventTypes must name one or more of SessionStarted, GiftSent, ComboEnded, "
     "ViewerCountChanged, TopGiftersChanged, GoalProgress, GoalReached, MatchInvited, "
     "MatchDeclined, MatchStarted, MatchScore, MatchEnded, SessionEnded, "
     "PayoutSettled."),
    ({"url": "WRONG", "eventTypes": ["GiftSent"]}, "creator", "WEBHOOK_NOT_VERIFIED",
     "The URL was not subscribed: its answer did not echo the challenge. It must answer the "
     "challenge request with 2xx and the challenge (see the webhooks section of the API "
     "guide)."),
    ({"url": "UNREACHABLE", "eventTypes": ["GiftSent"]}, "creator", "WEBHOOK_NOT_VERIFIED",
     "The URL was not subscribed: it could not be reached (ConnectError). It must answer the "
     "challenge request with 2xx and the challenge (see the webhooks section of the API "
     "guide)."),
], ids=["not https", "another role's event", "no event types", "no echo", "unreachable"])
async def test_a_refused_subscription_says_why_and_creates_nothing(
        hook_server, receiver, input, role, code, message):
    gql = GraphQLClient(hook_server.url)
    url = {"RECEIVER": receiver.url, "WRONG": receiver.url.replace("/hook", "/wrong"),
           "UNREACHABLE": f"http://127.0.0.1:{_free_port()}/hook"}.get(input["url"],
                                                                      input["url"])
    who = token(f"refused-{code}-{len(message)}", role)
    body = await gql(CREATE, {"input": {**input, "url": url}}, token=who)
    made = body["data"]["createWebhookSubscription"]
    assert made["webhookSubscription"] is None and made["secret"] is None
    assert [(e["code"], e["message"]) for e in made["userErrors"]] == [(code, message)]
    assert (await gql(SUBSCRIPTIONS, token=who))["data"]["webhookSubscriptions"] == []
    await gql.close()


async def test_only_creators_brands_and_admins_subscribe_and_each_sees_only_their_own(
        hook_server, receiver):
    gql = GraphQLClient(hook_server.url)
    viewer = await gql(CREATE, {"input": {"url": receiver.url, "eventTypes": ["GiftSent"]}},
                       token=token("just-a-viewer"), expect_errors=True)
    assert viewer["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    mine, theirs = token("owner-star", "creator"), token("other-star", "creator")
    made = (await gql(CREATE, {"input": {"url": receiver.url, "eventTypes": ["GiftSent"]}},
                      token=mine))["data"]["createWebhookSubscription"]
    subscription_id = made["webhookSubscription"]["id"]
    assert (await gql(SUBSCRIPTIONS, token=theirs))["data"]["webhookSubscriptions"] == []
    delete = """mutation($id: ID!) { deleteWebhookSubscription(input: {id: $id}) {
      deletedId userErrors { code message } } }"""
    refused = (await gql(delete, {"id": subscription_id}, token=theirs))["data"]
    assert refused["deleteWebhookSubscription"]["userErrors"] == [
        {"code": "NOT_FOUND", "message": "No webhook subscription of yours has this ID."}]
    assert len((await gql(SUBSCRIPTIONS, token=mine))["data"]["webhookSubscriptions"]) == 1
    brand = token("partner", "brand", brand="sparkle-cola")
    made = (await gql(CREATE, {"input": {"url": receiver.url, "eventTypes": [
        "BrandGiftSent"]}}, token=brand))["data"]["createWebhookSubscription"]
    assert made["userErrors"] == []
    everyone = (await gql(SUBSCRIPTIONS, token=token("hook-admin", "admin")))["data"]
    assert len(everyone["webhookSubscriptions"]) >= 2
    deleted = (await gql(delete, {"id": subscription_id}, token=mine))["data"]
    assert deleted["deleteWebhookSubscription"] == {"deletedId": subscription_id,
                                                    "userErrors": []}
    assert (await gql(SUBSCRIPTIONS, token=mine))["data"]["webhookSubscriptions"] == []
    await gql.close()


async def test_failures_back_off_then_disable_and_enabling_delivers_what_waited(
        runtime, tmp_path):
    """On a moved clock: each failure doubles the wait; failing for the give-up time
    disables the subscription with the reason; enabled again, it delivers in order."""
    down = Receiver(tmp_path, fail_rate=1.0).start()
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 10)
    async with runtime.sessions() as session:
        creator_id = where.creator_id
    owner = Owner("creator", user_id=creator_id)
    subscription, _ = await webhooks.subscribe(runtime.sessions, runtime.http, owner,
                                               url=down.url, event_types=["GiftSent"],
                                               development=True)
    for _ in range(2):
        await send(runtime, fan, where, "rose")
    await runtime.relay.note()  # queues the deliveries
    policy = Policy(timedelta(seconds=10), timedelta(hours=24))
    clock = [webhooks.utcnow()]
    waits = []
    for _ in range(14):
        assert await webhooks.deliver_due(runtime.sessions, Targets(runtime.http), policy,
                                          lambda: clock[0]) == 1  # the first, again
        async with runtime.sessions() as session:
            row = await session.get(WebhookSubscription, subscription.id)
        if row.status == webhooks.DISABLED:
            break
        waits.append(row.next_attempt_at - clock[0])
        assert await webhooks.deliver_due(runtime.sessions, Targets(runtime.http), policy,
                                          lambda: clock[0]) == 0  # not due yet
        clock[0] = row.next_attempt_at
        if len(waits) == 11:
            clock[0] += timedelta(hours=24)  # a day on, still failing
    assert waits[:5] == [timedelta(seconds=s) for s in (10, 20, 40, 80, 160)]
    assert max(waits) == timedelta(hours=1)
    assert row.status == "disabled" and row.disabled_reason.startswith(
        "Deliveries failed for 1 day, 0:00:00 since")
    assert "the last: HTTP 500" in row.disabled_reason
    down.stop()
    up = Receiver(tmp_path).start()
    try:
        async with runtime.sessions() as session, session.begin():
            (await session.get(WebhookSubscription, subscription.id)).url = up.url
            await webhooks.enable(session, owner, subscription.id)
        assert await webhooks.deliver_due(runtime.sessions, Targets(runtime.http), policy) == 2
        assert [m["data"]["combo_count"] for m in up.accepted()] == [1, 2]
        async with runtime.sessions() as session:
            statuses = (await session.scalars(select(WebhookDelivery.status))).all()
        assert statuses == ["delivered", "delivered"]
    finally:
        up.stop()


async def test_two_servers_share_the_deliveries_and_a_killed_one_loses_none(
        postgres_database_url, tmp_path):
    """Two servers on one PostgreSQL deliver together, claiming subscriptions: every event
    reaches the receiver once and in order, though one server is killed (SIGKILL) midway."""
    receiver = Receiver(tmp_path).start()
    common = {"LIVEGIFTS_SEED_DEMO_DATA": "true", "LIVEGIFTS_COMBO_WINDOW_SECONDS": "600",
              "LIVEGIFTS_EVENT_RELAY_GRACE_SECONDS": "1"}
    a = ServerProcess(postgres_database_url, **common)
    b = ServerProcess(postgres_database_url, **common)
    a.start()
    b.start()
    gql_a, gql_b = GraphQLClient(a.url), GraphQLClient(b.url)
    try:
        gifts = await gift_ids(gql_a)
        creators = [token(f"shared-star-{n}", "creator") for n in range(3)]
        fan = token("shared-fan")
        await buy_coins(gql_a, fan, "coins-700")
        sessions = [await go_live(gql_a, creator) for creator in creators]
        for creator in creators:
            made = await gql_a(CREATE, {"input": {"url": receiver.url,
                                                  "eventTypes": ["GiftSent"]}}, token=creator)
            assert made["data"]["createWebhookSubscription"]["userErrors"] == []
        for n in range(30):
            gql = gql_a if n % 2 else gql_b
            if n == 15:
                os.kill(a.process.pid, signal.SIGKILL)
                a.process.wait()
            if n >= 15:
                gql = gql_b
            await gql(SEND, send_input(sessions[n % 3], gifts["rose"]), token=fan)
        accepted = await receiver.until(lambda got: len({m["id"] for m in got}) >= 30)
        by_stream: dict[str, list[dict]] = {}
        for message in accepted:
            by_stream.setdefault(message["stream"], []).append(message)
        assert len(by_stream) == 3
        for messages in by_stream.values():
            in_order_once_each(messages)
            assert len({m["id"] for m in messages}) == 10
        repeated = len(accepted) - len({m["id"] for m in accepted})
        assert repeated <= 1  # only a delivery the killed server sent and did not record
    finally:
        await gql_a.close()
        await gql_b.close()
        a.stop()
        b.stop()
        receiver.stop()


def _snippet(language: str) -> str:
    """The signature check docs/api.md gives receivers in ``language``."""
    guide = (Path(__file__).parents[1] / "docs" / "api.md").read_text()
    section = guide[guide.index("## Webhooks"):guide.index("## Persisted queries")]
    return section.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_the_python_signature_check_in_the_api_guide_accepts_ours_and_only_ours():
    namespace: dict = {}
    exec(_snippet("python"), namespace)  # noqa: S102 - the guide's own code
    verify, body, now = namespace["verify"], b'{"id":"1","type":"GiftSent"}', int(time.time())
    assert verify("whsec_a", webhooks.sign("whsec_a", now, body), body)
    assert not verify("whsec_b", webhooks.sign("whsec_a", now, body), body)
    assert not verify("whsec_a", webhooks.sign("whsec_a", now, body), body + b" ")
    assert not verify("whsec_a", webhooks.sign("whsec_a", now - 3600, body), body)


def test_the_node_signature_check_in_the_api_guide_accepts_ours_and_only_ours():
    node = shutil.which("node")
    if node is None:
        message = "node is not installed; the API guide's Node snippet needs it"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    body, now = '{"id":"1","type":"GiftSent"}', int(time.time())
    cases = [("whsec_a", webhooks.sign("whsec_a", now, body.encode()), body, True),
             ("whsec_b", webhooks.sign("whsec_a", now, body.encode()), body, False),
             ("whsec_a", webhooks.sign("whsec_a", now, body.encode()), body + " ", False),
             ("whsec_a", webhooks.sign("whsec_a", now - 3600, body.encode()), body, False)]
    script = _snippet("js") + "\nconst cases = " + json.dumps(cases) + ";\n" + \
        "console.log(JSON.stringify(cases.map(([s, h, b]) => verify(s, h, Buffer.from(b)))));"
    ran = subprocess.run([node, "-e", script], capture_output=True, text=True, check=True)
    assert json.loads(ran.stdout) == [case[3] for case in cases]


@pytest.mark.parametrize("url, development, refused", [
    ("https://example.com/hook", False, None),
    ("http://example.com/hook", True, None),
    ("http://example.com/hook", False, "url must be an https:// URL of at most 2000 characters."),
    ("https://127.0.0.1/hook", False, "url must not name this machine or a private network."),
    ("https://10.1.2.3/hook", False, "url must not name this machine or a private network."),
    ("https://169.254.169.254/latest", False,
     "url must not name this machine or a private network."),
    ("https://localhost:8443/hook", False, "url must not name this machine or a private network."),
    ("https://[::1]/hook", False, "url must not name this machine or a private network."),
    ("https://127.0.0.1/hook", True, None),
])
def test_outside_development_a_webhook_url_is_https_and_not_internal(url, development,
                                                                     refused):
    if refused is None:
        webhooks.check_url(url, development)
        return
    with pytest.raises(webhooks.DomainError) as error:
        webhooks.check_url(url, development)
    assert (error.value.message, error.value.field) == (refused, "url")


async def test_a_plugin_is_told_of_every_send_after_its_server_is_killed_and_restarted(
        tmp_path, request, sqlite_template):
    """The first server's plugin hangs in gift_sent (each call times out); the server is
    killed (SIGKILL) with its sends untold. Restarted, with the plugin answering, every send
    is told, in order, each always under one delivery id."""
    url = fresh_database("sqlite", request, tmp_path)
    told = tmp_path / "told.jsonl"
    name = "tests.sample_plugins.tally:plugin"

    def server(hang: bool) -> ServerProcess:
        return ServerProcess(url, LIVEGIFTS_SEED_DEMO_DATA="true", LIVEGIFTS_PLUGINS="none",
                             LIVEGIFTS_PLUGIN_MODULES=name,
                             LIVEGIFTS_PLUGIN_CONFIG=json.dumps(
                                 {name: {"log": str(told), "hang": hang}}),
                             LIVEGIFTS_WEBHOOK_RETRY_BASE_SECONDS="0.5")

    first = server(hang=True)
    first.start()
    gql = GraphQLClient(first.url)
    try:
        gifts = await gift_ids(gql)
        session_id = await go_live(gql, token("tally-star", "creator"))
        fan = token("tally-fan")
        await buy_coins(gql, fan)
        receipts = []
        for _ in range(5):
            sent = await gql(SEND, send_input(session_id, gifts["tally-token"]), token=fan)
            assert sent["data"]["sendGift"]["userErrors"] == []
            receipts.append(int(to_node_id(sent["data"]["sendGift"]["receipt"]["id"])))
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait()
        assert not told.exists()  # nothing was told before the kill
        second = server(hang=False)
        second.start()
        try:
            deadline = time.monotonic() + 120
            while len({r["receipt_id"] for r in _lines(told)}) < 5:
                assert time.monotonic() < deadline, _lines(told)
                await asyncio.sleep(0.2)
        finally:
            second.stop()
        lines = _lines(told)
        first_told = list(dict.fromkeys(line["receipt_id"] for line in lines))
        assert first_told == receipts  # every send, in order
        ids = {}
        for line in lines:
            assert ids.setdefault(line["receipt_id"], line["delivery_id"]) == line["delivery_id"]
    finally:
        await gql.close()
        first.stop()


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def to_node_id(global_id: str) -> str:
    from strawberry.relay import from_base64

    return from_base64(global_id)[1]


async def test_pruning_removes_delivered_deliveries_and_keeps_pending_ones(runtime, receiver):
    from app.services import event_log

    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 10)
    owner = Owner("creator", user_id=where.creator_id)
    subscription, _ = await webhooks.subscribe(runtime.sessions, runtime.http, owner,
                                               url=receiver.url, event_types=["GiftSent"],
                                               development=True)
    await send(runtime, fan, where, "rose")
    assert await runtime.deliver_events() == 1
    receiver.stop()
    await send(runtime, fan, where, "rose")
    await runtime.deliver_events()  # fails: stays pending
    await event_log.prune_all(runtime.sessions, timedelta(0))
    async with runtime.sessions() as session:
        left = (await session.execute(select(WebhookDelivery.status, WebhookDelivery.seq)
                                      .where(WebhookDelivery.subscription_id ==
                                             subscription.id))).all()
    assert [status for status, _ in left] == ["pending"]


async def test_an_event_its_process_never_published_is_queued_before_the_next_one(
        runtime, receiver, monkeypatch):
    """A gift whose events its process never published (the bus was down) is not queued
    for webhooks by itself; relaying the next gift of its stream queues both, in order. A
    last one with none after it is queued by the sweep once the grace is over."""
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 10)
    owner = Owner("creator", user_id=where.creator_id)
    await webhooks.subscribe(runtime.sessions, runtime.http, owner, url=receiver.url,
                             event_types=["GiftSent"], development=True)

    async def unreachable(events):
        raise ConnectionError("Redis is unreachable")

    with monkeypatch.context() as bus_down:
        bus_down.setattr(runtime.bus, "publish_all", unreachable)
        await send(runtime, fan, where, "rose")  # committed, not published
        assert await runtime.deliver_events() == 0
        assert await runtime.relay.sweep() == 0  # within the grace: its process may yet
    await send(runtime, fan, where, "rose")
    assert await runtime.deliver_events() == 2
    assert [m["data"]["combo_count"] for m in receiver.accepted()] == [1, 2]

    with monkeypatch.context() as bus_down:
        bus_down.setattr(runtime.bus, "publish_all", unreachable)
        await send(runtime, fan, where, "rose")  # the last: nothing after it
    assert await runtime.deliver_events() == 0
    runtime.relay.grace = timedelta(0)
    assert await runtime.relay.sweep() >= 1
    assert await runtime.deliver_events() == 1
    assert [m["data"]["combo_count"] for m in receiver.accepted()] == [1, 2, 3]


REDELIVER = """mutation($id: ID!) { redeliverWebhook(input: {deliveryId: $id}) {
  delivery { id status } userErrors { code field message } } }"""


async def test_a_delivery_sent_again_keeps_its_message_id_and_only_its_owner_may(
        hook_server, receiver):
    gql = GraphQLClient(hook_server.url)
    gifts = await gift_ids(gql)
    creator, fan = token("again-star", "creator"), token("again-fan")
    session_id = await go_live(gql, creator)
    await buy_coins(gql, fan)
    made = await gql(CREATE, {"input": {"url": receiver.url, "eventTypes": ["GiftSent"]}},
                     token=creator)
    assert made["data"]["createWebhookSubscription"]["userErrors"] == []
    await gql(SEND, send_input(session_id, gifts["rose"]), token=fan)
    [first] = await receiver.until(lambda got: len(got) == 1)
    [listed] = (await gql(SUBSCRIPTIONS, token=creator))["data"]["webhookSubscriptions"]
    [delivery] = [e["node"] for e in listed["deliveries"]["edges"]]
    assert delivery["id"] == first["id"] and delivery["status"] == "delivered"
    refused = (await gql(REDELIVER, {"id": delivery["id"]},
                         token=token("someone-else", "creator")))["data"]["redeliverWebhook"]
    assert refused == {"delivery": None, "userErrors": [{
        "code": "NOT_FOUND", "field": "deliveryId",
        "message": "No webhook delivery of yours has this ID."}]}
    again = (await gql(REDELIVER, {"id": delivery["id"]}, token=creator))["data"]
    assert again["redeliverWebhook"]["delivery"]["status"] == "pending"
    first_again, second = await receiver.until(lambda got: len(got) == 2)
    assert second["id"] == first["id"] and second["data"] == first["data"]
    await gql.close()
