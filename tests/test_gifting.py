"""Sending gifts on SQLite and PostgreSQL: money, receipts, rate cards, combos, leaderboards."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event, update

from app.errors import DomainError, ErrorCode
from app.events import session_channel
from app.models import Gift, RateCard
from app.services import gifting, live, rates, recognition, wallets
from app.services.recognition import Period
from app.testing import Clock, audit
from tests.gifting_support import Recorder, give_coins, new_viewer, send, stage
from tests.support import snapshot, token


@given(value=st.integers(1, 10**12), share=st.integers(0, 10_000),
       diamonds_per_coin=st.integers(1, 1000), brand_fraction=st.floats(0, 1),
       subsidy_fraction=st.floats(0, 0.99))
def test_a_gift_split_always_sums_exactly_to_its_value(value, share, diamonds_per_coin,
                                                       brand_fraction, subsidy_fraction):
    card = RateCard(version=1, creator_share_bps=share, diamonds_per_coin=diamonds_per_coin,
                    cash_minor_per_100_diamonds=50, cash_currency="USD",
                    effective_from=rates.EPOCH)
    creator = value * share // 10_000
    brand = int((value - creator) * brand_fraction)
    subsidy = int(value * subsidy_fraction)
    split = rates.split_gift(value, card, brand_coins=brand, brand_subsidy=subsidy)
    assert split.creator_coins + split.platform_coins + split.brand_coins == value
    assert split.coins_paid + split.brand_subsidy == value
    assert min(split.creator_coins, split.platform_coins, split.brand_coins,
               split.coins_paid) >= 0
    assert split.creator_coins == creator  # the creator's part is floored ...
    assert split.creator_diamonds == creator * diamonds_per_coin  # ... the rest is platform's


async def test_send_gift_moves_coins_to_diamonds_and_records_the_receipt(runtime):
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 1000)
    result = await send(runtime, fan, where, "hand-hearts", quantity=3)
    receipt = result.receipt
    assert (receipt.quantity, receipt.unit_price, receipt.coins_paid) == (3, 100, 300)
    assert (receipt.creator_coins, receipt.creator_diamonds, receipt.platform_coins) == \
        (150, 150, 150)
    assert receipt.rate_card_version == 1 and receipt.brand_coins == 0
    async with runtime.sessions() as session:
        assert (await wallets.wallet(session, fan)).coins == 700
        assert (await wallets.wallet(session, where.creator_id)).diamonds == 150
        assert await audit(session) == []


async def test_odd_values_leave_the_remainder_to_the_platform(runtime):
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 10)
    receipt = (await send(runtime, fan, where, "rose")).receipt  # 1 coin at 50%
    assert (receipt.creator_coins, receipt.platform_coins, receipt.creator_diamonds) == (0, 1, 0)
    async with runtime.sessions() as session:
        assert await audit(session) == []


async def test_a_new_rate_card_applies_from_its_effective_time(runtime):
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 1000)
    now = datetime.now(UTC)
    async with runtime.sessions() as session, session.begin():
        card = await rates.publish_rate_card(
            session, creator_share_bps=7000, diamonds_per_coin=2, cash_minor_per_100_diamonds=25,
            effective_from=now + timedelta(hours=1), note="Creator week")
    assert card.version == 2
    before = (await send(runtime, fan, where, "hand-hearts", clock=lambda: now)).receipt
    later = now + timedelta(hours=1, seconds=1)
    after = (await send(runtime, fan, where, "hand-hearts", clock=lambda: later)).receipt
    assert (before.rate_card_version, before.creator_diamonds) == (1, 50)
    assert (after.rate_card_version, after.creator_coins, after.creator_diamonds) == (2, 70, 140)


@pytest.mark.parametrize("fields, message", [
    ({"creator_share_bps": 10_001}, "creatorShareBps must be between 0 and 10000"),
    ({"diamonds_per_coin": 0}, "diamondsPerCoin must be between 1 and 1000."),
    ({"cash_minor_per_100_diamonds": -5}, "cashMinorPer100Diamonds must be between 1"),
    ({"effective_from": datetime(2020, 1, 1, tzinfo=UTC)}, "effectiveFrom cannot be in the past."),
])
async def test_bad_rate_cards_are_refused(runtime, fields, message):
    arguments = dict(creator_share_bps=5000, diamonds_per_coin=1, cash_minor_per_100_diamonds=50,
                     effective_from=datetime.now(UTC) + timedelta(hours=1), **{})
    arguments.update(fields)
    before = await snapshot(runtime.settings.database_url)
    with pytest.raises(DomainError, match=message):
        async with runtime.sessions() as session, session.begin():
            await rates.publish_rate_card(session, **arguments)
    assert await snapshot(runtime.settings.database_url) == before


async def refused(runtime, code: ErrorCode, coro, *, records_key: bool = False) -> DomainError:
    """Await a refused send; prove no balance or row changed but the key's recorded failure."""
    before = await snapshot(runtime.settings.database_url)
    with pytest.raises(DomainError) as caught:
        await coro
    assert caught.value.code is code, caught.value.message
    after = await snapshot(runtime.settings.database_url)
    if records_key:  # a business refusal keeps its idempotency key failed
        before["rows"]["idempotency_record"] += 1
    assert after == before
    return caught.value


