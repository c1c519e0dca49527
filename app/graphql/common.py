"""Shared GraphQL pieces: the Long scalar, Relay pagination and user errors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NewType, TypeVar

import strawberry
from strawberry import relay

from app.errors import DomainError, ErrorCode
from app.graphql.context import ClientError

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
MAX_SAFE_INTEGER = 2**53 - 1

Long = NewType("Long", int)


def _parse_long(value: object) -> int:
    if type(value) is not int or abs(value) > MAX_SAFE_INTEGER:
        raise ValueError("Long must be an integer between -(2^53-1) and 2^53-1")
    return value


LONG_SCALAR = strawberry.scalar(
    name="Long",
    description="A whole number up to 2^53-1 (exact in JavaScript). Money amounts are Longs "
                "in minor units (cents, coins, diamonds), never fractions.",
    serialize=int,
    parse_value=_parse_long,
)

UserErrorCode = strawberry.enum(ErrorCode, name="UserErrorCode",
                                description="What went wrong, for programs to branch on.")


@strawberry.type(description="A refusal the caller can act on. Nothing was changed.")
class UserError:
    code: UserErrorCode
    field: str | None = strawberry.field(description="The input field at fault, if one is.")
    message: str
    retry_after_seconds: int | None = strawberry.field(
        default=None, description="When set, the same request may succeed if sent again "
                                  "after this many seconds (the refusal is temporary).")

    @classmethod
    def of(cls, error: DomainError) -> UserError:
        return cls(code=error.code, field=error.field, message=error.message,
                   retry_after_seconds=error.retry_after)


def decode_id(value: strawberry.ID | str, type_name: str, field: str) -> int:
    """Parse a global ID of the given type into its database id, or raise INVALID_ID."""
    try:
        global_id = relay.GlobalID.from_id(value)
        if global_id.type_name != type_name:
            raise ValueError
        number = int(global_id.node_id)
    except ValueError:
        raise DomainError(ErrorCode.INVALID_ID,
                          f"{field} is not a valid {type_name} ID.", field) from None
    if not 0 < number <= MAX_SAFE_INTEGER:
        raise DomainError(ErrorCode.INVALID_ID, f"{field} is not a valid {type_name} ID.", field)
    return number


def page_size(first: int | None) -> int:
    if first is None:
        return DEFAULT_PAGE_SIZE
    if not 1 <= first <= MAX_PAGE_SIZE:
        raise ClientError(f"first must be between 1 and {MAX_PAGE_SIZE}.", "BAD_USER_INPUT")
    return first


def bad_cursor() -> ClientError:
    return ClientError("after is not a cursor returned by this connection.", "BAD_USER_INPUT")


def cursor_value(after: str | None) -> str | None:
    if after is None:
        return None
    try:
        prefix, value = relay.from_base64(after)
    except ValueError:
        raise bad_cursor() from None
    if prefix != "cursor":
        raise bad_cursor()
    return value


def cursor_id(after: str | None) -> int | None:
    value = cursor_value(after)
    if value is None:
        return None
    if not value.isdigit() or not 0 < int(value) <= MAX_SAFE_INTEGER:
        raise bad_cursor()
    return int(value)


N = TypeVar("N")
R = TypeVar("R")


def connection(rows: Sequence[R], limit: int, to_node: Callable[[R], N],
               key: Callable[[R], int | str]) -> relay.Connection[N]:
    """Build a connection from ``limit + 1`` rows fetched by keyset pagination."""
    page = rows[:limit]
    edges = [relay.Edge(cursor=relay.to_base64("cursor", key(row)), node=to_node(row))
             for row in page]
    return relay.Connection(
        edges=edges,
        page_info=relay.PageInfo(
            has_next_page=len(rows) > limit, has_previous_page=False,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )
