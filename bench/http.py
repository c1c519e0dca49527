"""Every kind of request over HTTP with wrk: throughput, latency and CPU per request.

    .venv/bin/python -m bench.http [--workers 2] [--connections 64] [--threads 2]
                                   [--seconds 10] [--viewers 256] [--redis URL]
                                   [--only healthz,catalogue,...] [--profile PHASE]
                                   [--against REF [--rounds N]]

Starts the real server (``livegifts serve --workers N``) on a scratch PostgreSQL database
holding 1,000 live creators and ``--viewers`` viewers with plenty of coins, with Redis as
the event bus its workers share (``--redis ''`` for none), and drives it with wrk
(``bench/wrk/graphql.lua``), one request kind a phase, each after a 2 s warm-up that is not
counted:

    healthz        GET /healthz: the HTTP floor, no GraphQL and no database
    catalogue      the gift catalogue (first 20), anonymous POST /graphql
    catalogue-get  the same query as GET /graphql?query=...
    wallet         a viewer's wallet, POST with the viewers' bearer tokens in turn
    gift-spread    sendGift (a Finger Heart, unique idempotency key) over the 1,000 creators
    gift-hot       sendGift, all to one creator
    pgbench        the baseline: a gift's writes as one SQL transaction (modelled on
                   bench.http_gifting's raw SQL), pgbench -M prepared, 16 clients, once the
                   server has stopped

``--against REF`` also serves the wallet and sendGift phases from git revision REF (a
worktree of it, on the same database), after this checkout's, and prints this checkout
against it: the cost of a change to the request or gift path, measured in the same run.
``--rounds N`` runs N rounds of both, alternating which goes first (ABBA: the first phases
of a run tend to be the slower ones), and prints each round's ratios of throughput and of
server + PostgreSQL CPU a request, and their medians.

wrk checks every response (status 200, GraphQL data and no errors, no userErrors). Server CPU per
request is the serving processes' user and system time (``/proc``) over a phase divided by
its requests; PostgreSQL's and wrk's own CPU likewise. Prints a table of every kind, the
ratios and targets (catalogue against the floor, sendGift against pgbench, hot against
spread), and the ledger audit after the server phases. ``--profile PHASE`` records a server
worker with py-spy during that phase, if py-spy is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.engine import make_url
from strawberry.relay import to_base64

from app.auth import Role, mint_token
from app.ledger import system_account
from app.models import LiveSession
from app.runtime import Runtime
from app.services.gifting import period_starts
from app.services.users import coin_account, diamond_account
from app.settings import Settings
from app.testing import ADULT, audit, go_live, new_viewer
from bench.common import BENCH_URL, fresh_runtime
from bench.http_gifting import CREATORS, JWT_SECRET, SEND_GIFT, Server

LUA = Path(__file__).with_name("wrk") / "graphql.lua"
CATALOGUE = "{ gifts(first: 20) { edges { node { id name coinPrice } } } }"
WALLET = "{ viewer { wallet { coins diamonds } } }"
PRICE, DIAMONDS = 5, 2  # a Finger Heart: 2 diamonds to the creator, 3 coins to the platform
WARM_UP = 2
PGBENCH_CLIENTS = 16
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Kind:
    name: str
    title: str
    method: str
    path: str
    check: str  # what a good response is: http (status 200), graphql (no errors), send
    body: str | None = None
    tokens: bool = False
    hot: bool = False


def graphql(query: str, **variables: object) -> str:
    return json.dumps({"query": query, **({"variables": variables} if variables else {})})


SEND = graphql(SEND_GIFT, input={"sessionId": "{session}", "giftId": "{gift}", "quantity": 1,
                                 "idempotencyKey": "{key}"})
KINDS = [
    Kind("healthz", "GET /healthz (HTTP floor)", "GET", "/healthz", "http"),
    Kind("catalogue", "catalogue, POST anonymous", "POST", "/graphql", "graphql",
         graphql(CATALOGUE)),
    Kind("catalogue-get", "catalogue, GET anonymous", "GET", "/graphql?query=" + quote(CATALOGUE),
         "graphql"),
    Kind("wallet", "viewer wallet, POST with token", "POST", "/graphql", "graphql",
         graphql(WALLET), tokens=True),
    Kind("gift-spread", "sendGift, 1,000 creators", "POST", "/graphql", "send", SEND,
         tokens=True),
    Kind("gift-hot", "sendGift, one hot creator", "POST", "/graphql", "send", SEND,
         tokens=True, hot=True),
]
PHASES = [kind.name for kind in KINDS] + ["pgbench"]


@dataclass
class Data:
    tokens: list[str]
    sessions: list[str]  # relay ids, in creator order
    gift: str
    pgbench: str  # the baseline's script, with this database's ids in it


@dataclass
class Result:
    title: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float | None
    failures: int
    server_ms: float | None  # CPU per request
    postgres_ms: float
    client_ms: float  # wrk's (or pgbench's) own CPU per request

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


# The data ---------------------------------------------------------------------------------


def stride(ids: list[int], what: str) -> tuple[int, int]:
    """``(first, step)`` of ids spaced evenly, as pgbench picks them by arithmetic."""
    step = ids[1] - ids[0] if len(ids) > 1 else 1
    if ids != list(range(ids[0], ids[0] + step * len(ids), step)):
        raise RuntimeError(f"the {what} ids are not evenly spaced: pgbench cannot pick them")
    return ids[0], step


async def prepare(viewers: int) -> Data:
    runtime = await fresh_runtime()
    async with runtime.sessions() as session, session.begin():  # first, so ids stay in step
        system = {name: (await system_account(session, name, currency)).id
                  for name, currency in (("coin_issuance", "COIN"), ("platform_revenue", "COIN"),
                                         ("creator_earnings", "COIN"),
                                         ("diamond_issuance", "DIAMOND"))}
    stages = [await go_live(runtime, f"creator-{n}") for n in range(CREATORS)]
    names = [f"viewer-{n}" for n in range(viewers)]
    viewer_ids = [await new_viewer(runtime, name, 10**12) for name in names]
    async with runtime.sessions() as session:
        wallets = [(await coin_account(session, v)).id for v in viewer_ids]
        earnings = [(await diamond_account(session, s.creator_id)).id for s in stages]
        live = list(await session.scalars(select(LiveSession.id).order_by(LiveSession.id)))
    await runtime.close()
    assert live == [s.session_id for s in stages]
    settings = Settings(jwt_secret=JWT_SECRET)
    tokens = [mint_token(settings, name, [Role.VIEWER], 3600, None, ADULT) for name in names]
    gift = stages[0].gifts["finger-heart"]
    script = pgbench_script(
        viewers, gift, system, session=stride(live, "session"),
        creator=stride([s.creator_id for s in stages], "creator"),
        earnings=stride(earnings, "creator diamond account"),
        sender=stride(viewer_ids, "viewer"), wallet=stride(wallets, "viewer wallet"))
    return Data(tokens, [to_base64("LiveSession", s.session_id) for s in stages],
                to_base64("Gift", gift), script)


def pgbench_script(viewers: int, gift: int, system: dict[str, int],
                   **ranges: tuple[int, int]) -> str:
    """The writes of one gift as one transaction, as bench.http_gifting's ``sql_phase``
    issues them: a random creator of the 1,000; each client its own viewers."""
    periods = period_starts(datetime.now(UTC).date())
    picks = [rf"\set i random(0, {CREATORS - 1})",
             rf"\set v (:client_id + {PGBENCH_CLIENTS} * random(0, "
             rf"{max(viewers // PGBENCH_CLIENTS - 1, 0)})) % {viewers}"]
    for name, (first, step) in ranges.items():
        index = "v" if name in ("sender", "wallet") else "i"
        picks.append(rf"\set {name} {first} + {step} * :{index}")
    nonce = uuid.uuid4().hex[:8]

    def rows(row: str) -> str:
        return ", ".join(row.format(period=period, start=start)
                         for period, start in periods.items())

    return "\n".join(picks) + f"""
