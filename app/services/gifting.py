"""Sending gifts: each gift one balanced ledger transaction, written in batches; combos,
leaderboard totals, live events.

``send_gift`` checks the request and hands it to this process's gift writer, which writes
every send that arrived while it was writing the last batch together, in one database
transaction with a constant number of statements: one INSERT claims all the idempotency
keys; the wallets are locked in id order and every rule (the session, the gift, ages, the
sponsor's plugin, coins, spending caps) is checked in Python against the locked rows; one
INSERT each writes the ledger transactions, their entries and the receipts; one statement
each moves the balances and the leaderboard totals. A popular creator's rows are updated
once a batch, not once a gift. When idle, a send is written at once (a batch of one).
Every statement is built once; on PostgreSQL, rows travel as one array a column, and after
the first statement the driver runs them in the batch's transaction (see
:class:`app.db.Query` and :class:`app.db.ArrayStatement`).

Each gift is priced with the rate card in force and posted as its own balanced
transaction: the viewer's coins out; the creator's share converted to diamonds; the
platform's share (and the remainder of every division) to platform revenue. A refused
send is refused alone (a business refusal keeps its idempotency key refused) and the rest
of its batch goes through; a batch that fails for another reason is written again one send
at a time. A batch's live events are written to the event log in its transaction and
published after it commits (all of a batch's in one publish: one round trip to Redis);
a replay writes and publishes none.

The writer never waits for a plugin. A sponsored send the batch finds without its
plugin's answers to exactly the questions the locked rows raise is handed back to its
caller, which asks the plugin (behind the plugin's bulkhead, holding no lock) and sends
again. Its plugin's ``gift_sent`` is told of it from the event log (a ``BrandGiftSent``
event written with the send), by the same deliveries as webhooks
(:mod:`app.services.webhooks`): after the sender is answered, at least once, in order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import operator
import weakref
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Union

from sqlalchemy import select, union_all, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import (
    ArrayStatement,
    Query,
    add_to_counters,
    all_loaded,
    among,
    as_loaded,
    execute_arrays,
    insert_rows,
    one_of,
    total,
    update_rows,
    upsert,
)
from app.errors import BusinessRefusal, DomainError, ErrorCode
from app.ledger import (
    AccountRef,
    Claim,
    Currency,
    InsufficientFunds,
    Leg,
    Posting,
    claim_keys,
    lock_accounts,
    post_transactions,
    settle_keys,
    system_account,
)
from app.models import (
    Brand,
    BrandShareCarry,
    CreatorTotal,
    Gift,
    GiftCombo,
    GiftSend,
    IdempotencyRecord,
    LiveSession,
    SessionGifterTotal,
    SupporterTotal,
    User,
    ViewerSpend,
)
from app.models.base import utcnow
from app.observability import REQUEST_ID
from app.plugins import PluginCallFailed, PluginHost
from app.relay import Relay
from app.services import event_log, goals, matches
from app.services.brands import budget_account, revenue_account
from app.services.catalogue import is_available
from app.services.live import LIVE, end_session, session_not_found
from app.services.live import totals as session_totals
from app.services.rates import GiftSplit, current_rate_card, split_gift
from app.services.safeguards import (
    Spending,
    check_age,
    check_spending,
    spend_rows,
    spending_of,
)
from app.services.users import coin_accounts, diamond_accounts, names_and_birthdates
from app.services.wallets import wallet
from app.settings import Settings
from app.sponsorship import (
    BrandShare,
    PluginAnswerInvalid,
    Quote,
    RateCardTerms,
    SendContext,
    check_quote,
    check_split,
    check_veto,
    share_with_carry,
)

logger = logging.getLogger(__name__)
MAX_QUANTITY = 1000
MAX_SPONSORED_VALUE = 10**9
MAX_BATCH = 200  # sends written in one database transaction
COMBOS_A_TRANSACTION = 100  # idle combos the reaper ends in one transaction
MAX_SPONSOR_QUESTIONS = 4  # a sponsored send's rounds of asking before it is refused
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


async def send_gift(sessions: async_sessionmaker[AsyncSession], relay: Relay, *,
                    sender_id: int, session_id: int, gift_id: int, quantity: int,
                    idempotency_key: str, combo_window: timedelta, settings: Settings,
                    plugins: PluginHost | None = None,
                    clock: Callable[[], datetime] = utcnow) -> SendResult:
    """Send ``quantity`` of a gift into a live session; raise :class:`DomainError` if refused.
    ``clock`` is the time the send's rules see: its plugin's ``SendContext.at``, "today" for
    caps and ages, the gift's availability window, its receipt's time."""
    claim = Claim.of(f"user:{sender_id}", idempotency_key, "send_gift",
                     {"session_id": session_id, "gift_id": gift_id, "quantity": quantity})
    if type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:
        raise DomainError(ErrorCode.INVALID_QUANTITY,
                          f"quantity must be between 1 and {MAX_QUANTITY}.", "quantity")
    request = _Request(sender_id, session_id, gift_id, quantity, claim, combo_window, settings,
                       plugins, relay, clock, asyncio.get_running_loop().create_future())
    writer = _writer(sessions)
    sponsor = None if plugins is None else plugins.sponsor_of(gift_id)
    if sponsor is None:  # a core gift (or one this process has not synced: the batch asks)
        try:
            return await writer.send(request)
        except _AskSponsor as asked:
            return await _send_sponsored(sessions, writer, request, asked.question.name,
                                         asked.question)
    if plugins is not None and (wait := plugins.paused(sponsor.plugin)) is not None:
        raise _unavailable(sponsor.name, NOT_ANSWERING, wait)
    return await _send_sponsored(sessions, writer, request, sponsor.name, None)


async def _send_sponsored(sessions: async_sessionmaker[AsyncSession], writer: _Writer,
                          request: _Request, name: str, question: _Question | None
                          ) -> SendResult:
    """Ask the sponsor here, by the sender's own request, holding no lock, then hand the
    send to the writer with the answers; again if the batch finds the facts changed. The
    viewer's sends of the gift take turns (each one's answers depend on the ones before),
    each waiting for its turn no longer than a plugin call may take."""
    turn = writer.turn(request.sender_id, request.gift_id)
    try:
        async with asyncio.timeout(request.settings.plugin_timeout_seconds):
            await turn.acquire()
    except TimeoutError:
        raise _unavailable(name, NOT_ANSWERING, 1) from None
    try:
        if question is None:
            question = await _question(sessions, request)
        for _ in range(MAX_SPONSOR_QUESTIONS):
            if question is not None:  # None: the batch answers the send without asking
                answer = await _ask_sponsor(request.plugins, question)
                if isinstance(answer, DomainError):
                    # Its key was unused when asked and a refusal is not kept for it:
                    # nothing to write, so the sender is not queued behind a batch.
                    assert not answer.recorded
                    raise answer
                request.quotes[question] = answer
                request.done = writer.loop.create_future()
            try:
                return await writer.send(request)
            except _AskSponsor as asked:
                question = asked.question
    finally:
        turn.release()
    raise DomainError(ErrorCode.GIFT_UNAVAILABLE, "This sponsored gift's terms changed while "
                      "its sponsor was asked (your other sends of it went first); send it "
                      "again.", "giftId", retry_after=1)


# The writer: batches of the sends that arrive while the last batch is written -----------


@dataclass(eq=False, slots=True)
class _Request:
    sender_id: int
    session_id: int
    gift_id: int
    quantity: int
    claim: Claim
    combo_window: timedelta
    settings: Settings
    plugins: PluginHost | None
    relay: Relay
    clock: Callable[[], datetime]
    done: asyncio.Future[SendResult]
    # A sponsored send's plugin answers, by the question they answer (see _quoted).
    quotes: dict[_Question, GiftSplit | DomainError] = field(default_factory=dict)
    # The sender's request: its sponsor's gift_sent failures are logged under its id.
    request_id: str | None = field(default_factory=REQUEST_ID.get)

    def settle(self, result: SendResult | BaseException) -> None:
        if self.done.done():
            return  # the caller went away; what was written stands
        if isinstance(result, BaseException):
            self.done.set_exception(result)
        else:
            self.done.set_result(result)


class _Writer:
    """One database's gift writer in one event loop: while it writes and delivers a batch
    (callers answered, events published), new sends wait and form the next batch (no
    timer: an idle writer writes a send after one turn of the loop). Delivering before
    writing on keeps batches large: callers answered sooner would only send again into a
    smaller one (measured: a third fewer gifts a second when delivery ran beside the next
    batch)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.loop = asyncio.get_running_loop()
        self.waiting: list[_Request] = []
        self.task: asyncio.Task[None] | None = None
        self.turns: weakref.WeakValueDictionary[tuple[int, int], asyncio.Lock] = \
            weakref.WeakValueDictionary()

    def turn(self, sender_id: int, gift_id: int) -> asyncio.Lock:
        """The turn a viewer's sends of one sponsored gift take to ask its plugin and be
        written: the plugin's answers (a daily cap, say) depend on the sends before. Only
        that viewer's sends of that gift in this process wait for it."""
        key = (sender_id, gift_id)
        lock = self.turns.get(key)
        if lock is None:
            lock = self.turns[key] = asyncio.Lock()
        return lock

    async def send(self, request: _Request) -> SendResult:
        self.waiting.append(request)
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._write_waiting())
        return await request.done

    async def _write_waiting(self) -> None:
        batch: list[_Request] = []
        try:
            while self.waiting:
                # One turn of the event loop first: sends already under way (their
                # requests read, their documents executing) join this batch instead of
                # forming the next, nearly empty one (measured: a fifth more gifts a second).
                await asyncio.sleep(0)
                batch, self.waiting = _next_batch(self.waiting)
                if batch:
                    await self._deliver(await _write(self.sessions, batch))
                    batch = []
        except BaseException:  # cancelled with the process: nobody waits forever
            for request in [*batch, *self.waiting]:
                request.settle(RuntimeError("the server is stopping; send again"))
            self.waiting = []
            raise

    async def _deliver(self, written: list[tuple[_Request, Outcome | BaseException]]) -> None:
        """Answer the callers who wait for nothing more first: a gift's sender is not queued
        behind its own event's fan-out to this process's subscribers. Then every event of
        the batch, in order, in one publish (one round trip to Redis); then replays are
        answered."""
        later: list[tuple[_Request, dict[str, Any]]] = []
        for request, outcome in written:
            if isinstance(outcome, BaseException):  # refusals, failures, questions to ask
                request.settle(outcome)
            elif isinstance(outcome, _Sent):
                request.settle(outcome.answer)
            else:
                later.append((request, outcome))
        sent = [(request, outcome) for request, outcome in written if isinstance(outcome, _Sent)]
        if sent:  # a batch shares one relay; what it fails to publish, it publishes later
            await sent[0][0].relay.committed([event for _, outcome in sent
                                              for event in outcome.events])
        for request, replayed in later:
            try:
                request.settle(await _replayed(self.sessions, request, replayed))
            except Exception as failure:
                request.settle(failure)

    async def written(self) -> None:
        """Wait until every send handed over is written and delivered."""
        while self.task is not None and not self.task.done():
            await asyncio.wait([self.task])


