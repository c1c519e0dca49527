"""Database engine and sessions: SQLite by default, PostgreSQL through ``DATABASE_URL``.

SQLite transactions start with ``BEGIN IMMEDIATE`` so that concurrent writers
queue on the database lock instead of failing on a read-to-write upgrade; WAL
keeps readers out of the writers' way.

Hot paths (a batch of gifts) write many rows with one statement a table: on PostgreSQL
the rows as one JSON parameter (:func:`insert_rows`, :func:`update_rows`,
:func:`add_to_counters`),
and their statements, built once (:class:`ArrayStatement`, :class:`Query`), run on the
driver directly once the transaction has begun.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from sqlalchemy import JSON, BigInteger, any_, bindparam, cast, event, func, literal, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import greenlet_spawn

from app import observability
from app.settings import Settings

SessionFactory = async_sessionmaker[AsyncSession]
M = TypeVar("M")
PREPARED_STATEMENTS_KEPT = 2000  # per connection
DRIVER_STATEMENTS_KEPT = 500  # per connection, of the statements run on asyncpg directly
# A pooled connection idle this long is pinged before it is handed out again.
IDLE_BEFORE_PING_SECONDS = 10.0


def create_engine(settings: Settings) -> AsyncEngine:
    if settings.is_sqlite:
        engine = create_async_engine(settings.database_url, connect_args={"timeout": 30},
                                     json_serializer=to_json)
        _configure_sqlite(engine)
        return engine
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        connect_args=driver_arguments(settings.database_url),
        json_serializer=to_json,
    )
    _ping_idle_connections(engine)
    event.listen(engine.sync_engine, "connect",
                 lambda *_: observability.DATABASE_CONNECTIONS_OPENED.inc())
    return engine


def to_json(value: Any) -> str:
    """JSON text of a JSON column's value (msgspec: several times cheaper than ``json``)."""
    return msgspec.json.encode(value).decode()


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """Ping a pooled connection before handing it out only if it sat idle, where a
    database restart or a dropped connection may have gone unnoticed. SQLAlchemy's
    ``pool_pre_ping`` pings at every checkout: a round trip per request under load, when
    connections are in use all the time. A connection that fails its ping is replaced."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _idle_from(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_from"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_from = record.info.get("idle_from")
        if idle_from is not None and time.monotonic() - idle_from >= IDLE_BEFORE_PING_SECONDS:
            try:
                dbapi_connection.ping()
            except Exception as error:
                raise DisconnectionError("an idle pooled connection failed its ping") \
                    from error


def driver_arguments(url: str) -> dict[str, Any]:
    """The driver's prepared-statement caches: SQLAlchemy's (its statements) and asyncpg's
    own (what the hot paths run on the driver directly, see :class:`Query`)."""
    # Statements whose text varies with their number of rows (an INSERT of many VALUES)
    # are prepared once for each number: keep up to 2,000, not just 100, unless the URL
    # says otherwise (0 behind a transaction-pooling PgBouncer, where the driver's own
    # cache must stay off too).
    kept = make_url(url).query.get("prepared_statement_cache_size")
    if kept is not None:
        return {} if str(kept) != "0" else {"statement_cache_size": 0}
    return {"prepared_statement_cache_size": PREPARED_STATEMENTS_KEPT,
            "statement_cache_size": DRIVER_STATEMENTS_KEPT}


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    @event.listens_for(engine.sync_engine, "invalidate")
    def _roll_back_before_closing(dbapi_connection: Any, _record: Any, _error: Any) -> None:
        # A request cancelled during a statement leaves that statement unfinished, and
        # SQLite closes a connection with an unfinished statement only once the statement
        # is garbage-collected: until then its transaction kept the database's write lock,
        # and every other writer waited. Rolling back first ends the transaction at once.
        with contextlib.suppress(Exception):
            dbapi_connection.rollback()


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False)


def reading(engine: AsyncEngine) -> AsyncEngine:
    """The engine for reads that need no transaction (one statement each, or statements
    that need not agree with each other): on PostgreSQL its connections run in autocommit,
    so a read costs its one round trip instead of BEGIN, the read and ROLLBACK. Under READ
    COMMITTED each statement sees a fresh snapshot either way. Never for writes."""
    if engine.dialect.name != "postgresql":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def insert_ignoring_conflict(session: AsyncSession, table: Any,
                             values: dict[str, Any] | list[dict[str, Any]],
                             conflict_columns: list[str]) -> Any:
    """An INSERT of one row or several that skips a row whose unique key exists."""
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table).values(values).on_conflict_do_nothing(
        index_elements=conflict_columns
    )


def upsert(session: AsyncSession, table: Any, rows: list[dict[str, Any]],
           keys: list[str]) -> Any:
    """An INSERT of rows (all with the same columns) that overwrites a row whose ``keys``
    exist with the new values."""
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(table).values(rows)
    return statement.on_conflict_do_update(index_elements=keys, set_={
        name: statement.excluded[name] for name in rows[0] if name not in keys})


async def add_to_counters(session: AsyncSession, table: Any, keys: tuple[str, ...],
                          rows: list[dict[str, Any]], returning: tuple[str, ...] = ()
                          ) -> list[Any]:
    """Upsert counter rows: insert each row, or add its other columns to the existing row.
    The rows' keys must differ (one row per counter). With ``returning``, those columns of
    every row written (its new totals), a tuple each."""
    dialect = session.get_bind().dialect.name
    columns = tuple(sorted(rows[0]))
    if dialect == "postgresql":
        return await execute_arrays(
            session, _counter_upsert_from_arrays(table, keys, columns, returning),
            _as_json(table.__table__, rows, columns, session.get_bind().dialect))
    if returning:  # SQLite: RETURNING needs a single statement, not one per row
        statement = sqlite.insert(table.__table__).values(rows)
        statement = statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={name: table.__table__.c[name] + statement.excluded[name]
                  for name in columns if name not in keys},
        ).returning(*(table.__table__.c[name] for name in returning))
        return list((await session.execute(statement)).all())
    await session.execute(_counter_upsert(dialect, table, keys, columns), rows)
    return []


async def insert_rows(session: AsyncSession, table: Any, rows: list[dict[str, Any]], *,
                      returning: tuple[str, ...] = (), skip_conflicts_on: tuple[str, ...] = ()
                      ) -> list[Any]:
    """Insert rows (all with the same columns) in one statement, in their order. With
    ``returning`` (its first column the id), those columns of each row written (a tuple
    each), in the rows' order; with ``skip_conflicts_on``, a row whose key exists is
    skipped and returns nothing."""
    dialect = session.get_bind().dialect
    if dialect.name == "postgresql":
        rows = _with_defaults(table, rows)
        columns = tuple(sorted(rows[0]))
        written = await execute_arrays(
            session, _insert_from_arrays(table, columns, returning, skip_conflicts_on),
            _as_json(table, rows, columns, dialect))
    else:
        statement = sqlite.insert(table)
        if skip_conflicts_on:
            statement = statement.on_conflict_do_nothing(index_elements=list(skip_conflicts_on))
        if returning:
            statement = statement.returning(*(table.c[name] for name in returning))
        result = await session.execute(statement, rows)
        written = list(result.all()) if returning else []
    # Ids are drawn in the order rows are inserted: sorted by id, the rows' order.
    return sorted(written, key=lambda row: row[0])


async def update_rows(session: AsyncSession, table: Any, rows: list[dict[str, Any]]) -> None:
    """Set the other columns of each row (all with the same columns) where ``id`` is the
    row's ``id``, in one statement."""
    dialect = session.get_bind().dialect
    columns = tuple(sorted(rows[0]))
    if dialect.name == "postgresql":
        await execute_arrays(session, _update_from_arrays(table, columns),
                             _as_json(table, rows, columns, dialect))
    else:
        await session.execute(_update_by_id(table, columns),
                              [{f"b_{name}": value for name, value in row.items()}
                               for row in rows])