BEGIN;
INSERT INTO idempotency_record (scope, key, operation, fingerprint, status, created_at)
  VALUES ('user:' || :sender, 'pgbench-{nonce}-' || :client_id || '-' || gen_random_uuid(),
  'send_gift', 'f', 'pending', now()) RETURNING id AS claim \\gset
SELECT id FROM live_session WHERE id = :session FOR KEY SHARE;
UPDATE ledger_account SET balance = balance - {PRICE} WHERE id = :wallet AND balance >= {PRICE};
UPDATE ledger_account SET balance = balance + {DIAMONDS} WHERE id = :earnings;
INSERT INTO ledger_transaction (kind, memo, created_at, digest)
  VALUES ('gift', 'finger-heart x1', now(), 'digest') RETURNING id AS tx \\gset
INSERT INTO ledger_entry (transaction_id, account_id, currency, amount) VALUES
  (:tx, :wallet, 'COIN', -{PRICE}),
  (:tx, {system['platform_revenue']}, 'COIN', {PRICE - DIAMONDS}),
  (:tx, {system['creator_earnings']}, 'COIN', {DIAMONDS}),
  (:tx, {system['diamond_issuance']}, 'DIAMOND', -{DIAMONDS}),
  (:tx, :earnings, 'DIAMOND', {DIAMONDS});
