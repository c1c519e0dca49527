"""The ASGI application: ``create_app(settings)`` wires the runtime into Litestar and GraphQL."""

from __future__ import annotations

import functools
import gc
import logging
from typing import Any

from litestar import Litestar, Request, Response
from litestar.background_tasks import BackgroundTasks
from litestar.config.cors import CORSConfig
from litestar.datastructures import Headers, State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send
from strawberry.http import process_result
from strawberry.litestar import make_graphql_controller

from app import long_lived, observability
from app.graphiql import GRAPHIQL_ROUTES, with_example
from app.graphql.broadcast import SERVER_SEND, broadcasting
from app.graphql.context import Context
from app.graphql.schema import schema
from app.http_errors import OneErrorShape, error_body
from app.http_graphql import GraphQLEdge
from app.http_media import GraphQLResponseMedia
from app.http_routes import ROUTES
from app.overlay import OVERLAY_ROUTES
from app.ratelimit import Counters, RateLimit
from app.runtime import Runtime
from app.settings import Environment, Settings


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Litestar:
    settings = settings or Settings()
    runtime = runtime or Runtime.build(settings)

    async def context_getter(state: State, scope: Scope) -> Context:
        # HTTP sends the token in a header; WebSocket clients may instead put
        # {"Authorization": "Bearer ..."} in the connection_init payload.
        return Context(runtime=state.runtime,
                       authorization=Headers.from_scope(scope).get("authorization"))

    graphql = broadcasting(with_example(_origins_by_our_name(_response_on_the_loop(
        make_graphql_controller(
        schema,
        path="/graphql",
        graphql_ide="graphiql" if settings.graphiql_enabled else None,
        context_getter=context_getter,
        allowed_origins=_origins(settings.websocket_origins),
    )))))
    counters = Counters(settings.redis_url, settings.redis_prefix)

    async def start_runtime(app: Litestar) -> None:
        await app.state.runtime.start()
        await counters.start()
        _tune_garbage_collector()

    async def close_runtime(app: Litestar) -> None:
        await app.state.runtime.close()
        await counters.close()

    app = Litestar(
        route_handlers=[graphql, observability.health, observability.ready,
                        observability.metrics, *ROUTES, *OVERLAY_ROUTES,
                        *(GRAPHIQL_ROUTES if settings.graphiql_enabled else [])],
        state=State({"runtime": runtime}),
        on_startup=[start_runtime],
        on_shutdown=[close_runtime],
        middleware=[DefineMiddleware(RateLimit, settings=settings, counters=counters),
                    GraphQLResponseMedia,
                    DefineMiddleware(GraphQLEdge, settings=settings, documents=runtime.documents,
                                     public_data=runtime.public_data,
                                     run=functools.partial(_run, runtime))],
        cors_config=CORSConfig(allow_origins=_origins(settings.cors_origins),
                               allow_headers=["authorization", "content-type",
                                              observability.REQUEST_ID_HEADER],
                               expose_headers=[observability.REQUEST_ID_HEADER],
                               allow_methods=["GET", "POST", "OPTIONS"])
        if settings.cors_origins else None,
        request_max_body_size=settings.max_request_bytes,
        exception_handlers={UnicodeDecodeError: _not_utf8},
        plugins=observability.tracing_plugins(settings, runtime.engine),
        # The REST routes' OpenAPI pages (/schema) are for development.
        **({} if settings.environment is Environment.DEVELOPMENT else {"openapi_config": None}),
        after_exception=[observability.log_unhandled_error],
        logging_config=None,  # logging is configured once, by app.observability.logging_config
    )
    # Outermost, so that unmatched paths and CORS preflights get a request id and are counted.
    app.asgi_handler = _server_send_kept(
        observability.ObservedRequests(OneErrorShape(app.asgi_handler)))
    return app


