"""The ``livegifts`` command: serve, migrate, export-schema, token, overlay-url, receipt,
plugins, documents, audit, seed."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
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


@contextlib.contextmanager
def _progress(wanted: bool | None) -> Iterator[Callable[[str, int, int], None]]:
    """Progress bars on stderr, when asked for or when stderr is a terminal; yields a
    ``report(step, done, total)`` that does nothing otherwise, so stdout stays clean."""
    if not (sys.stderr.isatty() if wanted is None else wanted):
        yield lambda step, done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True)) as bars:
        steps: dict[str, Any] = {}

        def report(step: str, done: int, total: int) -> None:
            if step not in steps:
                steps[step] = bars.add_task(step, total=total)
            bars.update(steps[step], completed=done, total=total)

        yield report


progress_option = click.option(
    "--progress/--no-progress", "show_progress", default=None,
    help="Show progress on stderr (default: only when stderr is a terminal).")


def command_name() -> str:
    """How the user can run this command again: ``livegifts`` when that is it on the PATH,
    else the path it was run by (``.venv/bin/livegifts`` in a fresh checkout)."""
    invoked = Path(sys.argv[0]).resolve()
    on_path = shutil.which("livegifts")
    if on_path and Path(on_path).resolve() == invoked:
        return "livegifts"
    try:
        return str(invoked.relative_to(Path.cwd()))
    except ValueError:
        return str(invoked)


@click.group(help="livegifts: coins, gifts, diamonds and payouts for live streaming.")
def main() -> None:
    pass


@main.command(help="Migrate the database, seed demo data if empty, and serve the API.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              envvar="LIVEGIFTS_WORKERS", show_envvar=True, help="Server processes.")
@click.option("--migrate/--no-migrate", default=True, show_default=True,
              help="Apply migrations (and the demo seed) before serving.")
def serve(host: str, port: int, workers: int, migrate: bool) -> None:
    import logging.config
    import os
    import signal
    import tempfile

    import uvicorn

    if not os.environ.get("LIVEGIFTS_PUBLIC_BASE_URL"):  # the workers read it too
        reachable = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        os.environ["LIVEGIFTS_PUBLIC_BASE_URL"] = \
            f"http://{f'[{reachable}]' if ':' in reachable else reachable}:{port}"
    settings = Settings()
    if workers > 1 and not settings.redis_url:
        raise click.ClickException(
            f"--workers {workers} needs an event bus the workers share, or each viewer sees "
            "only the gifts its own worker served: set REDIS_URL (for example "
            "redis://127.0.0.1:6379/0), or serve with --workers 1.")
    metrics_directory = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # The workers add up their metrics through files there (see app.observability); it
        # must be set before anything imports prometheus_client.
        metrics_directory = tempfile.mkdtemp(prefix="livegifts-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_directory
        # uvicorn re-raises the signal that stopped it: exit through Python, so the
        # directory is removed below.
        signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    try:
        from app import observability

        try:
            observability.require_tracing_packages(settings)
        except observability.TracingUnavailable as error:
            raise click.ClickException(str(error)) from None
        log_config = observability.logging_config(settings)
        logging.config.dictConfig(log_config)
        from app.plugins import PluginHost, PluginStartupError

        try:
            if migrate:
                _with_runtime(lambda runtime: runtime.prepare_database())
            elif settings.plugins_strict:  # the workers would each fail with a traceback
                PluginHost(settings).close()
        except PluginStartupError as error:
            raise click.ClickException(str(error)) from None
        if settings.graphiql_enabled:
            click.echo(f"GraphiQL: http://{host}:{port}/graphql  "
                       f"(token: {command_name()} token --user demo-viewer --role viewer)")
        # Access lines come from app.observability, with the request id and duration.
        # Forwarded headers are believed from the configured proxies only: from anyone
        # else (loopback included, uvicorn's default) they would let a client choose the
        # address its rate limit counts.
        proxies = settings.trusted_proxies.strip()
        uvicorn.run("app.asgi:create_app_from_environment", factory=True, host=host, port=port,
                    workers=workers, log_config=log_config, log_level=settings.log_level.lower(),
                    access_log=False, ws_per_message_deflate=settings.websocket_compression,
                    proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None)
    finally:
        if metrics_directory:
            shutil.rmtree(metrics_directory, ignore_errors=True)


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


@main.command("overlay-url", help="Print a live session's overlay URL for broadcasting "
                                  "software (OBS browser source), carrying a long-lived viewer "
                                  "token signed with LIVEGIFTS_JWT_SECRET.")
@click.argument("session_id")
@click.option("--base-url", default="http://127.0.0.1:8000", show_default=True,
              help="The server's address as the broadcasting software reaches it.")
@click.option("--user", "name", default="overlay", show_default=True,
              help="User name of the overlay's viewer token.")
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True,
              help="Lifetime of the token in days.")
def overlay_url(session_id: str, base_url: str, name: str, days: int) -> None:
    from app.auth import Role, mint_token
    from app.errors import DomainError
    from app.graphql.common import decode_id
    from app.models import LiveSession
    from app.overlay import overlay_url as url_with_token

    if not base_url.startswith(("http://", "https://")):
        raise click.BadParameter("must start with http:// or https://", param_hint="--base-url")
    try:
        number = decode_id(session_id, "LiveSession", "SESSION_ID")
    except DomainError as exc:
        raise click.BadParameter(exc.message, param_hint="SESSION_ID") from exc

    async def find(runtime):  # type: ignore[no-untyped-def]
        async with runtime.sessions() as session:
            return await session.get(LiveSession, number)

    live_session = _with_runtime(find)
    if live_session is None:
        raise click.BadParameter("no live session has this ID", param_hint="SESSION_ID")
    try:
        token = mint_token(Settings(), name, [Role.VIEWER], days * 24 * 3600)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--user") from exc
    if live_session.status != "live":
        click.echo("note: this session has ended; the overlay will say so", err=True)
    click.echo(url_with_token(base_url, session_id, token))


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


@main.command(help="List installed plugins and how they are doing on every server process: "
                    "status, hooks, gifts, failures, time-outs, breaker and last error. Exits "
                    "1 if any plugin failed to load.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins(as_json: bool) -> None:
    import dataclasses
    import json

    from app.plugins import FAILED, PluginHost
    from app.runtime import Runtime
    from app.services import plugin_health
    from app.services.brands import settle_as_bound

    settings = Settings()
    host = PluginHost(settings.model_copy(update={"plugins_strict": False}))  # list them all

    async def fleet() -> dict[str, plugin_health.FleetHealth]:
        runtime = Runtime.build(settings, host)
        try:
            async with runtime.sessions() as session:
                await settle_as_bound(session, host)  # ownership as the servers decide it
                return await plugin_health.fleet(session)
        finally:
            await runtime.engine.dispose()

    try:
        health = asyncio.run(fleet())
    except Exception as error:  # no database: what is installed here is still worth showing
        click.echo(f"fleet health unavailable ({type(error).__name__}: {error}); showing "
                   "this machine's plugins only", err=True)
        health = {}
    records = []
    for record in host.records.values():
        row = dataclasses.asdict(record)
        fleet_row = health.get(record.name)
        if fleet_row is not None:
            row.update(failures=fleet_row.failures, timeouts=fleet_row.timeouts,
                       breaker=fleet_row.breaker, last_failure=fleet_row.last_failure,
                       processes=fleet_row.processes, breaker_open_in=fleet_row.open_in)
        records.append(row)
    host.close()
    if as_json:
        click.echo(json.dumps(records, indent=2, default=str))
    else:
        columns = ["name", "version", "status", "hooks", "gifts", "failures", "timeouts",
                   "breaker", "error"]
        rows = [[str(r["name"]), str(r["version"]), str(r["status"]), ", ".join(r["hooks"]),
                 ", ".join(r["gifts"]), str(r["failures"]), str(r["timeouts"]),
                 str(r["breaker"]), r["error"] or r["last_failure"] or ""] for r in records]
        widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
        for row in [columns, ["-" * w for w in widths], *rows]:
            click.echo("  ".join(cell.ljust(w) for cell, w in
                                 zip(row, widths, strict=True)).rstrip())
    if any(r["status"] == FAILED for r in records):
        sys.exit(1)


@main.group(help="Brands: which package owns each, and approving new ones.")
def brands() -> None:
    pass


@brands.command("list", help="Print each brand's owning distribution and approval.")
def brands_list() -> None:
    from app.services.brands import bindings

    async def read(runtime):  # type: ignore[no-untyped-def]
        async with runtime.sessions() as session:
            return await bindings(session)

    for binding in _with_runtime(read):
        owner = binding.distribution or "(its plugin, at next start)"
        click.echo(f"{binding.slug:<40}  {owner:<40}"
                   f"  {'approved' if binding.approved else 'awaiting approval'}")


@brands.command("bind", help="Bind brand SLUG to DISTRIBUTION (a package name): only that "
                             "package's plugin may declare it, from each server's next start.")
@click.argument("slug")
@click.argument("distribution")
def brands_bind(slug: str, distribution: str) -> None:
    from app.errors import DomainError
    from app.services.brands import bind_brand

    try:
        binding = _with_runtime(lambda runtime: bind_brand(runtime.sessions, slug, distribution))
    except DomainError as error:
        raise click.ClickException(f"{error.message} Nothing was changed.") from None
    state = "approved" if binding.approved else "awaiting approval (livegifts brands approve)"
    click.echo(f"Brand {slug!r} is bound to distribution {binding.distribution!r}, {state}; "
               "servers apply it when they next start.")


@brands.command("approve", help="Let brand SLUG's sponsored gifts go live.")
@click.argument("slug")
def brands_approve(slug: str) -> None:
    from app.errors import DomainError
    from app.services.brands import approve_brand

    async def approve(runtime):  # type: ignore[no-untyped-def]
        binding = await approve_brand(runtime.sessions, slug)
        await runtime.sync_catalogue()  # its gifts join the catalogue, if installed here
        return binding, slug in runtime.plugins.brands

    try:
        binding, installed = _with_runtime(approve)
    except DomainError as error:
        raise click.ClickException(f"{error.message} Nothing was changed.") from None
    click.echo(f"Brand {slug!r} ({binding.distribution}) is approved; " + (
        "its gifts are in the catalogue." if installed else
        "its gifts join the catalogue when a server with its plugin starts."))


@main.group(help="The event log: every live event, kept for subscribers that resume.")
def events() -> None:
    pass


@events.command("prune", help="Delete the events older than the retention "
                              "(LIVEGIFTS_EVENT_RETENTION_DAYS, 7 by default). Servers also "
                              "prune once an hour.")
@click.option("--older-than-days", type=click.FloatRange(min=0), default=None,
              help="Delete events older than this many days instead.")
def events_prune(older_than_days: float | None) -> None:
    from datetime import timedelta

    from app.services.event_log import prune_all

    async def prune(runtime):  # type: ignore[no-untyped-def]
        days = runtime.settings.event_retention_days if older_than_days is None \
            else older_than_days
        return days, await prune_all(runtime.sessions, timedelta(days=days))

    days, count = _with_runtime(prune)
    click.echo(f"pruned {count} events older than {days:g} days")


@main.group(help="Trusted GraphQL documents: the ones the front ends ship, known to every "
                 "server by hash. With LIVEGIFTS_TRUSTED_DOCUMENTS_ONLY, the only ones run.")
def documents() -> None:
    pass


@documents.command("add", help="Trust the documents in FILE...: an Apollo persisted query "
                               "manifest, a JSON object of SHA-256 to document, or a "
                               ".graphql file (one document).")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def documents_add(files: tuple[str, ...]) -> None:

    from app.documents import add_trusted, read_manifest

    found = []
    for name in files:
        try:
            found += read_manifest(Path(name).read_text(encoding="utf-8"), name)
        except (ValueError, UnicodeDecodeError) as error:
            raise click.ClickException(f"{error} Nothing was added.") from None

    async def add(runtime):  # type: ignore[no-untyped-def]
        return await add_trusted(runtime.sessions, found)

    added = _with_runtime(add)
    click.echo(f"{added} document(s) added, {len(found) - added} already trusted.")


@documents.command("list", help="Print the trusted documents' hashes and names.")
def documents_list() -> None:
    from app.models import TrustedDocument

    async def listed(runtime):  # type: ignore[no-untyped-def]
        async with runtime.sessions() as session:
            return (await session.execute(select(TrustedDocument.sha256, TrustedDocument.name)
                                          .order_by(TrustedDocument.created_at))).all()

    for sha256, name in _with_runtime(listed):
        click.echo(f"{sha256}  {name}")


@main.command(help="Check the ledger: conservation, cached balances, no negative balances, "
                   "and the journal's digests and hash chain. With --checkpoint, also check "
                   "the seals against a file of signed checkpoints kept outside the database, "
                   "and add the new seals to it.")
@click.option("--seal", is_flag=True, help="First seal the transactions not yet sealed.")
@click.option("--checkpoint", "checkpoint_file", metavar="FILE", default=None,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Verify the seals recorded in FILE (signed JSON lines, created if missing), "
                   "then append the seals since its last line; nothing is written when "
                   "anything fails. Needs a key: --checkpoint-key or LIVEGIFTS_CHECKPOINT_KEY.")
@click.option("--checkpoint-key", "key_file", metavar="FILE", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The file holding the key that signs checkpoints (else the variable "
                   "LIVEGIFTS_CHECKPOINT_KEY). Keep it off the database's host.")
@progress_option
def audit(seal: bool, checkpoint_file: Path | None, key_file: Path | None,
          show_progress: bool | None) -> None:
    from app.ledger import audit as run_audit
    from app.ledger import checkpoints, journal

    key = b""
    if checkpoint_file is None and key_file is not None:
        raise click.UsageError("--checkpoint-key signs a checkpoint file: give --checkpoint FILE")
    if checkpoint_file is not None:
        if not checkpoint_file.parent.is_dir():
            raise click.BadParameter(f"the directory {checkpoint_file.parent} does not exist",
                                     param_hint="--checkpoint")
        try:
            key = checkpoints.load_key(key_file)
        except checkpoints.CheckpointError as error:
            raise click.UsageError(str(error)) from None

    async def check(runtime):  # type: ignore[no-untyped-def]
        if seal:
            async with runtime.sessions() as session, session.begin():
                await journal.seal(session)
        async with runtime.sessions() as session:
            audited = await journal.head(session)  # the audit checks at least these seals
            findings = await run_audit(session, report)
            if checkpoint_file is None:
                return findings, None
            findings += await checkpoints.verify(session, checkpoint_file, key)
            if findings:
                return findings, None
            try:
                return [], await checkpoints.append(session, checkpoint_file, key,
                                                    up_to_seal=audited)
            except checkpoints.CheckpointDiffers as differs:  # changed since verify()
                return differs.findings, None

    with _progress(show_progress) as report:
        try:
            findings, written = _with_runtime(check)
        except checkpoints.CheckpointError as error:
            raise click.ClickException(str(error)) from None
    for finding in findings:
        click.echo(f"FAIL {finding}", err=True)
    if findings:
        if checkpoint_file is not None:
            click.echo(f"nothing was written to {checkpoint_file}", err=True)
        sys.exit(1)
    click.echo("audit passed: every currency sums to zero, cached balances match their "
               "entries, no limited account is negative, the journal is intact")
    if checkpoint_file is not None:
        click.echo(f"checkpoints: the seals in {checkpoint_file} match the database; "
                   f"{written} new seal(s) recorded")


@main.command(help="Create the default coin packages and demo users (safe to repeat). With "
                   "--creators, --viewers, --sessions and --gifts, also add a large, realistic "
                   "data set for benchmarks to an empty database.")
@click.option("--creators", type=click.IntRange(min=0), default=0, show_default=True,
              help="Creators to add; popularity is skewed towards the first few.")
@click.option("--viewers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Viewers to add; each buys the coins for the gifts they send.")
@click.option("--sessions", type=click.IntRange(min=0), default=None,
              help="Live sessions, some still live (default: 4 per creator).")
@click.option("--gifts", type=click.IntRange(min=0), default=0, show_default=True,
              help="Gift sends, in combos, spread over the sessions.")
@click.option("--days", type=click.IntRange(min=1), default=28, show_default=True,
              help="The period the sessions and gifts are spread over.")
@click.option("--until", type=click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]), default=None,
              help="The end of that period, in UTC (default: now).")
@click.option("--random-seed", type=int, default=0, show_default=True,
              help="The same seed and options give the same data set.")
@progress_option
def seed(creators: int, viewers: int, sessions: int | None, gifts: int, days: int,
         until: datetime | None, random_seed: int, show_progress: bool | None) -> None:
    from app.migrate import upgrade
    from app.seed import seed_demo_data
    from app.seeding import ScaleOptions, SeedOptionsInvalid, SeedRefused, seed_at_scale

    options = ScaleOptions(creators=creators, viewers=viewers, sessions=sessions, gifts=gifts,
                           days=days, random_seed=random_seed,
                           until=until.replace(tzinfo=UTC) if until else None)
    try:
        options.check(datetime.now(UTC))
    except SeedOptionsInvalid as invalid:
        raise click.UsageError(str(invalid)) from None

    async def run(runtime):  # type: ignore[no-untyped-def]
        await upgrade(runtime.engine)
        await seed_demo_data(runtime)
        if options.requested:
            return await seed_at_scale(runtime, options, report)

    started = time.perf_counter()
    with _progress(show_progress) as report:
        try:
            summary = _with_runtime(run)
        except SeedRefused as refused:
            raise click.ClickException(str(refused)) from None
    click.echo("demo data is in place")
    if summary is not None:
        click.echo(f"seeded {summary.creators:,} creators, {summary.viewers:,} viewers, "
                   f"{summary.sessions:,} sessions ({summary.live_sessions:,} live), "
                   f"{summary.gifts:,} gifts in {summary.combos:,} combos and "
                   f"{summary.purchases:,} coin purchases in "
                   f"{time.perf_counter() - started:.1f} s")


@main.command(help="Sign a sandbox webhook (refund, chargeback or payout result) and print "
                   "a curl command that delivers it.")
@click.argument("kind", type=click.Choice(["refund", "chargeback", "paid", "failed"]))
@click.option("--id", "reference", required=True,
              help="The store transaction id (refund, chargeback) or provider payout id "
                   "(paid, failed).")
@click.option("--base-url", "url", default="http://127.0.0.1:8000", show_default=True,
              help="The server's base URL, as for overlay-url.")
@click.option("--url", "url", hidden=True, help="The former name of --base-url.")
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
