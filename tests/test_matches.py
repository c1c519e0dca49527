"""Live matches, on SQLite and PostgreSQL: invitations and their answers, scores counted in
each gift's own transaction (sponsored gifts at full value, brand boosts in the score only),
one MatchEnded per match whoever runs the ending pass, one match at a time per creator,
history and records, and every refusal with its message and nothing changed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from strawberry.relay import to_base64

from app.errors import DomainError, ErrorCode
from app.models import Event, GiftSend, LiveMatch
from app.runtime import Runtime
from app.services import gifting, matches
from app.testing import audit
from app.testing import go_live as start
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
from tests.test_plugins import core_with


def now() -> datetime:
    return datetime.now(UTC)


async def invite(runtime, inviter, invitee, seconds=120, at=None, creator_id=None):
    return await matches.invite(runtime.sessions, runtime.relay,
                                creator_id=creator_id or inviter.creator_id,
                                session_id=inviter.session_id,
                                opponent_session_id=invitee.session_id,
                                duration_seconds=seconds, now=at or now())


async def accept(runtime, match, invitee, at=None, creator_id=None):
    return await matches.accept(runtime.sessions, runtime.relay, runtime.plugins,
                                creator_id=creator_id or invitee.creator_id, match_id=match.id,
                                clock=(lambda: at) if at else now)


async def running_match(runtime, seconds=120):
    """Two live creators in a running match: (match, inviter's stage, invitee's stage)."""
    red, blue = await stage(runtime, "red"), await start(runtime, "blue")
    match = await accept(runtime, await invite(runtime, red, blue, seconds), blue)
    return match, red, blue


async def end_due(runtime, at):
    """The ending pass, its clock at ``at``."""
    return await matches.end_due_matches(runtime.sessions, runtime.relay, lambda: at)


async def match_row(runtime, match_id):
    async with runtime.sessions() as session:
        return await session.get(LiveMatch, match_id)


async def test_a_match_scores_both_sides_and_ends_once_with_its_winner_and_supporters(runtime):
    """Gifts into either session while the match runs score for that side, with a MatchScore
    to both sessions; gifts before it started or after its time don't count; the ending pass
    ends it exactly once at its time, with the winner and each side's top three supporters;
    the record and history read it back; the ledger is untouched by all of it."""
    red, blue = await stage(runtime, "red"), await start(runtime, "blue")
    fans = [await new_viewer(runtime, f"fan-{n}", 10_000) for n in range(5)]
    red_events, blue_events = Recorder(runtime, red.session_id), Recorder(runtime, blue.session_id)
    await send(runtime, fans[0], red, "doughnut")  # before any match: counts for nothing
    invited = await invite(runtime, red, blue, seconds=120)
    await send(runtime, fans[0], red, "doughnut")  # invited, not yet accepted: nothing
    match = await accept(runtime, invited, blue)
    assert match.status == matches.RUNNING
    for fan, where, sku, quantity in [(0, red, "rose", 5), (1, red, "doughnut", 1),
                                      (2, blue, "doughnut", 2), (3, red, "rose", 1),
                                      (4, red, "rose", 2), (3, blue, "rose", 3)]:
        await send(runtime, fans[fan], where, sku, quantity=quantity)
    late = match.ends_at + timedelta(seconds=1)
    await send(runtime, fans[2], blue, "doughnut", clock=lambda: late)  # after its time
    scores = [[side["score"] for side in e["sides"]] for e in red_events.of("MatchScore")]
    assert scores == [[5, 0], [35, 0], [35, 60], [36, 60], [38, 60], [38, 63]]
    assert [[s["score"] for s in e["sides"]] for e in blue_events.of("MatchScore")] == scores
    assert await end_due(runtime, match.ends_at - timedelta(seconds=1)) == 0
    assert await end_due(runtime, match.ends_at) == 1
    assert await end_due(runtime, late) == 0
    [ended] = red_events.of("MatchEnded")
    [ended_blue] = blue_events.of("MatchEnded")
    own = ("session_id", "stream", "seq", "event_id")  # where each copy was logged
    assert {k: v for k, v in ended_blue.items() if k not in own} == \
        {k: v for k, v in ended.items() if k not in own}
    assert ended_blue["session_id"] == blue.session_id
    assert ended["winner_id"] == blue.creator_id
    assert [(s["creator_id"], s["score"], [(t["user_id"], t["score"]) for t in s["top"]])
            for s in ended["sides"]] == [
        (red.creator_id, 38, [(fans[1], 30), (fans[0], 5), (fans[4], 2)]),
        (blue.creator_id, 63, [(fans[2], 60), (fans[3], 3)])]
    async with runtime.sessions() as session:
        assert await matches.record_of(session, blue.creator_id) == matches.Record(1, 0, 0)
        assert await matches.record_of(session, red.creator_id) == matches.Record(0, 1, 0)
        history = await matches.history(session, red.creator_id, limit=10, before_id=None)
        assert [(m.id, m.status) for m in history] == [(match.id, matches.ENDED)]
        assert await audit(session) == []


async def test_matches_never_change_what_a_gift_costs_or_pays_and_boosts_count_in_score_only(
        database_url):
    """The same gifts into a session in a boosted match and into one in no match: identical
    receipts. A sponsored gift scores its full value (the viewer's coins plus the brand's
    subsidy), times the brand's boost while the boost is on, and its plain value after."""
    brand = Acme(boost=(3, 30))
    async with core_with(database_url, ("acme", brand)) as runtime:
        from tests.test_plugins import funded_stage

        red, fan = await funded_stage(runtime)
        blue, alone = await start(runtime, "blue"), await start(runtime, "alone")
        started = now()
        match = await accept(runtime, await invite(runtime, red, blue, at=started), blue,
                             at=started)
        assert [(c.match_id, c.duration_seconds, c.inviter_id, c.invitee_id)
                for c in brand.asked] == [(match.id, 120, red.creator_id, blue.creator_id)]
        assert matches.boosts_of(match) == [{
            "brand": "acme", "multiplier": 3,
            "until": (started + timedelta(seconds=30)).isoformat()}]
        receipts = []
        for where in (red, alone):
            receipts.append([(r.coins_paid, r.brand_subsidy, r.creator_coins, r.platform_coins,
                              r.brand_coins, r.creator_diamonds) for r in [
                (await send(runtime, fan, where, sku)).receipt
                for sku in ("rose", "acme-rocket", "doughnut")]])
        assert receipts[0] == receipts[1]
        after_boost = started + timedelta(seconds=31)
        await send(runtime, fan, red, "acme-rocket", clock=lambda: after_boost)
        row = await match_row(runtime, match.id)
        assert (row.inviter_score, row.invitee_score) == (1 + 50 * 3 + 30 + 50, 0)
        async with runtime.sessions() as session:
            assert await audit(session) == []


