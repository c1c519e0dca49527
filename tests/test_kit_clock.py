"""The test kit's clock is the time a plugin sees: ``send.at``, "today" and the receipts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app import Brand, SendContext, SponsoredGift, hookimpl


class Recorder:
    """A brand plugin that notes when each send happened, as its hooks were told."""

    def __init__(self) -> None:
        self.seen: list[tuple[datetime, int]] = []

    @hookimpl
    def register_brands(self) -> list[Brand]:
        return [Brand("tick", "Tick")]

    @hookimpl
    def register_sponsored_gifts(self) -> list[SponsoredGift]:
        return [SponsoredGift(sku="tick-gift", name="Tick", brand="tick", coin_price=10,
                              image_url="https://cdn.example.com/tick.webp")]

    @hookimpl
    def check_send(self, send: SendContext) -> None:
        self.seen.append((send.at, send.viewer_sent_today))


async def test_send_at_and_today_follow_the_kit_clock(livegifts):
    plugin = Recorder()
    await livegifts.start(("tick", plugin))
    stage = await livegifts.go_live("creator")
    fan = await livegifts.viewer("fan", coins=1_000)

    late = livegifts.clock.freeze(datetime(2027, 3, 1, 23, tzinfo=UTC))
    first = await livegifts.send(fan, stage, "tick-gift", quantity=2)
    later = livegifts.clock.move(timedelta(minutes=30))
    second = await livegifts.send(fan, stage, "tick-gift")
    next_day = livegifts.clock.move(timedelta(hours=2))  # 01:30 UTC on 2 March
    third = await livegifts.send(fan, stage, "tick-gift")

    # The hooks may be asked more than once for a send; each time with the same answers.
    assert sorted(set(plugin.seen)) == [(late, 0), (later, 2), (next_day, 0)]
    assert [r.created_at for r in (first, second, third)] == [late, later, next_day]