async def test_every_refusal_moves_nothing_and_publishes_nothing(runtime):
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 50)
    recorder = Recorder(runtime, where.session_id)

    error = await refused(runtime, ErrorCode.INSUFFICIENT_COINS,
                          send(runtime, fan, where, "hand-hearts", key="too-dear"),
                          records_key=True)
    assert error.message == "Not enough coins: this needs 100 and the balance is 50."
    for quantity in (0, -1, 1001):
        error = await refused(runtime, ErrorCode.INVALID_QUANTITY,
                              send(runtime, fan, where, quantity=quantity))
        assert error.message == "quantity must be between 1 and 1000."
    error = await refused(runtime, ErrorCode.CANNOT_GIFT_SELF,
                          send(runtime, where.creator_id, where))
    assert error.message == "You cannot send gifts to your own live session."

    async with runtime.sessions() as session, session.begin():
        await session.execute(update(Gift).where(Gift.sku == "corgi").values(active=False))
        await session.execute(update(Gift).where(Gift.sku == "galaxy").values(
            available_until=datetime.now(UTC) - timedelta(minutes=1)))
    for sku, name in (("corgi", "Corgi"), ("galaxy", "Galaxy")):
        error = await refused(runtime, ErrorCode.GIFT_UNAVAILABLE, send(runtime, fan, where, sku))
        assert error.message == f"The gift '{name}' is not available right now."

    async with runtime.sessions() as session, session.begin():
        await live.end_session(session, where.session_id, where.creator_id)
    error = await refused(runtime, ErrorCode.SESSION_NOT_LIVE, send(runtime, fan, where))
    assert error.message.startswith("This session is not live")
    assert recorder.events == []


async def test_insufficient_coins_stays_failed_under_the_same_key(runtime):
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 50)
    await refused(runtime, ErrorCode.INSUFFICIENT_COINS,
                  send(runtime, fan, where, "hand-hearts", key="k"), records_key=True)
    await give_coins(runtime, fan, 1000)
    await refused(runtime, ErrorCode.INSUFFICIENT_COINS,
                  send(runtime, fan, where, "hand-hearts", key="k"))


async def test_replays_return_the_receipt_and_publish_nothing(runtime):
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 100)
    first = await send(runtime, fan, where, key="once")
    recorder = Recorder(runtime, where.session_id)
    again = await send(runtime, fan, where, key="once")
    assert again.replayed and again.receipt.id == first.receipt.id
    assert recorder.events == []