@pytest.mark.parametrize("mode, failure", [
    ("boost-raises", "boost_match raised RuntimeError: sponsorship service down"),
    ("boost-other-brand", "boost_match named the brand 'someone-else', which it does not own"),
    ("boost-hangs", "boost_match did not answer within 0.2 s"),
    ("boost-brand-not-a-slug", "invalid answer: brand must be a brand's slug, got ['acme']"),
])
async def test_a_failing_boost_gives_no_boost_and_the_match_starts(database_url, mode, failure):
    """A plugin whose boost_match raises, names a brand it does not own or does not answer
    in time boosts nothing (fails closed); the failure is counted against it; the match
    starts anyway and its gifts score their plain value."""
    async with core_with(database_url, ("acme", Acme(mode=mode, boost=(5, 60))),
                         plugin_timeout_seconds=0.2) as runtime:
        from tests.test_plugins import funded_stage

        red, fan = await funded_stage(runtime)
        blue = await start(runtime, "blue")
        match = await accept(runtime, await invite(runtime, red, blue), blue)
        assert (match.status, matches.boosts_of(match)) == (matches.RUNNING, [])
        await send(runtime, fan, red, "acme-rocket")
        assert (await match_row(runtime, match.id)).inviter_score == 50
        record = runtime.plugins.records["acme"]
        assert (record.failures, record.last_failure) == (1, f"boost_match: {failure}")


