"""Live-session events executed and encoded once for every subscriber asking the same.

One event reaches every subscriber of a live session in a process, thousands of them,
most with the same document (an overlay's, an app's). The event's GraphQL object is built
once (:func:`share` marks it); :class:`SharedEventExecutor` then executes a subscription
document against it once per distinct (document, variables) and hands the same result to
every subscriber asking the same, and :func:`encoding_once` writes that result's JSON once,
so each further subscriber costs the frame written to it. Every field of a live-session
event is public and depends on the event alone, never on who watches: that is what makes
one result right for every subscriber.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections import OrderedDict
from collections.abc import Awaitable
from typing import Any

from strawberry.litestar.controller import GraphQLController
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

ENCODED_KEPT = 256  # results whose JSON is kept: far more than the events in flight

# The shared event objects' results by (document operation, variables), by the object's
# id while it lives (GraphQL objects compare by value, so they cannot be weak keys).
_results: dict[int, dict[tuple[int, str], tuple[Any, Any]]] = {}
# The data of shared results (by id, kept alive here) and their JSON once written.
_encoded: OrderedDict[int, tuple[Any, str | None]] = OrderedDict()


def share(event: Any) -> Any:
    """Mark ``event`` (a GraphQL object every subscriber receives) as shared."""
    if id(event) not in _results:
        _results[id(event)] = {}
        weakref.finalize(event, _results.pop, id(event), None)
    return event


class SharedEventExecutor(StrawberryGraphQLCoreExecutionContext):
    """Executes each shared event once per distinct operation and variables."""

    def execute_operation(self, serially: bool | None = None) -> Any:
        results = _results.get(id(self.root_value))
        if results is None:
            return super().execute_operation(serially)
        key = (id(self.operation), json.dumps(self.variable_values, sort_keys=True,
                                              default=str))
        if key not in results:
            outcome = super().execute_operation(serially)
            if self.is_awaitable(outcome):
                outcome = asyncio.ensure_future(outcome)
                outcome.add_done_callback(_remember_data)
            else:
                _remember(outcome.data)
            results[key] = (self.operation, outcome)  # the operation keeps its id unique
        outcome = results[key][1]
        return _result_of(outcome) if isinstance(outcome, asyncio.Future) else outcome


async def _result_of(future: Awaitable[Any]) -> Any:
    return await future


def _remember_data(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is None:
        _remember(future.result().data)


def _remember(data: Any) -> None:
    if data is not None:
        _encoded[id(data)] = (data, None)
        while len(_encoded) > ENCODED_KEPT:
            _encoded.popitem(last=False)


def encoding_once(controller: type[GraphQLController]) -> type[GraphQLController]:
    """``controller`` writing the JSON of a shared result once for all its subscribers."""

    class EncodingOnceController(controller):  # type: ignore[misc, valid-type]
        def encode_json(self, data: object) -> str | bytes:
            shared = _shared_next(data)
            if shared is None:
                return super().encode_json(data)
            message_id, payload = shared
            return f'{{"id":{json.dumps(message_id)},"type":"next","payload":{payload}}}'

    def _shared_next(message: object) -> tuple[str, str] | None:
        """A ``next`` message carrying only a shared result: its id and payload JSON."""
        if type(message) is not dict or message.get("type") != "next" or len(message) != 3:
            return None
        payload = message.get("payload")
        if type(payload) is not dict or len(payload) != 1 or "data" not in payload:
            return None
        data = payload["data"]
        kept = _encoded.get(id(data))
        if kept is None or kept[0] is not data:
            return None
        if kept[1] is None:
            kept = _encoded[id(data)] = (data, json.dumps({"data": data},
                                                          separators=(",", ":")))
        return message["id"], kept[1]

    return EncodingOnceController
