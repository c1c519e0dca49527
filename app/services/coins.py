"""Coin packages on sale and buying coins with a verified store receipt."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.errors import DomainError, ErrorCode
from app.ledger import (
    Currency,
    Leg,
    lock_account,
    post_transaction,
    run_idempotent,
    system_account,
)
from app.ledger.idempotency import check_key
from app.models import CoinPackage, Purchase
from app.payments import PaymentProvider, ReceiptRejected, VerifiedReceipt
from app.services.safeguards import require_age
from app.services.users import coin_account, debt_account
from app.settings import Settings

MAX_PACKAGE_COINS = 10_000_000
MAX_PACKAGE_PRICE_MINOR = 10_000_000  # 100,000.00 in a two-decimal currency
SKU = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")

# (sku, name, coins, price in US cents): the usual ladder of in-app coin packs.
DEFAULT_PACKAGES = [
    ("coins-70", "70 Coins", 70, 99),
    ("coins-350", "350 Coins", 350, 499),
    ("coins-700", "700 Coins", 700, 999),
    ("coins-1400", "1,400 Coins", 1_400, 1_999),
    ("coins-3500", "3,500 Coins", 3_500, 4_999),
    ("coins-7000", "7,000 Coins", 7_000, 9_999),
    ("coins-17500", "17,500 Coins", 17_500, 24_999),
]


@dataclass(frozen=True, slots=True)
class PurchaseResult:
    purchase: Purchase
    replayed: bool


def _check_package_fields(name: str | None, coins: int | None, price_minor: int | None,
                          currency: str | None) -> None:
    if name is not None and not 1 <= len(name.strip()) <= 80:
        raise DomainError(ErrorCode.INVALID_INPUT, "name must be 1 to 80 characters.", "name")
    if coins is not None and not 1 <= coins <= MAX_PACKAGE_COINS:
        raise DomainError(ErrorCode.INVALID_AMOUNT,
                          f"coins must be between 1 and {MAX_PACKAGE_COINS:,}.", "coins")
    if price_minor is not None and not 1 <= price_minor <= MAX_PACKAGE_PRICE_MINOR:
        raise DomainError(ErrorCode.INVALID_AMOUNT, "priceMinor must be between 1 and "
                          f"{MAX_PACKAGE_PRICE_MINOR:,} minor units.", "priceMinor")
    if currency is not None and not CURRENCY.match(currency):
        raise DomainError(ErrorCode.INVALID_INPUT,
                          "currency must be an ISO 4217 code such as USD.", "currency")


async def list_packages(session: AsyncSession, *, include_inactive: bool = False
                        ) -> list[CoinPackage]:
    query = select(CoinPackage).order_by(CoinPackage.sort_order, CoinPackage.coins,
                                         CoinPackage.id)
    if not include_inactive:
        query = query.where(CoinPackage.active)
    return list((await session.scalars(query)).all())


async def create_package(session: AsyncSession, *, sku: str, name: str, coins: int,
                         price_minor: int, currency: str = "USD", sort_order: int = 0
                         ) -> CoinPackage:
    if not SKU.match(sku):
        raise DomainError(ErrorCode.INVALID_INPUT, "sku must be 1-64 lowercase letters, "
                          "digits, '.', '_' or '-'.", "sku")
    _check_package_fields(name, coins, price_minor, currency)
    if await session.scalar(select(CoinPackage.id).where(CoinPackage.sku == sku)):
        raise DomainError(ErrorCode.INVALID_INPUT, f"A coin package with sku {sku!r} exists.",
                          "sku")
    package = CoinPackage(sku=sku, name=name.strip(), coins=coins, price_minor=price_minor,
                          currency=currency, sort_order=sort_order)
    session.add(package)
    await session.flush()
    return package


async def update_package(session: AsyncSession, package_id: int, *, name: str | None = None,
                         coins: int | None = None, price_minor: int | None = None,
                         active: bool | None = None, sort_order: int | None = None
                         ) -> CoinPackage:
    package = await session.get(CoinPackage, package_id)
    if package is None:
        raise DomainError(ErrorCode.NOT_FOUND, "No coin package has this ID.", "id")
    _check_package_fields(name, coins, price_minor, None)
    for field, value in dict(name=name, coins=coins, price_minor=price_minor, active=active,
                             sort_order=sort_order).items():
        if value is not None:
            setattr(package, field, value.strip() if isinstance(value, str) else value)
    await session.flush()
    return package


async def seed_default_packages(session: AsyncSession) -> int:
    """Create the default package ladder where missing; return how many were created."""
    existing = set((await session.scalars(select(CoinPackage.sku))).all())
    created = 0
    for order, (sku, name, coins, cents) in enumerate(DEFAULT_PACKAGES):
        if sku not in existing:
            session.add(CoinPackage(sku=sku, name=name, coins=coins, price_minor=cents,
                                    currency="USD", sort_order=order))
            created += 1
    await session.flush()
    return created


async def _verify(providers: Mapping[str, PaymentProvider], provider: str, receipt: str
                  ) -> VerifiedReceipt:
    chosen = providers.get(provider)
    if chosen is None:
        known = ", ".join(sorted(providers)) or "none"
        raise DomainError(ErrorCode.UNKNOWN_PROVIDER,
                          f"Unknown payment provider {provider!r}; installed: {known}.", "provider")
    if not receipt or len(receipt) > 20_000:
        raise DomainError(ErrorCode.INVALID_RECEIPT, "The receipt is empty or too long.", "receipt")
    try:
        return await chosen.verify_receipt(receipt)
    except ReceiptRejected as exc:
        raise DomainError(ErrorCode.INVALID_RECEIPT, f"The receipt was rejected: {exc}.",
                          "receipt") from exc


async def purchase_coins(sessions: async_sessionmaker[AsyncSession],
                         providers: Mapping[str, PaymentProvider], settings: Settings, *,
                         user_id: int, package_id: int, provider: str, receipt: str,
                         idempotency_key: str) -> PurchaseResult:
    """Credit a package's coins to the user, once per store transaction.

    The receipt is verified before any database transaction opens. The purchase
    row's unique (provider, transaction id) makes a receipt credit once, whoever
    sends it, under any idempotency key, however many times at once. Coins owed
    from an earlier refund or chargeback are settled first, in the same transaction.
    """
    check_key(idempotency_key)
    verified = await _verify(providers, provider, receipt)

    async def buy(session: AsyncSession) -> dict[str, int]:
        await require_age(session, settings, user_id, doing="buying coins")
        package = await session.get(CoinPackage, package_id)
        if package is None:
            raise DomainError(ErrorCode.NOT_FOUND, "No coin package has this ID.", "packageId")
        if not package.active:
            raise DomainError(ErrorCode.PACKAGE_UNAVAILABLE,
                              f"The package {package.name!r} is no longer on sale.", "packageId")
        if (verified.sku, verified.amount_minor, verified.currency) != (
                package.sku, package.price_minor, package.currency):
            raise DomainError(
                ErrorCode.RECEIPT_MISMATCH,
                f"The receipt is for {verified.sku!r} at {verified.amount_minor} "
                f"{verified.currency}, not for {package.sku!r} at {package.price_minor} "
                f"{package.currency}.", "receipt")
        already = await session.scalar(select(Purchase.id).where(
            Purchase.provider == provider,
            Purchase.provider_transaction_id == verified.transaction_id))
        if already is not None:
            raise _already_redeemed()
        # Wallet before debt, the order refunds lock them in: the two cannot deadlock.
        wallet = await coin_account(session, user_id)
        await lock_account(session, wallet)
        debt = await debt_account(session, user_id)
        owed = -await lock_account(session, debt)
        settled = min(owed, package.coins)
        legs = [
            Leg(await system_account(session, "coin_issuance", Currency.COIN), -package.coins),
            Leg(wallet, package.coins - settled),
            Leg(debt, settled),
            Leg(await system_account(session, f"receivable:{provider}", package.currency),
                package.price_minor),
            Leg(await system_account(session, "coin_sales", package.currency),
                -package.price_minor),
        ]
        transaction_id = await post_transaction(session, kind="coin_purchase", memo=package.sku,
                                                legs=[leg for leg in legs if leg.amount])
        purchase = Purchase(user_id=user_id, package_id=package.id, provider=provider,
                            provider_transaction_id=verified.transaction_id,
                            coins=package.coins, price_minor=package.price_minor,
                            currency=package.currency, transaction_id=transaction_id)
        try:
            async with session.begin_nested():
                session.add(purchase)
        except IntegrityError as exc:  # the same receipt, redeemed concurrently
            raise _already_redeemed() from exc
        return {"purchase_id": purchase.id}

    outcome = await run_idempotent(
        sessions, scope=f"user:{user_id}", key=idempotency_key, operation="purchase_coins",
        request={"package_id": package_id, "provider": provider, "receipt": receipt},
        action=buy)
    async with sessions() as session:
        purchase = await session.get(Purchase, outcome["purchase_id"])
    assert purchase is not None
    return PurchaseResult(purchase=purchase, replayed=outcome["replayed"])


def _already_redeemed() -> DomainError:
    return DomainError(ErrorCode.RECEIPT_ALREADY_REDEEMED,
                       "This receipt was already redeemed; its coins were credited once.",
                       "receipt")
