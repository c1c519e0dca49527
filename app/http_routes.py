"""Plain HTTP endpoints beside GraphQL: provider webhooks and CSV statements."""

from __future__ import annotations

from datetime import date
from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from app.auth import AuthError, principal_from_header
from app.errors import DomainError
from app.services import payouts, reversals, statements
from app.services.users import ensure_user

SIGNATURE_HEADER = "x-livegifts-signature"


def _error(status: int, message: str) -> Response[dict[str, str]]:
    return Response({"error": message}, status_code=status)


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
    return Response(statement.to_csv(), media_type="text/csv; charset=utf-8",
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
        return _error(400, error.message)
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
        return _error(400, error.message)
    return _csv(statement, f"livegifts-earnings-{statement.start}-{statement.end}.csv")


ROUTES = [payout_webhook, payment_webhook, viewer_statement_csv, earnings_csv]