def _with_defaults(table: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with the Python-side defaults of the columns they leave out: a text
    INSERT applies none."""
    missing = [column for column in table.c
               if column.default is not None and column.name not in rows[0]]
    if not missing:
        return rows
    return [{**row, **{column.name: column.default.arg(None) if column.default.is_callable
                       else column.default.arg for column in missing}} for row in rows]


def _as_json(table: Any, rows: list[dict[str, Any]], columns: tuple[str, ...],
             dialect: Any) -> dict[str, str]:
    """The rows as one JSON array of objects, each value as its column's type sends it (a
    timestamp checked for its zone; a JSON column's value as itself, not as text): the
    parameter ``_recordset`` reads."""
    processors = _processors(table, columns, dialect)
    if processors:
        rows = [{**row, **{name: process(row[name]) for name, process in processors}}
                for row in rows]
    return {ROWS: msgspec.json.encode(rows).decode()}


@functools.cache
def _processors(table: Any, columns: tuple[str, ...], dialect: Any
                ) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    """The columns whose values need their type's processing before they are sent."""
    return tuple((name, process) for name in columns
                 if not _is_json(table.c[name].type)
                 and (process := table.c[name].type.bind_processor(dialect)) is not None)


def _is_json(type_: Any) -> bool:
    return isinstance(getattr(type_, "impl_instance", type_), JSON)


@dataclass(frozen=True, slots=True)
class ArrayStatement:
    """A PostgreSQL statement whose parameters are arrays (ids, amounts) or the rows it
    writes, as one JSON text: its text for SQLAlchemy (``:name`` parameters) and for the
    driver (``$n``, in ``parameters`` order)."""

    sqlalchemy: Any
    driver: str
    parameters: tuple[str, ...]

    @classmethod
    def of(cls, template: Callable[[Callable[[str], str]], str],
           parameters: tuple[str, ...]) -> ArrayStatement:
        """``template(parameter)`` writes the text; ``parameter(name)`` is a placeholder."""
        numbers = {name: f"${number}" for number, name in enumerate(parameters, start=1)}
        return cls(text(template(lambda name: f":{name}")), template(numbers.__getitem__),
                   parameters)


async def execute_arrays(session: AsyncSession, statement: ArrayStatement,
                         arrays: dict[str, list[Any]]) -> list[Any]:
    """Run ``statement`` in the session's transaction; its rows, as tuples."""
    driver = await _driver_in_transaction(session)
    if driver is not None:
        return [tuple(record) for record in await driver.fetch(
            statement.driver, *(arrays[name] for name in statement.parameters))]
    result = await session.execute(statement.sqlalchemy, arrays)
    return [tuple(row) for row in result] if result.returns_rows else []


async def _driver_in_transaction(session: AsyncSession) -> Any | None:
    """The PostgreSQL driver connection of the session's transaction, once the transaction
    has begun on it: statements of a hot path run there directly, since SQLAlchemy's work
    around a statement (execution context, cursor, result) costs more than a small
    statement itself. None before (the first statement of a transaction goes through
    SQLAlchemy, which begins it) and on SQLite."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    connection = await session.connection()
    driver = (await connection.get_raw_connection()).driver_connection
    return driver if driver is not None and driver.is_in_transaction() else None


class Query:
    """A statement of a hot path, built once a database from bind parameters (a list
    through :func:`among`); its rows as tuples. On PostgreSQL, once the session's
    transaction has begun, the driver runs its compiled text directly, with the values
    as given (numbers, text, dates and times, lists of them: no type's bind processing);
    otherwise SQLAlchemy runs it."""

    def __init__(self, build: Callable[[str], Any]) -> None:
        self._build = functools.cache(build)
        self._compiled: dict[str, tuple[str, tuple[str, ...], dict[str, Any], list[Any]]] = {}

    async def rows(self, session: AsyncSession, **parameters: Any) -> list[tuple[Any, ...]]:
        dialect = session.get_bind().dialect
        statement = self._build(dialect.name)
        driver = await _driver_in_transaction(session)
        if driver is None:
            return [tuple(row) for row in await session.execute(statement, parameters)]
        return await self._fetch(driver, statement, dialect, parameters)

    async def read(self, engine: AsyncEngine, **parameters: Any) -> list[tuple[Any, ...]]:
        """Its rows, read outside any transaction: one statement, its own snapshot. On
        PostgreSQL the driver runs it on a pooled connection (in autocommit, as the driver
        is outside a transaction) without SQLAlchemy's connection, execution and result,
        which cost more than a small read itself; the connection of a read that failed or
        was cancelled is not pooled again. On SQLite SQLAlchemy runs it."""
        dialect = engine.dialect
        statement = self._build(dialect.name)
        if dialect.name != "postgresql":
            async with engine.connect() as connection:
                return [tuple(row) for row in await connection.execute(statement, parameters)]
        pooled = await engine.raw_connection()
        # The pool is SQLAlchemy's synchronous API: returning a connection may close it
        # (one opened beyond the pool), which awaits the driver inside greenlet_spawn.
        try:
            return await self._fetch(pooled.driver_connection, statement, dialect, parameters)
        except BaseException as error:
            # A read fails when its connection broke (and the driver does not always know
            # it yet: its error then varies) or when a cancellation left it in the middle
            # of the statement: either way it is closed and replaced, not handed on.
            await greenlet_spawn(pooled.invalidate, error)
            raise
        finally:
            await greenlet_spawn(pooled.close)

    async def _fetch(self, driver: Any, statement: Any, dialect: Any,
                     parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
        text_, names, fixed, processors = self._compiled_for(statement, dialect)
        records = await driver.fetch(text_, *(parameters[name] if name in parameters
                                              else fixed[name] for name in names))
        if not any(processors):
            return [tuple(record) for record in records]
        return [tuple(value if process is None else process(value)
                      for process, value in zip(processors, record, strict=True))
                for record in records]

    def _compiled_for(self, statement: Any, dialect: Any
                      ) -> tuple[str, tuple[str, ...], dict[str, Any], list[Any]]:
        """The driver's text, its parameters in order, the values of those the statement
        fixes itself (a LIMIT), and each column's result processing (what SQLAlchemy would
        apply to a value read: a zone, JSON decoding)."""
        if dialect.name not in self._compiled:
            compiled = statement.compile(dialect=dialect)
            processors = [column.type.result_processor(dialect, None)
                          for column in statement.selected_columns]
            self._compiled[dialect.name] = (
                compiled.string, tuple(compiled.positiontup or ()), dict(compiled.params),
                processors)
        return self._compiled[dialect.name]


def among(dialect: str, column: Any, name: str) -> Any:
    """``column IN <the list parameter name>``, for a :class:`Query`; on PostgreSQL
    ``column = ANY(<one array>)`` (see :func:`one_of`)."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


ROWS = "rows"  # the parameter of a statement reading ``_recordset``


def _recordset(table: Any, columns: tuple[str, ...], parameter: Callable[[str], str]) -> str:
    """The rows of one JSON parameter (``ROWS``, see :func:`_as_json`), each column as its
    column's type and each row numbered in order (``row_number``), as ``u``. The driver
    sends the rows as one text value, where an array a column cost it a type check and an
    encoding call for every value: three times the client's CPU for a batch of gifts."""
    dialect = postgresql.dialect()
    types = ", ".join(f"{name} {table.c[name].type.compile(dialect=dialect)}" for name in columns)
    return (f"ROWS FROM (json_to_recordset(CAST({parameter(ROWS)} AS json)) AS ({types})) "
            f"WITH ORDINALITY AS u({', '.join(columns)}, row_number)")


@functools.cache
def _insert_from_arrays(table: Any, columns: tuple[str, ...], returning: tuple[str, ...] = (),
                        skip_conflicts_on: tuple[str, ...] = ()) -> ArrayStatement:
    # PostgreSQL: the rows travel as one JSON parameter in one statement whose text never
    # changes; an INSERT of many parameter sets costs SQLAlchemy work per row, and one with
    # the rows in VALUES is prepared anew for each number of rows.
    names = ", ".join(columns)

    def template(parameter: Callable[[str], str]) -> str:
        sql = (f"INSERT INTO {table.name} ({names}) SELECT {names} "
               f"FROM {_recordset(table, columns, parameter)} ORDER BY row_number")
        if skip_conflicts_on:
            sql += f" ON CONFLICT ({', '.join(skip_conflicts_on)}) DO NOTHING"
        return sql + (f" RETURNING {', '.join(returning)}" if returning else "")

    return ArrayStatement.of(template, (ROWS,))


@functools.cache
def _update_from_arrays(table: Any, columns: tuple[str, ...]) -> ArrayStatement:
    assignments = ", ".join(f"{name} = u.{name}" for name in columns if name != "id")
    return ArrayStatement.of(
        lambda parameter: f"UPDATE {table.name} AS t SET {assignments} "
                          f"FROM {_recordset(table, columns, parameter)} "
                          "WHERE t.id = u.id", (ROWS,))


@functools.cache
def _update_by_id(table: Any, columns: tuple[str, ...]) -> Any:
    return update(table).where(table.c.id == bindparam("b_id")).values(
        {name: bindparam(f"b_{name}") for name in columns if name != "id"})


@functools.cache
def _counter_upsert_from_arrays(model: Any, keys: tuple[str, ...], columns: tuple[str, ...],
                                returning: tuple[str, ...] = ()) -> ArrayStatement:
    table = model.__table__
    added = ", ".join(f"{name} = t.{name} + excluded.{name}"
                      for name in columns if name not in keys)
    returned = f" RETURNING {', '.join(f't.{name}' for name in returning)}" if returning else ""
    return ArrayStatement.of(
        lambda parameter: f"INSERT INTO {table.name} AS t ({', '.join(columns)}) "
                          f"SELECT {', '.join(columns)} "
                          f"FROM {_recordset(table, columns, parameter)} "
                          f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {added}{returned}",
        (ROWS,))


@functools.cache
def _counter_upsert(dialect: str, table: Any, keys: tuple[str, ...], columns: tuple[str, ...]
                    ) -> Any:
    # Built once per shape: constructing ON CONFLICT clauses is costly on a hot path.
    module = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(table.__table__)  # Core: far less work per row than the ORM
    return statement.on_conflict_do_update(
        index_elements=list(keys),
        set_={name: table.__table__.c[name] + statement.excluded[name]
              for name in columns if name not in keys},
    )


def as_loaded(model: type[M], values: dict[str, Any]) -> M:
    """A detached ``model`` object holding ``values`` just written or read, built as the ORM
    builds one from a row: no validation, at a few microseconds instead of the hundred a
    SQLModel constructor takes (which validates every field). Only for values the database
    has already accepted."""
    row = model._sa_class_manager.new_instance()  # type: ignore[attr-defined]
    row.__dict__.update(values)
    return row


def all_loaded(model: type[M], rows: list[tuple[Any, ...]]) -> list[M]:
    """:func:`as_loaded` objects from rows of all of ``model``'s columns, in table order
    (what ``select(*table.c)`` returns)."""
    names = [column.name for column in model.__table__.c]  # type: ignore[attr-defined]
    return [as_loaded(model, dict(zip(names, row, strict=True))) for row in rows]


def one_of(session: AsyncSession, column: Any, values: Iterable[Any]) -> Any:
    """``column IN values``; on PostgreSQL ``column = ANY(<one array>)``, so that the
    statement's text is the same whatever the number of values: prepared once a connection,
    not once for every batch size a writer happens to see."""
    values = list(values)
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(literal(values, ARRAY(column.type)))
    return column.in_(values)


def total(column: Any) -> Any:
    """SUM of an integer column as a BIGINT, 0 when empty (PostgreSQL sums to NUMERIC)."""
    return cast(func.coalesce(func.sum(column), 0), BigInteger)
