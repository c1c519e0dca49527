"""Every plugin hook livegifts calls, typed and documented.

Plugins implement these with ``from app import hookimpl``. The core registers
its own defaults (the sandbox payment provider) through the same hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from app.payments import PaymentProvider
    from app.settings import Settings

PROJECT = "livegifts"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_payment_providers(settings: Settings) -> list[PaymentProvider]:
    """Declare payment providers that verify coin-purchase receipts.

    :param settings: the running server's settings (secrets, environment).
    :returns: a list of objects with a unique ``name`` and ``async verify_receipt(receipt)``
        returning :class:`app.payments.VerifiedReceipt` or raising
        :class:`app.payments.ReceiptRejected`. All results are collected; a
        provider name registered twice is an error at start.
    """
