"""What one GraphQL request may ask for and what it is told: its size (tokens, depth,
aliases), a cost budget reported in every response, HTTP for queries and mutations, and
unexpected errors masked; with the parse and validation caches, in one extension (each
extension costs every request its hooks).

Every field costs 1; a connection multiplies the cost of what is selected inside
it by ``first`` (20 when omitted). A request over budget is refused before any
resolver runs, with ``extensions.code`` ``QUERY_TOO_COSTLY``. Every response's
``extensions.cost`` says what the request cost and the budget.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    parse,
    value_from_ast_untyped,
)
from strawberry.extensions import MaskErrors
from strawberry.schema.schema import validate_document
from strawberry.types.graphql import OperationType

from app.graphql.common import DEFAULT_PAGE_SIZE

# Shared by every request (an extension is made per request); keyed by the document's text,
# the parse options and the rules (a parsed document hashes every node of its tree on each
# lookup; its text's hash is kept): bounded, since clients choose the texts.
_parsed = functools.lru_cache(maxsize=1000)(parse)


@functools.lru_cache(maxsize=1000)
def _validated(schema: Any, query: str, options: tuple[tuple[str, Any], ...],
               rules: tuple[type[Any], ...]) -> list[GraphQLError]:
    return validate_document(schema, _parsed(query, **dict(options)), rules)


class RequestPolicy(MaskErrors):
    """Every rule of one request, in one extension: before parsing, the token limit and the
    validation rules that bound depth and aliases (and refuse introspection where it is
    off); parsing and validation through the caches; before execution, queries and
    mutations kept to HTTP and the cost budget; after, the cost in ``extensions`` and
    unexpected errors masked (strawberry's :class:`MaskErrors`, whose hooks this extends)."""

    def __init__(self, *, max_tokens: int, rules: tuple[type[Any], ...], max_cost: int,
                 should_mask: Callable[[GraphQLError], bool], masked_message: str) -> None:
        super().__init__(should_mask_error=should_mask, error_message=masked_message)
        self.max_tokens, self.rules, self.maximum = max_tokens, rules, max_cost
        self.cost: int | None = None

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        context.parse_options["max_tokens"] = self.max_tokens
        context.validation_rules = context.validation_rules + self.rules
        yield from super().on_operation()

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        context.graphql_document = _parsed(context.query, **context.parse_options)
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if (options := _cached_options(context)) is not None:
            errors = _validated(context.schema._schema, context.query, options,
                                tuple(context.validation_rules))
        else:  # a document that did not come from the parse cache
            errors = validate_document(context.schema._schema, context.graphql_document,
                                       context.validation_rules)
        context.pre_execution_errors = errors
        yield

    def _process_result(self, result: object) -> None:
        # MaskErrors asks a runtime-checkable Protocol, a costly isinstance on every request.
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = self._process_errors(errors)  # type: ignore[attr-defined]

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None:
            self.cost = _cost(context)
            if self.cost > self.maximum:
                context.result = GraphQLExecutionResult(data=None, errors=[GraphQLError(
                    f"This query would cost {self.cost}, over the budget of {self.maximum}: "
                    "ask for fewer items (first) or fewer nested fields.",
                    extensions={"code": "QUERY_TOO_COSTLY"})])
        # Queries and mutations go over HTTP, where rate limits apply; WebSocket is for
        # subscriptions only.
        over_websocket = getattr(context.context, "websocket", None) is not None
        if over_websocket and context.operation_type is not OperationType.SUBSCRIPTION:
            context.result = GraphQLExecutionResult(data=None, errors=[GraphQLError(
                "Over WebSocket only subscriptions are served; send queries and mutations "
                "over HTTP.", extensions={"code": "BAD_REQUEST"})])
        yield

    def get_results(self) -> dict[str, Any]:
        if self.cost is None:
            return {}
        return {"cost": {"requested": self.cost, "maximum": self.maximum}}


def _cached_options(context: Any) -> tuple[tuple[str, Any], ...] | None:
    """The parse options (the caches' key with the text), if the request's document came
    from the parse cache; else None (the caches do not describe it)."""
    options = tuple(sorted(context.parse_options.items()))
    if context.query is not None and \
            context.graphql_document is _parsed(context.query, **dict(options)):
        return options
    return None


def _cost(context: Any) -> int:
    """The operation's cost, from the cache when the document came from the parse cache:
    a document's cost depends on its variables only through its ``first`` arguments."""
    query, variables = context.query, context.variables or {}
    if (options := _cached_options(context)) is not None:
        sizes = tuple((name, variables.get(name)) for name in _sized_by(query, options))
        if all(isinstance(value, int | str | None) for _, value in sizes):  # hashable
            return _known_cost(context.schema._schema, query, options,
                               context.operation_name, sizes)
    return _operation_cost(context.schema._schema, context.graphql_document,
                           context.operation_name, variables)


@functools.lru_cache(maxsize=1000)
def _sized_by(query: str, options: tuple[tuple[str, Any], ...]) -> tuple[str, ...]:
    """The variables the document's ``first`` arguments read."""
    names: set[str] = set()

    def walk(selection_set: SelectionSetNode | None) -> None:
        for selection in selection_set.selections if selection_set else ():
            for argument in getattr(selection, "arguments", None) or ():
                if argument.name.value == "first" and isinstance(argument.value, VariableNode):
                    names.add(argument.value.name.value)
            walk(getattr(selection, "selection_set", None))

    for definition in _parsed(query, **dict(options)).definitions:
        walk(getattr(definition, "selection_set", None))
    return tuple(sorted(names))


@functools.lru_cache(maxsize=1000)
def _known_cost(schema: Any, query: str, options: tuple[tuple[str, Any], ...],
                operation_name: str | None, sizes: tuple[tuple[str, Any], ...]) -> int:
    return _operation_cost(schema, _parsed(query, **dict(options)), operation_name,
                           dict(sizes))


def _operation_cost(schema: Any, document: Any, operation_name: str | None,
                    variables: dict[str, Any]) -> int:
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    chosen = next((o for o in operations if operation_name is None or
                   (o.name and o.name.value == operation_name)), None)
    if chosen is None:
        return 0
    root = schema.get_root_type(chosen.operation)
    return _selection_cost(schema, chosen.selection_set, root, fragments, variables, set())


def _selection_cost(schema: Any, selection_set: SelectionSetNode | None, parent: Any,
                    fragments: dict[str, FragmentDefinitionNode], variables: dict[str, Any],
                    seen: set[str]) -> int:
    if selection_set is None or parent is None:
        return 0
    cost = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            fields = getattr(parent, "fields", {})
            definition = fields.get(selection.name.value)
            if definition is None:  # __typename and introspection fields
                cost += 1
                continue
            child = get_named_type(definition.type)
            multiplier = 1
            if child.name.endswith("Connection"):
                multiplier = _first(selection, variables)
            cost += 1 + multiplier * _selection_cost(schema, selection.selection_set, child,
                                                     fragments, variables, seen)
        elif isinstance(selection, InlineFragmentNode):
            cost += _selection_cost(schema, selection.selection_set,
                                    _on(schema, selection.type_condition, parent), fragments,
                                    variables, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in fragments and name not in seen:
                fragment = fragments[name]
                cost += _selection_cost(schema, fragment.selection_set,
                                        _on(schema, fragment.type_condition, parent), fragments,
                                        variables, seen | {name})
    return cost


def _on(schema: Any, condition: Any, parent: Any) -> Any:
    """The type a fragment's fields are priced on: its concrete type (``... on LiveSession``
    inside a ``Node``), not the interface or union it is spread into."""
    if condition is None:
        return parent
    return schema.get_type(condition.name.value) or parent


def _first(field: FieldNode, variables: dict[str, Any]) -> int:
    for argument in field.arguments or ():
        if argument.name.value == "first":
            value = variables.get(argument.value.name.value) \
                if isinstance(argument.value, VariableNode) \
                else value_from_ast_untyped(argument.value)
            if isinstance(value, int) and value > 0:
                return value
    return DEFAULT_PAGE_SIZE


__all__ = ["RequestPolicy"]
