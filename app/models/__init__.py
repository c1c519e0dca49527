"""SQLModel tables, one module per bounded context; importing this registers them all."""

from sqlmodel import SQLModel

from app.models.ledger import Account, Entry, IdempotencyRecord, LedgerTransaction
from app.models.users import User
from app.models.wallets import CoinPackage, Purchase

metadata = SQLModel.metadata

__all__ = [
    "Account",
    "CoinPackage",
    "Entry",
    "IdempotencyRecord",
    "LedgerTransaction",
    "Purchase",
    "User",
    "metadata",
]
