"""GraphiQL as livegifts serves it: opened on a ready example document.

Strawberry serves its own GraphiQL page; ``with_example`` subclasses the GraphQL
controller and overrides ``render_graphql_ide``, strawberry's documented hook for
a custom IDE, to serve that page with two changes: the query editor opens on
``app/graphql/example.graphql`` (a viewer's wallet, the gift catalogue,
``sendGift`` and ``liveSessionEvents``, with comments on minting a token), and the
Headers tab starts with an ``Authorization`` placeholder to replace with a token
from ``livegifts token``. Headers a reader saved in the browser win over the
placeholder.
"""

from __future__ import annotations

import functools
import json
from importlib.resources import files
from typing import Any

from litestar import Request, Response
from litestar.enums import MediaType
from strawberry.http.ides import get_graphql_ide_html
from strawberry.litestar.controller import GraphQLController

DEFAULT_HEADERS = {"Authorization": "Bearer paste-a-token-from-livegifts-token"}

# Where strawberry's page names its example query and builds the GraphiQL element.
_EXAMPLE_QUERY = "const EXAMPLE_QUERY = `"
_GRAPHIQL_PROPS = "React.createElement(GraphiQL, {"


def example_document() -> str:
    """The example operations GraphiQL opens on."""
    return files("app.graphql").joinpath("example.graphql").read_text(encoding="utf-8")


def _script_literal(value: str) -> str:
    """A JavaScript string literal that is safe inside a <script> element."""
    return json.dumps(value).replace("<", "\\u003c")


def graphiql_page(html: str, document: str, headers: dict[str, str]) -> str:
    """Strawberry's GraphiQL ``html``, opened on ``document`` with ``headers`` as default."""
    start = html.find(_EXAMPLE_QUERY)
    end = html.find("`;", start + len(_EXAMPLE_QUERY))
    if start < 0 or end < 0 or _GRAPHIQL_PROPS not in html:
        raise RuntimeError("strawberry's GraphiQL page no longer has the example query and "
                           "GraphiQL element app.graphiql expects; update app/graphiql.py")
    example = f"const EXAMPLE_QUERY = {_script_literal(document)};"
    props = (f"{_GRAPHIQL_PROPS}\n          defaultQuery: EXAMPLE_QUERY,"
             f"\n          defaultHeaders: {_script_literal(json.dumps(headers, indent=2))},")
    page = html[:start] + example + html[end + 2:]
    return page.replace(_GRAPHIQL_PROPS, props, 1).replace(
        "<title>Strawberry GraphiQL</title>", "<title>livegifts GraphiQL</title>", 1)


@functools.cache
def _livegifts_page() -> str:
    return graphiql_page(get_graphql_ide_html("graphiql"), example_document(), DEFAULT_HEADERS)


def with_example(controller: type[GraphQLController]) -> type[GraphQLController]:
    """``controller`` serving GraphiQL opened on the example document."""

    class LivegiftsGraphQLController(controller):  # type: ignore[misc, valid-type]
        async def render_graphql_ide(self, request: Request[Any, Any, Any]) -> Response[str]:
            return Response(_livegifts_page(), media_type=MediaType.HTML)

    return LivegiftsGraphQLController
