"""GraphQL object types and how each Node is fetched by its global ID (with its access rule)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import strawberry
from strawberry import relay
from strawberry.types import Info

from app import models
from app.graphql.common import MAX_SAFE_INTEGER, Long
from app.graphql.context import Context
from app.services import wallets


def ctx(info: Info) -> Context:
    return info.context


@strawberry.type(description="An amount of money in the minor units of its currency.")
class Money:
    amount: Long = strawberry.field(description="In minor units, e.g. cents for USD.")
    currency: str = strawberry.field(description="ISO 4217 code, e.g. USD.")


@strawberry.type(description="A pack of coins on sale for real money.")
class CoinPackage(relay.Node):
    id: relay.NodeID[int]
    sku: str = strawberry.field(description="The store product id the receipt must name.")
    name: str
    coins: Long
    price: Money
    active: bool = strawberry.field(description="Whether the package is on sale.")

    @classmethod
    def of(cls, row: models.CoinPackage) -> CoinPackage:
        return cls(id=row.id, sku=row.sku, name=row.name, coins=row.coins,
                   price=Money(amount=row.price_minor, currency=row.currency), active=row.active)

    @classmethod
    async def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str],
                            required: bool = False) -> list[CoinPackage | None]:
        rows = await _rows_by_id(info, models.CoinPackage, node_ids)
        return [cls.of(r) if r and (r.active or ctx(info).is_admin()) else None for r in rows]


@strawberry.type(description="A person on the platform (public profile).")
class User(relay.Node):
    id: relay.NodeID[int]
    name: str

    @classmethod
    async def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str],
                            required: bool = False) -> list[User | None]:
        ctx(info).require()
        rows = await _rows_by_id(info, models.User, node_ids)
        return [cls(id=r.id, name=r.name) if r else None for r in rows]


@strawberry.type(description="One leg of a transaction: an amount moved into or out of an "
                             "account. Positive is a credit, negative a debit.")
class LedgerEntry:
    account: str = strawberry.field(
        description="'wallet' or 'earnings' for your own accounts, 'user' for another "
                    "person's, or the platform account's name.")
    currency: str
    amount: Long


def _account_label(account: models.Account, viewer_id: int | None) -> str:
    kind, _, rest = account.code.partition(":")
    if kind == "user":
        owner, _, purpose = rest.partition(":")
        return purpose if viewer_id is not None and owner == str(viewer_id) else "user"
    return account.code


@strawberry.type(description="A balanced movement of money: its entries sum to zero per "
                             "currency. Never changed once written.")
class LedgerTransaction(relay.Node):
    id: relay.NodeID[int]
    kind: str = strawberry.field(description="e.g. coin_purchase.")
    memo: str
    created_at: datetime
    reverses_id: strawberry.Private[int | None]

    @classmethod
    def of(cls, row: models.LedgerTransaction) -> LedgerTransaction:
        return cls(id=row.id, kind=row.kind, memo=row.memo, created_at=row.created_at,
                   reverses_id=row.reverses_id)

    @strawberry.field(description="The legs of the transaction, in the order posted.")
    async def entries(self, info: Info) -> list[LedgerEntry]:
        context = ctx(info)
        viewer_id = None if context.principal() is None else await context.user_id()
        rows = await context.entries_loader.load(self.id)
        return [LedgerEntry(account=_account_label(account, viewer_id),
                            currency=entry.currency, amount=entry.amount)
                for entry, account in rows]

    @classmethod
    async def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str],
                            required: bool = False) -> list[LedgerTransaction | None]:
        context = ctx(info)
        context.require()
        user_id = await context.user_id()
        rows = await _rows_by_id(info, models.LedgerTransaction, node_ids)
        visible: list[LedgerTransaction | None] = []
        async with context.runtime.reads() as session:
            for row in rows:
                allowed = row is not None and (
                    context.is_admin()
                    or await wallets.transaction_visible_to(session, row.id, user_id))
                visible.append(cls.of(row) if allowed else None)
        return visible


@strawberry.type(description="Coins bought with a verified store receipt.")
class Purchase(relay.Node):
    id: relay.NodeID[int]
    coins: Long
    price: Money
    provider: str
    provider_transaction_id: str
    created_at: datetime
    package_id: strawberry.Private[int]
    transaction_id: strawberry.Private[int]
    user_id: strawberry.Private[int]

    @classmethod
    def of(cls, row: models.Purchase) -> Purchase:
        return cls(id=row.id, coins=row.coins,
                   price=Money(amount=row.price_minor, currency=row.currency),
                   provider=row.provider, provider_transaction_id=row.provider_transaction_id,
                   created_at=row.created_at, package_id=row.package_id,
                   transaction_id=row.transaction_id, user_id=row.user_id)

    @strawberry.field(description="The ledger transaction that credited the coins.")
    async def transaction(self, info: Info) -> LedgerTransaction:
        async with ctx(info).runtime.reads() as session:
            row = await session.get(models.LedgerTransaction, self.transaction_id)
        return LedgerTransaction.of(row)

    @classmethod
    async def resolve_nodes(cls, *, info: Info, node_ids: Iterable[str],
                            required: bool = False) -> list[Purchase | None]:
        context = ctx(info)
        user_id = await context.user_id()
        rows = await _rows_by_id(info, models.Purchase, node_ids)
        return [cls.of(r) if r and (r.user_id == user_id or context.is_admin()) else None
                for r in rows]


@strawberry.type(description="What a user holds right now.")
class Wallet:
    coins: Long = strawberry.field(description="Coins available to spend on gifts.")
    diamonds: Long = strawberry.field(description="Diamonds earned from gifts, available to "
                                                  "cash out.")
    diamonds_on_hold: Long = strawberry.field(default=0, description="Diamonds held by "
                                                                     "pending payouts.")
    coins_owed: Long = strawberry.field(default=0, description="Coins owed after a refund or "
                                                               "chargeback of coins already "
                                                               "spent; your next purchases "
                                                               "settle it first.")

    @classmethod
    def of(cls, held: Any) -> Wallet:
        return cls(coins=held.coins, diamonds=held.diamonds,
                   diamonds_on_hold=held.diamonds_on_hold, coins_owed=held.coins_owed)


async def _rows_by_id(info: Info, model: Any, node_ids: Iterable[str]) -> list[Any]:
    """Rows of ``model`` by id (None where there is none), batched: every lookup of
    the same model in one request tick becomes one query (no N+1 in lists)."""
    ids: list[int | None] = []
    for node_id in node_ids:
        try:
            number = int(node_id)
        except ValueError:
            number = None
        # Outside the ids the database gives: no such object (never a query that overflows).
        ids.append(number if number is not None and 0 < number <= MAX_SAFE_INTEGER else None)
    loader = ctx(info).rows_loader(model)
    found = await loader.load_many([i for i in ids if i is not None])
    rows = iter(found)
    return [None if i is None else next(rows) for i in ids]
