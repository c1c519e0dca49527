"""The schema stays compatible with the last release's (docs/schema/<version>.graphql): a
change that would break a front end's documents fails here, unless what it removes was
deprecated in that release first (the policy in docs/api.md)."""

from __future__ import annotations

import re
from pathlib import Path

from graphql import GraphQLEnumType, GraphQLSchema, build_schema
from graphql.utilities import BreakingChangeType, find_breaking_changes

ROOT = Path(__file__).resolve().parent.parent
RELEASES = ROOT / "docs" / "schema"


def _version(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in path.stem.split("."))


def _deprecated(old: GraphQLSchema, change_type: BreakingChangeType, description: str) -> bool:
    """Whether what a breaking change removes was deprecated in the old schema."""
    if change_type is BreakingChangeType.FIELD_REMOVED:
        owner, field = re.fullmatch(r"Field (\w+)\.(\w+) was removed\.", description).groups()
        return bool(old.get_type(owner).fields[field].deprecation_reason)
    if change_type is BreakingChangeType.ARG_REMOVED:
        owner, field, arg = re.fullmatch(r"Argument (\w+)\.(\w+)\((\w+):\) was removed\.",
                                         description).groups()
        return bool(old.get_type(owner).fields[field].args[arg].deprecation_reason)
    if change_type is BreakingChangeType.VALUE_REMOVED_FROM_ENUM:
        owner, value = re.fullmatch(r"Enum value (\w+)\.(\w+) was removed\.",
                                    description).groups()
        enum = old.get_type(owner)
        return isinstance(enum, GraphQLEnumType) and bool(enum.values[value].deprecation_reason)
    return False


def breaking(old_sdl: str, new_sdl: str) -> list[str]:
    """The changes from ``old_sdl`` to ``new_sdl`` that break clients and were not
    announced by a deprecation."""
    old = build_schema(old_sdl)
    return [change.description for change in find_breaking_changes(old, build_schema(new_sdl))
            if not _deprecated(old, change.type, change.description)]


def test_the_schema_keeps_every_field_of_the_last_release_that_was_not_deprecated():
    released = max(RELEASES.glob("*.graphql"), key=_version)
    current = (ROOT / "schema.graphql").read_text()
    assert breaking(released.read_text(), current) == [], (
        f"schema.graphql breaks clients of release {released.stem}: deprecate first "
        "(docs/api.md, 'Schema changes')")


OLD = '''
type Query { wallet: Wallet!  gifts: [String!]! @deprecated(reason: "Use catalogue.") }
type Wallet { coins: Int!  diamonds: Int!  old: Int @deprecated(reason: "Gone soon.") }
enum Status { LIVE ENDED PAUSED @deprecated(reason: "Never used.") }
type Mutation { end(status: Status!): Boolean }
'''


def test_removing_what_was_deprecated_passes_and_anything_else_fails():
    removed_deprecated = OLD.replace('  gifts: [String!]! @deprecated(reason: "Use catalogue.")',
                                     "").replace('  old: Int @deprecated(reason: "Gone soon.")',
                                                 "").replace(
        ' PAUSED @deprecated(reason: "Never used.")', "")
    assert breaking(OLD, removed_deprecated) == []
    assert breaking(OLD, OLD.replace("  diamonds: Int!", "")) == [
        "Field Wallet.diamonds was removed."]
    assert breaking(OLD, OLD.replace("coins: Int!", "coins: String!")) == [
        "Field Wallet.coins changed type from Int! to String!."]
    assert breaking(OLD, OLD.replace("LIVE ENDED", "LIVE")) == [
        "Enum value Status.ENDED was removed."]
    assert breaking(OLD, OLD.replace("end(status: Status!)", "end(status: Status!, "
                                                               "reason: String!)")) == [
        "A required argument Mutation.end(reason:) was added."]
    assert breaking(OLD, OLD.replace("end(status: Status!)", "end")) == [
        "Argument Mutation.end(status:) was removed."]
