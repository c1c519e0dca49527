"""Resumable live events over a real server and a real WebSocket client: a subscriber
resuming from a cursor gets every event after it once and in order, across reconnections and
a server restart; cursors that are not the session's, or expired, are refused clearly."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import pytest

from tests.conftest import fresh_database
from tests.support import GraphQLClient, ServerProcess, Subscription, token
from tests.test_http_gifting import END, SEND, buy_coins, gift_ids, go_live, send_input

RESUMABLE = """subscription($id: ID!, $after: String) {
  liveSessionEvents(sessionId: $id, after: $after) {
  __typename ... on LiveEvent { cursor }
  ... on GiftSent { quantity comboCount } ... on ViewerCountChanged { viewers } } }"""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    url = fresh_database(request.param, request, tmp_path_factory.mktemp("events"))
    process = ServerProcess(url, LIVEGIFTS_COMBO_WINDOW_SECONDS="600",
                            LIVEGIFTS_SEED_DEMO_DATA="true")
    process.start()
    yield process
    process.stop()


def _errors(reply: dict) -> list[dict]:
    """A refused subscription's errors: an ``error`` message, or a ``next`` with errors."""
    return reply["payload"] if reply["type"] == "error" else reply["payload"]["errors"]


async def _received(subscription: Subscription, count: int) -> list[dict]:
    return [(await subscription.next_data())["liveSessionEvents"] for _ in range(count)]


async def test_a_subscriber_resuming_from_a_cursor_gets_every_later_event_once_in_order(server):
    gql = GraphQLClient(server.url)
    gifts = await gift_ids(gql)
    creator, fan, watcher = token("resume-star", "creator"), token("resume-fan"), token("w")
    session_id = await go_live(gql, creator)
    await buy_coins(gql, fan)
    variables = {"id": session_id}
    async with Subscription(server.url, watcher, RESUMABLE, variables) as events:
        opening = (await events.next_data())["liveSessionEvents"]
        assert opening["__typename"] == "ViewerCountChanged"
        await gql(SEND, send_input(session_id, gifts["rose"], 1), token=fan)
        first = await _received(events, 2)  # GiftSent, TopGiftersChanged
    assert [e["__typename"] for e in first] == ["GiftSent", "TopGiftersChanged"]
    for quantity in (2, 3):  # while nobody listens
        await gql(SEND, send_input(session_id, gifts["rose"], quantity), token=fan)
    async with Subscription(server.url, watcher, RESUMABLE,
                            {**variables, "after": first[-1]["cursor"]}) as events:
        missed = await _received(events, 4)  # each gift, and the podium after it
        assert [e.get("comboCount") for e in missed] == [3, None, 6, None]
        await gql(SEND, send_input(session_id, gifts["rose"], 4), token=fan)
        live = await _received(events, 2)
        assert live[0]["comboCount"] == 10
    async with Subscription(server.url, watcher, RESUMABLE,
                            {**variables, "after": opening["cursor"]}) as events:
        everything = await _received(events, 8)
    assert everything == [*first, *missed, *live]  # the same events, the same cursors
    assert len({e["cursor"] for e in everything}) == 8
    await gql(END, {"id": session_id}, token=creator)
    async with Subscription(server.url, watcher, RESUMABLE,
                            {**variables, "after": live[-1]["cursor"]}) as events:
        tail = await _received(events, 2)
        assert [e["__typename"] for e in tail] == ["ComboEnded", "SessionEnded"]
        assert (await events.receive())["type"] == "complete"
    await gql.close()


@pytest.mark.parametrize("after, code, message", [
    ("bm9wZQ==", "BAD_USER_INPUT", "after is not a cursor of this session's events."),
    ("TGl2ZUV2ZW50Ojk5OTk5OTox", "BAD_USER_INPUT",
     "after is not a cursor of this session's events."),  # another session's
])
async def test_a_cursor_that_is_not_this_sessions_is_refused(server, after, code, message):
    gql = GraphQLClient(server.url)
    session_id = await go_live(gql, token(f"cursor-star-{code}-{len(after)}", "creator"))
    async with Subscription(server.url, token("w"), RESUMABLE,
                            {"id": session_id, "after": after}) as events:
        reply = await events.receive()
    errors = _errors(reply)
    assert errors[0]["message"] == message and errors[0]["extensions"]["code"] == code
    await gql.close()


