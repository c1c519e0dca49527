"""GraphQL over HTTP: answer ``application/graphql-response+json`` when the client asks.

With that media type a request error (parsing, validation, variable coercion, a
refused budget: errors without a ``path`` and no data) is answered 400 without a
``data`` entry, as the GraphQL-over-HTTP specification says; field errors stay 200.
"""

from __future__ import annotations

import json
from typing import Any

from litestar.datastructures import Headers
from litestar.types import ASGIApp, Message, Receive, Scope, Send

MEDIA_TYPE = "application/graphql-response+json"


class GraphQLResponseMedia:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/graphql") or \
                MEDIA_TYPE not in Headers.from_scope(scope).get("accept", ""):
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def buffer(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                await _answer(send, start, b"".join(chunks))

        await self.app(scope, receive, buffer)


async def _answer(send: Send, start: dict[str, Any], body: bytes) -> None:
    headers = [(k, v) for k, v in start.get("headers", [])
               if k.lower() not in (b"content-type", b"content-length")]
    status = start.get("status", 200)
    content_type = b"application/json"
    try:
        result = json.loads(body)
    except ValueError:
        result = None
    if isinstance(result, dict) and ("data" in result or "errors" in result):
        content_type = MEDIA_TYPE.encode()
        errors = result.get("errors") or []
        if result.get("data") is None and errors and all("path" not in e for e in errors):
            result.pop("data", None)  # a request error: nothing was executed
            status = 400 if status == 200 else status
            body = json.dumps(result).encode()
    else:
        content_type = dict(start.get("headers", [])).get(b"content-type", content_type)
    headers += [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
