"""A GraphQL request over HTTP before GraphQL runs: its document, and public answers.

- A request that sends a bearer token it may not use (expired, not ours, malformed) is
  answered ``401`` with the reason, whatever it asks.
- A document sent by hash (a persisted query or a trusted document, :mod:`app.documents`)
  is looked up, and the request goes on to GraphQL with its document.
- An anonymous query that reads only public fields (:data:`PUBLIC_FIELDS`: the catalogue,
  coin packages, rate cards, brands, the schema) is answered from this process's cache
  while the public data version (:mod:`app.public_data`) is still the one it was answered
  under: GraphQL does not run at all. Only answers without errors are kept.
- Any other query or mutation POSTed as JSON is executed here, straight against the schema
  (by the ``run`` function given): the GraphQL endpoint's handler (its dependency
  injection, strawberry's HTTP view reading the body again, the response object), which
  such a request does not need, costs more than the smallest queries themselves. The
  answer is the same (status, headers, body). Everything else (GET, other encodings,
  subscriptions, documents GraphQL must explain) goes on to the endpoint.
- Answers to GET queries carry an ``ETag``; a request whose ``If-None-Match`` names it gets
  ``304 Not Modified``. Anonymous public ones say ``Cache-Control: public, max-age=N``
  (``LIVEGIFTS_PUBLIC_MAX_AGE_SECONDS``) so browsers and CDNs may keep them; the others
  ``private, no-cache``.
"""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import msgspec
from graphql import GraphQLError, OperationDefinitionNode, parse
from litestar.datastructures import Headers
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import AuthError, principal_from_header
from app.documents import DocumentRefused, Documents
from app.observability import PUBLIC_ANSWERS
from app.public_data import PublicData
from app.settings import Settings

# Root fields whose answers depend only on public data and the time (never on the caller).
PUBLIC_FIELDS = frozenset({"gifts", "coinPackages", "rateCard", "rateCards", "brands",
                           "__typename", "__schema", "__type"})
KEPT_BODY_BYTES = 256 * 1024  # larger public answers are not kept
# No text the API stores may hold NUL (PostgreSQL cannot store it, SQLite would): refused
# here, for every field at once, before anything runs.
NUL_REFUSED = "Text may not contain the NUL character (\\u0000)."


class BadRequest(Exception):
    """A request GraphQL cannot read at all: answered 400 with this message."""


@dataclass(frozen=True, slots=True)
class Kept:
    version: tuple[Any, ...]
    body: bytes
    etag: bytes


