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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLError, parse
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)

from app.events import QUEUE_SIZE, EventBus
from app.graphql.context import UNEXPECTED_ERROR

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


_subscriber: ContextVar[Subscriber | None] = ContextVar("livegifts_subscriber", default=None)


def subscriber() -> Subscriber | None:
    """The operation the running subscription resolver serves, over graphql-transport-ws."""
    return _subscriber.get()


class BroadcastingHandler(BaseGraphQLTransportWSHandler[Any, Any]):
    """graphql-transport-ws, with each operation's task knowing its operation."""

    async def run_operation(self, operation: Operation[Any, Any]) -> None:
        async def write(text: str) -> None:
            await self.websocket.ws.send_data(text)  # type: ignore[attr-defined]

        _subscriber.set(Subscriber(operation.id, operation.query, operation.variables,
                                   operation.operation_name, self.schema._schema,
                                   self.context, write))
        await super().run_operation(operation)  # its own task: the variable stays in it


@dataclass(eq=False)
class Member:
    """A subscriber in a watch. The watch only queues messages (it never waits on a
    connection); the subscription's own task writes them (:meth:`run`), after its opening
    result, so a slow connection delays nobody else."""

    subscriber: Subscriber
    outbox: deque[str] = field(default_factory=lambda: deque(maxlen=QUEUE_SIZE))
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False
    head: str = ""  # every message's start, with the operation id: encoded once
    skip: int = 0  # events published before this member joined, still ahead in the watch

    def __post_init__(self) -> None:
        self.head = f'{{"id":{json.dumps(self.subscriber.operation_id)},"type":"next","payload":'

    def deliver(self, payload: str) -> None:
        """Queue a ``next`` message; a member that fell far behind loses the oldest."""
        self.outbox.append(f"{self.head}{payload}}}")
        self.ready.set()

    def end(self) -> None:
        """The session ended: write what is queued, then finish."""
        self.ended = True
        self.ready.set()

    async def run(self) -> None:
        """Write the messages as they come until the session ends or the connection fails."""
        while True:
            await self.ready.wait()
            self.ready.clear()
            while self.outbox:
                try:
                    await self.subscriber.write(self.outbox.popleft())
                except Exception:  # noqa: BLE001 - the connection is gone; its handler cleans up
                    return
            if self.ended:
                return


class Watch:
    """The subscribers of one session asking the same, and the task that serves them."""

    def __init__(self, bus: EventBus, channel: str, subscriber: Subscriber,
                 build: Callable[[dict[str, Any]], Awaitable[Any]]) -> None:
        self.members: list[Member] = []
        self.serving = False  # an event is taken from the queue and not yet delivered
        self.build = build
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

    def join(self, member: Member) -> None:
        """Add a member; the events already published to the watch (queued, or being
        executed) are not for it: it reads the session's state after joining. (Should a
        full queue drop its oldest event meanwhile, the member misses one event instead:
        delivery is at most once.)"""
        member.skip = self.queue.qsize() + self.serving
        self.members.append(member)

    async def _serve(self) -> None:
        while True:
            event = await self.queue.get()
            self.serving = True
            try:
                payload = await self._payload(event)
            except Exception:
                logger.exception("executing a live-session event for its watchers failed")
                payload = json.dumps({"data": None, "errors": [{"message": UNEXPECTED_ERROR}]})
            self.serving = False
            for member in self.members:
                if member.skip:
                    member.skip -= 1
                else:
                    member.deliver(payload)
                if event["type"] == "SessionEnded":
                    member.end()

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
                build: Callable[[dict[str, Any]], Awaitable[Any]]) -> AsyncIterator[Member]:
    """Join the watch of ``channel`` for what ``subscriber`` asks (created on first join,
    closed when its last member leaves); events published from now on reach the member."""
    key = (id(bus), channel, subscriber.query, subscriber.operation_name,
           json.dumps(subscriber.variables, sort_keys=True, default=str))
    shared = _watches.get(key)
    if shared is None:
        shared = _watches[key] = Watch(bus, channel, subscriber, build)
    member = Member(subscriber)
    shared.join(member)
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
