"""Sending gifts: one ledger transaction per gift, combos, leaderboard totals, live events.

``send_gift`` checks the session, the gift and the quantity, prices the gift with
the rate card in force, and posts one balanced transaction: the viewer's coins
out; the creator's share converted to diamonds; the platform's share (and the
remainder of every division) to platform revenue. Events are published only
after the transaction commits, and never for a replayed request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import add_to_counters, total
from app.errors import BusinessRefusal, DomainError, ErrorCode
from app.events import EventBus, session_channel
from app.ledger import (
    Currency,
    InsufficientFunds,
    Leg,
    lock_account,
    post_transaction,
    run_idempotent,
    system_account,
)
from app.ledger.idempotency import check_key
from app.models import (
    Brand,
    CreatorTotal,
    Gift,
    GiftCombo,
    GiftSend,
    LiveSession,
    RateCard,
    SessionGifterTotal,
    SupporterTotal,
    User,
)
from app.plugins import PluginCallFailed, PluginHost
from app.services.brands import budget_account, revenue_account
from app.services.catalogue import is_available
from app.services.live import LIVE, live_session_for_update
from app.services.rates import GiftSplit, current_rate_card, split_gift
from app.services.safeguards import check_age, check_spending
from app.services.users import coin_account, diamond_account, names_and_birthdates
from app.services.wallets import wallet
from app.settings import Settings
from app.sponsorship import (
    PluginAnswerInvalid,
    Quote,
    RateCardTerms,
    SendContext,
    SentGift,
    check_quote,
    check_split,
    check_veto,
)

MAX_QUANTITY = 1000
MAX_SPONSORED_VALUE = 10**9
TOP_GIFTERS_IN_EVENTS = 3
ALL_TIME = date(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class SendResult:
    receipt: GiftSend
    replayed: bool
    wallet_coins: int  # the sender's coins after the send (now, for a replay)


def period_starts(day: date) -> dict[str, date]:
    """The first day of each leaderboard period containing ``day`` (UTC, ISO weeks)."""
    return {"day": day, "week": day - timedelta(days=day.weekday()),
            "month": day.replace(day=1), "all": ALL_TIME}


async def _post_gift_transaction(session: AsyncSession, *, sender_id: int, creator_id: int,
                                 split: GiftSplit, memo: str, brand: str | None,
                                 balances: dict[int, int],
                                 before_balances: Callable[[int], Awaitable[None]]) -> int:
    brand_legs = [] if brand is None else [
        Leg(await budget_account(session, brand), -split.brand_subsidy),
        Leg(await revenue_account(session, brand), split.brand_coins)]
    legs = [
        Leg(await coin_account(session, sender_id), -split.coins_paid),
        *brand_legs,
        Leg(await system_account(session, "platform_revenue", Currency.COIN),
            split.platform_coins),
        Leg(await system_account(session, "creator_earnings", Currency.COIN),
            split.creator_coins),
        Leg(await system_account(session, "diamond_issuance", Currency.DIAMOND),
            -split.creator_diamonds),
        Leg(await diamond_account(session, creator_id), split.creator_diamonds),
    ]
    try:
        return await post_transaction(session, kind="gift", memo=memo,
                                      legs=[leg for leg in legs if leg.amount != 0],
                                      balances=balances, before_balances=before_balances)
    except InsufficientFunds as refusal:
        if brand is not None and refusal.account.code.startswith("brand:"):
            raise BusinessRefusal(
                ErrorCode.SPONSOR_BUDGET_EXHAUSTED, f"The sponsor's budget for this gift is "
                f"spent (it needs {split.brand_subsidy} coins); the gift is unavailable until "
                "the brand adds more.", "giftId") from None
        raise


def _unavailable(gift: Gift, why: str) -> DomainError:
    return DomainError(ErrorCode.GIFT_UNAVAILABLE, f"The gift {gift.name!r} is unavailable: "
                       f"{why}.", "giftId")


async def _sponsored_split(session: AsyncSession, plugins: PluginHost | None, *, gift: Gift,
                           live: LiveSession, sender_id: int, quantity: int, now: datetime,
                           card: RateCard) -> tuple[GiftSplit, str]:
    """Ask the plugin that owns the gift for its veto, quote and split; check every answer."""
    if plugins is None or gift.plugin is None or not plugins.is_active(gift.plugin):
        raise _unavailable(gift, "its sponsor's plugin is not installed")
    brand = await session.scalar(select(Brand.slug).where(Brand.id == gift.brand_id))
    midnight = datetime.combine(now.date(), datetime.min.time(), tzinfo=UTC)
    sent_today = await session.scalar(select(total(GiftSend.quantity)).where(
        GiftSend.sender_id == sender_id, GiftSend.gift_id == gift.id,
        GiftSend.created_at >= midnight))
    send = SendContext(gift_sku=gift.sku, brand=brand, list_price=gift.coin_price,
                       quantity=quantity, viewer_id=sender_id, creator_id=live.creator_id,
                       session_id=live.id, at=now, viewer_sent_today=sent_today)
    owner = gift.plugin
    try:
        veto = check_veto(await plugins.call_owner(owner, "check_send", send=send))
        if veto is not None:
            raise DomainError(ErrorCode.SEND_VETOED, veto.reason.strip(), "giftId")
        quote = await plugins.call_owner(owner, "quote_gift", send=send)
        quote = Quote(gift.coin_price * quantity) if quote is None \
            else check_quote(quote, MAX_SPONSORED_VALUE)
        terms = RateCardTerms(card.version, card.creator_share_bps, card.diamonds_per_coin)
        split = await plugins.call_owner(owner, "split_revenue", send=send, quote=quote,
                                         rate_card=terms)
    except PluginCallFailed:
        raise _unavailable(gift, "its sponsor's plugin failed") from None
    except PluginAnswerInvalid as invalid:
        plugins.record_failure(owner, f"invalid answer: {invalid}")
        raise _unavailable(gift, "its sponsor's plugin gave an invalid answer") from None
    if split is None:
        return split_gift(quote.value, card, brand_subsidy=quote.brand_subsidy), brand
    try:
        split = check_split(split, quote.value)
    except PluginAnswerInvalid as invalid:
        plugins.record_failure(owner, f"invalid answer: {invalid}")
        raise _unavailable(gift, "its sponsor's plugin gave an invalid answer") from None
    return GiftSplit(value=quote.value, coins_paid=quote.viewer_pays,
                     brand_subsidy=quote.brand_subsidy, creator_coins=split.creator_coins,
                     platform_coins=split.platform_coins, brand_coins=split.brand_coins,
                     creator_diamonds=split.creator_coins * card.diamonds_per_coin), brand


async def _continue_combo(session: AsyncSession, *, live: LiveSession, sender_id: int,
                          gift: Gift, quantity: int, value: int, now: datetime,
                          window: timedelta) -> tuple[int, int, dict[str, Any] | None]:
    """Extend the sender's open combo for this gift, or start one (ending a stale one).

    The sender's wallet row is already locked by the debit, so one sender's sends
    are serialised here and the combo cannot fork. The usual case, a combo still
    open and within the window, is one UPDATE.
    """
    extended = (await session.execute(
        update(GiftCombo).where(GiftCombo.session_id == live.id, GiftCombo.sender_id == sender_id,
                                GiftCombo.gift_id == gift.id, GiftCombo.ended_at.is_(None),
                                GiftCombo.last_at >= now - window)
        .values(count=GiftCombo.count + quantity, sends=GiftCombo.sends + 1,
                coins=GiftCombo.coins + value, last_at=now)
        .returning(GiftCombo.id, GiftCombo.count)
        .execution_options(synchronize_session=False))).first()
    if extended is not None:
        return extended.id, extended.count, None
    open_combo = await session.scalar(
        select(GiftCombo).where(GiftCombo.session_id == live.id,
                                GiftCombo.sender_id == sender_id, GiftCombo.gift_id == gift.id,
                                GiftCombo.ended_at.is_(None)).with_for_update())
    ended = None
    if open_combo is not None:
        ended = await _end_combos(session, [GiftCombo.id == open_combo.id], now)
    combo = GiftCombo(session_id=live.id, sender_id=sender_id, gift_id=gift.id, count=quantity,
                      sends=1, coins=value, started_at=now, last_at=now)
    session.add(combo)
    await session.flush()
    assert combo.id is not None
    return combo.id, combo.count, (ended[0] if ended else None)


async def _end_combos(session: AsyncSession, conditions: list[Any], now: datetime
                      ) -> list[dict[str, Any]]:
    """End open combos matching ``conditions``; only the caller that ends one reports it."""
    rows = (await session.execute(
        update(GiftCombo).where(GiftCombo.ended_at.is_(None), *conditions)
        .values(ended_at=now)
        .returning(GiftCombo.id, GiftCombo.session_id, GiftCombo.sender_id, GiftCombo.gift_id,
                   GiftCombo.count, GiftCombo.sends, GiftCombo.coins)
        .execution_options(synchronize_session=False))).all()
    if not rows:
        return []
    names = dict((await session.execute(select(User.id, User.name).where(
        User.id.in_({r.sender_id for r in rows})))).all())
    gifts = {g.id: g for g in (await session.scalars(select(Gift).where(
        Gift.id.in_({r.gift_id for r in rows})))).all()}
    return [{"type": "ComboEnded", "combo_id": r.id, "session_id": r.session_id,
             "sender_id": r.sender_id, "sender_name": names[r.sender_id],
             "gift_id": r.gift_id, "gift": gift_fields(gifts[r.gift_id]),
             "total_count": r.count, "sends": r.sends, "total_coins": r.coins} for r in rows]


def gift_fields(gift: Gift) -> dict[str, Any]:
    """The gift as it was when sent, JSON-safe, carried by events so that subscribers
    (thousands per session) need no query to show it."""
    return gift.model_dump(mode="json")


def _amounts(send: GiftSend, value: int) -> dict[str, int]:
    return {"coins": value, "diamonds": send.creator_diamonds, "gifts": send.quantity}


async def _add_to_gifter_totals(session: AsyncSession, send: GiftSend, value: int,
                                now: datetime) -> None:
    """The rows of this sender's totals (as a creator's supporter, in the session)."""
    await add_to_counters(session, SupporterTotal,
                          ("creator_id", "period", "period_start", "sender_id"),
                          [{"creator_id": send.creator_id, "period": period,
                            "period_start": start, "sender_id": send.sender_id,
                            **_amounts(send, value)}
                           for period, start in period_starts(now.date()).items()])
    await add_to_counters(session, SessionGifterTotal, ("session_id", "sender_id"),
                          [{"session_id": send.session_id, "sender_id": send.sender_id,
                            **_amounts(send, value)}])


async def _add_to_creator_totals(session: AsyncSession, send: GiftSend, value: int,
                                 now: datetime) -> None:
    """The creator's own totals: rows shared by everyone gifting that creator."""
    await add_to_counters(session, CreatorTotal, ("period", "period_start", "creator_id"),
                          [{"period": period, "period_start": start,
                            "creator_id": send.creator_id, **_amounts(send, value)}
                           for period, start in period_starts(now.date()).items()])