_writers: weakref.WeakKeyDictionary[Any, _Writer] = weakref.WeakKeyDictionary()
# A send's outcome: written (to deliver), replayed (its stored result) or refused.
Outcome = Union["_Sent", dict[str, Any], DomainError]


def _writer(sessions: async_sessionmaker[AsyncSession]) -> _Writer:
    writer = _writers.get(sessions)
    if writer is None or writer.loop is not asyncio.get_running_loop():
        writer = _writers[sessions] = _Writer(sessions)
    return writer


async def written(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Wait until every send handed to this process's writer is written. A send whose
    caller went away (a cancelled request) is still written: its idempotency key tells
    the caller's retry what happened."""
    writer = _writers.get(sessions)
    if writer is not None and writer.loop is asyncio.get_running_loop():
        await writer.written()


def _next_batch(waiting: list[_Request]) -> tuple[list[_Request], list[_Request]]:
    """The first sends waiting, up to ``MAX_BATCH``, with distinct idempotency keys and the
    same settings, plugins, relay and clock; the rest wait for the next batch."""
    waiting = [request for request in waiting if not request.done.done()]
    if not waiting:
        return [], []
    first, batch, rest, keys = waiting[0], [], [], set()
    for request in waiting:
        key = (request.claim.scope, request.claim.key)
        if len(batch) < MAX_BATCH and key not in keys and request.settings is first.settings \
                and request.plugins is first.plugins and request.relay is first.relay \
                and request.clock is first.clock:
            batch.append(request)
            keys.add(key)
        else:
            rest.append(request)
    return batch, rest


async def _write(sessions: async_sessionmaker[AsyncSession], batch: list[_Request], *,
                 again: bool = False) -> list[tuple[_Request, Outcome | BaseException]]:
    """Write a batch; each send's outcome. A batch that fails is written again one send at a
    time, so that one send's failure does not fail the others; a lone send whose connection
    was lost (at COMMIT, its outcome unknown) is tried once more too: its idempotency key
    makes that safe, and answers it as written if the lost COMMIT had gone through."""
    try:
        outcomes = await _write_batch(sessions, batch)
    except Exception as failure:
        lost = isinstance(failure, DBAPIError) and failure.connection_invalidated
        if len(batch) == 1 and (again or not lost):
            return [(batch[0], failure)]
        return [alone for request in batch
                for alone in await _write(sessions, [request], again=True)]
    return list(zip(batch, outcomes, strict=True))


async def _replayed(sessions: async_sessionmaker[AsyncSession], request: _Request,
                    result: dict[str, Any]) -> SendResult:
    """A replay's answer: the receipt and the wallet as they are now."""
    async with sessions() as session:
        receipt = await session.get(GiftSend, result["send_id"])
        coins = (await wallet(session, request.sender_id)).coins
    assert receipt is not None
    return SendResult(receipt=receipt, replayed=True, wallet_coins=coins)


async def _write_batch(sessions: async_sessionmaker[AsyncSession], batch: list[_Request]
                       ) -> list[Outcome]:
    """Write a batch in one database transaction; each send's outcome, in order."""
    async with sessions() as session, session.begin():
        answers = await claim_keys(session, [request.claim for request in batch])
        claimed = [(r, a) for r, a in zip(batch, answers, strict=True) if isinstance(a, int)]
        settled: dict[int, _Sent | DomainError] = {}
        if claimed:
            sends = await _Batch.load(session, [request for request, _ in claimed])
            for request, claim_id in claimed:
                try:
                    settled[claim_id] = await sends.accept(request)
                except DomainError as refusal:
                    settled[claim_id] = refusal
            await sends.write()
            await settle_keys(session, {claim_id: outcome.result if isinstance(outcome, _Sent)
                                        else outcome for claim_id, outcome in settled.items()})
        return [settled[answer] if isinstance(answer, int) else answer for answer in answers]


# One batch: what it reads and locks, and what its accepted sends write -----------------


@dataclass(eq=False, slots=True)
class _Sent:
    """An accepted send: its receipt row (a receipt once written), what its ledger
    transaction needs, its events."""

    row: dict[str, Any]
    split: GiftSplit
    brand: str | None
    coins: AccountRef  # the sender's wallet
    memo: str
    combo: _Combo
    wallet_coins: int
    sponsor: dict[str, str] | None
    events: list[dict[str, Any]]
    request_id: str | None
    receipt: GiftSend = field(init=False)

    @property
    def result(self) -> dict[str, Any]:
        return {"send_id": self.receipt.id, "wallet_coins": self.wallet_coins}

    @property
    def answer(self) -> SendResult:
        return SendResult(receipt=self.receipt, replayed=False, wallet_coins=self.wallet_coins)

    def amounts(self) -> dict[str, int]:
        return {"coins": self.split.value, "diamonds": self.row["creator_diamonds"],
                "gifts": self.row["quantity"]}


@dataclass(eq=False, slots=True)
class _Combo:
    """An open combo as a batch reads it (locked) and continues it, or one it starts."""

    id: int | None
    session_id: int
    sender_id: int
    gift_id: int
    count: int
    sends: int
    coins: int
    started_at: datetime
    last_at: datetime
    changed: bool = False  # to be written: continued or started by the batch

    @classmethod
    def of(cls, row: Any) -> _Combo:
        return cls(*row)

    def row(self) -> dict[str, Any]:
        """The columns of a started combo."""
        return {name: getattr(self, name) for name in self.__slots__[1:-1]}

    def progress(self) -> dict[str, Any]:
        """The columns a continued combo changes."""
        return {"id": self.id, "count": self.count, "sends": self.sends, "coins": self.coins,
                "last_at": self.last_at}


_combos = GiftCombo.__table__.c
# What a batch reads, built once (a statement built for every batch costs more than its
# round trip): the sessions it gifts into, share-locked (see _Batch.load), its gifts, and
# the open combos of its senders in its sessions, locked in id order.
_LIVES = Query(lambda dialect: select(*LiveSession.__table__.c)
               .where(among(dialect, LiveSession.__table__.c.id, "ids"))
               .order_by(LiveSession.__table__.c.id).with_for_update(read=True, key_share=True))
_GIFTS = Query(lambda dialect: select(*Gift.__table__.c)
               .where(among(dialect, Gift.__table__.c.id, "ids")))
_OPEN_COMBOS = Query(lambda dialect: select(*(_combos[name] for name in _Combo.__slots__[:-1]))
                     .where(_combos.ended_at.is_(None),
                            among(dialect, _combos.session_id, "sessions"),
                            among(dialect, _combos.sender_id, "senders"))
                     .order_by(_combos.id).with_for_update())


class _Batch:
    """One transaction's sends: the rows they read and lock (:meth:`load`), each send
    checked against them and the sends before it (:meth:`accept`), then written together
    (:meth:`write`)."""

    def __init__(self, session: AsyncSession, now: datetime) -> None:
        self.session, self.now = session, now
        self.sent: list[_Sent] = []
        self.budgets_low: list[dict[str, Any]] = []  # BrandBudgetLow events
        self.ended_combos: list[int] = []  # stale combos a send of the batch ends
        self.shown: dict[int, dict[str, Any]] = {}  # gift id -> its fields in events

    @classmethod
    async def load(cls, session: AsyncSession, requests: list[_Request]) -> _Batch:
        """Read what the sends need and lock the wallets and sponsor budgets they debit."""
        senders = sorted({r.sender_id for r in requests})
        # Share-locked, so that no session ends while gifts are sent into it, and no match
        # of theirs starts or ends: the batch's time, read once they are held, says exactly
        # whether its gifts count in a match (see app.services.matches).
        lives = {live.id: live for live in all_loaded(LiveSession, await _LIVES.rows(
            session, ids=sorted({r.session_id for r in requests})))}
        batch = cls(session, requests[0].clock())
        batch.lives = lives
        batch.gifts = {gift.id: gift for gift in all_loaded(Gift, await _GIFTS.rows(
            session, ids=sorted({r.gift_id for r in requests})))}
        creators = sorted({live.creator_id for live in batch.lives.values()})
        batch.people = await names_and_birthdates(session, [*senders, *creators])
        batch.wallets = await coin_accounts(session, senders)
        batch.earnings = await diamond_accounts(session, creators)
        sponsored = {g.brand_id for g in batch.gifts.values() if g.plugin is not None}
        batch.brands = dict((await session.execute(select(Brand.id, Brand.slug).where(
            Brand.id.in_(sponsored)))).all()) if sponsored else {}
        batch.budgets = {slug: await budget_account(session, slug)
                         for slug in batch.brands.values()}
        batch.carries, batch.carried = {}, set()
        # The sender's wallet lock serialises their sends: caps count exactly.
        batch.balances = await lock_accounts(session, [*batch.wallets.values(),
                                                       *batch.budgets.values()])
        batch.card = await current_rate_card(session, batch.now)
        batch.spending = await spending_of(session, senders, batch.now)
        batch.sent_today = await _sent_today(session, requests, batch.gifts, batch.now) \
            if sponsored else {}
        if batch.brands:  # locked after the budgets, in brand order: every writer's order
            batch.carries = dict.fromkeys(batch.brands, 0)  # a brand's row: with its first share
            batch.carries |= dict((await session.execute(
                select(BrandShareCarry.brand_id, BrandShareCarry.carry)
                .where(BrandShareCarry.brand_id.in_(batch.brands))
                .order_by(BrandShareCarry.brand_id).with_for_update())).all())
        batch.combos = {(c.session_id, c.sender_id, c.gift_id): c for c in map(
            _Combo.of, await _OPEN_COMBOS.rows(
                session, sessions=sorted({r.session_id for r in requests}), senders=senders))}
        return batch

    async def accept(self, request: _Request) -> _Sent:
        """Check one send against the rules and the batch so far; note what it writes."""
        now, quantity, sender_id = self.now, request.quantity, request.sender_id
        live = self.lives.get(request.session_id)
        if live is None:
            raise session_not_found()
        if live.status != LIVE:
            raise DomainError(ErrorCode.SESSION_NOT_LIVE, "This session is not live; gifts "
                              "can only be sent during a live session.", "sessionId")
        if live.creator_id == sender_id:
            raise DomainError(ErrorCode.CANNOT_GIFT_SELF, "You cannot send gifts to your own "
                              "live session.", "sessionId")
        gift = self.gifts.get(request.gift_id)
        if gift is None:
            raise DomainError(ErrorCode.NOT_FOUND, "No gift has this ID.", "giftId")
        if not is_available(gift, now):
            raise DomainError(ErrorCode.GIFT_UNAVAILABLE,
                              f"The gift {gift.name!r} is not available right now.", "giftId")
        sender_name, sender_birthdate = self.people.get(sender_id, ("", None))
        check_age(request.settings, sender_birthdate, doing="sending gifts", today=now.date())
        check_age(request.settings, self.people.get(live.creator_id, ("", None))[1],
                  doing="receiving gifts", whose="The creator's", today=now.date())
        brand = None
        if gift.plugin is not None:
            brand = self.brands.get(gift.brand_id)
            split = _quoted(request, _Question(
                gift.id, gift.sku, gift.name, gift.coin_price, gift.plugin, brand, live.id,
                live.creator_id, sender_id, quantity,
                self.sent_today.get((sender_id, gift.id), 0), self.card.version,
                self.card.creator_share_bps, self.card.diamonds_per_coin, now))
        else:
            split = split_gift(gift.coin_price * quantity, self.card)
        coins = self.wallets[sender_id]
        if self.balances[coins.id] < split.coins_paid:
            raise InsufficientFunds(coins, needed=split.coins_paid,
                                    available=self.balances[coins.id])
        spending: Spending = self.spending[sender_id]
        check_spending(request.settings, spending, split.coins_paid, now)
        budget = None if brand is None else self.budgets[brand]
        if budget is not None and self.balances[budget.id] < split.brand_subsidy:
            raise BusinessRefusal(
                ErrorCode.SPONSOR_BUDGET_EXHAUSTED, f"The sponsor's budget for this gift is "
                f"spent (it needs {split.brand_subsidy} coins); the gift is unavailable until "
                "the brand adds more.", "giftId")
        # Accepted: from here on, the batch's later sends see this one.
        if split.brand_platform_bps is not None:  # the brand's share, with its carry
            split = self._share_with_carry(split, gift.brand_id)
        self.balances[coins.id] -= split.coins_paid
        if budget is not None:
            before = self.balances[budget.id]
            self.balances[budget.id] -= split.brand_subsidy
            low = request.settings.brand_budget_low_coins
            if before >= low > self.balances[budget.id]:
                self.budgets_low.append({"type": "BrandBudgetLow", "brand": brand,
                                         "budget_coins": self.balances[budget.id],
                                         "threshold_coins": low, "at": now.isoformat()})
            self.sent_today[sender_id, gift.id] = \
                self.sent_today.get((sender_id, gift.id), 0) + quantity
        spending.add(split.coins_paid)
        combo, ended = self._continue_combo(request, live, gift, split.value, sender_name)
        row = dict(session_id=live.id, gift_id=gift.id, sender_id=sender_id,
                   creator_id=live.creator_id, quantity=quantity, unit_price=gift.coin_price,
                   coins_paid=split.coins_paid, brand_subsidy=split.brand_subsidy,
                   creator_coins=split.creator_coins, platform_coins=split.platform_coins,
                   brand_coins=split.brand_coins, creator_diamonds=split.creator_diamonds,
                   rate_card_version=self.card.version, combo_count=combo.count, created_at=now)
        events = [ended] if ended else []
        events.append({"type": "GiftSent", "session_id": live.id, "sender_id": sender_id,
                       "sender_name": sender_name, "gift_id": gift.id,
                       "gift": self._shown(gift), "quantity": quantity, "coins": split.value,
                       "diamonds": split.creator_diamonds, "combo_count": combo.count})
        sent = _Sent(row, split, brand, coins, f"{gift.sku} x{quantity}",
                     combo, self.balances[coins.id],
                     None if brand is None else {"plugin": gift.plugin, "brand": brand,
                                                 "sku": gift.sku}, events, request.request_id)
        self.sent.append(sent)
        return sent

    def _shown(self, gift: Gift) -> dict[str, Any]:
        """The gift's fields in events, built once a batch (events only read them)."""
        shown = self.shown.get(gift.id)
        if shown is None:
            shown = self.shown[gift.id] = gift_fields(gift)
        return shown

    def _share_with_carry(self, split: GiftSplit, brand_id: Any) -> GiftSplit:
        """The split with the brand's whole coins of its rate, the part of a coin it is
        owed carried on (committed with the batch)."""
        assert split.brand_platform_bps is not None
        coins, self.carries[brand_id] = share_with_carry(
            split.platform_coins, split.brand_platform_bps, self.carries[brand_id])
        self.carried.add(brand_id)
        return dataclasses.replace(split, brand_coins=coins,
                                   platform_coins=split.platform_coins - coins,
                                   brand_platform_bps=None)

    async def _postings(self) -> list[Posting]:
        """The gifts' ledger transactions (accounts opened only once a send is accepted)."""
        session = self.session
        revenues = {brand: await revenue_account(session, brand)
                    for brand in sorted({sent.brand for sent in self.sent if sent.brand})}
        platform = await system_account(session, "platform_revenue", Currency.COIN)
        creators = await system_account(session, "creator_earnings", Currency.COIN)
        issued = await system_account(session, "diamond_issuance", Currency.DIAMOND)
        postings = []
        for sent in self.sent:
            split, brand = sent.split, sent.brand
            brand_legs = [] if brand is None else [
                Leg(self.budgets[brand], -split.brand_subsidy),
                Leg(revenues[brand], split.brand_coins)]
            legs = [
                Leg(sent.coins, -split.coins_paid), *brand_legs,
                Leg(platform, split.platform_coins), Leg(creators, split.creator_coins),
                Leg(issued, -split.creator_diamonds),
                Leg(self.earnings[sent.row["creator_id"]], split.creator_diamonds)]
            postings.append(Posting("gift", [leg for leg in legs if leg.amount != 0],
                                    sent.memo))
        return postings

    def _continue_combo(self, request: _Request, live: LiveSession, gift: Gift, value: int,
                        sender_name: str) -> tuple[GiftCombo, dict[str, Any] | None]:
        """Extend the sender's open combo for this gift, or start one (ending a stale one).

        The open combos of the batch's senders are locked, so a combo cannot fork, and the
        reaper cannot end one while it is extended.
        """
        key = (live.id, request.sender_id, gift.id)
        combo, ended = self.combos.get(key), None
        if combo is not None and combo.last_at >= self.now - request.combo_window:
            combo.count += request.quantity
            combo.sends += 1
            combo.coins += value
            combo.last_at = self.now
            combo.changed = True
            return combo, None
        if combo is not None:
            self.ended_combos.append(combo.id)
            ended = _combo_ended(combo, sender_name, gift.id, self._shown(gift))
        combo = self.combos[key] = _Combo(
            None, live.id, request.sender_id, gift.id, request.quantity, 1, value, self.now,
            self.now, True)
        return combo, ended

    async def write(self) -> None:
        """Write the accepted sends: combos, ledger, receipts, totals (constant statements).

        The creator's rows (diamond balance, totals) are shared by everyone gifting them,
        so they come last and are held for the fewest statements before the commit.
        """
        if not self.sent:
            return
        session = self.session
        await self._write_combos()
        podiums: dict[int, dict[str, Any]] = {}

        async def record(transaction_ids: list[int]) -> None:
            rows = [{**sent.row, "transaction_id": transaction_id, "combo_id": sent.combo.id}
                    for sent, transaction_id in zip(self.sent, transaction_ids, strict=True)]
            written = await insert_rows(session, GiftSend.__table__, rows, returning=("id",))
            for sent, row, (receipt_id,) in zip(self.sent, rows, written, strict=True):
                sent.receipt = as_loaded(GiftSend, {"id": receipt_id, **row})
            await self._add_to_gifter_totals()
            podiums.update(await _podiums(session, {sent.row["session_id"]
                                                    for sent in self.sent}))

        await post_transactions(session, await self._postings(), before_balances=record)
        if self.carried:
            await session.execute(upsert(session, BrandShareCarry, [
                {"brand_id": brand, "carry": self.carries[brand]}
                for brand in sorted(self.carried)], ["brand_id"]))
        await add_to_counters(session, CreatorTotal, ("period", "period_start", "creator_id"),
                              _summed([{"period": period, "period_start": start,
                                        "creator_id": sent.row["creator_id"], **sent.amounts()}
                                       for sent in self.sent for period, start in self._periods],
                                      ("period", "period_start", "creator_id")))
        last_in_session = {sent.row["session_id"]: sent for sent in self.sent}
        for sent in self.sent:
            sent.events[-1].update(send_id=sent.receipt.id, combo_id=sent.combo.id)
        for session_id, sent in last_in_session.items():
            podium = podiums[session_id]
            senders = {s.row["sender_id"] for s in self.sent if s.row["session_id"] == session_id}
            if any(entry["user_id"] in senders for entry in podium["top"]):
                sent.events.append(podium)
        if any(live.goals for live in self.lives.values()):  # most sessions have none
            goal_events = await goals.count_gifts(self.session, self.lives, [
                goals.Counted(sent.row["session_id"], sent.row["gift_id"], sent.split.value,
                              sent.row["quantity"]) for sent in self.sent], self.now)
            for session_id, moved in goal_events.items():
                last_in_session[session_id].events.extend(moved)
        if any(live.match_id for live in self.lives.values()):  # and fewer have a match
            match_events = await matches.count_gifts(self.session, self.lives, [
                matches.Scored(sent.row["session_id"], sent.row["sender_id"], sent.split.value,
                               sent.brand) for sent in self.sent], self.now)
            for moved in match_events.values():  # the other side's session's too
                self.sent[-1].events.extend(moved)
        # Last: a session's stream row is every sender's to that session, held to the commit.
        sponsored = [sent for sent in self.sent if sent.brand is not None]
        brand_events = [_brand_gift_sent(sent) for sent in sponsored]
        await event_log.append_session_events(
            session, [event for sent in self.sent for event in sent.events],
            brand_events + self.budgets_low)
        for sent, event in zip(sponsored, brand_events, strict=True):
            sent.events.append(event)  # published with the rest, on its brand's channel
        if self.budgets_low:
            self.sent[-1].events.extend(self.budgets_low)

    async def _write_combos(self) -> None:
        """End the stale combos, extend the continued ones, insert the new ones (in that
        order: a new combo takes the place of the stale one it ends); three statements."""
        table, session = GiftCombo.__table__, self.session
        if self.ended_combos:
            await update_rows(session, table, [{"id": combo_id, "ended_at": self.now}
                                               for combo_id in self.ended_combos])
        combos = [combo for combo in self.combos.values() if combo.changed]
        if extended := [combo.progress() for combo in combos if combo.id is not None]:
            await update_rows(session, table, extended)
        if started := [combo for combo in combos if combo.id is None]:
            written = await insert_rows(session, table, [combo.row() for combo in started],
                                        returning=("id",))
            for combo, (combo_id,) in zip(started, written, strict=True):
                combo.id = combo_id

    @property
    def _periods(self) -> list[tuple[str, date]]:
        return list(period_starts(self.now.date()).items())

    async def _add_to_gifter_totals(self) -> None:
        """The rows of each sender's totals (as a creator's supporter, in the session, and
        their spending for caps)."""
        keys = ("creator_id", "period", "period_start", "sender_id")
        await add_to_counters(self.session, SupporterTotal, keys, _summed(
            [{"creator_id": sent.row["creator_id"], "period": period, "period_start": start,
              "sender_id": sent.row["sender_id"], **sent.amounts()}
             for sent in self.sent for period, start in self._periods], keys))
        keys = ("session_id", "sender_id")
        await add_to_counters(self.session, SessionGifterTotal, keys, _summed(
            [{"session_id": sent.row["session_id"], "sender_id": sent.row["sender_id"],
              **sent.amounts()} for sent in self.sent], keys))
        keys = ("sender_id", "period", "period_start")
        await add_to_counters(self.session, ViewerSpend, keys, _summed(
            [row for sent in self.sent for row in spend_rows(
                sent.row["sender_id"], sent.row["coins_paid"], self.now)], keys))


def _summed(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows with the same keys added up, in key order (every writer's lock order)."""
    key_of = operator.itemgetter(*keys)  # a batch sums hundreds of rows: no generator a row
    summed: dict[Any, dict[str, Any]] = {}
    for row in rows:
        key = key_of(row)
        found = summed.get(key)
        if found is None:
            summed[key] = dict(row)
        else:
            for name, value in row.items():
                if name not in keys:
                    found[name] += value
    return [summed[key] for key in sorted(summed)]


async def _sent_today(session: AsyncSession, requests: list[_Request], gifts: dict[int, Gift],
                      now: datetime) -> dict[tuple[int, int], int]:
    """How many of each sponsored gift each sender sent today (for campaign caps)."""
    pairs = {(r.sender_id, r.gift_id) for r in requests
             if r.gift_id in gifts and gifts[r.gift_id].plugin is not None}
    midnight = datetime.combine(now.date(), datetime.min.time(), tzinfo=UTC)
    rows = await session.execute(
        select(GiftSend.sender_id, GiftSend.gift_id, total(GiftSend.quantity))
        .where(GiftSend.sender_id.in_({s for s, _ in pairs}),
               GiftSend.gift_id.in_({g for _, g in pairs}), GiftSend.created_at >= midnight)
        .group_by(GiftSend.sender_id, GiftSend.gift_id))
    return {(sender, gift): sent for sender, gift, sent in rows}


# PostgreSQL: one statement text whatever the number of sessions, so it is compiled and
# prepared once (a UNION of one part per session is a new statement for every count).
_PODIUMS = ArrayStatement.of(lambda parameter: f"""
SELECT s.session_id, t.sender_id, t.name, t.coins
FROM unnest(CAST({parameter("session_ids")} AS BIGINT[])) AS s(session_id)
CROSS JOIN LATERAL (
  SELECT g.sender_id, u.name, g.coins FROM session_gifter_total AS g
  JOIN app_user AS u ON u.id = g.sender_id WHERE g.session_id = s.session_id
  ORDER BY g.coins DESC, g.sender_id DESC LIMIT {parameter("top")}) AS t""",
                              ("session_ids", "top"))


async def _podiums(session: AsyncSession, session_ids: set[int]) -> dict[int, dict[str, Any]]:
    """Each session's top gifters, as a TopGiftersChanged event, in one query."""
    if session.get_bind().dialect.name == "postgresql":
        rows = await execute_arrays(session, _PODIUMS, {"session_ids": sorted(session_ids),
                                                        "top": TOP_GIFTERS_IN_EVENTS})
    else:
        parts = [select(SessionGifterTotal.session_id, SessionGifterTotal.sender_id, User.name,
                        SessionGifterTotal.coins)
                 .join(User, User.id == SessionGifterTotal.sender_id)
                 .where(SessionGifterTotal.session_id == session_id)
                 .order_by(SessionGifterTotal.coins.desc(), SessionGifterTotal.sender_id.desc())
                 .limit(TOP_GIFTERS_IN_EVENTS).subquery() for session_id in sorted(session_ids)]
        rows = [tuple(row) for row in await session.execute(
            union_all(*(select(part) for part in parts)))]
    podiums: dict[int, list[tuple[int, str, int]]] = defaultdict(list)
    for session_id, sender_id, name, coins in rows:
        podiums[session_id].append((sender_id, name, coins))
    return {session_id: {"type": "TopGiftersChanged", "session_id": session_id, "top": [
        {"user_id": sender_id, "name": name, "coins": coins}
        for sender_id, name, coins in sorted(podiums[session_id], key=lambda r: (r[2], r[0]),
                                             reverse=True)]} for session_id in session_ids}


@dataclass(frozen=True, slots=True)
class _Question:
    """What a sponsored send asks its plugin, as the batch's locked rows say it; answers
    are kept for exactly these facts (not the moment, which moves on)."""

    gift_id: int
    sku: str
    name: str
    list_price: int
    plugin: str
    brand: str | None
    session_id: int
    creator_id: int
    sender_id: int
    quantity: int
    sent_today: int  # of this gift by this viewer today, the batch's earlier sends counted
    card_version: int
    creator_share_bps: int
    diamonds_per_coin: int
    at: datetime = field(compare=False)

    @property
    def terms(self) -> RateCardTerms:
        return RateCardTerms(self.card_version, self.creator_share_bps, self.diamonds_per_coin)


class _AskSponsor(DomainError):
    """A sponsored send's batch found no answer to its question: its caller asks the
    plugin, holding no lock, and sends again. Its idempotency key is released meanwhile."""

    def __init__(self, question: _Question) -> None:
        super().__init__(ErrorCode.GIFT_UNAVAILABLE, "The sponsor has not answered yet.",
                         "giftId")
        self.question = question


NOT_ANSWERING = "its sponsor's plugin is not answering for now"


def _unavailable(name: str, why: str, retry_after: int | None = None) -> DomainError:
    return DomainError(ErrorCode.GIFT_UNAVAILABLE, f"The gift {name!r} is unavailable: "
                       f"{why}.", "giftId", retry_after=retry_after)


def _quoted(request: _Request, question: _Question) -> GiftSplit:
    """A sponsored send's split: its plugin's answers to exactly this question, asked once
    per question (a batch written again one send at a time does not ask again)."""
    answer = request.quotes.get(question)
    if answer is None:
        plugins = request.plugins
        if plugins is None or not plugins.owns(question.plugin, question.brand):
            raise _unavailable(question.name, "its sponsor's plugin is not installed")
        raise _AskSponsor(question)
    if isinstance(answer, DomainError):
        raise answer
    return answer


async def _question(sessions: async_sessionmaker[AsyncSession], request: _Request
                    ) -> _Question | None:
    """What a sponsored send asks its plugin, as the database says now (the batch checks it
    again once it holds the locks); None if the batch answers the send without asking: it
    will be refused, or its idempotency key was used before (the batch replays that)."""
    now = request.clock()
    used = select(IdempotencyRecord.id).where(IdempotencyRecord.scope == request.claim.scope,
                                              IdempotencyRecord.key == request.claim.key)
    async with sessions() as session:
        found = (await session.execute(  # the gift, the session, the brand, the key: one query
            select(Gift, LiveSession, Brand.slug, used.exists()).select_from(Gift)
            .join(LiveSession, LiveSession.id == request.session_id)
            .outerjoin(Brand, Brand.id == Gift.brand_id)
            .where(Gift.id == request.gift_id))).first()
        if found is None:
            return None
        gift, live, brand, replay = found
        if replay or gift.plugin is None or live.status != LIVE or \
                live.creator_id == request.sender_id or not is_available(gift, now):
            return None
        card = await current_rate_card(session, now)
        sent_today = await _sent_today(session, [request], {gift.id: gift}, now)
    return _Question(gift.id, gift.sku, gift.name, gift.coin_price, gift.plugin, brand, live.id,
                     live.creator_id, request.sender_id, request.quantity,
                     sent_today.get((request.sender_id, gift.id), 0), card.version,
                     card.creator_share_bps, card.diamonds_per_coin, now)


async def _ask_sponsor(plugins: PluginHost | None, question: _Question
                       ) -> GiftSplit | DomainError:
    """The plugin's split for the question, or its refusal."""
    try:
        return await _sponsored_split(plugins, question)
    except DomainError as refusal:
        return refusal


async def _sponsored_split(plugins: PluginHost | None, question: _Question) -> GiftSplit:
    """Ask the plugin that owns the gift for its veto, quote and split; check every answer."""
    if plugins is None or not plugins.owns(question.plugin, question.brand):
        raise _unavailable(question.name, "its sponsor's plugin is not installed")
    send = SendContext(gift_sku=question.sku, brand=question.brand,
                       list_price=question.list_price, quantity=question.quantity,
                       viewer_id=question.sender_id, creator_id=question.creator_id,
                       session_id=question.session_id, at=question.at,
                       viewer_sent_today=question.sent_today)
    owner = question.plugin
    try:
        veto = check_veto(await plugins.call_owner(owner, "check_send", send=send))
        if veto is not None:
            raise DomainError(ErrorCode.SEND_VETOED, veto.reason.strip(), "giftId")
        quote = await plugins.call_owner(owner, "quote_gift", send=send)
        quote = Quote(question.list_price * question.quantity) if quote is None \
            else check_quote(quote, MAX_SPONSORED_VALUE)
        split = await plugins.call_owner(owner, "split_revenue", send=send, quote=quote,
                                         rate_card=question.terms)
        split = None if split is None else check_split(split, quote.value)
    except PluginCallFailed as failed:
        why = "its sponsor's plugin failed" if failed.retry_after is None else NOT_ANSWERING
        raise _unavailable(question.name, why, failed.retry_after) from None
    except PluginAnswerInvalid as invalid:
        plugins.record_failure(owner, f"invalid answer: {invalid}")
        raise _unavailable(question.name, "its sponsor's plugin gave an invalid answer") \
            from None
    if split is None:
        return split_gift(quote.value, question.terms, brand_subsidy=quote.brand_subsidy)
    if isinstance(split, BrandShare):  # applied with the brand's carry when written
        return dataclasses.replace(
            split_gift(quote.value, question.terms, brand_subsidy=quote.brand_subsidy),
            brand_platform_bps=split.platform_bps)
    return GiftSplit(value=quote.value, coins_paid=quote.viewer_pays,
                     brand_subsidy=quote.brand_subsidy, creator_coins=split.creator_coins,
                     platform_coins=split.platform_coins, brand_coins=split.brand_coins,
                     creator_diamonds=split.creator_coins * question.diamonds_per_coin)


async def _end_combos(session: AsyncSession, conditions: list[Any], now: datetime,
                      limit: int | None = None) -> list[dict[str, Any]]:
    """End open combos matching ``conditions`` (the first ``limit`` by id, if given); only
    the caller that ends one reports it."""
    # Locked in id order, the order a batch of sends locks combos in: no deadlock with one.
    # Read first, then ended: as a subquery of the UPDATE, PostgreSQL may run the LIMIT
    # again for each row it joins, and end more than ``limit``.
    ending = list(await session.scalars(
        select(GiftCombo.id).where(GiftCombo.ended_at.is_(None), *conditions)
        .order_by(GiftCombo.id).limit(limit).with_for_update()))
    if not ending:
        return []
    rows = (await session.execute(
        update(GiftCombo).where(one_of(session, GiftCombo.id, ending),
                                GiftCombo.ended_at.is_(None))
        .values(ended_at=now)
        .returning(GiftCombo.id, GiftCombo.session_id, GiftCombo.sender_id, GiftCombo.gift_id,
                   GiftCombo.count, GiftCombo.sends, GiftCombo.coins)
        .execution_options(synchronize_session=False))).all()
    if not rows:
        return []
    names = dict((await session.execute(select(User.id, User.name).where(
        User.id.in_({r.sender_id for r in rows})))).all())
    shown = {g.id: gift_fields(g) for g in (await session.scalars(select(Gift).where(
        Gift.id.in_({r.gift_id for r in rows})))).all()}
    return [_combo_ended(r, names[r.sender_id], r.gift_id, shown[r.gift_id]) for r in rows]


def _combo_ended(combo: Any, sender_name: str, gift_id: int, gift: dict[str, Any]
                 ) -> dict[str, Any]:
    return {"type": "ComboEnded", "combo_id": combo.id, "session_id": combo.session_id,
            "sender_id": combo.sender_id, "sender_name": sender_name, "gift_id": gift_id,
            "gift": gift, "total_count": combo.count, "sends": combo.sends,
            "total_coins": combo.coins}


def _brand_gift_sent(sent: _Sent) -> dict[str, Any]:
    """A sponsored send as its brand's partner sees it (webhooks, reconciliation)."""
    receipt = sent.receipt
    assert sent.sponsor is not None
    return {"type": "BrandGiftSent", "brand": sent.brand, "sku": sent.sponsor["sku"],
            "receipt_id": receipt.id, "quantity": receipt.quantity,
            "viewer_id": receipt.sender_id, "creator_id": receipt.creator_id,
            "session_id": receipt.session_id, "viewer_paid": receipt.coins_paid,
            "brand_subsidy": receipt.brand_subsidy, "brand_coins": receipt.brand_coins,
            "at": receipt.created_at.isoformat(), "request_id": sent.request_id}


def gift_fields(gift: Gift) -> dict[str, Any]:
    """The gift as it was when sent, JSON-safe, carried by events so that subscribers
    (thousands per session) need no query to show it."""
    return gift.model_dump(mode="json")


async def end_stale_combos(sessions: async_sessionmaker[AsyncSession], relay: Relay,
                           window: timedelta, *, session_id: int | None = None,
                           now: datetime | None = None,
                           per_transaction: int = COMBOS_A_TRANSACTION) -> int:
    """End combos idle for longer than the window (or all of a session's); report each once.
    How many it ended.

    Safe to run in every server process at once: the conditional UPDATE hands each
    combo to exactly one of them. At most ``per_transaction`` end in one transaction, and
    the process serves others between two: a busy minute's thousands of combos neither
    hold their rows (which sends continuing a combo wait for) nor the event loop at once.
    """
    assert per_transaction > 0
    now = now or datetime.now(UTC)
    conditions = [GiftCombo.session_id == session_id] if session_id is not None else \
        [GiftCombo.last_at < now - window]
    total = 0
    while True:
        async with sessions() as session, session.begin():
            ended = await event_log.append_session_events(
                session, await _end_combos(session, conditions, now, per_transaction))
        await relay.committed(ended)
        total += len(ended)
        if len(ended) < per_transaction:
            return total


async def end_live_session(sessions: async_sessionmaker[AsyncSession], relay: Relay, *,
                           session_id: int, creator_id: int) -> LiveSession:
    """The creator ends their session: its open combos and its running match end (each
    reported), then the session, with its totals, in one transaction; its stream's last
    event is SessionEnded."""
    async with sessions() as session, session.begin():
        row = await end_session(session, session_id, creator_id)
        assert row.ended_at is not None
        ended = await _end_combos(session, [GiftCombo.session_id == session_id], row.ended_at)
        ended += await matches.end_with_session(session, row, row.ended_at)
        t = await session_totals(session, session_id)
        events = await event_log.append_session_events(session, [*ended, {
            "type": "SessionEnded", "session_id": session_id,
            "ended_at": row.ended_at.isoformat(),
            "totals": {"gifts": t.gifts, "coins": t.coins, "diamonds": t.diamonds,
                       "viewers": t.viewers, "peak_viewers": t.peak_viewers}}])
    await relay.committed(events)
    return row