async def test_an_expired_cursor_is_refused_with_the_oldest_one_kept(tmp_path, request,
                                                                   sqlite_template):
    """After 'livegifts events prune', a cursor into what was pruned gets CURSOR_EXPIRED and
    the oldest cursor kept, which resumes."""
    url = fresh_database("sqlite", request, tmp_path)
    server = ServerProcess(url, LIVEGIFTS_SEED_DEMO_DATA="true",
                           LIVEGIFTS_COMBO_WINDOW_SECONDS="600")
    server.start()
    gql = GraphQLClient(server.url)
    try:
        gifts = await gift_ids(gql)
        session_id = await go_live(gql, token("expiry-star", "creator"))
        fan = token("expiry-fan")
        await buy_coins(gql, fan)
        async with Subscription(server.url, fan, RESUMABLE, {"id": session_id}) as events:
            opening = (await events.next_data())["liveSessionEvents"]
            await gql(SEND, send_input(session_id, gifts["rose"]), token=fan)
            await _received(events, 2)
        server.stop()  # its relay notes what it published as it stops
        pruned = await asyncio.create_subprocess_exec(
            *_livegifts("events", "prune", "--older-than-days", "0"),
            env={**os.environ, "DATABASE_URL": url}, stdout=asyncio.subprocess.PIPE)
        output, _ = await pruned.communicate()
        assert pruned.returncode == 0
        assert int(re.search(rb"pruned (\d+) events", output)[1]) >= 3
        server.start()
        await gql(SEND, send_input(session_id, gifts["rose"]), token=fan)
        async with Subscription(server.url, fan, RESUMABLE,
                                {"id": session_id, "after": opening["cursor"]}) as events:
            reply = await events.receive()
        errors = _errors(reply)
        assert errors[0]["extensions"]["code"] == "CURSOR_EXPIRED"
        assert errors[0]["message"].startswith("This cursor has expired")
        oldest = errors[0]["extensions"]["oldestCursor"]
        async with Subscription(server.url, fan, RESUMABLE,
                                {"id": session_id, "after": oldest}) as events:
            resumed = await _received(events, 1)
        assert resumed[0]["__typename"] == "GiftSent" and resumed[0]["comboCount"] == 2
    finally:
        await gql.close()
        server.stop()


def _livegifts(*args: str) -> list[str]:
    return [sys.executable, "-m", "app", *args]


async def test_a_subscriber_resuming_after_a_server_restart_misses_nothing(tmp_path, request,
                                                                           sqlite_template):
    url = fresh_database("sqlite", request, tmp_path)
    server = ServerProcess(url, LIVEGIFTS_SEED_DEMO_DATA="true",
                           LIVEGIFTS_COMBO_WINDOW_SECONDS="600")
    server.start()
    gql = GraphQLClient(server.url)
    try:
        gifts = await gift_ids(gql)
        session_id = await go_live(gql, token("restart-star", "creator"))
        fan = token("restart-fan")
        await buy_coins(gql, fan)
        async with Subscription(server.url, fan, RESUMABLE, {"id": session_id}) as events:
            await events.next_data()
            await gql(SEND, send_input(session_id, gifts["rose"]), token=fan)
            seen = await _received(events, 2)
            server.stop()
        server.start()
        await gql(SEND, send_input(session_id, gifts["rose"], 2), token=fan)
        async with Subscription(server.url, fan, RESUMABLE,
                                {"id": session_id, "after": seen[-1]["cursor"]}) as events:
            after_restart = await _received(events, 1)
        assert after_restart[0]["comboCount"] == 3
    finally:
        await gql.close()
        server.stop()


