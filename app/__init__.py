"""livegifts: the virtual-gift economy of live streaming.

The public plugin API is re-exported here, so a plugin needs one import::

    from app import Brand, Quote, SponsoredGift, hookimpl
"""

from app.hookspecs import hookimpl
from app.payments import PaymentProvider, ReceiptRejected, VerifiedReceipt
from app.sponsorship import (
    Brand,
    BrandShare,
    MatchBoost,
    MatchContext,
    Quote,
    RateCardTerms,
    RevenueSplit,
    SendContext,
    SentGift,
    SponsoredGift,
    Veto,
)

__all__ = [
    "Brand",
    "BrandShare",
    "MatchBoost",
    "MatchContext",
    "PaymentProvider",
    "Quote",
    "RateCardTerms",
    "ReceiptRejected",
    "RevenueSplit",
    "SendContext",
    "SentGift",
    "SponsoredGift",
    "VerifiedReceipt",
    "Veto",
    "hookimpl",
]