async def top_gifters_event(session: AsyncSession, session_id: int) -> dict[str, Any]:
    rows = await session.execute(
        select(SessionGifterTotal.sender_id, User.name, SessionGifterTotal.coins)
        .join(User, User.id == SessionGifterTotal.sender_id)
        .where(SessionGifterTotal.session_id == session_id)
        .order_by(SessionGifterTotal.coins.desc(), SessionGifterTotal.sender_id.desc())
        .limit(TOP_GIFTERS_IN_EVENTS))
    return {"type": "TopGiftersChanged", "session_id": session_id,
            "top": [{"user_id": r.sender_id, "name": r.name, "coins": r.coins} for r in rows]}


async def send_gift(sessions: async_sessionmaker[AsyncSession], bus: EventBus, *,
                    sender_id: int, session_id: int, gift_id: int, quantity: int,
                    idempotency_key: str, combo_window: timedelta, settings: Settings,
                    plugins: PluginHost | None = None) -> SendResult:
    check_key(idempotency_key)
    if type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:
        raise DomainError(ErrorCode.INVALID_QUANTITY,
                          f"quantity must be between 1 and {MAX_QUANTITY}.", "quantity")

    async def send(session: AsyncSession) -> dict[str, Any]:
        now = datetime.now(UTC)
        live = await live_session_for_update(session, session_id)
        if live.status != LIVE:
            raise DomainError(ErrorCode.SESSION_NOT_LIVE, "This session is not live; gifts "
                              "can only be sent during a live session.", "sessionId")
        if live.creator_id == sender_id:
            raise DomainError(ErrorCode.CANNOT_GIFT_SELF, "You cannot send gifts to your own "
                              "live session.", "sessionId")
        gift = await session.get(Gift, gift_id)
        if gift is None:
            raise DomainError(ErrorCode.NOT_FOUND, "No gift has this ID.", "giftId")
        if not is_available(gift, now):
            raise DomainError(ErrorCode.GIFT_UNAVAILABLE,
                              f"The gift {gift.name!r} is not available right now.", "giftId")
        people = await names_and_birthdates(session, [sender_id, live.creator_id])
        sender_name, sender_birthdate = people.get(sender_id, ("", None))
        check_age(settings, sender_birthdate, doing="sending gifts")
        check_age(settings, people.get(live.creator_id, ("", None))[1],
                  doing="receiving gifts", whose="The creator's")
        # This viewer's sends are serialised by the lock on their wallet, so spending caps
        # and campaign caps count exactly.
        wallet = await coin_account(session, sender_id)
        held = await lock_account(session, wallet)
        card = await current_rate_card(session, now)
        brand = None
        if gift.plugin is not None:
            split, brand = await _sponsored_split(session, plugins, gift=gift, live=live,
                                                  sender_id=sender_id, quantity=quantity,
                                                  now=now, card=card)
        else:
            split = split_gift(gift.coin_price * quantity, card)
        value = split.value
        if held < split.coins_paid:  # refused before anything is written or locked
            raise InsufficientFunds(wallet, needed=split.coins_paid, available=held)
        await check_spending(session, settings, sender_id, split.coins_paid, now)
        combo_id, combo_count, ended = await _continue_combo(
            session, live=live, sender_id=sender_id, gift=gift, quantity=quantity, value=value,
            now=now, window=combo_window)
        receipt = GiftSend(
            session_id=live.id, gift_id=gift.id, sender_id=sender_id, creator_id=live.creator_id,
            quantity=quantity, unit_price=gift.coin_price, coins_paid=split.coins_paid,
            brand_subsidy=split.brand_subsidy, creator_coins=split.creator_coins,
            platform_coins=split.platform_coins, brand_coins=split.brand_coins,
            creator_diamonds=split.creator_diamonds, rate_card_version=card.version,
            combo_id=combo_id, combo_count=combo_count, created_at=now)
        top: dict[str, Any] = {}

        async def record(transaction_id: int) -> None:
            receipt.transaction_id = transaction_id
            session.add(receipt)
            await session.flush()
            await _add_to_gifter_totals(session, receipt, value, now)
            top.update(await top_gifters_event(session, live.id))

        # The creator's rows (diamond balance, totals) are shared by everyone gifting them:
        # everything else is written first (``record``), so their locks are held for the
        # fewest statements before the commit.
        balances: dict[int, int] = {}
        await _post_gift_transaction(
            session, sender_id=sender_id, creator_id=live.creator_id, split=split,
            memo=f"{gift.sku} x{quantity}", brand=brand, balances=balances,
            before_balances=record)
        await _add_to_creator_totals(session, receipt, value, now)
        events = [ended] if ended else []
        events.append({"type": "GiftSent", "session_id": live.id, "send_id": receipt.id,
                       "sender_id": sender_id, "sender_name": sender_name,
                       "gift_id": gift.id, "gift": gift_fields(gift), "quantity": quantity,
                       "coins": value, "diamonds": split.creator_diamonds,
                       "combo_id": combo_id, "combo_count": combo_count})
        if any(entry["user_id"] == sender_id for entry in top["top"]):
            events.append(top)
        sponsor = None if brand is None else {"plugin": gift.plugin, "brand": brand,
                                              "sku": gift.sku}
        sent.append(receipt)
        return {"send_id": receipt.id, "events": events, "sponsor": sponsor,
                "wallet_coins": balances.get(wallet.id)}

    sent: list[GiftSend] = []  # the receipt written by this call, when not a replay

    outcome = await run_idempotent(
        sessions, scope=f"user:{sender_id}", key=idempotency_key, operation="send_gift",
        request={"session_id": session_id, "gift_id": gift_id, "quantity": quantity},
        action=send)
    if not outcome["replayed"]:
        for event in outcome["events"]:
            await bus.publish(session_channel(session_id), event)
    if outcome["replayed"] or outcome.get("wallet_coins") is None:
        async with sessions() as session:
            receipt = await session.get(GiftSend, outcome["send_id"])
            wallet_coins = (await wallet(session, sender_id)).coins
    else:
        receipt, wallet_coins = sent[-1], outcome["wallet_coins"]
    assert receipt is not None
    sponsor = outcome.get("sponsor")
    if sponsor and plugins is not None and not outcome["replayed"]:
        await _tell_sponsor(plugins, sponsor, receipt)
    return SendResult(receipt=receipt, replayed=outcome["replayed"], wallet_coins=wallet_coins)