@dataclass(slots=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


# Executes a well-formed request's document for a caller (the Authorization header): the
# response body, as GraphQL over HTTP shapes it ({"data", "errors", "extensions"}).
Run = Callable[[str, dict[str, Any], str | None], Awaitable[dict[str, Any]]]


class GraphQLEdge:
    """ASGI middleware on ``/graphql``: persisted documents, public answer cache, ETags,
    queries and mutations POSTed as JSON executed directly."""

    def __init__(self, app: ASGIApp, settings: Settings, documents: Documents,
                 public_data: PublicData, run: Run) -> None:
        self.app, self.documents, self.public_data = app, documents, public_data
        self.run = run
        self.settings = settings
        self.entries, self.max_age = settings.response_cache_entries, \
            settings.public_max_age_seconds
        self.max_body = settings.max_request_bytes
        self.kept: OrderedDict[tuple[str, str | None, bytes], Kept] = OrderedDict()
        self.shape = functools.lru_cache(maxsize=1000)(_shape)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/graphql" or \
                scope["method"] not in ("GET", "POST"):
            await self.app(scope, receive, send)
            return
        headers = Headers.from_scope(scope)
        try:
            request, body = await self._read(scope, receive, headers)
        except BadRequest as bad:
            await _respond(send, Answer(400, [], msgspec.json.encode(
                {"errors": [{"message": str(bad), "extensions": {"code": "BAD_REQUEST"}}]})))
            return
        if body is not None:
            receive = _replay(body, receive)
        if request is None or not _well_formed(request):  # GraphQL answers (or explains) it
            await self.app(scope, receive, send)
            return
        if (refused := self._refused_token(headers.get("authorization"))) is not None:
            await _respond(send, refused)
            return
        original = request.get("query")
        try:
            document = await self.documents.resolve(original, request.get("extensions"))
        except DocumentRefused as refused:
            await _respond(send, Answer(200, [], msgspec.json.encode({"errors": [
                {"message": refused.message, "extensions": {"code": refused.code}}]})))
            return
        if document is not None and document != original:  # sent by hash: fill it in
            request["query"] = document
            scope, receive = _with_document(scope, receive, request)
        if document is None:
            await self.app(scope, receive, send)
            return
        shape = self.shape(document, request.get("operationName"))
        is_get = scope["method"] == "GET"
        public = shape == ("query", True) and "authorization" not in headers \
            and self.entries > 0
        if not public:
            if is_get and shape is not None and shape[0] == "query":
                answer = await _capture(self.app, scope, receive)
                await _respond(send, _conditional(answer, headers, b"private, no-cache"))
            elif not is_get and shape is not None and shape[0] in ("query", "mutation"):
                result = await self.run(document, request, headers.get("authorization"))
                await _respond(send, Answer(200, [], msgspec.json.encode(result)))
            else:
                await self.app(scope, receive, send)
            return
        version = await self.public_data.key()
        if version is None:  # unknown: answer from the database, keep nothing
            await self.app(scope, receive, send)
            return
        key = (document, request.get("operationName"),
               msgspec.json.encode(request.get("variables") or {}, order="sorted"))
        kept = self.kept.get(key)
        if kept is None or kept.version != version:
            PUBLIC_ANSWERS.labels("graphql").inc()
            answer = await _capture(self.app, scope, receive)
            kept = self._keep(key, version, answer)
            if kept is None:
                await _respond(send, _conditional(answer, headers, b"private, no-cache")
                               if is_get else answer)
                return
        else:
            PUBLIC_ANSWERS.labels("cache").inc()
            self.kept.move_to_end(key)
        answer = Answer(200, [(b"content-type", b"application/json"), (b"etag", kept.etag)],
                        kept.body)
        if is_get:
            answer = _conditional(answer, headers,
                                  f"public, max-age={self.max_age}".encode())
        await _respond(send, answer)

    def _refused_token(self, authorization: str | None) -> Answer | None:
        """A request that sends a token is answered only if the token is good, whatever
        it asks (public fields included), so that a client learns to renew an expired
        one: ``401`` with the reason, otherwise None."""
        if authorization is None:
            return None
        try:
            principal_from_header(self.settings, authorization)
        except AuthError as refused:
            return Answer(401, [(b"www-authenticate", b'Bearer error="invalid_token"')],
                          msgspec.json.encode({"errors": [{"message": str(refused),
                                                           "extensions": {
                                                               "code": "UNAUTHENTICATED"}}]}))
        return None

    def _keep(self, key: tuple[str, str | None, bytes], version: tuple[Any, ...],
              answer: Answer) -> Kept | None:
        if answer.status != 200 or len(answer.body) > KEPT_BODY_BYTES:
            return None
        try:
            result = msgspec.json.decode(answer.body)
        except msgspec.DecodeError:
            return None
        if not isinstance(result, dict) or result.get("errors"):
            return None
        kept = self.kept[key] = Kept(version, answer.body, _etag(answer.body))
        self.kept.move_to_end(key)
        while len(self.kept) > self.entries:
            self.kept.popitem(last=False)
        return kept

    async def _read(self, scope: Scope, receive: Receive, headers: Headers
                    ) -> tuple[dict[str, Any] | None, bytes | None]:
        """The request's GraphQL parameters (None to leave it to GraphQL untouched), and
        the body if it was read."""
        if scope["method"] == "GET":
            params: dict[str, Any] = dict(parse_qsl(scope.get("query_string", b"")
                                                    .decode("latin-1")))
            if "query" not in params and "extensions" not in params:
                return None, None  # GraphiQL's page, or a request GraphQL will explain
            try:
                for name in ("variables", "extensions"):
                    if name in params:
                        params[name] = msgspec.json.decode(params[name])
            except msgspec.DecodeError:
                return None, None  # GraphQL explains
            except RecursionError:
                raise BadRequest(f"The {name} parameter is nested too deep.") from None
            if _holds_nul(params):
                raise BadRequest(NUL_REFUSED)
            return params, None
        length = headers.get("content-length", "")
        if not headers.get("content-type", "").startswith("application/json") or \
                not length.isdigit() or int(length) > self.max_body:
            return None, None  # other encodings, and bodies the framework refuses by size
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            request = msgspec.json.decode(body)
        except (msgspec.DecodeError, RecursionError):  # not JSON, or nested too deep
            raise BadRequest("Unable to parse request body as JSON.") from None
        if not isinstance(request, dict | list):
            raise BadRequest("The request body must be a JSON object: "
                             '{"query": "...", "variables": {...}}.')
        if b"\\u0000" in body and _holds_nul(request):
            raise BadRequest(NUL_REFUSED)
        return (request if isinstance(request, dict) else None), bytes(body)


def _well_formed(request: dict[str, Any]) -> bool:
    """Whether each parameter has its type; GraphQL explains any that has not."""
    return isinstance(request.get("query"), str | None) and \
        isinstance(request.get("operationName"), str | None) and \
        isinstance(request.get("variables"), dict | None) and \
        isinstance(request.get("extensions"), dict | None)


def _holds_nul(request: dict[str, Any] | list[Any]) -> bool:
    """Whether a request holds NUL: in any string, or as an escape in its document."""
    document = request.get("query") if isinstance(request, dict) else None
    return (isinstance(document, str) and "\\u0000" in document) or _any_nul(request)


def _any_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_any_nul(key) or _any_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_any_nul(item) for item in value)
    return False


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands over ``body`` once, then what the client sends next."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _with_document(scope: Scope, receive: Receive, request: dict[str, Any]
                   ) -> tuple[Scope, Receive]:
    """The scope and receive GraphQL gets for ``request``, its document filled in."""
    if scope["method"] == "GET":
        params = {name: value if isinstance(value, str) else msgspec.json.encode(value).decode()
                  for name, value in request.items()}
        return {**scope, "query_string": urlencode(params).encode()}, receive
    body = msgspec.json.encode(request)
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    return {**scope, "headers": headers}, _replay(body, receive)