INSERT INTO gift_combo (session_id, sender_id, gift_id, count, sends, coins, started_at, last_at)
  VALUES (:session, :sender, {gift}, 1, 1, {PRICE}, now(), now())
  ON CONFLICT (session_id, sender_id, gift_id) WHERE ended_at IS NULL
  DO UPDATE SET count = gift_combo.count + 1, sends = gift_combo.sends + 1,
  coins = gift_combo.coins + excluded.coins, last_at = excluded.last_at RETURNING id AS combo \\gset
INSERT INTO gift_send (session_id, gift_id, sender_id, creator_id, quantity, unit_price,
  coins_paid, brand_subsidy, creator_coins, platform_coins, brand_coins, creator_diamonds,
  rate_card_version, transaction_id, combo_id, combo_count, created_at)
  VALUES (:session, {gift}, :sender, :creator, 1, {PRICE}, {PRICE}, 0, {DIAMONDS},
  {PRICE - DIAMONDS}, 0, {DIAMONDS}, 1, :tx, :combo, 1, now());
INSERT INTO supporter_total AS t VALUES
  {rows(f"(:creator, '{{period}}', '{{start}}', :sender, {PRICE}, {DIAMONDS}, 1)")}
  ON CONFLICT (creator_id, period, period_start, sender_id) DO UPDATE SET
  coins = t.coins + excluded.coins, diamonds = t.diamonds + excluded.diamonds,
  gifts = t.gifts + 1;
INSERT INTO creator_total AS t VALUES
  {rows(f"('{{period}}', '{{start}}', :creator, {DIAMONDS}, {PRICE}, 1)")}
  ON CONFLICT (period, period_start, creator_id) DO UPDATE SET
  diamonds = t.diamonds + excluded.diamonds, coins = t.coins + excluded.coins,
  gifts = t.gifts + 1;
INSERT INTO session_gifter_total AS t VALUES (:session, :sender, {PRICE}, {DIAMONDS}, 1)
  ON CONFLICT (session_id, sender_id) DO UPDATE SET coins = t.coins + excluded.coins,
  diamonds = t.diamonds + excluded.diamonds, gifts = t.gifts + 1;
