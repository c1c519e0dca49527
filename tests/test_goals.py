"""Live goals, on SQLite and PostgreSQL: gifts count toward a session's goals in their own
transaction, one GoalReached per goal however many writers race, goals never change what a
gift costs or pays, and every refusal says why and sets nothing."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import func, select
from strawberry.relay import from_base64

from app.errors import DomainError, ErrorCode
from app.models import Event, GiftSend, LiveGoal
from app.services import gifting, goals
from app.testing import audit
from tests.gifting_support import Recorder, new_viewer, send, stage
from tests.sample_plugins.acme import Acme
from tests.support import (
    GraphQLClient,
    ServerProcess,
    Subscription,
    settings_for,
    snapshot,
    token,
    two_servers,
)
from tests.test_http_gifting import SEND, buy_coins, gift_ids, go_live, send_input
from tests.test_plugins import core_with, funded_stage


async def set_goal(runtime, where, title="Goal", kind=goals.COINS, target=100, gift_id=None,
                   creator_id=None):
    return await goals.set_goal(runtime.sessions, runtime.relay,
                                creator_id=creator_id or where.creator_id,
                                session_id=where.session_id, title=title, kind=kind,
                                target=target, gift_id=gift_id)


async def test_gifts_move_goals_and_each_goal_is_reached_once(runtime):
    """A 100-coin goal and a 3-Rose goal: Doughnuts (30 coins) count toward the first,
    Roses toward both; each goal gets one GoalReached, by the send that reached it, and
    keeps counting after."""
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 1_000)
    recorder = Recorder(runtime, where.session_id)
    coins = await set_goal(runtime, where, "Dance party", target=100)
    roses = await set_goal(runtime, where, "Three roses", goals.GIFT_COUNT, 3,
                           where.gifts["rose"])
    assert [(e["goal_id"], e["progress"]) for e in recorder.of("GoalProgress")] == [
        (coins.id, 0), (roses.id, 0)]
    for sku, quantity in [("doughnut", 1), ("doughnut", 2), ("rose", 2), ("doughnut", 1),
                          ("rose", 1), ("rose", 5)]:
        await send(runtime, fan, where, sku, quantity=quantity)
    progress = [(e["goal_id"], e["progress"]) for e in recorder.of("GoalProgress")[2:]]
    assert progress == [(coins.id, 30), (coins.id, 90), (coins.id, 92), (roses.id, 2),
                        (coins.id, 122), (coins.id, 123), (roses.id, 3), (coins.id, 128),
                        (roses.id, 8)]
    reached = [(e["goal_id"], e["progress"], e["title"]) for e in recorder.of("GoalReached")]
    assert reached == [(coins.id, 122, "Dance party"), (roses.id, 3, "Three roses")]
    async with runtime.sessions() as session:
        stored = await goals.goals_of(session, where.session_id)
        assert [(g.progress, g.reached_at is not None) for g in stored] == [(128, True),
                                                                             (8, True)]
        assert await audit(session) == []


async def test_goals_never_change_what_a_gift_costs_or_pays(database_url):
    """The same gifts into a session with goals and one without: identical receipts and
    wallets. A sponsored gift counts at its full value (what the viewer paid plus the
    brand's subsidy)."""
    async with core_with(database_url, ("acme", Acme())) as runtime:
        with_goals, fan = await funded_stage(runtime)
        without = await go_live_again(runtime)
        goal = await set_goal(runtime, with_goals, target=1_000)
        receipts = []
        for where in (with_goals, without):
            receipts.append([(r.coins_paid, r.brand_subsidy, r.creator_coins, r.platform_coins,
                              r.brand_coins, r.creator_diamonds) for r in [
                (await send(runtime, fan, where, sku)).receipt
                for sku in ("rose", "acme-rocket", "doughnut")]])
        assert receipts[0] == receipts[1]
        async with runtime.sessions() as session:
            assert (await session.get(LiveGoal, goal.id)).progress == 1 + 50 + 30


async def go_live_again(runtime):
    from app.testing import go_live as start

    return await start(runtime, "second-creator")


@pytest.mark.parametrize("change, code, field, message", [
    (dict(target=0), ErrorCode.GOAL_TARGET_OUT_OF_RANGE, "target",
     "target must be between 1 and 1,000,000,000."),
    (dict(target=1_000_000_001), ErrorCode.GOAL_TARGET_OUT_OF_RANGE, "target",
     "target must be between 1 and 1,000,000,000."),
    (dict(title="  "), ErrorCode.INVALID_INPUT, "title",
     "title must be 1 to 80 printable characters."),
    (dict(title="x" * 81), ErrorCode.INVALID_INPUT, "title",
     "title must be 1 to 80 printable characters."),
    (dict(kind=goals.GIFT_COUNT), ErrorCode.INVALID_INPUT, "giftId",
     "giftId is needed for a GIFT_COUNT goal, and only for one."),
    (dict(gift_id="rose"), ErrorCode.INVALID_INPUT, "giftId",
     "giftId is needed for a GIFT_COUNT goal, and only for one."),
    (dict(kind=goals.GIFT_COUNT, gift_id=10**9), ErrorCode.NOT_FOUND, "giftId",
     "No gift has this ID."),
    (dict(creator_id="other"), ErrorCode.NOT_SESSION_CREATOR, "sessionId",
     "Only the creator of a session can set its goals."),
    (dict(session_id=10**9), ErrorCode.NOT_FOUND, "sessionId", "No live session has this ID."),
    (dict(ended=True), ErrorCode.SESSION_NOT_LIVE, "sessionId", "This session has ended."),
    (dict(sixth=True), ErrorCode.TOO_MANY_GOALS, "sessionId", "A session has at most 5 goals."),
])
async def test_a_refused_goal_says_why_and_sets_nothing(runtime, change, code, field, message):
    change = dict(change)  # the parameters are shared by both databases' runs
    where = await stage(runtime)
    other = await new_viewer(runtime, "other-creator")
    if change.pop("ended", False):
        await gifting.end_live_session(runtime.sessions, runtime.relay,
                                       session_id=where.session_id, creator_id=where.creator_id)
    if change.pop("sixth", False):
        for n in range(goals.MAX_GOALS):
            await set_goal(runtime, where, f"Goal {n}")
    if change.get("gift_id") == "rose":
        change["gift_id"] = where.gifts["rose"]
    if change.get("creator_id") == "other":
        change["creator_id"] = other
    arguments = dict(creator_id=where.creator_id, session_id=where.session_id, title="Goal",
                     kind=goals.COINS, target=100, gift_id=None) | change
    before = await snapshot(runtime.settings.database_url)
    with pytest.raises(DomainError) as refused:
        await goals.set_goal(runtime.sessions, runtime.relay, **arguments)
    assert (refused.value.code, refused.value.field, refused.value.message) == (
        code, field, message)
    assert await snapshot(runtime.settings.database_url) == before


async def test_two_hundred_gifts_across_two_processes_reach_a_goal_exactly_once(
        postgres_database_url):
    """Two server processes, twenty viewers sending Roses through both at once, 200 in all,
    toward a 150-coin goal: its progress is 200, and the session's event log holds exactly
    one GoalReached, with a GoalProgress for every batch that moved it."""
    async with two_servers(postgres_database_url) as clients:
        client = clients[0]
        gifts = await gift_ids(client)
        creator = token("goal-creator", "creator")
        session_id = await go_live(client, creator)
        set_ = await client("""mutation($input: SetLiveGoalInput!) { setLiveGoal(input: $input)
            { goal { id progress status } userErrors { code } } }""", {"input": {
            "sessionId": session_id, "title": "150 coins", "kind": "COINS", "target": 150}},
            token=creator)
        assert set_["data"]["setLiveGoal"]["goal"]["status"] == "OPEN"
        fans = [token(f"goal-fan-{n}") for n in range(20)]
        for fan in fans:
            await buy_coins(client, fan, "coins-70")

        async def sender(n: int, fan: str) -> None:
            for m in range(10):
                answer = await clients[(n + m) % 2](
                    SEND, send_input(session_id, gifts["rose"]), token=fan)
                assert answer["data"]["sendGift"]["receipt"] is not None, answer

        await asyncio.gather(*(sender(n, fan) for n, fan in enumerate(fans)))
        read = await client("query($id: ID!) { liveSession(id: $id) { goals { progress status "
                            "reachedAt } } }", {"id": session_id}, token=creator)
        [goal] = read["data"]["liveSession"]["goals"]
        assert (goal["progress"], goal["status"]) == (200, "REACHED")
    from app.runtime import Runtime

    runtime = Runtime.build(settings_for(postgres_database_url))
    try:
        async with runtime.sessions() as session:
            stream = f"session:{int(from_base64(session_id)[1])}"
            bodies = [(kind, json.loads(body)) for kind, body in (await session.execute(
                select(Event.type, Event.body).where(Event.stream == stream,
                                                     Event.type.like("Goal%"))
                .order_by(Event.seq))).all()]
            assert [kind for kind, _ in bodies].count("GoalReached") == 1
            progress = [body["progress"] for kind, body in bodies if kind == "GoalProgress"]
            assert progress == sorted(progress) and progress[0] == 0 and progress[-1] == 200
            reached = next(body for kind, body in bodies if kind == "GoalReached")
            assert 150 <= reached["progress"] < 150 + 10 * 20  # the batch that crossed it
            assert await session.scalar(select(func.count()).select_from(GiftSend)) == 200
    finally:
        await runtime.close()


@pytest.fixture
def seeded_server(database_url):
    process = ServerProcess(database_url, LIVEGIFTS_SEED_DEMO_DATA="true")
    process.start()
    yield process
    process.stop()


async def test_an_overlay_sees_goals_move_and_be_reached_over_a_websocket(seeded_server):
    """Over a real server and WebSocket: setLiveGoal, the session's subscribers get
    GoalProgress and one GoalReached; after the session ends the goal not reached reads
    MISSED."""
    server = seeded_server
    client = GraphQLClient(server.url)
    try:
        gifts = await gift_ids(client)
        creator = token("overlay-goal-creator", "creator")
        session_id = await go_live(client, creator)
        fan = token("overlay-goal-fan")
        await buy_coins(client, fan, "coins-70")
        mutation = """mutation($input: SetLiveGoalInput!) { setLiveGoal(input: $input) {
            goal { id title kind target progress status gift { sku } }
            userErrors { code field message } } }"""
        roses = await client(mutation, {"input": {
            "sessionId": session_id, "title": "Two roses", "kind": "GIFT_COUNT", "target": 2,
            "giftId": gifts["rose"]}}, token=creator)
        goal = roses["data"]["setLiveGoal"]["goal"]
        assert (goal["kind"], goal["target"], goal["progress"], goal["status"],
                goal["gift"]) == ("GIFT_COUNT", 2, 0, "OPEN", {"sku": "rose"})
        refused = await client(mutation, {"input": {
            "sessionId": session_id, "title": "Too big", "kind": "COINS", "target": 0}},
            token=creator)
        assert refused["data"]["setLiveGoal"] == {"goal": None, "userErrors": [{
            "code": "GOAL_TARGET_OUT_OF_RANGE", "field": "target",
            "message": "target must be between 1 and 1,000,000,000."}]}
        far = await client(mutation, {"input": {
            "sessionId": session_id, "title": "A thousand coins", "kind": "COINS",
            "target": 1_000}}, token=creator)
        assert far["data"]["setLiveGoal"]["userErrors"] == []
        events = """subscription($id: ID!) { liveSessionEvents(sessionId: $id) { __typename
            ... on GoalProgress { goalId title progress target }
            ... on GoalReached { goalId title progress reachedAt } } }"""
        async with Subscription(server.url, fan, events, {"id": session_id}) as subscription:
            assert (await subscription.next_data())["liveSessionEvents"]["__typename"] == \
                "ViewerCountChanged"
            sent = await client(SEND, send_input(session_id, gifts["rose"], 2), token=fan)
            assert sent["data"]["sendGift"]["userErrors"] == []
            seen = []
            while len([e for e in seen if e["__typename"].startswith("Goal")]) < 3:
                seen.append((await subscription.next_data())["liveSessionEvents"])
        goal_events = [e for e in seen if e["__typename"].startswith("Goal")]
        assert goal_events == [
            {"__typename": "GoalProgress", "goalId": goal["id"], "title": "Two roses",
             "progress": 2, "target": 2},
            {"__typename": "GoalReached", "goalId": goal["id"], "title": "Two roses",
             "progress": 2, "reachedAt": goal_events[1]["reachedAt"]},
            {"__typename": "GoalProgress", "goalId": far["data"]["setLiveGoal"]["goal"]["id"],
             "title": "A thousand coins", "progress": 2, "target": 1_000}]
        await client("""mutation($id: ID!) { endLiveSession(input: {sessionId: $id}) {
            userErrors { code } } }""", {"id": session_id}, token=creator)
        read = await client("query($id: ID!) { liveSession(id: $id) { goals { title status "
                            "progress } } }", {"id": session_id}, token=fan)
        assert read["data"]["liveSession"]["goals"] == [
            {"title": "Two roses", "status": "REACHED", "progress": 2},
            {"title": "A thousand coins", "status": "MISSED", "progress": 2}]
    finally:
        await client.close()
