"""The ``sandbox`` payment and payout providers: HMAC-signed receipts and webhooks.

A receipt is ``sbx1.<payload>.<signature>``: the payload is base64url JSON
``{"txn", "sku", "amount", "currency"}`` and the signature is base64url
HMAC-SHA256 of the payload under ``LIVEGIFTS_SANDBOX_SECRET``. ``livegifts
receipt`` mints one.

Webhooks are JSON bodies signed with hex HMAC-SHA256 of the raw body under the same
secret, sent as ``X-Livegifts-Signature: sha256=<hex>``: refunds and chargebacks
``{"type": "refund"|"chargeback", "transaction_id"}``, payout results
``{"payout_id", "status": "paid"|"failed", "reason"}``. ``livegifts webhook`` signs
one. Every real code path (signature, replay, refund, settlement) runs without a network.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets

from app.hookspecs import hookimpl
from app.payments import (
    PaymentEvent,
    PayoutOrder,
    PayoutOutcome,
    ReceiptRejected,
    VerifiedReceipt,
    WebhookRejected,
)
from app.settings import Settings

PREFIX = "sbx1"


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _Signed:
    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def sign_webhook(self, body: bytes) -> str:
        return "sha256=" + hmac.new(self._key, body, hashlib.sha256).hexdigest()

    def _webhook_body(self, body: bytes, signature: str) -> dict:
        if not hmac.compare_digest(self.sign_webhook(body), signature or ""):
            raise WebhookRejected("the signature does not match the body")
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise WebhookRejected("the body is not JSON") from exc
        if not isinstance(data, dict):
            raise WebhookRejected("the body is not a JSON object")
        return data


class SandboxPaymentProvider(_Signed):
    name = "sandbox"

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

    def verify_webhook(self, body: bytes, signature: str) -> PaymentEvent:
        data = self._webhook_body(body, signature)
        if data.get("type") not in ("refund", "chargeback") or \
                not isinstance(data.get("transaction_id"), str):
            raise WebhookRejected("expected {type: refund|chargeback, transaction_id}")
        return PaymentEvent(kind=data["type"], transaction_id=data["transaction_id"])


class SandboxPayoutProvider(_Signed):
    """Accepts every payout at once; the result arrives later by signed webhook."""

    name = "sandbox"
    pays_brands = True

    async def submit(self, order: PayoutOrder) -> str:
        return f"sbxpo_{order.payout_id}"

    def verify_webhook(self, body: bytes, signature: str) -> PayoutOutcome:
        data = self._webhook_body(body, signature)
        if data.get("status") not in ("paid", "failed") or \
                not isinstance(data.get("payout_id"), str):
            raise WebhookRejected("expected {payout_id, status: paid|failed}")
        reason = data.get("reason")
        return PayoutOutcome(provider_payout_id=data["payout_id"], paid=data["status"] == "paid",
                             reason=str(reason)[:300] if reason else None)


@hookimpl
def register_payment_providers(settings: Settings) -> list[SandboxPaymentProvider]:
    return [SandboxPaymentProvider(settings.sandbox_secret)]


@hookimpl
def register_payout_providers(settings: Settings) -> list[SandboxPayoutProvider]:
    return [SandboxPayoutProvider(settings.sandbox_secret)]