async def test_ending_a_session_ends_its_match_at_once(runtime):
    """The creator ending their session ends the running match then and there: one
    MatchEnded to both sessions, before the SessionEnded; the pass finds nothing left."""
    match, red, blue = await running_match(runtime)
    fan = await new_viewer(runtime, "fan", 1_000)
    await send(runtime, fan, red, "rose", quantity=2)
    red_events, blue_events = Recorder(runtime, red.session_id), Recorder(runtime, blue.session_id)
    await gifting.end_live_session(runtime.sessions, runtime.relay, session_id=blue.session_id,
                                   creator_id=blue.creator_id)
    assert [e["type"] for e in blue_events.events] == ["MatchEnded", "SessionEnded"]
    [ended] = red_events.of("MatchEnded")
    assert (ended["winner_id"], [s["score"] for s in ended["sides"]]) == (red.creator_id, [2, 0])
    assert await end_due(runtime, match.ends_at + timedelta(minutes=1)) == 0
    assert (await match_row(runtime, match.id)).status == matches.ENDED
    # Both creators are free again: red may invite someone else at once.
    green = await start(runtime, "green")
    assert (await invite(runtime, red, green)).status == matches.INVITED


async def test_ending_a_session_expires_its_waiting_invitations(runtime):
    """Invitations from and to a session that ends can no longer be accepted: they expire
    with it, leave the invitee's list, and the inviter, live again, may invite at once."""
    red, blue, green = (await stage(runtime, "red"), await start(runtime, "blue"),
                        await start(runtime, "green"))
    outgoing, incoming = await invite(runtime, red, blue), await invite(runtime, green, red)
    await gifting.end_live_session(runtime.sessions, runtime.relay, session_id=red.session_id,
                                   creator_id=red.creator_id)
    assert [(await match_row(runtime, m.id)).status for m in (outgoing, incoming)] == [
        matches.EXPIRED, matches.EXPIRED]
    async with runtime.sessions() as session:
        assert await matches.invitations(session, blue.creator_id, now()) == []
    again = await start(runtime, "red")
    assert (await invite(runtime, again, blue)).status == matches.INVITED


async def test_a_match_starts_and_ends_at_the_time_read_once_gifts_in_flight_are_written(
        postgres_database_url):
    """A batch of gifts in flight into a session (its row share-locked by another
    connection, as the gift writer holds it) holds up accepting and ending: both read their
    time only once it is written, so that a gift counts exactly when written between the
    start and the end."""
    from sqlalchemy.ext.asyncio import create_async_engine

    runtime = Runtime.build(settings_for(postgres_database_url))
    engine = create_async_engine(postgres_database_url)
    t0 = now()
    clock = {"now": t0}
    try:
        red, blue = await stage(runtime, "red"), await start(runtime, "blue")
        invited = await invite(runtime, red, blue, at=t0)
        for step in ("accept", "end"):
            async with engine.connect() as batch:  # a batch in flight: the session share-locked
                await batch.execute(text("SELECT id FROM live_session WHERE id = :id "
                                         "FOR KEY SHARE"), {"id": blue.session_id})
                if step == "accept":
                    waiting = asyncio.create_task(matches.accept(
                        runtime.sessions, runtime.relay, runtime.plugins,
                        creator_id=blue.creator_id, match_id=invited.id,
                        clock=lambda: clock["now"]))
                else:
                    waiting = asyncio.create_task(matches.end_due_matches(
                        runtime.sessions, runtime.relay, lambda: clock["now"]))
                await waiting_for_a_lock(batch, waiting)
                clock["now"] += timedelta(seconds=30 if step == "accept" else 130)
                await batch.commit()  # the batch is written
            done = await waiting
            if step == "accept":
                assert done.started_at == t0 + timedelta(seconds=30)
                clock["now"] = done.ends_at  # due at once; the end waits for the next batch
            else:
                assert done == 1
        row = await match_row(runtime, invited.id)
        assert (row.status, row.ended_at) == (matches.ENDED, row.ends_at + timedelta(seconds=130))
    finally:
        await engine.dispose()
        await runtime.close()


