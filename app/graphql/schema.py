"""The schema: queries and mutations, each a thin call into a service."""

from __future__ import annotations

import functools
import hashlib
import logging
from typing import Any

import strawberry
from graphql import GraphQLError
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry import relay
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.name_converter import NameConverter
from strawberry.types import ExecutionContext, Info

from app.auth import Role
from app.errors import DomainError
from app.graphql.brands import Brand, BrandMutation, BrandQuery
from app.graphql.common import (
    LONG_SCALAR,
    Long,
    UserError,
    connection,
    cursor_id,
    decode_id,
    page_size,
)
from app.graphql.context import UNEXPECTED_ERROR, ClientError
from app.graphql.gifting import Gift as GiftType
from app.graphql.gifting import (
    GiftingMutation,
    GiftingQuery,
    GiftReceipt,
    LiveSession,
    Subscription,
)
from app.graphql.limits import RequestPolicy
from app.graphql.matches import Match, MatchMutation, MatchQuery
from app.graphql.money import MoneyMutation, Payout, ViewerMoneyFields
from app.graphql.types import CoinPackage, LedgerTransaction, Purchase, User, Wallet, ctx
from app.graphql.webhooks import WebhookMutation, WebhookQuery
from app.services import coins, wallets
from app.settings import Settings


@strawberry.type(description="The authenticated caller: identity, wallet and history.")
class Viewer(ViewerMoneyFields):
    id: relay.GlobalID = strawberry.field(description="The caller's User ID.")
    name: str
    roles: list[str] = strawberry.field(description="Roles granted by the bearer token.")
    user_id: strawberry.Private[int]

    @strawberry.field
    async def wallet(self, info: Info) -> Wallet:
        return Wallet.of(await wallets.current_wallet(ctx(info).runtime.engine, self.user_id))

    @strawberry.field(description="Transactions that moved the caller's money, newest first.")
    async def transactions(self, info: Info, first: int | None = None,
                           after: str | None = None) -> relay.Connection[LedgerTransaction]:
        limit = page_size(first)
        async with ctx(info).runtime.reads() as session:
            rows = await wallets.transactions_of(session, self.user_id, limit=limit + 1,
                                                 before_id=cursor_id(after))
        return connection(rows, limit, LedgerTransaction.of, key=lambda row: row.id)


@strawberry.type
class Query(GiftingQuery, MatchQuery, BrandQuery, WebhookQuery):
    node: relay.Node | None = relay.node(
        description="Fetch any object by its global ID. Returns null when it does not exist "
                    "or the caller may not see it.")

    @strawberry.field(description="The authenticated caller. Requires a bearer token.")
    async def viewer(self, info: Info) -> Viewer:
        context = ctx(info)
        principal = context.require()
        user_id = await context.user_id()
        return Viewer(id=relay.GlobalID("User", str(user_id)), name=principal.name,
                      roles=sorted(role.value for role in principal.roles), user_id=user_id)

    @strawberry.field(description="Coin packages on sale, cheapest first. Public. Admins may "
                                  "include packages taken off sale.")
    async def coin_packages(self, info: Info, include_inactive: bool = False
                            ) -> list[CoinPackage]:
        context = ctx(info)
        if include_inactive:
            context.require(Role.ADMIN)
        async with context.runtime.reads() as session:
            rows = await coins.list_packages(session, include_inactive=include_inactive)
        return [CoinPackage.of(row) for row in rows]


@strawberry.input(description="Redeem a store receipt for the coins of a package.")
class PurchaseCoinsInput:
    package_id: strawberry.ID = strawberry.field(description="The CoinPackage bought.")
    provider: str = strawberry.field(description="Payment provider that issued the receipt, "
                                                 "e.g. sandbox.")
    receipt: str = strawberry.field(description="The receipt exactly as the store returned it.")
    idempotency_key: str = strawberry.field(
        description="Unique per purchase attempt; resending the same key and input returns "
                    "the first result without charging again.")


@strawberry.type
class PurchaseCoinsPayload:
    purchase: Purchase | None = strawberry.field(description="Null when refused.")
    wallet: Wallet | None = strawberry.field(description="The wallet after the purchase.")
    replayed: bool = strawberry.field(
        description="True when this answers an earlier request with the same idempotency key.")
    user_errors: list[UserError]


@strawberry.input(description="A new coin package. Amounts in minor units.")
class CreateCoinPackageInput:
    sku: str
    name: str
    coins: Long
    price_minor: Long
    currency: str = "USD"
    sort_order: int = 0


@strawberry.input(description="Change a coin package; omitted fields stay as they are.")
class UpdateCoinPackageInput:
    id: strawberry.ID
    name: str | None = None
    coins: Long | None = None
    price_minor: Long | None = None
    active: bool | None = None
    sort_order: int | None = None


@strawberry.type
class CoinPackagePayload:
    coin_package: CoinPackage | None
    user_errors: list[UserError]


