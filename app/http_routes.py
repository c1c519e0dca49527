"""Plain HTTP endpoints beside GraphQL: provider webhooks, CSV statements and gift pictures."""

from __future__ import annotations

from datetime import date
from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from app import media
from app.auth import AuthError, Role, principal_from_header
from app.errors import DomainError, ErrorCode
from app.http_errors import error_body
from app.services import payouts, reversals, statements
from app.services.brands import brand_by_slug, campaign_sends, sends_csv
from app.services.users import ensure_user

SIGNATURE_HEADER = "x-livegifts-signature"
MAX_SENDS_CSV = 1_000_000  # rows in one export: a year of a busy brand's sends


def _error(status: int, message: str, code: ErrorCode | None = None) -> Response[dict[str, Any]]:
    return Response(error_body(status, message, code.value if code else None),
                    status_code=status)


_BUILT_IN_PICTURES = media.built_in_pictures()


def _picture(content: bytes, filename: str) -> Response[bytes]:
    return Response(content, media_type=media.MEDIA_TYPES[media.suffix(filename)],
                    headers=media.PICTURE_HEADERS)


@get(media.BUILT_IN + "{filename:str}", include_in_schema=False, sync_to_thread=False)
def gift_picture(filename: FromPath[str]) -> Response[Any]:
    """A default gift's picture, shipped in the package."""
    content = _BUILT_IN_PICTURES.get(filename)
    return _error(404, "No gift picture has this name.") if content is None \
        else _picture(content, filename)


@get(media.BRAND_ART + "{filename:str}", include_in_schema=False, sync_to_thread=True)
def brand_picture(filename: FromPath[str], state: State) -> Response[Any]:
    """A sponsored gift's picture, shipped in its plugin's package (read in a thread)."""
    file = state.runtime.plugins.picture(filename)
    if file is None:
        return _error(404, "No brand picture has this name.")
    return _picture(file.read_bytes(), filename)


@post("/webhooks/payouts/{provider:str}", status_code=200)
async def payout_webhook(provider: FromPath[str], request: Request[Any, Any, Any], state: State
                         ) -> Response[dict[str, Any]]:
    """A payout provider reports a payout paid or failed (signed)."""
    runtime = state.runtime
    try:
        payout, changed = await payouts.settle_from_webhook(
            runtime.sessions, runtime.payout_providers, provider, await request.body(),
            request.headers.get(SIGNATURE_HEADER, ""))
    except payouts.WebhookError as error:
        return _error(error.status, error.message)
    return Response({"payout": payout.provider_payout_id, "status": payout.status,
                     "changed": changed})


@post("/webhooks/payments/{provider:str}", status_code=200)
async def payment_webhook(provider: FromPath[str], request: Request[Any, Any, Any], state: State
                          ) -> Response[dict[str, Any]]:
    """A payment provider reports a refund or chargeback of a purchase (signed)."""
    runtime = state.runtime
    try:
        result = await reversals.reverse_from_webhook(
            runtime.sessions, runtime.payment_providers, provider, await request.body(),
            request.headers.get(SIGNATURE_HEADER, ""))
    except payouts.WebhookError as error:
        return _error(error.status, error.message)
    reversal = result.reversal
    return Response({"reversed": reversal.kind, "coins_removed": reversal.coins_removed,
                     "debt_recorded": reversal.debt_recorded,
                     "diamonds_clawed_back": result.clawed_diamonds})


async def _caller(request: Request[Any, Any, Any], state: State) -> int:
    principal = principal_from_header(state.runtime.settings,
                                      request.headers.get("authorization"))
    if principal is None:
        raise AuthError("Authentication required: send 'Authorization: Bearer <token>'.")
    async with state.runtime.sessions() as session, session.begin():
        return (await ensure_user(session, principal.name, principal.birthdate)).id


def _csv(statement: statements.Statement, name: str) -> Response[str]:
    return Response(statement.to_csv(), media_type="text/csv",
                    headers={"content-disposition": f'attachment; filename="{name}"'})


