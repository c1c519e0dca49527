"""Shared set-up for gifting tests: a creator live, viewers with coins, a catalogue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from app.events import session_channel
from app.ledger import Currency, Leg, post_transaction, system_account
from app.models import Gift
from app.services import gifting
from app.services.catalogue import seed_default_gifts
from app.services.live import start_session
from app.services.users import coin_account, ensure_user


@dataclass
class Stage:
    creator_id: int
    session_id: int
    gifts: dict[str, int]  # sku -> id


async def give_coins(runtime, user_id: int, coins: int) -> None:
    async with runtime.sessions() as session, session.begin():
        await post_transaction(session, kind="test_grant", legs=[
            Leg(await system_account(session, "coin_issuance", Currency.COIN), -coins),
            Leg(await coin_account(session, user_id), coins)])


async def new_viewer(runtime, name: str, coins: int = 0) -> int:
    async with runtime.sessions() as session, session.begin():
        user_id = (await ensure_user(session, name)).id
    if coins:
        await give_coins(runtime, user_id, coins)
    return user_id


async def stage(runtime, creator: str = "star") -> Stage:
    async with runtime.sessions() as session, session.begin():
        await seed_default_gifts(session)
        creator_id = (await ensure_user(session, creator)).id
        live = await start_session(session, creator_id, "Tonight")
        gifts = {g.sku: g.id for g in (await session.scalars(select(Gift))).all()}
    return Stage(creator_id=creator_id, session_id=live.id, gifts=gifts)


async def send(runtime, sender_id: int, where: Stage, sku: str = "rose", quantity: int = 1,
               key: str | None = None, window: float = 60.0):
    send.counter += 1
    return await gifting.send_gift(
        runtime.sessions, runtime.bus, sender_id=sender_id, session_id=where.session_id,
        gift_id=where.gifts[sku], quantity=quantity,
        idempotency_key=key or f"send-{send.counter}", combo_window=timedelta(seconds=window))


send.counter = 0


class Recorder:
    """Collects the events published on one session's channel."""

    def __init__(self, runtime, session_id: int) -> None:
        self.events: list[dict] = []
        self._original = runtime.bus.publish
        self._channel = session_channel(session_id)

        async def publish(channel, event):
            if channel == self._channel:
                self.events.append(event)
            await self._original(channel, event)

        runtime.bus.publish = publish

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]