@strawberry.type
class Mutation(GiftingMutation, MatchMutation, BrandMutation, MoneyMutation, WebhookMutation):
    @strawberry.mutation(description="Buy coins: verify a store receipt and credit the "
                                     "package's coins exactly once per store transaction.")
    async def purchase_coins(self, info: Info, input: PurchaseCoinsInput) -> PurchaseCoinsPayload:
        context = ctx(info)
        context.require()
        user_id = await context.user_id()
        try:
            result = await coins.purchase_coins(
                context.runtime.sessions, context.runtime.payment_providers,
                context.runtime.settings, user_id=user_id,
                package_id=decode_id(input.package_id, "CoinPackage", "packageId"),
                provider=input.provider, receipt=input.receipt,
                idempotency_key=input.idempotency_key)
        except DomainError as error:
            return PurchaseCoinsPayload(purchase=None, wallet=None, replayed=False,
                                        user_errors=[UserError.of(error)])
        async with context.runtime.reads() as session:
            held = await wallets.wallet(session, user_id)
        return PurchaseCoinsPayload(purchase=Purchase.of(result.purchase),
                                    wallet=Wallet.of(held),
                                    replayed=result.replayed, user_errors=[])

    @strawberry.mutation(description="Admin: put a new coin package on sale.")
    async def create_coin_package(self, info: Info, input: CreateCoinPackageInput
                                  ) -> CoinPackagePayload:
        context = ctx(info)
        context.require(Role.ADMIN)
        try:
            async with context.runtime.sessions() as session, session.begin():
                row = await coins.create_package(
                    session, sku=input.sku, name=input.name, coins=input.coins,
                    price_minor=input.price_minor, currency=input.currency,
                    sort_order=input.sort_order)
        except DomainError as error:
            return CoinPackagePayload(coin_package=None, user_errors=[UserError.of(error)])
        return CoinPackagePayload(coin_package=CoinPackage.of(row), user_errors=[])

    @strawberry.mutation(description="Admin: change a coin package or take it off sale.")
    async def update_coin_package(self, info: Info, input: UpdateCoinPackageInput
                                  ) -> CoinPackagePayload:
        context = ctx(info)
        context.require(Role.ADMIN)
        try:
            async with context.runtime.sessions() as session, session.begin():
                row = await coins.update_package(
                    session, decode_id(input.id, "CoinPackage", "id"), name=input.name,
                    coins=input.coins, price_minor=input.price_minor, active=input.active,
                    sort_order=input.sort_order)
        except DomainError as error:
            return CoinPackagePayload(coin_package=None, user_errors=[UserError.of(error)])
        return CoinPackagePayload(coin_package=CoinPackage.of(row), user_errors=[])


errors_logger = logging.getLogger("livegifts.graphql")


def _should_mask(error: GraphQLError) -> bool:
    """Mask what a resolver raised unexpectedly; keep client errors and request validation."""
    original = error.original_error
    if original is None or error.path is None:  # parse, validation or variable coercion
        return False
    return not isinstance(original, (ClientError, relay.GlobalIDValueError))


class LiveGiftsSchema(strawberry.Schema):
    """The schema, logging errors by whose they are: a client's mistake (a bad document,
    variable or argument) at INFO without a traceback, an unexpected failure at ERROR with
    its traceback; each with the document's SHA-256, never its text (a client chooses the
    text, and it can be megabytes). An ID that is not one of this API's (``node(id:)``'s
    own check) gets the code ``BAD_USER_INPUT``, as the resolvers' own ID checks do."""

    def process_errors(self, errors: list[GraphQLError],
                       execution_context: ExecutionContext | None = None) -> None:
        document = (execution_context.query or "") if execution_context else ""
        about = {"document_sha256": hashlib.sha256(document.encode()).hexdigest(),
                 "operation": execution_context.operation_name if execution_context else None}
        for error in errors:
            if isinstance(error.original_error, relay.GlobalIDValueError):
                # Not an ID of this API (garbage, or a type it does not have): the client's
                # input, coded as an ID of the wrong type is in a query argument.
                error.extensions = {**(error.extensions or {}), "code": "BAD_USER_INPUT"}
            path = ".".join(map(str, error.path or ())) or None
            if _should_mask(error):
                errors_logger.error("unexpected error in %s: %s", path, error.message,
                                    exc_info=error.original_error, extra={**about, "path": path})
            else:
                errors_logger.info("client error: %s", error.message,
                                   extra={**about, "path": path})


def create_schema(settings: Settings) -> strawberry.Schema:
    """The schema with the limits of ``settings`` (the SDL does not depend on them).

    Strawberry builds one schema per set of types, so it is built once per process,
    with the limits from the environment (LIVEGIFTS_MAX_QUERY_DEPTH and the like).
    """
    # The limiters' validation rules are built once: a rule class made per request would
    # be a new key for the validation cache, which would then never hit.
    limiters = (QueryDepthLimiter(max_depth=settings.max_query_depth),
                MaxAliasesLimiter(max_alias_count=settings.max_aliases))
    rules = tuple(rule for limiter in limiters for rule in limiter.validation_rules)
    if not settings.introspection_enabled:
        rules += (NoSchemaIntrospectionCustomRule,)
    extensions: list[Any] = [  # a factory: a fresh extension per request
        lambda: RequestPolicy(max_tokens=settings.max_tokens, rules=rules,
                              max_cost=settings.max_query_cost, should_mask=_should_mask,
                              masked_message=UNEXPECTED_ERROR)]
    return LiveGiftsSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[User, Purchase, LedgerTransaction, CoinPackage, GiftType, LiveSession, GiftReceipt,
               Match, Brand, Payout],
        config=StrawberryConfig(scalar_map={Long: LONG_SCALAR}, name_converter=_Names(),
                                disable_field_suggestions=not settings.introspection_enabled),
        extensions=extensions,
    )


class _Names(NameConverter):
    """Strawberry's names, each field's camelCase made once: Strawberry names the fields
    of every input object again on every request that passes one."""

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one converter a process, kept for good
    def apply_naming_config(self, name: str) -> str:
        return super().apply_naming_config(name)


schema = create_schema(Settings())