async def _tell_sponsor(plugins: PluginHost, sponsor: dict[str, str], receipt: GiftSend) -> None:
    sent = SentGift(receipt_id=receipt.id, gift_sku=sponsor["sku"], brand=sponsor["brand"],
                    quantity=receipt.quantity, viewer_id=receipt.sender_id,
                    creator_id=receipt.creator_id, session_id=receipt.session_id,
                    viewer_paid=receipt.coins_paid, brand_subsidy=receipt.brand_subsidy,
                    brand_coins=receipt.brand_coins, at=receipt.created_at)
    try:
        await plugins.call_owner(sponsor["plugin"], "gift_sent", gift=sent)
    except PluginCallFailed:
        pass  # logged and counted by the host; the gift stands


async def end_stale_combos(sessions: async_sessionmaker[AsyncSession], bus: EventBus,
                           window: timedelta, *, session_id: int | None = None) -> int:
    """End combos idle for longer than the window (or all of a session's); publish each once.

    Safe to run in every server process at once: the conditional UPDATE hands each
    combo to exactly one of them.
    """
    now = datetime.now(UTC)
    conditions = [GiftCombo.session_id == session_id] if session_id is not None else \
        [GiftCombo.last_at < now - window]
    async with sessions() as session, session.begin():
        ended = await _end_combos(session, conditions, now)
    for event in ended:
        await bus.publish(session_channel(event["session_id"]), event)
    return len(ended)