async def test_combo_counts_run_and_end_exactly_once(runtime):
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 1000)
    recorder = Recorder(runtime, where.session_id)
    clock = Clock()
    clock.freeze()
    counts = [(await send(runtime, fan, where, "rose", quantity=q, window=0.5,
                          clock=clock)).receipt for q in (1, 2, 1)]
    assert [r.combo_count for r in counts] == [1, 3, 4]
    assert len({r.combo_id for r in counts}) == 1
    other = (await send(runtime, fan, where, "doughnut", window=0.5, clock=clock)).receipt
    assert other.combo_id != counts[0].combo_id and other.combo_count == 1

    clock.move(timedelta(seconds=0.6))
    window = timedelta(seconds=0.5)
    assert await gifting.end_stale_combos(runtime.sessions, runtime.relay, window,
                                          now=clock()) == 2
    assert await gifting.end_stale_combos(runtime.sessions, runtime.relay, window,
                                          now=clock()) == 0
    ended = {e["gift_id"]: e for e in recorder.of("ComboEnded")}
    assert ended[where.gifts["rose"]]["total_count"] == 4
    assert ended[where.gifts["rose"]]["sends"] == 3
    assert ended[where.gifts["rose"]]["total_coins"] == 4
    assert ended[where.gifts["doughnut"]]["total_count"] == 1
    assert [e["combo_count"] for e in recorder.of("GiftSent")] == [1, 3, 4, 1]

    fresh = (await send(runtime, fan, where, "rose", window=0.5, clock=clock)).receipt
    assert fresh.combo_id not in (counts[0].combo_id, other.combo_id) and fresh.combo_count == 1


async def test_the_reaper_ends_many_idle_combos_a_few_a_transaction_each_once(runtime):
    """Five idle combos, two ended a transaction: all five end, in three transactions (two,
    two, one), each reported once; a second pass finds none."""
    where = await stage(runtime)
    recorder = Recorder(runtime, where.session_id)
    clock = Clock()
    clock.freeze()
    fans = [await new_viewer(runtime, f"idle-{n}", 100) for n in range(5)]
    for fan in fans:
        await send(runtime, fan, where, window=0.5, clock=clock)
    clock.move(timedelta(seconds=0.6))
    endings: list[str] = []  # the UPDATEs that end combos, one a transaction

    def note(_connection, _cursor, statement, *_args) -> None:
        if statement.lstrip().startswith("UPDATE gift_combo"):
            endings.append(statement)

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", note)
    try:
        assert await gifting.end_stale_combos(runtime.sessions, runtime.relay,
                                              timedelta(seconds=0.5), now=clock(),
                                              per_transaction=2) == 5
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", note)
    assert len(endings) == 3
    assert sorted(e["sender_name"] for e in recorder.of("ComboEnded")) == \
        [f"idle-{n}" for n in range(5)]
    assert await gifting.end_stale_combos(runtime.sessions, runtime.relay,
                                          timedelta(seconds=0.5), now=clock()) == 0


async def test_a_stale_combo_is_ended_by_the_next_send_when_no_reaper_ran(runtime):
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 1000)
    recorder = Recorder(runtime, where.session_id)
    clock = Clock()
    clock.freeze()
    await send(runtime, fan, where, window=0.2, clock=clock)
    clock.move(timedelta(seconds=0.3))
    await send(runtime, fan, where, window=0.2, clock=clock)
    assert [e["total_count"] for e in recorder.of("ComboEnded")] == [1]
    assert [e["type"] for e in recorder.events[-3:-1]] == ["ComboEnded", "GiftSent"]
    clock.move(timedelta(seconds=0.3))
    assert await gifting.end_stale_combos(runtime.sessions, runtime.relay,
                                          timedelta(seconds=0.2), now=clock()) == 1
    assert [e["total_count"] for e in recorder.of("ComboEnded")] == [1, 1]


