"""SQLModel tables, one module per bounded context; importing this registers them all."""

from sqlmodel import SQLModel

from app.models.catalogue import (
    Brand,
    BrandOwner,
    BrandShareCarry,
    BrandTransfer,
    Gift,
    PluginHealth,
    PublicDataVersion,
    RateCard,
    TrustedDocument,
)
from app.models.events import (
    Event,
    EventRelay,
    EventStream,
    WebhookDelivery,
    WebhookSubscription,
)
from app.models.ledger import (
    Account,
    Entry,
    IdempotencyRecord,
    LedgerSeal,
    LedgerTransaction,
)
from app.models.live import (
    GiftCombo,
    GiftSend,
    LiveGoal,
    LiveMatch,
    LiveSession,
    MatchSupporter,
    SessionViewer,
)
from app.models.payouts import Clawback, Payout, PurchaseReversal
from app.models.recognition import CreatorTotal, SessionGifterTotal, SupporterTotal
from app.models.safeguards import LimitChange, Profile, ViewerSpend
from app.models.users import User
from app.models.wallets import CoinPackage, Purchase

metadata = SQLModel.metadata

__all__ = [
    "Account",
    "Brand",
    "BrandOwner",
    "BrandShareCarry",
    "BrandTransfer",
    "Clawback",
    "CreatorTotal",
    "Gift",
    "GiftCombo",
    "GiftSend",
    "LimitChange",
    "LiveGoal",
    "LiveMatch",
    "LiveSession",
    "MatchSupporter",
    "Payout",
    "Profile",
    "PluginHealth",
    "PublicDataVersion",
    "ViewerSpend",
    "PurchaseReversal",
    "RateCard",
    "SessionGifterTotal",
    "SessionViewer",
    "SupporterTotal",
    "TrustedDocument",
    "CoinPackage",
    "Entry",
    "Event",
    "EventRelay",
    "EventStream",
    "IdempotencyRecord",
    "LedgerSeal",
    "LedgerTransaction",
    "Purchase",
    "User",
    "WebhookDelivery",
    "WebhookSubscription",
    "metadata",
]
