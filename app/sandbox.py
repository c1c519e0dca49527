"""The ``sandbox`` payment provider: HMAC-signed receipts for development and tests.

A receipt is ``sbx1.<payload>.<signature>``: the payload is base64url JSON
``{"txn", "sku", "amount", "currency"}`` and the signature is base64url
HMAC-SHA256 of the payload under ``LIVEGIFTS_SANDBOX_SECRET``. ``livegifts
receipt`` mints one. Every real code path (signature, replay, mismatch) runs
without a network.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets

from app.hookspecs import hookimpl
from app.payments import ReceiptRejected, VerifiedReceipt
from app.settings import Settings

PREFIX = "sbx1"


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SandboxPaymentProvider:
    name = "sandbox"

    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def _sign(self, payload: str) -> str:
        return _b64encode(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def make_receipt(self, sku: str, amount_minor: int, currency: str = "USD",
                     transaction_id: str | None = None) -> str:
        body = {"txn": transaction_id or f"sbx_{secrets.token_hex(8)}", "sku": sku,
                "amount": amount_minor, "currency": currency}
        payload = _b64encode(json.dumps(body, separators=(",", ":")).encode())
        return f"{PREFIX}.{payload}.{self._sign(payload)}"

    async def verify_receipt(self, receipt: str) -> VerifiedReceipt:
        parts = receipt.split(".")
        if len(parts) != 3 or parts[0] != PREFIX:
            raise ReceiptRejected("not a sandbox receipt (expected sbx1.<payload>.<signature>)")
        _, payload, signature = parts
        if not hmac.compare_digest(self._sign(payload), signature):
            raise ReceiptRejected("the signature does not match: forged or altered receipt")
        try:
            body = json.loads(_b64decode(payload))
            receipt_ = VerifiedReceipt(str(body["txn"]), str(body["sku"]), body["amount"],
                                       str(body["currency"]))
        except (binascii.Error, ValueError, KeyError, TypeError) as exc:
            raise ReceiptRejected("the signed payload is unreadable") from exc
        if type(receipt_.amount_minor) is not int or not receipt_.transaction_id:
            raise ReceiptRejected("the signed payload has no valid amount or transaction id")
        return receipt_


@hookimpl
def register_payment_providers(settings: Settings) -> list[SandboxPaymentProvider]:
    return [SandboxPaymentProvider(settings.sandbox_secret)]
