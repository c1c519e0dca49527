"""The committed schema.graphql is the code's schema, and the API explains itself."""

from __future__ import annotations

from pathlib import Path

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


async def test_malformed_global_ids_get_a_clear_error():
    result = await schema.execute("{ node(id: \"not base64\") { id } }", context_value=None)
    assert result.errors and "not a valid" in result.errors[0].message.lower() or \
        "globalid" in result.errors[0].message.lower(), result.errors
