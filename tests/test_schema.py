"""The committed schema.graphql is the code's schema, and the API explains itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.graphql.schema import schema

ROOT = Path(__file__).resolve().parent.parent


def test_committed_schema_matches_the_code():
    committed = (ROOT / "schema.graphql").read_text()
    assert committed == schema.as_str() + "\n", (
        "schema.graphql is stale: run 'livegifts export-schema > schema.graphql' and commit it")


def test_every_type_and_root_field_is_described():
    for root in (schema.get_type_by_name("Query"), schema.get_type_by_name("Mutation")):
        undocumented = [f.name for f in root.fields if not f.description and f.name != "node"]
        assert undocumented == [], f"{root.name} fields without a description: {undocumented}"


@pytest.mark.parametrize("node_id, message", [
    ("not base64", 'Value cannot represent a GlobalID: "not base64".'),
    ("Rm9vOjE=", "Cannot resolve. GlobalID requires a GraphQL type, received `Foo`."),  # Foo:1
])
async def test_ids_that_are_not_this_apis_are_bad_user_input(node_id, message):
    result = await schema.execute("query($id: ID!) { node(id: $id) { id } }",
                                  variable_values={"id": node_id}, context_value=None)
    assert [(e.message, e.extensions) for e in result.errors] == [
        (message, {"code": "BAD_USER_INPUT"})]
