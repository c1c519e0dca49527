"""What payment and payout providers are, and what they tell the core.

A payment provider turns a store receipt into a verified purchase and reports
refunds and chargebacks by signed webhook. A payout provider sends creators'
cash and reports by signed webhook whether it arrived. Both are registered
through hooks (``register_payment_providers``, ``register_payout_providers``);
the core's ``sandbox`` providers (:mod:`app.sandbox`) are registered the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class ReceiptRejected(Exception):
    """The receipt is forged, tampered with or unreadable; the message says why."""


@dataclass(frozen=True, slots=True)
class VerifiedReceipt:
    """What the store vouches for: one transaction, for one product, at one price."""

    transaction_id: str
    sku: str
    amount_minor: int
    currency: str


@runtime_checkable
class PaymentProvider(Protocol):
    name: str

    async def verify_receipt(self, receipt: str) -> VerifiedReceipt:
        """Return what the receipt proves, or raise :class:`ReceiptRejected`.

        Called before any database transaction opens, so a slow store does not hold locks.
        """
        ...

    def verify_webhook(self, body: bytes, signature: str) -> PaymentEvent:
        """Check a refund or chargeback webhook and read it, or raise WebhookRejected."""
        ...


class PayoutRejected(Exception):
    """The payout provider definitely refused a payout (the hold is released). Any other
    error leaves the payout pending, to be handed over again later."""


class WebhookRejected(Exception):
    """A webhook whose signature or body does not check out; the message says why."""


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """A store tells us a purchase was refunded or charged back."""

    kind: str  # refund | chargeback
    transaction_id: str  # the store transaction of the purchase


@dataclass(frozen=True, slots=True)
class PayoutOrder:
    """Cash to send: to a creator (``creator_id``) or to a brand partner (``brand``, its
    slug; ``creator_id`` is then None)."""

    payout_id: int
    creator_id: int | None
    cash_minor: int
    currency: str
    brand: str | None = None


@dataclass(frozen=True, slots=True)
class PayoutOutcome:
    """A payout provider reports how a payout ended."""

    provider_payout_id: str
    paid: bool
    reason: str | None = None


@runtime_checkable
class PayoutProvider(Protocol):
    """A payout provider. One that can also pay brand partners (``PayoutOrder.brand``)
    says so with a class attribute ``pays_brands = True``; brand payouts are refused while
    the provider in use does not."""

    name: str

    async def submit(self, order: PayoutOrder) -> str:
        """Start sending the cash; return the provider's id for the payout.

        Must be idempotent on ``order.payout_id``: a payout may be handed over again after
        a crash. Raise :class:`PayoutRejected` only for a definite refusal.
        """
        ...

    def verify_webhook(self, body: bytes, signature: str) -> PayoutOutcome:
        """Check a webhook's signature and read it, or raise :class:`WebhookRejected`."""
        ...
