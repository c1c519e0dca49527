"""How a batch's rows travel to PostgreSQL: one JSON value, against one array a column.

    .venv/bin/python -m bench.row_encoding [--rows 64] [--batches 1500]

The gift writer inserts, updates and upserts each table's rows of a batch in one statement
(:func:`app.db.insert_rows`). It sends the rows as one JSON text that ``json_to_recordset``
reads; the baseline, measured in the same run on the same connection, sends them as one
array parameter a column read by ``unnest`` (what the writer did before). Both insert the
same rows inside one transaction per round, in alternating rounds, into two tables: the
event log's (text, two integers, a timestamp) and one shaped like a gift receipt (twelve
integers and a timestamp). Prints, per statement: the wall time, the client's CPU (this
process) and PostgreSQL's (the connection's backend process, from ``/proc``), and the
ratios.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime

from sqlalchemy import BigInteger, Column, MetaData, Table, text

from app.db import ArrayStatement, _driver_in_transaction, execute_arrays, insert_rows
from app.models import Event
from app.models.base import UTCDateTime
from bench.common import fresh_runtime, own_cpu, process_cpu

NUMBERS = tuple(f"n{number:02}" for number in range(12))
RECEIPTS = Table("bench_receipt", MetaData(), Column("id", BigInteger, primary_key=True),
                 *(Column(name, BigInteger, nullable=False) for name in NUMBERS),
                 Column("created_at", UTCDateTime, nullable=False))


def _arrays_statement(table: Table, columns: tuple[str, ...]) -> ArrayStatement:
    """The baseline: one array a column, each cast to its column's type."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    names = ", ".join(columns)

    def template(parameter):  # noqa: ANN001, ANN202
        arrays = ", ".join(f"CAST({parameter(name)} AS "
                           f"{table.c[name].type.compile(dialect=dialect)}[])" for name in columns)
        return (f"INSERT INTO {table.name} ({names}) SELECT {names} FROM unnest({arrays}) "
                f"WITH ORDINALITY AS u({names}, row_number) ORDER BY row_number")

    return ArrayStatement.of(template, columns)


async def main(rows: int, batches: int) -> None:
    runtime = await fresh_runtime()
    async with runtime.engine.begin() as connection:
        await connection.run_sync(RECEIPTS.metadata.create_all)
    now = datetime.now(UTC)
    counter = iter(range(10**9))

    def events() -> list[dict]:
        return [{"stream": "session:1", "seq": next(counter), "type": "GiftSent",
                 "body": '{"type":"GiftSent","coins":1,"sender":"viewer-17"}',
                 "created_at": now} for _ in range(rows)]

    def receipts() -> list[dict]:
        return [{**{name: next(counter) for name in NUMBERS}, "created_at": now}
                for _ in range(rows)]

    print(f"{rows} rows a statement, {batches // 6 * 6} statements each way and table, "
          "alternating rounds; microseconds a statement")
    for table, batch in ((Event.__table__, events), (RECEIPTS, receipts)):
        await _compare(runtime, table, batch, batches)
    await runtime.close()


async def _compare(runtime, table: Table, batch, batches: int) -> None:  # noqa: ANN001
    columns = tuple(sorted(batch()[0]))
    arrays = _arrays_statement(table, columns)

    async def as_json(session) -> None:  # noqa: ANN001
        await insert_rows(session, table, batch())

    async def as_arrays(session) -> None:  # noqa: ANN001
        written = batch()
        await execute_arrays(session, arrays, {name: [row[name] for row in written]
                                               for name in columns})

    totals = {name: [0.0, 0.0, 0.0] for name in ("json", "arrays")}
    async with runtime.sessions() as session:
        await session.execute(text("SELECT 1"))
        backend = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await session.commit()
        for round_ in range(6):
            for name, write in (("json", as_json), ("arrays", as_arrays))[::(-1) ** round_]:
                async with session.begin():
                    await session.execute(text("SELECT 1"))  # the driver's transaction
                    assert await _driver_in_transaction(session) is not None
                    for _ in range(20):  # warm: statements prepared, plans cached
                        await write(session)
                    loop = asyncio.get_running_loop()
                    wall, client, server = loop.time(), own_cpu(), process_cpu(backend)
                    for _ in range(batches // 6):
                        await write(session)
                    spent = totals[name]
                    spent[0] += loop.time() - wall
                    spent[1] += own_cpu() - client
                    spent[2] += process_cpu(backend) - server
                await session.execute(text(f"TRUNCATE {table.name}"))
                await session.commit()

    statements = batches // 6 * 6
    print(f"table {table.name} ({len(columns)} columns)")
    print(f"  {'rows sent as':18} {'wall':>8} {'client CPU':>11} {'PostgreSQL CPU':>15}")
    per = {name: [value / statements * 1e6 for value in spent] for name, spent in totals.items()}
    for name, label in (("arrays", "an array a column"), ("json", "one JSON value")):
        wall, client, server = per[name]
        print(f"  {label:18} {wall:8.1f} {client:11.1f} {server:15.1f}")
    print("  JSON / arrays: wall {:.2f}x, client CPU {:.2f}x, PostgreSQL CPU {:.2f}x, "
          "both CPUs {:.2f}x".format(
              per["json"][0] / per["arrays"][0], per["json"][1] / per["arrays"][1],
              per["json"][2] / per["arrays"][2],
              (per["json"][1] + per["json"][2]) / (per["arrays"][1] + per["arrays"][2])))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--batches", type=int, default=1500)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rows, arguments.batches))
