"""A payout provider plugin: payouts get "ip-<id>"; its webhooks are signed "trusted"."""

import json

from app import hookimpl
from app.payments import PayoutOrder, PayoutOutcome, WebhookRejected


class Instapay:
    name = "instapay"

    async def submit(self, order: PayoutOrder) -> str:
        return f"ip-{order.payout_id}"

    def verify_webhook(self, body: bytes, signature: str) -> PayoutOutcome:
        if signature != "trusted":
            raise WebhookRejected("untrusted sender")
        data = json.loads(body)
        return PayoutOutcome(provider_payout_id=data["id"], paid=data["ok"])


@hookimpl
def register_payout_providers(settings):
    return [Instapay()]
