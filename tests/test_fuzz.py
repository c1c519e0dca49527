"""Fuzzing the GraphQL endpoint: generated documents and variables, as any caller.

Documents are built from the live schema (random root fields, random arguments of
hostile values, random selections) and mixed with raw garbage. No response may be a
5xx or reveal internals (tracebacks, SQL, driver or file names).
"""

from __future__ import annotations

import json

import httpx
import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    get_named_type,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.graphql.schema import schema
from tests.conftest import fresh_database
from tests.support import ServerProcess, token

GRAPHQL = schema._schema
LEAKS = ("Traceback", "sqlalchemy", "asyncpg", "aiosqlite", "sqlite3", 'File "', "psycopg",
         "/app/", "SELECT ", "INSERT ", "UPDATE ledger")
HOSTILE_STRINGS = st.one_of(
    st.text(max_size=40), st.sampled_from(["", " ", "'; DROP TABLE app_user; --", "\x00",
                                            "Q29pblBhY2thZ2U6MQ==", "VXNlcjox", "2026-13-45",
                                            "9" * 40, "🎁" * 10, "<script>", "../../etc"]))
HOSTILE_INTS = st.one_of(st.integers(-2**63, 2**63), st.sampled_from([0, -1, 2**31, 2**53]))


def value_for(kind, depth: int = 0):
    kind_ = kind.of_type if isinstance(kind, GraphQLNonNull) else kind
    if isinstance(kind_, GraphQLList):
        return st.lists(value_for(kind_.of_type, depth + 1), max_size=3)
    if isinstance(kind_, GraphQLEnumType):
        return st.one_of(st.sampled_from(list(kind_.values)), HOSTILE_STRINGS)
    if isinstance(kind_, GraphQLInputObjectType):
        if depth > 2:
            return st.just({})
        return st.fixed_dictionaries({}, optional={
            name: value_for(field.type, depth + 1) for name, field in kind_.fields.items()})
    if isinstance(kind_, GraphQLScalarType) and kind_.name in ("Int", "Long"):
        return st.one_of(HOSTILE_INTS, st.floats(allow_nan=False, allow_infinity=False),
                         HOSTILE_STRINGS, st.none())
    if isinstance(kind_, GraphQLScalarType) and kind_.name == "Boolean":
        return st.one_of(st.booleans(), HOSTILE_STRINGS)
    return st.one_of(HOSTILE_STRINGS, HOSTILE_INTS, st.none())


@st.composite
def selection(draw, kind, depth: int = 0) -> str:
    named = get_named_type(kind)
    if not isinstance(named, GraphQLObjectType):
        return ""
    names = sorted(named.fields)
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
    parts = []
    for name in chosen:
        field = named.fields[name]
        if field.args or (depth >= 3 and isinstance(get_named_type(field.type),
                                                      GraphQLObjectType)):
            continue
        parts.append(name + draw(selection(field.type, depth + 1)))
    return " { " + (" ".join(parts) or "__typename") + " }"


@st.composite
def operation(draw) -> tuple[str, dict]:
    root_name = draw(st.sampled_from(["Query", "Mutation"]))
    root = GRAPHQL.get_type(root_name)
    name = draw(st.sampled_from(sorted(root.fields)))
    field = root.fields[name]
    declared, passed, variables = [], [], {}
    for n, (arg_name, arg) in enumerate(field.args.items()):
        variable = f"v{n}"
        declared.append(f"${variable}: {arg.type}")
        passed.append(f"{arg_name}: ${variable}")
        variables[variable] = draw(value_for(arg.type))
    header = f"({', '.join(declared)})" if declared else ""
    arguments = f"({', '.join(passed)})" if passed else ""
    keyword = "query" if root_name == "Query" else "mutation"
    return f"{keyword} Fuzz{header} {{ {name}{arguments}{draw(selection(field.type))} }}", \
        variables


@pytest.fixture(scope="module")
def target(request, tmp_path_factory):
    url = fresh_database("sqlite", request, tmp_path_factory.mktemp("fuzz"))
    server = ServerProcess(url, LIVEGIFTS_SEED_DEMO_DATA="true",
                           LIVEGIFTS_RATE_LIMIT_PER_USER="1000000",
                           LIVEGIFTS_RATE_LIMIT_PER_IP="1000000")
    server.start()
    with httpx.Client(timeout=30) as client:
        yield server, client
    server.stop()


CALLERS = [None, token("fuzzer"), token("fuzz-admin", "admin"), token("fuzz-star", "creator")]


def check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    for leak in LEAKS:
        assert leak not in response.text, f"{leak!r} leaked: {response.text[:500]}"


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(document=operation(), caller=st.sampled_from(CALLERS))
def test_generated_operations_never_fail_the_server(target, document, caller):
    server, client = target
    query, variables = document
    headers = {"authorization": f"Bearer {caller}"} if caller else {}
    check(client.post(server.url, json={"query": query, "variables": variables},
                      headers=headers))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                      st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4)
                      .map(lambda d: json.dumps(d).encode())))
def test_garbage_bodies_never_fail_the_server(target, body):
    server, client = target
    check(client.post(server.url, content=body, headers={"content-type": "application/json"}))