async def test_ending_a_session_ends_its_combos(runtime):
    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 1000)
    recorder = Recorder(runtime, where.session_id)
    await send(runtime, fan, where, quantity=5)
    async with runtime.sessions() as session, session.begin():
        await live.end_session(session, where.session_id, where.creator_id)
    await gifting.end_stale_combos(runtime.sessions, runtime.relay, timedelta(seconds=60),
                                   session_id=where.session_id)
    assert [e["total_count"] for e in recorder.of("ComboEnded")] == [5]


async def test_leaderboards_rank_gifters_supporters_and_creators(runtime):
    where = await stage(runtime, "star")
    other = await stage(runtime, "comet")
    fans = {name: await new_viewer(runtime, name, 10_000) for name in ("ann", "bo", "cy")}
    await send(runtime, fans["ann"], where, "hand-hearts")          # 100
    await send(runtime, fans["bo"], where, "doughnut", quantity=5)   # 150
    await send(runtime, fans["cy"], where, "rose", quantity=20)      # 20
    await send(runtime, fans["ann"], where, "rose", quantity=60)     # ann: 160
    await send(runtime, fans["cy"], other, "galaxy")                 # comet: 1000
    async with runtime.sessions() as session:
        top = await recognition.top_gifters(session, where.session_id, limit=10, offset=0)
        assert [(r.rank, r.name, r.coins, r.gifts) for r in top] == [
            (1, "ann", 160, 61), (2, "bo", 150, 5), (3, "cy", 20, 20)]
        page2 = await recognition.top_gifters(session, where.session_id, limit=2, offset=2)
        assert [(r.rank, r.name) for r in page2] == [(3, "cy")]
        for period in Period:
            supporters = await recognition.top_supporters(session, where.creator_id, period,
                                                           limit=10, offset=0)
            assert [r.name for r in supporters] == ["ann", "bo", "cy"]
        creators = await recognition.top_creators(session, Period.WEEK, limit=10, offset=0)
        assert [(r.name, r.diamonds) for r in creators] == [("comet", 500), ("star", 165)]
        totals = await live.totals(session, where.session_id)
        assert (totals.gifts, totals.coins, totals.diamonds) == (86, 330, 165)


async def test_top_gifters_changed_is_published_when_the_sender_is_on_the_podium(runtime):
    where = await stage(runtime)
    recorder = Recorder(runtime, where.session_id)
    fans = [await new_viewer(runtime, f"fan{n}", 10_000) for n in range(4)]
    for n, fan in enumerate(fans):
        await send(runtime, fan, where, "hand-hearts", quantity=4 - n)
    await send(runtime, fans[3], where, "rose")  # fourth place: the podium is unchanged
    tops = recorder.of("TopGiftersChanged")
    assert len(tops) == 3
    assert [e["name"] for e in tops[-1]["top"]] == ["fan0", "fan1", "fan2"]


EVENTS = """subscription($id: ID!) { liveSessionEvents(sessionId: $id) {
  __typename ... on GiftSent { sender { name } gift { name coinPrice } comboCount }
  ... on ComboEnded { sender { name } gift { name } totalCount } } }"""


async def _events_until(runtime, where, publish, kind: str) -> dict:
    """Subscribe as a watcher, run ``publish``, return the first event of ``kind``."""
    from strawberry.relay import to_base64

    from app.graphql.context import Context
    from app.graphql.schema import schema

    stream = await schema.subscribe(
        EVENTS, variable_values={"id": to_base64("LiveSession", where.session_id)},
        context_value=Context(runtime=runtime, authorization=f"Bearer {token('watcher')}"))
    await anext(stream)  # the viewer count comes first
    await publish()
    while (seen := (await asyncio.wait_for(anext(stream), 10)).data["liveSessionEvents"]
           )["__typename"] != kind:
        pass
    await stream.aclose()
    return seen


