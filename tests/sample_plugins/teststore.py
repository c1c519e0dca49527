"""A payment provider plugin: receipts are "paid:<sku>:<amount>:<transaction>"."""

from app import ReceiptRejected, VerifiedReceipt, hookimpl


class TestStore:
    name = "teststore"

    async def verify_receipt(self, receipt: str) -> VerifiedReceipt:
        parts = receipt.split(":")
        if len(parts) != 4 or parts[0] != "paid":
            raise ReceiptRejected("not a teststore receipt")
        return VerifiedReceipt(transaction_id=parts[3], sku=parts[1], amount_minor=int(parts[2]),
                               currency="USD")


@hookimpl
def register_payment_providers(settings):
    return [TestStore()]
