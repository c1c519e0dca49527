"""What a payment provider is: it turns a store receipt into a verified purchase, or refuses.

Providers are registered through the ``register_payment_providers`` hook; the
core's own ``sandbox`` provider (:mod:`app.sandbox`) is registered the same way.
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
