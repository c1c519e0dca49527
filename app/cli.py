"""The ``livegifts`` command: serve, migrate, export-schema, token, receipt, plugins, audit,
seed."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from sqlalchemy import select

from app.settings import Settings

T = TypeVar("T")


def _with_runtime(work: Callable[..., Awaitable[T]]) -> T:
    from app.runtime import Runtime

    async def run() -> T:
        runtime = Runtime.build(Settings())
        try:
            return await work(runtime)
        finally:
            await runtime.close()

    return asyncio.run(run())


@click.group(help="livegifts: coins, gifts, diamonds and payouts for live streaming.")
def main() -> None:
    pass


@main.command(help="Migrate the database, seed demo data if empty, and serve the API.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--migrate/--no-migrate", default=True, show_default=True,
              help="Apply migrations (and the demo seed) before serving.")
def serve(host: str, port: int, workers: int, migrate: bool) -> None:
    import uvicorn

    settings = Settings()
    if migrate:
        _with_runtime(lambda runtime: runtime.prepare_database())
    if settings.graphiql_enabled:
        click.echo(f"GraphiQL: http://{host}:{port}/graphql  "
                   "(token: livegifts token --user demo-viewer --role viewer)")
    uvicorn.run("app.asgi:create_app_from_environment", factory=True, host=host, port=port,
                workers=workers, log_level="info")


@main.command(help="Apply database migrations up to the latest schema.")
def migrate() -> None:
    from app.migrate import upgrade

    _with_runtime(lambda runtime: upgrade(runtime.engine))
    click.echo("database is at the latest schema")


@main.command("export-schema", help="Print the GraphQL schema (SDL).")
def export_schema() -> None:
    from app.graphql.schema import schema

    click.echo(schema.as_str())


@main.command(help="Mint a development bearer token signed with LIVEGIFTS_JWT_SECRET.")
@click.option("--user", "name", required=True, help="User name (the token subject).")
@click.option("--role", "roles", multiple=True, default=["viewer"], show_default=True,
              type=click.Choice(["viewer", "creator", "admin", "brand"]))
@click.option("--brand", default=None, help="For --role brand: the brand slug it may see.")
@click.option("--birthdate", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="Vouch for the user's birthdate (YYYY-MM-DD), as an identity provider would.")
@click.option("--ttl", type=int, default=None, help="Lifetime in seconds.")
def token(name: str, roles: tuple[str, ...], brand: str | None, birthdate: Any,
          ttl: int | None) -> None:
    from app.auth import Role, mint_token

    born = birthdate.date() if birthdate else None
    try:
        click.echo(mint_token(Settings(), name, [Role(r) for r in roles], ttl, brand, born))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--user/--brand") from exc


@main.command(help="Make a sandbox store receipt for a coin package (development only).")
@click.option("--package", "sku", required=True, help="Coin package sku, e.g. coins-70.")
@click.option("--transaction-id", default=None, help="Store transaction id (default: random).")
def receipt(sku: str, transaction_id: str | None) -> None:
    from app.models import CoinPackage

    async def make(runtime):  # type: ignore[no-untyped-def]
        async with runtime.sessions() as session:
            package = await session.scalar(select(CoinPackage).where(CoinPackage.sku == sku))
        if package is None:
            raise click.BadParameter(f"no coin package with sku {sku!r}", param_hint="--package")
        sandbox = runtime.payment_providers["sandbox"]
        return sandbox.make_receipt(package.sku, package.price_minor, package.currency,
                                    transaction_id)

    click.echo(_with_runtime(make))


@main.command(help="List installed plugins: version, hooks, gifts, status and error.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins(as_json: bool) -> None:
    import dataclasses
    import json

    from app.plugins import PluginHost

    host = PluginHost(Settings())
    records = [dataclasses.asdict(record) for record in host.records.values()]
    host.close()
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    columns = ["name", "version", "status", "hooks", "gifts", "error"]
    rows = [[str(r["name"]), str(r["version"]), str(r["status"]), ", ".join(r["hooks"]),
             ", ".join(r["gifts"]), r["error"] or ""] for r in records]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    for row in [columns, ["-" * w for w in widths], *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@main.command(help="Check the ledger: conservation, cached balances, no negative balances, "
                   "and the journal's digests and hash chain.")
@click.option("--seal", is_flag=True, help="First seal the transactions not yet sealed.")
def audit(seal: bool) -> None:
    from app.ledger import audit as run_audit
    from app.ledger import journal

    async def check(runtime):  # type: ignore[no-untyped-def]
        if seal:
            async with runtime.sessions() as session, session.begin():
                await journal.seal(session)
        async with runtime.sessions() as session:
            return await run_audit(session)

    findings = _with_runtime(check)
    for finding in findings:
        click.echo(f"FAIL {finding}", err=True)
    if findings:
        sys.exit(1)
    click.echo("audit passed: every currency sums to zero, cached balances match their "
               "entries, no limited account is negative, the journal is intact")


@main.command(help="Create the default coin packages and demo users (safe to repeat).")
def seed() -> None:
    from app.migrate import upgrade
    from app.seed import seed_demo_data

    async def run(runtime):  # type: ignore[no-untyped-def]
        await upgrade(runtime.engine)
        await seed_demo_data(runtime)

    _with_runtime(run)
    click.echo("demo data is in place")


@main.command(help="Sign a sandbox webhook (refund, chargeback or payout result) and print "
                   "a curl command that delivers it.")
@click.argument("kind", type=click.Choice(["refund", "chargeback", "paid", "failed"]))
@click.option("--id", "reference", required=True,
              help="The store transaction id (refund, chargeback) or provider payout id "
                   "(paid, failed).")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True)
def webhook(kind: str, reference: str, url: str) -> None:
    import json
    import shlex

    from app.sandbox import SandboxPayoutProvider

    if kind in ("refund", "chargeback"):
        body, path = {"type": kind, "transaction_id": reference}, "payments"
    else:
        body, path = {"payout_id": reference, "status": kind}, "payouts"
    raw = json.dumps(body, separators=(",", ":"))
    signature = SandboxPayoutProvider(Settings().sandbox_secret).sign_webhook(raw.encode())
    click.echo(f"curl -s -X POST {url}/webhooks/{path}/sandbox "
               f"-H 'content-type: application/json' "
               f"-H 'x-livegifts-signature: {signature}' --data {shlex.quote(raw)}")