UPDATE idempotency_record SET status = 'succeeded', result = '{{}}'::json WHERE id = :claim;
END;
"""


# CPU from /proc ---------------------------------------------------------------------------


def processes() -> dict[int, tuple[int, str, int]]:
    """Every process: ``pid -> (parent pid, name, clock ticks of user and system CPU used so
    far)``, from Linux ``/proc/<pid>/stat`` (fields 4, 2, and 14 to 17: the CPU of its own and
    of its children that have exited, such as PostgreSQL backends of closed connections)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # exited meanwhile
            head, _, tail = text.rpartition(")")  # the name may hold spaces and ")"
            fields = tail.split()  # from field 3 (state) on
            found[int(entry)] = (int(fields[1]), head.partition("(")[2],
                                 sum(int(ticks) for ticks in fields[11:15]))
    return found


def cpu_ticks(root: int) -> tuple[int, int]:
    """CPU ticks used so far by ``root`` with all its descendants, and by PostgreSQL's
    processes (each process's name, from ``/proc/<pid>/comm``, starting with postgres)."""
    table, family, grown = processes(), {root}, True
    while grown:
        more = {pid for pid, (parent, _, _) in table.items() if parent in family} - family
        family |= more
        grown = bool(more)
    return (sum(table[pid][2] for pid in family if pid in table),
            sum(ticks for _, name, ticks in table.values() if name.startswith("postgres")))


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# The phases -------------------------------------------------------------------------------