def _shape(document: str, operation_name: str | None) -> tuple[str, bool] | None:
    """The chosen operation's type and whether it reads public fields only; None when the
    document does not parse or names no such operation (GraphQL then explains)."""
    try:
        parsed = parse(document)
    except GraphQLError:
        return None
    operations = [d for d in parsed.definitions if isinstance(d, OperationDefinitionNode)]
    chosen = [o for o in operations if operation_name is None or
              (o.name is not None and o.name.value == operation_name)]
    if len(chosen) != 1 or (operation_name is None and len(operations) != 1):
        return None
    operation = chosen[0]
    public = len(parsed.definitions) == 1 and all(
        getattr(selection, "name", None) is not None and
        selection.name.value in PUBLIC_FIELDS and not selection.directives
        for selection in operation.selection_set.selections)
    return operation.operation.value, public


async def _capture(app: ASGIApp, scope: Scope, receive: Receive) -> Answer:
    answer = Answer(500, [], b"")
    chunks: list[bytes] = []

    async def keep(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer.status, answer.headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, keep)
    answer.body = b"".join(chunks)
    return answer


def _etag(body: bytes) -> bytes:
    return b'"' + hashlib.blake2b(body, digest_size=16).hexdigest().encode() + b'"'


def _conditional(answer: Answer, headers: Headers, cache_control: bytes) -> Answer:
    """A GET answer with its validators: 304 when the caller holds this very answer."""
    if answer.status != 200:
        return answer
    etag = dict(answer.headers).get(b"etag") or _etag(answer.body)
    extra = [(b"etag", etag), (b"cache-control", cache_control),
             (b"vary", b"Accept, Authorization")]
    kept = [(k, v) for k, v in answer.headers if k.lower() not in (b"etag", b"cache-control")]
    held = headers.get("if-none-match", "")
    if held and (held.strip() == "*" or etag.decode() in
                 [tag.strip().removeprefix("W/") for tag in held.split(",")]):
        return Answer(304, [(k, v) for k, v in kept if k.lower() not in
                            (b"content-type", b"content-length")] + extra, b"")
    return Answer(200, kept + extra, answer.body)


async def _respond(send: Send, answer: Answer) -> None:
    headers = [(k, v) for k, v in answer.headers if k.lower() != b"content-length"]
    if not any(k.lower() == b"content-type" for k, _ in headers) and answer.status != 304:
        headers.append((b"content-type", b"application/json"))
    if answer.status != 304:
        headers.append((b"content-length", str(len(answer.body)).encode()))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