async def test_gift_events_carry_the_gift_and_sender_so_watchers_need_no_query(runtime):
    where = await stage(runtime)
    viewer = await new_viewer(runtime, "ann", 100)
    statements: list[str] = []

    async def publish() -> None:
        await send(runtime, viewer, where, "rose")
        event.listen(runtime.engine.sync_engine, "before_cursor_execute",
                     lambda *args: statements.append(args[2]))

    async def end() -> None:
        await send(runtime, viewer, where, "rose")
        await gifting.end_stale_combos(runtime.sessions, runtime.relay, timedelta(0),
                                       session_id=where.session_id)

    sent = await _events_until(runtime, where, publish, "GiftSent")
    assert sent == {"__typename": "GiftSent", "sender": {"name": "ann"},
                    "gift": {"name": "Rose", "coinPrice": 1}, "comboCount": 1}
    assert statements == []  # resolving the event for the watcher read nothing
    ended = await _events_until(runtime, where, end, "ComboEnded")
    assert ended == {"__typename": "ComboEnded", "sender": {"name": "ann"},
                     "gift": {"name": "Rose"}, "totalCount": 2}


async def test_events_from_an_older_process_without_the_gift_are_completed(runtime):
    where = await stage(runtime)
    viewer = await new_viewer(runtime, "bob", 100)

    async def publish_bare() -> None:
        await runtime.bus.publish(session_channel(where.session_id), {
            "type": "GiftSent", "session_id": where.session_id, "seq": 2, "send_id": 1,
            "sender_id": viewer, "gift_id": where.gifts["rose"], "quantity": 1, "coins": 1,
            "diamonds": 0, "combo_id": 1, "combo_count": 1})

    sent = await _events_until(runtime, where, publish_bare, "GiftSent")
    assert sent["sender"] == {"name": "bob"} and sent["gift"]["name"] == "Rose"



async def test_leaderboard_and_spending_periods_turn_at_utc_midnight_monday_and_month_start(
        runtime):
    """Under a frozen clock, Roses sent on Sunday 2027-05-30 at 23:59:59.999999, on Monday
    2027-05-31 at 00:00 and at 23:59:59.999999, and on Tuesday 2027-06-01 at 00:00 (UTC)
    land in the days, ISO weeks and months written out below, not computed."""
    from datetime import date

    from sqlalchemy import select

    from app.models import CreatorTotal, SupporterTotal, ViewerSpend

    where = await stage(runtime)
    fan = await new_viewer(runtime, "fan", 100)
    clock = Clock()
    for at in (datetime(2027, 5, 30, 23, 59, 59, 999_999, tzinfo=UTC),
               datetime(2027, 5, 31, tzinfo=UTC),
               datetime(2027, 5, 31, 23, 59, 59, 999_999, tzinfo=UTC),
               datetime(2027, 6, 1, tzinfo=UTC)):
        clock.freeze(at)
        await send(runtime, fan, where, "rose", clock=clock)
    async with runtime.sessions() as session:
        creators = sorted((period, start, gifts) for period, start, gifts in (
            await session.execute(select(CreatorTotal.period, CreatorTotal.period_start,
                                         CreatorTotal.gifts))).all())
        supporters = sorted((period, start, gifts) for period, start, gifts in (
            await session.execute(select(SupporterTotal.period, SupporterTotal.period_start,
                                         SupporterTotal.gifts))).all())
        spend = sorted((await session.execute(select(
            ViewerSpend.period, ViewerSpend.period_start, ViewerSpend.coins))).all())
    buckets = [("all", date(1970, 1, 1), 4),
               ("day", date(2027, 5, 30), 1), ("day", date(2027, 5, 31), 2),
               ("day", date(2027, 6, 1), 1),
               ("month", date(2027, 5, 1), 3), ("month", date(2027, 6, 1), 1),
               ("week", date(2027, 5, 24), 1), ("week", date(2027, 5, 31), 3)]
    assert creators == supporters == buckets
    assert [tuple(row) for row in spend] == [
        ("day", date(2027, 5, 30), 1), ("day", date(2027, 5, 31), 2),
        ("day", date(2027, 6, 1), 1), ("month", date(2027, 5, 1), 3),
        ("month", date(2027, 6, 1), 1)]