@get("/statements/{filename:str}")
async def viewer_statement_csv(filename: FromPath[str], request: Request[Any, Any, Any],
                               state: State) -> Response[Any]:
    """``/statements/2026-11.csv``: the caller's statement for a month, as CSV."""
    month = filename.removesuffix(".csv")
    try:
        user_id = await _caller(request, state)
        async with state.runtime.sessions() as session:
            statement = await statements.viewer_statement(session, user_id, month)
    except AuthError as error:
        return _error(401, str(error))
    except DomainError as error:
        return _error(400, error.message, error.code)
    return _csv(statement, f"livegifts-statement-{month}.csv")


@get("/earnings.csv")
async def earnings_csv(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    try:
        user_id = await _caller(request, state)
        start = date.fromisoformat(request.query_params.get("from", ""))
        end = date.fromisoformat(request.query_params["to"]) if "to" in \
            request.query_params else None
        async with state.runtime.sessions() as session:
            statement = await statements.creator_earnings(session, user_id, start, end)
    except AuthError as error:
        return _error(401, str(error))
    except ValueError:
        return _error(400, "from and to must be dates like 2026-11-01.")
    except DomainError as error:
        return _error(400, error.message, error.code)
    return _csv(statement, f"livegifts-earnings-{statement.start}-{statement.end}.csv")


def _brand_refusal(request: Request[Any, Any, Any], state: State, slug: str
                   ) -> Response[Any] | None:
    """401 or 403 unless the caller is the brand's partner or an admin."""
    try:
        principal = principal_from_header(state.runtime.settings,
                                          request.headers.get("authorization"))
    except AuthError as error:
        return _error(401, str(error))
    if principal is None:
        return _error(401, "Authentication required: send 'Authorization: Bearer <token>'.")
    if not principal.has(Role.ADMIN) and not (principal.has(Role.BRAND) and
                                               principal.brand == slug):
        return _error(403, "Forbidden: a brand partner token sees only its own brand.")
    return None


@get("/brands/{slug:str}/statements/{filename:str}")
async def brand_statement_csv(slug: FromPath[str], filename: FromPath[str],
                              request: Request[Any, Any, Any], state: State) -> Response[Any]:
    """``/brands/my-brand/statements/2026-12.csv``: a brand's revenue for a month, for
    its partners' tokens and admins."""
    month = filename.removesuffix(".csv")
    refusal = _brand_refusal(request, state, slug)
    if refusal is not None:
        return refusal
    try:
        async with state.runtime.sessions() as session:
            await brand_by_slug(session, slug)
            statement = await statements.brand_statement(session, slug, month)
    except DomainError as error:
        return _error(404 if error.code is ErrorCode.NOT_FOUND else 400, error.message,
                      error.code)
    return _csv(statement, f"livegifts-{slug}-revenue-{month}.csv")


@get("/brands/{slug:str}/sends.csv")
async def brand_sends_csv(slug: FromPath[str], request: Request[Any, Any, Any], state: State
                          ) -> Response[Any]:
    """``/brands/my-brand/sends.csv?from=2026-12-01&to=2026-12-08``: every send of a brand's
    gifts in those days (UTC, ``to`` exclusive, at most 366), oldest first, for reconciling."""
    refusal = _brand_refusal(request, state, slug)
    if refusal is not None:
        return refusal
    try:
        start = date.fromisoformat(request.query_params.get("from", ""))
        end = date.fromisoformat(request.query_params.get("to", ""))
    except ValueError:
        return _error(400, "from and to must be dates like 2026-11-01.")
    try:
        statements.check_range(start, end)
        since, until = statements.day_bounds(start, end)
        async with state.runtime.sessions() as session:
            sends = await campaign_sends(session, slug, limit=MAX_SENDS_CSV, since=since,
                                         until=until)
    except DomainError as error:
        return _error(404 if error.code is ErrorCode.NOT_FOUND else 400, error.message,
                      error.code)
    return Response(sends_csv(sends), media_type="text/csv", headers={
        "content-disposition": f'attachment; filename="livegifts-{slug}-sends-{start}-{end}.csv"'})


ROUTES = [payout_webhook, payment_webhook, viewer_statement_csv, earnings_csv,
          brand_statement_csv, brand_sends_csv, gift_picture, brand_picture]