async def waiting_for_a_lock(connection, task) -> None:
    """Until another session of the database waits for a lock (the task under test)."""
    while not task.done():
        waiting = await connection.scalar(text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()"))
        if waiting:
            return
        await asyncio.sleep(0.01)
    task.result()  # it finished without waiting: raise what it raised, or fail below
    raise AssertionError("it did not wait for the batch in flight")


async def test_a_history_page_reads_every_sides_supporters_in_one_query(runtime):
    """``matches { inviter { topSupporters } invitee { topSupporters } }`` over three
    matches: each side's own supporters, ranked, read with one query for all six sides."""
    from sqlalchemy import event

    from app.graphql.context import Context
    from app.graphql.schema import schema

    red = await stage(runtime, "red")
    fans = [await new_viewer(runtime, f"fan-{n}", 1_000) for n in range(3)]
    for n in range(3):
        rival = await start(runtime, f"rival-{n}")
        await accept(runtime, await invite(runtime, red, rival), rival)
        await send(runtime, fans[n], red, "rose", quantity=n + 1)
        await send(runtime, fans[(n + 1) % 3], red, "doughnut")
        await send(runtime, fans[n], rival, "rose")
        await gifting.end_live_session(runtime.sessions, runtime.relay,
                                       session_id=rival.session_id, creator_id=rival.creator_id)
    statements = []

    def seen(conn, cursor, statement, *args) -> None:
        if "match_supporter" in statement:
            statements.append(statement)

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", seen)
    try:
        result = await schema.execute(
            """query($id: ID!) { matches(creatorId: $id, first: 3) { edges { node {
                inviter { topSupporters { rank score user { name } } }
                invitee { topSupporters { rank score user { name } } } } } } }""",
            variable_values={"id": to_base64("User", red.creator_id)},
            context_value=Context(runtime=runtime, authorization=f"Bearer {token('reader')}"))
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", seen)
    assert result.errors is None
    sides = [(node["node"]["inviter"]["topSupporters"], node["node"]["invitee"]["topSupporters"])
             for node in result.data["matches"]["edges"]]
    assert [[(e["user"]["name"], e["score"]) for e in ours] for ours, _ in sides] == [
        [("fan-0", 30), ("fan-2", 3)], [("fan-2", 30), ("fan-1", 2)],
        [("fan-1", 30), ("fan-0", 1)]]  # newest first; each match its own supporters
    assert [[(e["rank"], e["user"]["name"]) for e in theirs] for _, theirs in sides] == [
        [(1, "fan-2")], [(1, "fan-1")], [(1, "fan-0")]]
    assert len(statements) == 1


async def test_a_tie_has_no_winner_and_counts_as_a_tie(runtime):
    match, red, blue = await running_match(runtime)
    fan = await new_viewer(runtime, "fan", 1_000)
    await send(runtime, fan, red, "rose")
    await send(runtime, fan, blue, "rose")
    recorder = Recorder(runtime, red.session_id)
    await end_due(runtime, match.ends_at)
    [ended] = recorder.of("MatchEnded")
    assert ended["winner_id"] is None
    async with runtime.sessions() as session:
        assert await matches.record_of(session, red.creator_id) == matches.Record(0, 0, 1)


async def test_an_invitation_declined_or_expired_never_starts(runtime):
    red, blue = await stage(runtime, "red"), await start(runtime, "blue")
    recorder = Recorder(runtime, red.session_id)
    first = await invite(runtime, red, blue)
    declined = await matches.decline(runtime.sessions, runtime.relay, creator_id=blue.creator_id,
                                     match_id=first.id, now=now())
    assert declined.status == matches.DECLINED
    assert [e["type"] for e in recorder.events if e["type"].startswith("Match")] == [
        "MatchInvited", "MatchDeclined"]
    second = await invite(runtime, red, blue)
    later = second.expires_at
    async with runtime.sessions() as session:
        assert [m.id for m in await matches.invitations(session, blue.creator_id, now())] == [
            second.id]
        assert await matches.invitations(session, blue.creator_id, later) == []
    await end_due(runtime, later)
    assert (await match_row(runtime, second.id)).status == matches.EXPIRED


@pytest.mark.parametrize("case, code, field, message", [
    ("duration-59", ErrorCode.MATCH_DURATION_OUT_OF_RANGE, "durationSeconds",
     "durationSeconds must be between 60 and 600 (1 to 10 minutes)."),
    ("duration-601", ErrorCode.MATCH_DURATION_OUT_OF_RANGE, "durationSeconds",
     "durationSeconds must be between 60 and 600 (1 to 10 minutes)."),
    ("not-own-session", ErrorCode.NOT_SESSION_CREATOR, "sessionId",
     "Only the creator of a session can invite another creator to a match."),
    ("own-session-ended", ErrorCode.SESSION_NOT_LIVE, "sessionId", "This session has ended."),
    ("opponent-missing", ErrorCode.NOT_FOUND, "opponentSessionId",
     "No live session has this ID."),
    ("opponent-ended", ErrorCode.SESSION_NOT_LIVE, "opponentSessionId",
     "The other creator's session has ended; only a creator who is live can be invited."),
    ("self", ErrorCode.INVALID_INPUT, "opponentSessionId",
     "You cannot invite yourself to a match."),
    ("inviter-in-match", ErrorCode.ALREADY_IN_MATCH, None,
     "You are in a match until {ends} UTC; a creator is in one match at a time."),
    ("opponent-in-match", ErrorCode.ALREADY_IN_MATCH, None,
     "The other creator is in a match until {ends} UTC; a creator is in one match at a "
     "time."),
    ("inviter-match-ending", ErrorCode.ALREADY_IN_MATCH, None,
     "You are in a match that is ending now; try again in a moment."),
    ("pending", ErrorCode.MATCH_INVITE_PENDING, "opponentSessionId",
     "Your invitation to a match is waiting for its answer until {expires} UTC; invite again "
     "after it is answered or expires."),
])
async def test_a_refused_invitation_says_why_and_changes_nothing(runtime, case, code, field,
                                                                 message):
    red, blue, green = (await stage(runtime, "red"), await start(runtime, "blue"),
                        await start(runtime, "green"))
    inviter, invitee, seconds, creator_id, at = red, blue, 120, None, None
    facts = {}
    if case.startswith("duration-"):
        seconds = int(case.removeprefix("duration-"))
    elif case == "not-own-session":
        creator_id = green.creator_id
    elif case in ("own-session-ended", "opponent-ended"):
        ending = red if case == "own-session-ended" else blue
        await gifting.end_live_session(runtime.sessions, runtime.relay,
                                       session_id=ending.session_id, creator_id=ending.creator_id)
    elif case == "opponent-missing":
        invitee = type(blue)(creator_id=blue.creator_id, session_id=10**9, gifts={})
    elif case == "self":
        invitee = red
    elif case in ("inviter-in-match", "opponent-in-match"):
        busy = red if case == "inviter-in-match" else blue
        running = await accept(runtime, await invite(runtime, green, busy), busy)
        facts["ends"] = running.ends_at.strftime("%H:%M:%S")
    elif case == "inviter-match-ending":  # its time is up; the pass has not ended it yet
        running = await accept(runtime, await invite(runtime, green, red), red)
        at = running.ends_at + timedelta(seconds=1)
    elif case == "pending":
        waiting = await invite(runtime, red, green)
        facts["expires"] = waiting.expires_at.strftime("%H:%M:%S")
    before = await snapshot(runtime.settings.database_url)
    with pytest.raises(DomainError) as refused:
        await invite(runtime, inviter, invitee, seconds, at=at, creator_id=creator_id)
    assert (refused.value.code, refused.value.field, refused.value.message) == (
        code, field, message.format(**facts))
    assert refused.value.retry_after == (1 if case == "inviter-match-ending" else None)
    assert await snapshot(runtime.settings.database_url) == before


ANSWER_REFUSALS = [
    ("missing", ErrorCode.NOT_FOUND, "No match has this ID."),
    ("not-invitee", ErrorCode.NOT_MATCH_INVITEE,
     "Only the invited creator can accept or decline this match."),
    ("expired", ErrorCode.MATCH_INVITE_EXPIRED,
     "This invitation expired at {expires} UTC; ask for a new one."),
    ("declined", ErrorCode.MATCH_NOT_PENDING,
     "This invitation was already answered (the match is declined)."),
    ("accepted", ErrorCode.MATCH_NOT_PENDING,
     "This invitation was already answered (the match is running)."),
    ("invitee-ended", ErrorCode.MATCH_INVITE_EXPIRED,
     "This invitation expired when one of its creators ended their session; ask for a new "
     "one."),
    ("inviter-ended", ErrorCode.MATCH_INVITE_EXPIRED,
     "This invitation expired when one of its creators ended their session; ask for a new "
     "one."),
    ("invitee-busy", ErrorCode.ALREADY_IN_MATCH,
     "You are in a match until {ends} UTC; a creator is in one match at a time."),
]
# A creator in a match may still decline: that refusal is accept's only.
ACCEPT_ONLY = ("invitee-busy",)


@pytest.mark.parametrize("answer, case, code, message", [
    (answer, *refusal) for answer in ("accept", "decline") for refusal in ANSWER_REFUSALS
    if answer == "accept" or refusal[0] not in ACCEPT_ONLY])
async def test_a_refused_answer_says_why_and_changes_nothing(runtime, answer, case, code,
                                                             message):
    red, blue, green = (await stage(runtime, "red"), await start(runtime, "blue"),
                        await start(runtime, "green"))
    match = await invite(runtime, red, blue)
    match_id, creator_id, at, facts = match.id, blue.creator_id, now(), {}
    if case == "missing":
        match_id = 10**9
    elif case == "not-invitee":
        creator_id = red.creator_id
    elif case == "expired":
        at = match.expires_at
        facts["expires"] = match.expires_at.strftime("%H:%M:%S")
    elif case == "declined":
        await matches.decline(runtime.sessions, runtime.relay, creator_id=blue.creator_id,
                              match_id=match.id, now=now())
    elif case == "accepted":
        await accept(runtime, match, blue)
    elif case in ("invitee-ended", "inviter-ended"):
        ending = blue if case == "invitee-ended" else red
        await gifting.end_live_session(runtime.sessions, runtime.relay,
                                       session_id=ending.session_id, creator_id=ending.creator_id)
    elif case == "invitee-busy":
        running = await accept(runtime, await invite(runtime, green, blue), blue)
        facts["ends"] = running.ends_at.strftime("%H:%M:%S")
    field = None if code == ErrorCode.ALREADY_IN_MATCH else "matchId"
    before = await snapshot(runtime.settings.database_url)
    status = (await match_row(runtime, match.id)).status
    with pytest.raises(DomainError) as refused:
        if answer == "accept":
            await matches.accept(runtime.sessions, runtime.relay, runtime.plugins,
                                 creator_id=creator_id, match_id=match_id, clock=lambda: at)
        else:
            await matches.decline(runtime.sessions, runtime.relay, creator_id=creator_id,
                                  match_id=match_id, now=at)
    assert (refused.value.code, refused.value.field, refused.value.message) == (
        code, field, message.format(**facts))
    assert await snapshot(runtime.settings.database_url) == before
    assert (await match_row(runtime, match.id)).status == status


async def test_a_creator_invited_twice_can_be_in_only_one_match_when_both_are_accepted_at_once(
        postgres_database_url):
    """Two creators invite a third; the third's two accepts race on two connections of
    separate engines: exactly one match runs, the other accept is refused ALREADY_IN_MATCH."""
    runtimes = [Runtime.build(settings_for(postgres_database_url)) for _ in range(2)]
    try:
        red, green = await stage(runtimes[0], "red"), await start(runtimes[0], "green")
        blue = await start(runtimes[0], "blue")
        invitations = [await invite(runtimes[0], red, blue), await invite(runtimes[0], green, blue)]
        for _ in range(5):  # a few rounds: the race is real each time
            outcomes = await asyncio.gather(*(
                accept(rt, m, blue) for rt, m in zip(runtimes, invitations, strict=True)),
                return_exceptions=True)
            started = [o for o in outcomes if isinstance(o, LiveMatch)]
            refused = [o for o in outcomes if isinstance(o, DomainError)]
            assert len(started) == 1 and [r.code for r in refused] == [ErrorCode.ALREADY_IN_MATCH]
            await gifting.end_live_session(runtimes[0].sessions, runtimes[0].relay,
                                           session_id=blue.session_id, creator_id=blue.creator_id)
            blue = await start(runtimes[0], "blue")
            for inviter in (red, green):  # their earlier invitations: answered or expired
                async with runtimes[0].sessions() as session:
                    await session.execute(LiveMatch.__table__.update().where(
                        LiveMatch.inviter_id == inviter.creator_id,
                        LiveMatch.status == matches.INVITED).values(status=matches.EXPIRED))
                    await session.commit()
            invitations = [await invite(runtimes[0], red, blue),
                           await invite(runtimes[0], green, blue)]
    finally:
        for runtime in runtimes:
            await runtime.close()


async def test_the_ending_pass_run_by_two_engines_at_once_ends_each_match_once(
        postgres_database_url):
    """Six matches due; two engines (as two server processes would) run the ending pass at
    the same moment, repeatedly: six matches ended in all, one MatchEnded per match and
    session in the event log."""
    runtimes = [Runtime.build(settings_for(postgres_database_url)) for _ in range(2)]
    try:
        ids = []
        for n in range(6):
            red = await stage(runtimes[0], f"red-{n}")
            blue = await start(runtimes[0], f"blue-{n}")
            ids.append((await accept(runtimes[0], await invite(runtimes[0], red, blue, 60),
                                     blue)).id)
        due = now() + timedelta(seconds=61)
        ended = 0
        for _ in range(3):
            ended += sum(await asyncio.gather(*(
                matches.end_due_matches(rt.sessions, rt.relay, lambda: due) for rt in runtimes)))
        assert ended == 6
        async with runtimes[0].sessions() as session:
            logged = await session.scalar(select(func.count()).select_from(Event)
                                          .where(Event.type == "MatchEnded"))
            assert logged == 12  # each match's two sessions
            statuses = (await session.scalars(select(LiveMatch.status)
                                              .where(LiveMatch.id.in_(ids)))).all()
            assert set(statuses) == {matches.ENDED}
    finally:
        for runtime in runtimes:
            await runtime.close()


async def test_gifts_through_two_server_processes_score_exactly(postgres_database_url):
    """Two server processes; ten viewers send Roses and Doughnuts into both sessions of a
    running match through both at once: each side's score is exactly the coins its session
    received, and the supporters' parts add up to it."""
    async with two_servers(postgres_database_url) as clients:
        client = clients[0]
        gifts = await gift_ids(client)
        red, blue = token("match-red", "creator"), token("match-blue", "creator")
        red_session, blue_session = await go_live(client, red), await go_live(client, blue)
        invited = await client(INVITE, {"input": {
            "sessionId": red_session, "opponentSessionId": blue_session,
            "durationSeconds": 600}}, token=red)
        match_id = invited["data"]["inviteToMatch"]["match"]["id"]
        accepted = await client(ACCEPT, {"input": {"matchId": match_id}}, token=blue)
        assert accepted["data"]["acceptMatch"]["match"]["status"] == "RUNNING"
        fans = [token(f"match-fan-{n}") for n in range(10)]
        for fan in fans:
            await buy_coins(client, fan, "coins-350")

        async def sender(n: int, fan: str) -> None:
            for m in range(8):
                where = (red_session, blue_session)[(n + m) % 2]
                sku = ("rose", "doughnut")[m % 2]
                answer = await clients[m % 2](SEND, send_input(where, gifts[sku]), token=fan)
                assert answer["data"]["sendGift"]["receipt"] is not None, answer

        await asyncio.gather(*(sender(n, fan) for n, fan in enumerate(fans)))
        read = await client(MATCH, {"id": match_id}, token=fans[0])
    runtime = Runtime.build(settings_for(postgres_database_url))
    try:
        async with runtime.sessions() as session:
            received = dict((await session.execute(
                select(GiftSend.session_id, func.sum(GiftSend.coins_paid))
                .group_by(GiftSend.session_id))).all())
    finally:
        await runtime.close()
    match = read["data"]["match"]
    for side in (match["inviter"], match["invitee"]):
        session_number = int(from_global(side["session"]["id"]))
        assert side["score"] == received[session_number] > 0
    assert sum(s["score"] for s in match["inviter"]["topSupporters"]) <= \
        match["inviter"]["score"]


def from_global(global_id: str) -> str:
    from strawberry.relay import from_base64

    return from_base64(global_id)[1]


INVITE = """mutation($input: InviteToMatchInput!) { inviteToMatch(input: $input) {
    match { id status durationSeconds inviter { creator { name } score }
            invitee { creator { name } score } }
    userErrors { code field message } } }"""
ACCEPT = """mutation($input: MatchInput!) { acceptMatch(input: $input) {
    match { id status endsAt boosts { brand } } userErrors { code field message } } }"""
DECLINE = """mutation($input: MatchInput!) { declineMatch(input: $input) {
    match { id status } userErrors { code field message } } }"""
MATCH = """query($id: ID!) { match(id: $id) { id status tie winner { name }
    inviter { score session { id } topSupporters(first: 100) { rank score user { name } } }
    invitee { score session { id } topSupporters { rank score user { name } } } } }"""


@pytest.fixture
def seeded_server(database_url):
    process = ServerProcess(database_url, LIVEGIFTS_SEED_DEMO_DATA="true")
    process.start()
    yield process
    process.stop()


async def test_a_match_over_http_and_websocket(seeded_server):
    """Over a real server: invite, a refusal, accept; the invitee's subscribers see
    MatchStarted and MatchScore as gifts arrive on the other side; ending the inviter's
    session ends the match, seen as one MatchEnded; the history and record read it back."""
    server = seeded_server
    client = GraphQLClient(server.url)
    try:
        gifts = await gift_ids(client)
        red, blue = token("ws-red", "creator"), token("ws-blue", "creator")
        red_session, blue_session = await go_live(client, red), await go_live(client, blue)
        fan = token("ws-match-fan")
        await buy_coins(client, fan, "coins-70")
        refused = await client(INVITE, {"input": {
            "sessionId": red_session, "opponentSessionId": blue_session,
            "durationSeconds": 30}}, token=red)
        assert refused["data"]["inviteToMatch"] == {"match": None, "userErrors": [{
            "code": "MATCH_DURATION_OUT_OF_RANGE", "field": "durationSeconds",
            "message": "durationSeconds must be between 60 and 600 (1 to 10 minutes)."}]}
        invited = await client(INVITE, {"input": {
            "sessionId": red_session, "opponentSessionId": blue_session,
            "durationSeconds": 300}}, token=red)
        match = invited["data"]["inviteToMatch"]["match"]
        assert (match["status"], match["durationSeconds"], match["inviter"]["creator"]["name"],
                match["invitee"]["creator"]["name"]) == ("INVITED", 300, "ws-red", "ws-blue")
        waiting = await client("{ matchInvitations { id inviter { creator { name } } } }",
                               token=blue)
        assert waiting["data"]["matchInvitations"] == [
            {"id": match["id"], "inviter": {"creator": {"name": "ws-red"}}}]
        not_yours = await client(ACCEPT, {"input": {"matchId": match["id"]}}, token=red)
        assert not_yours["data"]["acceptMatch"]["userErrors"] == [{
            "code": "NOT_MATCH_INVITEE", "field": "matchId",
            "message": "Only the invited creator can accept or decline this match."}]
        events = """subscription($id: ID!) { liveSessionEvents(sessionId: $id) { __typename
            ... on MatchStarted { matchId endsAt sides { creator { name } score } }
            ... on MatchScore { matchId sides { creator { name } score } }
            ... on MatchEnded { matchId tie winner { name }
                                sides { score topSupporters { rank user { name } score } } } } }"""
        async with Subscription(server.url, fan, events, {"id": blue_session}) as subscription:
            assert (await subscription.next_data())["liveSessionEvents"]["__typename"] == \
                "ViewerCountChanged"
            accepted = await client(ACCEPT, {"input": {"matchId": match["id"]}}, token=blue)
            assert accepted["data"]["acceptMatch"]["match"]["status"] == "RUNNING"
            sent = await client(SEND, send_input(red_session, gifts["doughnut"]), token=fan)
            assert sent["data"]["sendGift"]["userErrors"] == []
            await client("""mutation($id: ID!) { endLiveSession(input: {sessionId: $id}) {
                userErrors { code } } }""", {"id": red_session}, token=red)
            seen = []
            while not seen or seen[-1]["__typename"] != "MatchEnded":
                event = (await subscription.next_data())["liveSessionEvents"]
                if event["__typename"].startswith("Match"):
                    seen.append(event)
        assert [e["__typename"] for e in seen] == ["MatchStarted", "MatchScore", "MatchEnded"]
        assert seen[1]["sides"] == [{"creator": {"name": "ws-red"}, "score": 30},
                                    {"creator": {"name": "ws-blue"}, "score": 0}]
        assert (seen[2]["tie"], seen[2]["winner"]) == (False, {"name": "ws-red"})
        assert seen[2]["sides"][0]["topSupporters"] == [
            {"rank": 1, "user": {"name": "ws-match-fan"}, "score": 30}]
        creator_id = (await client("{ viewer { id } }", token=red))["data"]["viewer"]["id"]
        history = await client("""query($id: ID!) { matches(creatorId: $id) { edges { node {
            id status winner { name } } } } matchRecord(creatorId: $id) { wins losses ties } }""",
                               {"id": creator_id}, token=fan)
        assert history["data"] == {
            "matches": {"edges": [{"node": {"id": match["id"], "status": "ENDED",
                                            "winner": {"name": "ws-red"}}}]},
            "matchRecord": {"wins": 1, "losses": 0, "ties": 0}}
        session_match = await client("query($id: ID!) { liveSession(id: $id) { match { id } } }",
                                     {"id": blue_session}, token=fan)
        assert session_match["data"]["liveSession"]["match"] == {"id": match["id"]}
    finally:
        await client.close()