def _server_send_kept(app: ASGIApp) -> ASGIApp:
    """Outermost: a WebSocket's scope keeps the server's own ``send``, for the frames that
    need none of the layers between (see :data:`app.graphql.broadcast.SERVER_SEND`); the
    collector learns of each connection's opening and closing (:mod:`app.long_lived`)."""

    async def keep(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await app(scope, receive, send)
            return
        scope[SERVER_SEND] = send
        long_lived.PROCESS.connection_opened()
        try:
            await app(scope, receive, send)
        finally:
            long_lived.PROCESS.connection_closed()

    return keep


async def _run(runtime: Runtime, document: str, request: dict[str, Any],
               authorization: str | None) -> dict[str, Any]:
    """A query or mutation executed for the caller, its result as GraphQL over HTTP sends it
    (what the GraphQL endpoint answers a POST, without its handler). Resolvers get no
    ``request`` or ``response`` in their context on this path: none reads them."""
    result = await schema.execute(document, variable_values=request.get("variables"),
                                  context_value=Context(runtime=runtime,
                                                        authorization=authorization),
                                  operation_name=request.get("operationName"),
                                  operation_extensions=request.get("extensions"))
    return process_result(result)


def _response_on_the_loop(controller: type[Any]) -> type[Any]:
    """An HTTP request's dependencies resolved one after another, on the event loop.

    Strawberry builds each request's Response object in a worker thread; it is one
    constructor call, cheaper on the loop than the thread hop. And Litestar resolves the
    dependencies of one level together in a task group (a task each): chained, root value
    then response then context, each level has one, awaited in place.
    """

    async def root_value() -> None:
        return None

    async def response(root_value: None) -> Response[Any]:
        return Response({}, background=BackgroundTasks([]))

    async def context(response: Response[Any], request: Request[Any, Any, Any],
                      state: State) -> Context:
        found = Context(runtime=state.runtime,
                        authorization=request.headers.get("authorization"))
        found.request, found.response = request, response
        return found

    controller.dependencies = {**controller.dependencies, "root_value": Provide(root_value),
                               "response": Provide(response), "context": Provide(context)}
    return controller


class _StrawberryOriginWarning(logging.Filter):
    """Drops strawberry's own line for a refused WebSocket origin: it names its parameter,
    not our setting (:func:`_origins_by_our_name` logs ours)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Rejected WebSocket connection from origin")


def _origins_by_our_name(controller: type[Any]) -> type[Any]:
    """``controller`` logging a refused WebSocket origin with the setting that allows it."""
    logging.getLogger("strawberry.ws").addFilter(_STRAWBERRY_ORIGIN_WARNING)

    class OriginCheckingController(controller):  # type: ignore[misc, valid-type]
        def is_websocket_origin_allowed(self, request: Any, origin: str) -> bool:
            if super().is_websocket_origin_allowed(request, origin):
                return True
            logger.warning("Refused a WebSocket from a page on %r: to let pages on it follow "
                           "live events, add it to LIVEGIFTS_WEBSOCKET_ORIGINS "
                           "(comma-separated origins, like http://localhost:5173).", origin)
            return False

    return OriginCheckingController


_STRAWBERRY_ORIGIN_WARNING = _StrawberryOriginWarning()
logger = logging.getLogger("livegifts.http")


@functools.cache  # once per process, however many apps it starts
def _tune_garbage_collector() -> None:
    # What is alive now (schema, models, plugins) lives as long as the process: keep it out
    # of the collector's scans (so are a crowd of WebSockets', once it has arrived), and
    # collect young objects less often (every request and every event delivered allocates
    # many short-lived ones). The middle generation runs after 20 young collections: after
    # 5, sends beside a hung partner plugin had their p99 over its target in every run
    # (BENCHMARKS.md, "a fifth session").
    long_lived.PROCESS.start()
    gc.set_threshold(20_000, 20, 20)


def _not_utf8(request: Request[Any, Any, Any], error: UnicodeDecodeError) -> Response[Any]:
    return Response(error_body(400, "The request body is not UTF-8 encoded JSON."),
                    status_code=400)


def _origins(value: str) -> list[str]:
    return [origin.strip() for origin in value.split(",") if origin.strip()]


def create_app_from_environment() -> Litestar:
    """Factory for ``uvicorn --factory``: settings come from the environment."""
    return create_app(Settings())