def run(command: list[str]) -> str:
    """Run the load generator; its output, or what it said if it failed."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{command[0]} exited with {done.returncode}:\n"
                           f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def run_wrk(kind: Kind, data: Data, server: Server, options: argparse.Namespace,
            scratch: Path) -> Result:
    spec = scratch / f"{kind.name}.spec"
    lines = [f"method {kind.method}", f"path {kind.path}", f"check {kind.check}"]
    if kind.body:
        lines.append("body " + kind.body.replace("{gift}", data.gift))
    lines += [f"token {token}" for token in data.tokens if kind.tokens]
    lines += [f"session {s}" for s in (data.sessions[:1] if kind.hot else data.sessions)]
    spec.write_text("\n".join(lines) + "\n")
    phase_nonce = uuid.uuid4().hex[:8]  # idempotency keys never repeat across phases or runs

    def wrk(seconds: float, nonce: str) -> dict[str, float]:
        command = ["wrk", f"-t{options.threads}", f"-c{options.connections}",
                   f"-d{seconds:g}s", "--latency", "-s", str(LUA),
                   f"http://127.0.0.1:{server.port}", "--", str(spec), nonce,
                   str(options.threads)]
        output = run(command)
        for line in output.splitlines():
            if line.startswith("FAILED"):
                print(f"{kind.name}: {line[:600]}", file=sys.stderr)
        found = re.search(r"^RESULT (.*)$", output, re.MULTILINE)
        if not found:
            raise RuntimeError(f"wrk printed no RESULT line:\n{output}")
        return {k: float(v) for k, v in (pair.split("=") for pair in found[1].split())}

    wrk(WARM_UP, f"{phase_nonce}-warm")
    spy = profile(server, options.seconds) if options.profile == kind.name else None
    server_before, postgres_before = cpu_ticks(server.process.pid)
    client_before = children_cpu()
    figures = wrk(options.seconds, phase_nonce)
    client = children_cpu() - client_before
    server_after, postgres_after = cpu_ticks(server.process.pid)
    if spy:
        spy[0].wait()
        print_profile(spy[1])
    requests = int(figures["requests"])
    per_request = 1000 / max(requests, 1)
    return Result(kind.title, requests, figures["seconds"], figures["p50_us"] / 1000,
                  figures["p99_us"] / 1000,
                  int(figures["failures"] + figures["socket_errors"]),
                  (server_after - server_before) / TICK * per_request,
                  (postgres_after - postgres_before) / TICK * per_request, client * per_request)


def profile(server: Server, seconds: float) -> tuple[subprocess.Popen[bytes], Path] | None:
    """py-spy on the busiest server worker for the phase, if py-spy is installed."""
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not py_spy:
        print("--profile: py-spy is not installed, no profile taken", file=sys.stderr)
        return None
    # the busiest process under the supervisor: a worker
    table = processes()
    workers = [pid for pid, (parent, _, _) in table.items() if parent == server.process.pid]
    worker = max(workers, key=lambda pid: table[pid][2], default=server.process.pid)
    output = Path(tempfile.gettempdir()) / f"livegifts-profile-{worker}.txt"
    print(f"--profile: py-spy recording worker {worker} to {output}", file=sys.stderr)
    spy = subprocess.Popen([py_spy, "record", "-p", str(worker), "-d", str(int(seconds)),
                            "-o", str(output), "--format", "raw", "--gil"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return spy, output


def print_profile(path: Path, top: int = 25) -> None:
    """The functions a worker spent its time in (collapsed stacks from py-spy): inclusive
    share of the samples, the busiest first."""
    samples: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        total += int(count)
        for frame in {frame.split(" (")[0] + " " + frame.rpartition("(")[2].split(":")[0]
                      .rsplit("/", 1)[-1] for frame in stack.split(";")}:
            samples[frame] = samples.get(frame, 0) + int(count)
    print(f"profile of one worker, holding the GIL, {total} samples ({path}):")
    for frame, count in sorted(samples.items(), key=lambda item: -item[1])[:top]:
        print(f"  {100 * count / total:5.1f}%  {frame}")


def run_pgbench(data: Data, seconds: float, scratch: Path) -> Result:
    script = scratch / "gift.sql"
    script.write_text(data.pgbench)
    url = make_url(BENCH_URL)

    def pgbench(seconds: float) -> str:
        return run(["pgbench", "-n", "-M", "prepared", "-c", str(PGBENCH_CLIENTS), "-j", "2",
                    "-T", f"{seconds:g}", "-f", str(script), "-h", url.host or "127.0.0.1",
                    "-p", str(url.port or 5432), "-U", url.username or "postgres",
                    str(url.database)])

    pgbench(WARM_UP)
    postgres_before = cpu_ticks(os.getpid())[1]
    client_before = children_cpu()
    output = pgbench(seconds)
    client = children_cpu() - client_before
    postgres = cpu_ticks(os.getpid())[1] - postgres_before

    def figure(pattern: str) -> float:
        found = re.search(pattern, output)
        if not found:
            raise RuntimeError(f"pgbench printed no {pattern!r}:\n{output}")
        return float(found[1])

    transactions = int(figure(r"number of transactions actually processed: (\d+)"))
    failed = re.search(r"number of failed transactions: (\d+)", output)
    tps = figure(r"tps = ([\d.]+)")
    per_gift = 1000 / max(transactions, 1)
    return Result(f"pgbench, a gift's writes ({PGBENCH_CLIENTS} clients)", transactions,
                  transactions / tps, figure(r"latency average = ([\d.]+) ms"), None,
                  int(failed[1]) if failed else 0, None, postgres / TICK * per_gift,
                  client * per_gift)


async def audit_ledger() -> str:
    runtime = Runtime.build(Settings(database_url=BENCH_URL))
    async with runtime.sessions() as session:
        findings = await audit(session)
    await runtime.close()
    return "passed" if not findings else f"{len(findings)} findings: {findings[:3]}"


# The report -------------------------------------------------------------------------------


def report(results: dict[str, Result], options: argparse.Namespace, verdict: str) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    print(f"{CREATORS:,} live creators, {options.viewers} viewers; "
          f"wrk -t{options.threads} -c{options.connections}, {options.seconds:g} s a phase "
          f"(after {WARM_UP} s warm-up), {options.workers} server workers, "
          f"{'Redis event bus' if options.redis else 'no Redis'}, {os.cpu_count()} cores shared "
          "by server, PostgreSQL and wrk")
    print(f"{'request kind':<38}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'server CPU':>12}"
          f"{'PG CPU':>9}{'client CPU':>12}{'failures':>10}")
    print(f"{'':<38}{'':>8}{'':>9}{'':>9}{'ms/req':>12}{'ms/req':>9}{'ms/req':>12}")
    for result in results.values():
        print(f"{result.title:<38}{result.rate:>8,.0f}{result.p50_ms:>9.1f}"
              f"{'-' if result.p99_ms is None else f'{result.p99_ms:.1f}':>9}"
              f"{ms(result.server_ms):>12}{ms(result.postgres_ms):>9}{ms(result.client_ms):>12}"
              f"{result.failures:>10}")
    if "pgbench" in results:
        print(f"  (pgbench: p50 column is its latency average; {results['pgbench'].rate:,.0f} "
              "gifts/s)")

    def ratio(a: str, b: str) -> float | None:
        return results[a].rate / results[b].rate if a in results and b in results else None

    print("ratios:")
    for a, b in (("gift-spread", "gift-spread@against"), ("gift-hot", "gift-hot@against"),
                 ("catalogue", "healthz"), ("catalogue-get", "healthz"), ("wallet", "healthz"),
                 ("gift-spread", "pgbench"), ("gift-hot", "pgbench"), ("gift-hot", "gift-spread")):
        if (value := ratio(a, b)) is not None:
            print(f"  {a + ' / ' + b:<28} {value:5.2f}x")
    print("targets:")
    targets = []
    for name in ("catalogue", "catalogue-get"):
        if name in results:
            r = results[name]
            targets += [(f"{name} >= 3,000 req/s", r.rate >= 3000, f"{r.rate:,.0f}"),
                        (f"{name} p99 < 50 ms", r.p99_ms < 50, f"{r.p99_ms:.1f} ms")]
    if "wallet" in results:
        r = results["wallet"]
        targets += [("wallet >= 1,500 req/s", r.rate >= 1500, f"{r.rate:,.0f}"),
                    ("wallet <= 1 ms server CPU/req", r.server_ms <= 1, f"{r.server_ms:.2f} ms")]
    for name in ("gift-spread", "gift-hot"):
        if name in results:
            r = results[name]
            targets += [(f"{name} >= 1,200 gifts/s", r.rate >= 1200, f"{r.rate:,.0f}"),
                        (f"{name} p99 < 150 ms", r.p99_ms < 150, f"{r.p99_ms:.1f} ms"),
                        (f"{name} <= 1.2 ms server CPU/gift", r.server_ms <= 1.2,
                         f"{r.server_ms:.2f} ms")]
            if (value := ratio(name, "pgbench")) is not None:
                targets.append((f"{name} >= 0.4x pgbench", value >= 0.4, f"{value:.2f}x"))
    if (value := ratio("gift-hot", "gift-spread")) is not None:
        targets.append(("hot within 10 % of spread", abs(value - 1) <= 0.1, f"{value:.2f}x"))
    for name in ("gift-spread", "gift-hot"):
        if (value := ratio(name, f"{name}@against")) is not None:
            targets.append((f"{name} within 10 % of {options.against}", value >= 0.9,
                            f"{value:.2f}x"))
    for label, met, actual in targets:
        print(f"  {label:<38} {actual:>10}   {'met' if met else 'MISSED'}")
    print(f"audit after the server phases: {verdict}")
    print("reproduce:", shlex.join([".venv/bin/python", "-m", "bench.http", *sys.argv[1:]]))


# The phases --against serves from both revisions: the ones whose cost a change to the
# request or gift path moves.
COMPARED = ("wallet", "gift-spread", "gift-hot")


def compared_phases(data: Data, port: int, options: argparse.Namespace, scratch: Path,
                    only: list[str], source: str | None = None, suffix: str = "",
                    label: str = "") -> dict[str, Result]:
    """The compared phases, served by this checkout's code or by ``source``'s."""
    results = {}
    server = Server(options.workers, port, source=source)
    try:
        server.wait()
        for kind in KINDS:
            if kind.name in only and kind.name in COMPARED:
                result = run_wrk(kind, data, server, options, scratch)
                result.title = f"{kind.title}{label}"
                results[f"{kind.name}{suffix}"] = result
    finally:
        server.stop()
    return results


def against(ref: str, data: Data, port: int, options: argparse.Namespace, scratch: Path,
            only: list[str], first: dict[str, Result]) -> tuple[dict[str, Result],
                                                               list[dict[str, Result]]]:
    """The compared phases served by git revision ``ref``'s code (a worktree of it), and
    with ``--rounds`` more rounds of both, alternating which goes first (ABBA), so that
    neither side always runs on the fresher machine or database: every round's results."""
    source = scratch / "against"
    run(["git", "worktree", "add", "--detach", str(source), ref])
    try:
        theirs = compared_phases(data, port, options, scratch, only, str(source), "@against",
                             f" @{ref}")
        rounds = [first | theirs]
        for number in range(1, options.rounds):
            sides = [lambda: compared_phases(data, port, options, scratch, only),
                     lambda: compared_phases(data, port, options, scratch, only, str(source),
                                         "@against", f" @{ref}")]
            if number % 2:
                sides.reverse()
            rounds.append(sides[0]() | sides[1]())
    finally:
        run(["git", "worktree", "remove", "--force", str(source)])
    return theirs, rounds


