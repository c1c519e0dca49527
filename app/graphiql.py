"""GraphiQL as livegifts serves it: from its own files, opened on a ready example document.

``with_example`` subclasses the GraphQL controller and overrides ``render_graphql_ide``,
strawberry's documented hook for a custom IDE, to serve ``app/static/graphiql/index.html``:
GraphiQL, React and the explorer plugin vendored in ``app/static/graphiql`` (no CDN, so it
works offline), under a Content-Security-Policy that lets the page run only those files and
talk only to this server. The query editor opens on ``app/graphql/example.graphql`` (a
viewer's wallet, the gift catalogue, ``sendGift`` and ``liveSessionEvents``, with comments on
minting a token and putting it in the Headers tab). The Headers tab starts empty, not with
a placeholder: a request that sends a bad token is refused whatever it asks, and the public
``GiftCatalogue`` must work as the page opens. The page's data rides in a JSON block, not a
script: no inline code runs.
"""

from __future__ import annotations

import functools
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from litestar import Request, Response
from litestar.datastructures import CacheControlHeader
from litestar.enums import MediaType
from litestar.static_files import create_static_files_router
from strawberry.litestar.controller import GraphQLController

DEFAULT_HEADERS: dict[str, str] = {}  # a token goes here; a placeholder would be refused
STATIC_DIRECTORY = Path(__file__).parent / "static" / "graphiql"
# Scripts only from this server, requests only to it; styles may be inline (GraphiQL's menus
# add <style> elements), which runs no code.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'", "script-src 'self'", "style-src 'self' 'unsafe-inline'",
    "connect-src 'self'",
    "img-src 'self' data:", "font-src 'self' data:", "base-uri 'none'", "form-action 'none'"])


def example_document() -> str:
    """The example operations GraphiQL opens on."""
    return files("app.graphql").joinpath("example.graphql").read_text(encoding="utf-8")


def graphiql_page(document: str, headers: dict[str, str]) -> str:
    """The GraphiQL page, opened on ``document`` with ``headers`` as default."""
    config = json.dumps({"document": document, "headers": json.dumps(headers, indent=2)})
    page = (STATIC_DIRECTORY / "index.html").read_text(encoding="utf-8")
    return page.replace("__CONFIG__", config.replace("<", "\\u003c"), 1)


@functools.cache
def _livegifts_page() -> str:
    return graphiql_page(example_document(), DEFAULT_HEADERS)


def with_example(controller: type[GraphQLController]) -> type[GraphQLController]:
    """``controller`` serving GraphiQL opened on the example document."""

    class LivegiftsGraphQLController(controller):  # type: ignore[misc, valid-type]
        async def render_graphql_ide(self, request: Request[Any, Any, Any]) -> Response[str]:
            return Response(_livegifts_page(), media_type=MediaType.HTML, headers={
                "content-security-policy": CONTENT_SECURITY_POLICY,
                "referrer-policy": "no-referrer", "x-content-type-options": "nosniff"})

    return LivegiftsGraphQLController


# GraphiQL's files, kept by browsers for a day (they change only with a release).
GRAPHIQL_ROUTES = [create_static_files_router(
    path="/static/graphiql", directories=[STATIC_DIRECTORY], name="graphiql-static",
    cache_control=CacheControlHeader(max_age=86_400, public=True), include_in_schema=False)]
