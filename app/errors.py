"""Errors a user can cause: one code per failure, shown to API clients as ``userErrors``.

Services raise :class:`DomainError`; the GraphQL layer turns it into
``{code, field, message}``. ``recorded`` says whether an idempotency key keeps
the failure (a business refusal) or forgets it (input that never reached the ledger).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar


class ErrorCode(StrEnum):
    INVALID_INPUT = "INVALID_INPUT"
    INVALID_ID = "INVALID_ID"
    NOT_FOUND = "NOT_FOUND"
    INVALID_AMOUNT = "INVALID_AMOUNT"
    INVALID_IDEMPOTENCY_KEY = "INVALID_IDEMPOTENCY_KEY"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    PACKAGE_UNAVAILABLE = "PACKAGE_UNAVAILABLE"
    UNKNOWN_PROVIDER = "UNKNOWN_PROVIDER"
    INVALID_RECEIPT = "INVALID_RECEIPT"
    RECEIPT_MISMATCH = "RECEIPT_MISMATCH"
    RECEIPT_ALREADY_REDEEMED = "RECEIPT_ALREADY_REDEEMED"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    INSUFFICIENT_COINS = "INSUFFICIENT_COINS"
    SESSION_NOT_LIVE = "SESSION_NOT_LIVE"
    GIFT_UNAVAILABLE = "GIFT_UNAVAILABLE"
    CANNOT_GIFT_SELF = "CANNOT_GIFT_SELF"
    INVALID_QUANTITY = "INVALID_QUANTITY"
    ALREADY_LIVE = "ALREADY_LIVE"
    NOT_SESSION_CREATOR = "NOT_SESSION_CREATOR"
    SEND_VETOED = "SEND_VETOED"
    INSUFFICIENT_DIAMONDS = "INSUFFICIENT_DIAMONDS"
    BIRTHDATE_REQUIRED = "BIRTHDATE_REQUIRED"
    AGE_RESTRICTED = "AGE_RESTRICTED"
    COOLING_OFF = "COOLING_OFF"
    DAILY_CAP_REACHED = "DAILY_CAP_REACHED"
    MONTHLY_CAP_REACHED = "MONTHLY_CAP_REACHED"
    PAYOUT_BELOW_MINIMUM = "PAYOUT_BELOW_MINIMUM"
    PAYOUT_ABOVE_DAILY_MAXIMUM = "PAYOUT_ABOVE_DAILY_MAXIMUM"
    PAYOUT_NOT_PENDING = "PAYOUT_NOT_PENDING"
    SPONSOR_BUDGET_EXHAUSTED = "SPONSOR_BUDGET_EXHAUSTED"
    WEBHOOK_NOT_VERIFIED = "WEBHOOK_NOT_VERIFIED"
    GOAL_TARGET_OUT_OF_RANGE = "GOAL_TARGET_OUT_OF_RANGE"
    TOO_MANY_GOALS = "TOO_MANY_GOALS"
    ALREADY_IN_MATCH = "ALREADY_IN_MATCH"
    MATCH_DURATION_OUT_OF_RANGE = "MATCH_DURATION_OUT_OF_RANGE"
    MATCH_INVITE_PENDING = "MATCH_INVITE_PENDING"
    MATCH_INVITE_EXPIRED = "MATCH_INVITE_EXPIRED"
    MATCH_NOT_PENDING = "MATCH_NOT_PENDING"
    NOT_MATCH_INVITEE = "NOT_MATCH_INVITEE"


class DomainError(Exception):
    """A refusal the caller can understand and act on; nothing was changed."""

    recorded: ClassVar[bool] = False

    def __init__(self, code: ErrorCode, message: str, field: str | None = None, *,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after  # seconds after which the same request may succeed

    def as_dict(self) -> dict[str, Any]:
        kept = {"code": self.code.value, "message": self.message, "field": self.field}
        return kept if self.retry_after is None else {**kept, "retry_after": self.retry_after}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DomainError:
        return cls(ErrorCode(data["code"]), data["message"], data.get("field"),
                   retry_after=data.get("retry_after"))


class BusinessRefusal(DomainError):
    """A refusal reached after the request was accepted (e.g. not enough coins).

    An idempotency key keeps it: retrying the same key fails the same way.
    """

    recorded = True