def report_rounds(rounds: list[dict[str, Result]], ref: str) -> None:
    """Each round's ratios against ``ref`` (throughput and CPU a request), and their
    medians."""
    print(f"rounds against {ref} (ABBA order): this / {ref}")
    for name in COMPARED:
        if name not in rounds[0]:
            continue
        rates = [r[name].rate / r[f"{name}@against"].rate for r in rounds]
        cpu = [(r[name].server_ms + r[name].postgres_ms)
               / (r[f"{name}@against"].server_ms + r[f"{name}@against"].postgres_ms)
               for r in rounds]
        print(f"  {name:<12} throughput {', '.join(f'{x:.2f}' for x in rates)}"
              f"  median {statistics.median(rates):.2f}x")
        print(f"  {'':<12} server+PG CPU a request {', '.join(f'{x:.2f}' for x in cpu)}"
              f"  median {statistics.median(cpu):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=10, help="a phase, whole seconds")
    parser.add_argument("--viewers", type=int, default=256)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/7",
                        help="the event bus the workers share, as deployed; '' for none "
                             "(with --workers 1: several workers need one)")
    parser.add_argument("--only", default=",".join(PHASES),
                        help=f"comma-separated phases of: {','.join(PHASES)}")
    parser.add_argument("--profile", choices=PHASES[:-1], default=None,
                        help="record a server worker with py-spy during this phase")
    parser.add_argument("--against", default=None, metavar="REF",
                        help="also run the wallet and sendGift phases on git revision REF's code")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --against: rounds of both, alternating which goes first")
    options = parser.parse_args()
    only = options.only.split(",")
    if unknown := set(only) - set(PHASES):
        parser.error(f"unknown phases {sorted(unknown)}; choose from {','.join(PHASES)}")
    if not shutil.which("wrk"):
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        sys.exit(2)

    data = asyncio.run(prepare(options.viewers))
    if options.redis:  # Server passes the environment on
        os.environ["REDIS_URL"] = options.redis
    else:
        os.environ.pop("REDIS_URL", None)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="livegifts-bench-") as directory:
        scratch = Path(directory)
        server = Server(options.workers, port)
        try:
            server.wait()
            for kind in KINDS:
                if kind.name in only:
                    results[kind.name] = run_wrk(kind, data, server, options, scratch)
        finally:
            server.stop()
        rounds: list[dict[str, Result]] = []
        if options.against:
            theirs, rounds = against(options.against, data, port, options, scratch, only,
                                     results)
            results |= theirs
        verdict = asyncio.run(audit_ledger())  # before pgbench, whose writes are not real gifts
        if "pgbench" in only:
            results["pgbench"] = run_pgbench(data, options.seconds, scratch)
    report(results, options, verdict)
    if len(rounds) > 1:
        report_rounds(rounds, options.against)


if __name__ == "__main__":
    main()
