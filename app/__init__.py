"""livegifts: the virtual-gift economy of live streaming.

The public plugin API is re-exported here, so a plugin needs one import::

    from app import hookimpl
"""

from app.hookspecs import hookimpl
from app.payments import PaymentProvider, ReceiptRejected, VerifiedReceipt

__all__ = ["PaymentProvider", "ReceiptRejected", "VerifiedReceipt", "hookimpl"]
