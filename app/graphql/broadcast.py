"""Live-session events over graphql-transport-ws: executed and encoded once, written to many.

One event reaches every subscriber of a live session in a process, thousands of them,
most with the same document (an overlay's, an app's). Subscribers asking the same
(document, operation name, variables) of the same session form a *watch*: one task per
watch takes each event from the bus, executes the document against it once, encodes the
result once and queues the same ``next`` message (with each subscriber's operation id) for
every member, whose own task writes it to its WebSocket. Each further subscriber costs one
frame write, not a GraphQL execution, its hooks and its JSON.

Strawberry still runs everything around it: the connection, authentication, validation,
the subscription's opening result (the viewer count, sent before any event), errors and
``complete``. :class:`BroadcastingHandler` tells the resolver which operation on which
connection it serves; the resolver (:func:`app.graphql.gifting`) then joins a watch
instead of yielding events one subscriber at a time. Every field of a live-session event
is public and depends on the event alone, never on who watches: that is what makes one
result right for every subscriber.

Events come from the event log (:mod:`app.services.event_log`) numbered in their session's
stream. The watch and each member follow the stream (:class:`Follower`): a member resuming
from a cursor first writes what the log holds after it, then the watch's messages, each
event once and in order, whatever the bus repeats, reorders or drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLError, GraphQLSyntaxError, parse
from litestar.exceptions import WebSocketDisconnect
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)

from app.events import QUEUE_SIZE, EventBus
from app.graphql.context import UNEXPECTED_ERROR
from app.services.event_log import Follower

logger = logging.getLogger(__name__)



@dataclass(eq=False, slots=True)
class Subscriber:
    """One subscription operation on one graphql-transport-ws connection."""

    operation_id: str
    query: str
    variables: dict[str, Any] | None
    operation_name: str | None
    schema: Any  # the GraphQL schema the operation was validated against
    context: Any  # the connection's context
    write: Callable[[str], Awaitable[None]]  # one text frame to the connection


# The scope key of the server's own ``send`` (kept by app.asgi). An event's frames, one per
# subscriber and thousands per event, are written with it: past the accept, the layers
# between (request ids, error shapes, Litestar's exception middleware and its socket's
# state check, repeated here) do nothing to a frame but cost a coroutine each. (With
# tracing on, these frames get no span of their own.)
SERVER_SEND = "livegifts.server_send"

_subscriber: ContextVar[Subscriber | None] = ContextVar("livegifts_subscriber", default=None)


def subscriber() -> Subscriber | None:
    """The operation the running subscription resolver serves, over graphql-transport-ws."""
    return _subscriber.get()


class BroadcastingHandler(BaseGraphQLTransportWSHandler[Any, Any]):
    """graphql-transport-ws, with each operation's task knowing its operation. A document
    that does not parse is answered with the protocol's ``error`` message (the client's
    subscription fails with the syntax error) rather than a bare ``complete``."""

    async def run_operation(self, operation: Operation[Any, Any]) -> None:
        try:
            _parsed(operation.query)
        except GraphQLSyntaxError as error:
            logger.info("client error: %s", error.message)
            await operation.send_initial_errors([error])
            return

        websocket = self.websocket.ws  # type: ignore[attr-defined]
        send = websocket.scope[SERVER_SEND]

        async def write(text: str) -> None:
            if websocket.connection_state == "disconnect":
                raise WebSocketDisconnect(detail="the client has disconnected")
            await send({"type": "websocket.send", "text": text})

        _subscriber.set(Subscriber(operation.id, operation.query, operation.variables,
                                   operation.operation_name, self.schema._schema,
                                   self.context, write))
        await super().run_operation(operation)  # its own task: the variable stays in it


@functools.lru_cache(maxsize=256)
def _parsed(document: str) -> Any:
    """The document parsed (the schema's parser cache parses it again, from its cache)."""
    return parse(document)


class _Gone(Exception):
    """A member's connection failed."""


FINAL = "SessionEnded"  # a session's last event: its subscriptions complete after it


@dataclass(eq=False)
class Member:
    """A subscriber in a watch. The watch only queues messages (it never waits on a
    connection); the subscription's own task writes them (:meth:`run`), after its opening
    result, so a slow connection delays nobody else. Each member follows the session's
    stream from its own position: it never writes an event twice or out of order, and
    reads from the log what it would otherwise miss (what came before it resumed, or what
    its outbox dropped while its connection was slow)."""

    subscriber: Subscriber
    watch: Watch
    follower: Follower
    outbox: deque[tuple[int | None, str, bool]] = field(
        default_factory=lambda: deque(maxlen=QUEUE_SIZE))
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    head: str = ""  # every message's start, with the operation id: encoded once

    def __post_init__(self) -> None:
        self.head = f'{{"id":{json.dumps(self.subscriber.operation_id)},"type":"next","payload":'

    def deliver(self, seq: int | None, payload: str, final: bool) -> None:
        """Queue a ``next`` message; a member that fell far behind loses the oldest (and
        reads them from the log when it gets there)."""
        self.outbox.append((seq, payload, final))
        self.ready.set()

    async def run(self, catch_up: bool = False, live: bool = True) -> None:
        """Write the session's events from the member's position (first those in the log,
        if ``catch_up``) until the session ends or the connection fails; only those in the
        log if the session was not ``live`` when the member joined."""
        try:
            if catch_up:
                for event in await self.follower.read():
                    if await self._write_logged(event):
                        return
            if not live:
                return
            while True:
                await self.ready.wait()
                self.ready.clear()
                while self.outbox:
                    seq, payload, final = self.outbox.popleft()
                    missing = await self.follower.before(seq)
                    if missing is None:
                        continue
                    for event in missing:
                        if await self._write_logged(event):
                            return
                    await self._write(payload)
                    if seq is not None:
                        self.follower.position = seq
                    if final:
                        return
        except _Gone:  # the connection is gone; its handler cleans up
            return

    async def _write(self, payload: str) -> None:
        try:
            await self.subscriber.write(f"{self.head}{payload}}}")
        except Exception as gone:  # noqa: BLE001 - whatever the socket raised
            raise _Gone from gone

    async def _write_logged(self, event: dict[str, Any]) -> bool:
        """Write an event read from the log; whether it was the session's last."""
        await self._write(await self.watch.payload(event))
        self.follower.position = event["seq"]
        return event["type"] == FINAL


class Watch:
    """The subscribers of one session asking the same, and the task that serves them."""

    def __init__(self, bus: EventBus, channel: str, subscriber: Subscriber,
                 build: Callable[[dict[str, Any]], Awaitable[Any]], follower: Follower) -> None:
        self.members: list[Member] = []
        self.build = build
        self.follower = follower  # the watch's own place in the stream
        executor = StrawberryGraphQLCoreExecutionContext.build(
            subscriber.schema, parse(subscriber.query), None, subscriber.context,
            subscriber.variables, subscriber.operation_name)
        if isinstance(executor, list):  # strawberry validated it already: not expected
            raise GraphQLError(executor[0].message)
        self.executor = executor
        # Listening starts now, before the first member's opening result is sent.
        self.bus, self.channel = bus, channel
        self.queue = bus.listen(channel)
        self.task = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                missing = await self.follower.before(event.get("seq"))
            except Exception:
                logger.exception("reading the events a watch missed failed")
                missing = []
            if missing is None:  # again, or late: already served
                continue
            for each in [*missing, event]:
                payload = await self.payload(each)
                seq, final = each.get("seq"), each["type"] == FINAL
                if seq is not None:
                    self.follower.position = seq
                for member in self.members:
                    member.deliver(seq, payload, final)

    async def payload(self, event: dict[str, Any]) -> str:
        """The document's result for an event, encoded (once for every member)."""
        try:
            return await self._payload(event)
        except Exception:
            logger.exception("executing a live-session event for its watchers failed")
            return json.dumps({"data": None, "errors": [{"message": UNEXPECTED_ERROR}]})

    async def _payload(self, event: dict[str, Any]) -> str:
        result = self.executor.build_per_event_executor(await self.build(event)) \
            .execute_operation(False)
        if self.executor.is_awaitable(result):
            result = await result
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            for error in result.errors:
                logger.error("error in a live-session event field", exc_info=error)
            body["errors"] = [{**error.formatted, "message": UNEXPECTED_ERROR}
                              for error in result.errors]
        return json.dumps(body, separators=(",", ":"))

    def close(self) -> None:
        self.task.cancel()
        self.bus.forget(self.channel, self.queue)


_watches: dict[tuple[Any, ...], Watch] = {}


@contextlib.asynccontextmanager
async def watch(bus: EventBus, channel: str, subscriber: Subscriber,
                build: Callable[[dict[str, Any]], Awaitable[Any]], follower: Follower,
                position_variable: str | None = None) -> AsyncIterator[Member]:
    """Join the watch of ``channel`` for what ``subscriber`` asks (created on first join,
    closed when its last member leaves); events published from now on reach the member,
    which follows the stream with ``follower`` (its position set by the caller before
    :meth:`Member.run`). Subscribers differing only in ``position_variable`` (where each
    resumes) share a watch."""
    variables = {name: value for name, value in (subscriber.variables or {}).items()
                 if name != position_variable}
    key = (id(bus), channel, subscriber.query, subscriber.operation_name,
           json.dumps(variables, sort_keys=True, default=str))
    shared = _watches.get(key)
    if shared is None:
        shared = _watches[key] = Watch(bus, channel, subscriber, build,
                                       Follower(follower.reads, follower.stream, None))
    member = Member(subscriber, shared, follower)
    shared.members.append(member)
    try:
        yield member
    finally:
        shared.members.remove(member)
        if not shared.members:
            shared.close()
            del _watches[key]


def broadcasting(controller: type[Any]) -> type[Any]:
    """``controller`` serving graphql-transport-ws with :class:`BroadcastingHandler`."""

    class BroadcastingController(controller):  # type: ignore[misc, valid-type]
        graphql_transport_ws_handler_class = BroadcastingHandler

    return BroadcastingController
