"""One error body for every HTTP failure: ``{"errors": [{"message", "extensions": {"code"}}]}``.

GraphQL answers its own errors in that shape; the rest of the server used to answer in
four others (plain text from the GraphQL view for a batch, a body that is not JSON or a
mutation over GET; the web framework's ``{"status_code", "detail"}`` for a body over the
size limit, an unknown route or a wrong method; ``{"error"}`` from the CSV and webhook
routes). :func:`error_body` builds the one shape, and :class:`OneErrorShape`, the
outermost middleware, rewrites those (status 400 and above) into it, keeping their status
(415 for a body of another media type, which the GraphQL view answers with 400) and their
headers (``Retry-After``, ``Allow``, ``WWW-Authenticate``), so a client reads every failure
with the same code. A route may add keys beside ``errors`` (``/ready``'s checks on 503).
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

CODES = {400: "BAD_REQUEST", 401: "UNAUTHENTICATED", 403: "FORBIDDEN", 404: "NOT_FOUND",
         405: "METHOD_NOT_ALLOWED", 406: "NOT_ACCEPTABLE", 409: "CONFLICT",
         413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 429: "RATE_LIMITED",
         503: "SERVICE_UNAVAILABLE"}


# What the GraphQL view answers in plain text, said for our users.
PLAIN_TEXT = {
    "mutations are not allowed when using GET":
        "Mutations are not allowed over GET: send them with POST.",
    "Batching is not enabled":
        "A batch (a JSON array of requests) is not supported: send one request per HTTP "
        "request.",
    "Unable to parse request body as JSON": "The request body is not JSON.",
    "No GraphQL query found in the request":
        "No GraphQL query in the request: send {\"query\": \"...\"}.",
    "Unsupported content type":
        "Unsupported content type: send application/json.",
}


def code_of(status: int) -> str:
    """The ``extensions.code`` of a failure answered with ``status``."""
    return CODES.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_SERVER_ERROR")


def error_body(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """The body of a failure: one error with its message and code."""
    return {"errors": [{"message": message, "extensions": {"code": code or code_of(status)}}]}


def _is_errors(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("errors"), list) and \
        bool(body["errors"]) and all(isinstance(e, dict) and isinstance(e.get("message"), str)
                                     for e in body["errors"])


def _message(status: int, body: bytes) -> str:
    """What a response in another shape said, or the status's reason."""
    try:
        decoded: Any = json.loads(body)
    except ValueError:
        decoded = body.decode("utf-8", "replace").strip()
    if isinstance(decoded, dict):
        decoded = decoded.get("detail") or decoded.get("error") or decoded.get("message")
    decoded = PLAIN_TEXT.get(decoded, decoded) if isinstance(decoded, str) else decoded
    if not isinstance(decoded, str) or not decoded:
        return HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else \
            "Request failed."
    return decoded if decoded.endswith((".", "!", "?")) else f"{decoded}."


class OneErrorShape:
    """ASGI middleware: error responses not in the one shape are rewritten into it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] | None = None
        chunks: list[bytes] = []

        async def watch(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held = dict(message)
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                await _reshaped(send, held, b"".join(chunks))

        await self.app(scope, receive, watch)


async def _reshaped(send: Send, start: dict[str, Any], body: bytes) -> None:
    status = start["status"]
    try:
        decoded = json.loads(body)
    except ValueError:
        decoded = None
    headers = [(name, value) for name, value in start.get("headers", [])
               if name.lower() not in (b"content-length", b"content-type")]
    if _is_errors(decoded):
        content_type = dict((k.lower(), v) for k, v in start.get("headers", [])).get(
            b"content-type", b"application/json")
    else:
        message = _message(status, body)
        if message == PLAIN_TEXT["Unsupported content type"]:  # the view says 400
            status = 415
        body = json.dumps(error_body(status, message)).encode()
        content_type = b"application/json"
    headers += [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({**start, "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
