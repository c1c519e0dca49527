"""Idempotency keys for money mutations (the semantics of Stripe and TigerBeetle).

A key is scoped to its caller. The first request with a key claims it inside the
same database transaction as the work, so:

* the same key and the same input return the first result and move nothing again,
  also when the requests race (the second waits on the claim, then replays);
* the same key with different input is refused with ``IDEMPOTENCY_KEY_REUSED``;
* a business refusal (:class:`~app.errors.BusinessRefusal`) is recorded, so the
  key stays failed; input errors are not recorded and leave no row behind.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import insert_rows, update_rows
from app.errors import BusinessRefusal, DomainError, ErrorCode
from app.models import IdempotencyRecord

MAX_KEY_LENGTH = 255

Action = Callable[[AsyncSession], Awaitable[dict[str, Any]]]


def fingerprint(operation: str, request: Mapping[str, Any]) -> str:
    canonical = json.dumps({"operation": operation, "request": request}, sort_keys=True,
                           separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: str) -> None:
    if not key or not key.strip() or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise DomainError(ErrorCode.INVALID_IDEMPOTENCY_KEY,
                          f"idempotencyKey must be 1 to {MAX_KEY_LENGTH} printable characters.",
                          "idempotencyKey")


def _replay(record: IdempotencyRecord, expected: str, operation: str) -> dict[str, Any]:
    if record.fingerprint != expected or record.operation != operation:
        raise DomainError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "This idempotencyKey was already used with a different request; "
            "use a new key for a new request.",
            "idempotencyKey",
        )
    assert record.result is not None
    if record.status == "failed":
        raise BusinessRefusal.from_dict(record.result)
    return {**record.result, "replayed": True}


@dataclass(frozen=True, slots=True)
class Claim:
    """A request's claim on its idempotency key."""

    scope: str
    key: str
    operation: str
    fingerprint: str

    @classmethod
    def of(cls, scope: str, key: str, operation: str, request: Mapping[str, Any]) -> Claim:
        check_key(key)
        return cls(scope, key, operation, fingerprint(operation, request))


async def claim_keys(session: AsyncSession, claims: Sequence[Claim]
                     ) -> list[int | dict[str, Any] | DomainError]:
    """Claim every key in one INSERT, in the caller's transaction. For each claim, in
    order: the new record's id (the work is this request's to do), or for a key used
    before, its replayed result or the refusal to give.

    A key another transaction is claiming is waited for (the database holds the INSERT
    until that transaction ends), so the answer is always final. The keys must differ.
    """
    claimed = {(scope, key): claim_id for claim_id, scope, key in await insert_rows(
        session, IdempotencyRecord.__table__, [
            dict(scope=c.scope, key=c.key, operation=c.operation, fingerprint=c.fingerprint,
                 status="pending")  # in key order: two claimers of the same keys never deadlock
            for c in sorted(claims, key=lambda c: (c.scope, c.key))],
        returning=("id", "scope", "key"), skip_conflicts_on=("scope", "key"))}
    used = [c for c in claims if (c.scope, c.key) not in claimed]
    records = {} if not used else {(r.scope, r.key): r for r in await session.scalars(
        select(IdempotencyRecord).where(or_(*(
            and_(IdempotencyRecord.scope == c.scope, IdempotencyRecord.key == c.key)
            for c in used))))}
    answers: list[int | dict[str, Any] | DomainError] = []
    for c in claims:
        if (c.scope, c.key) in claimed:
            answers.append(claimed[c.scope, c.key])
            continue
        try:
            answers.append(_replay(records[c.scope, c.key], c.fingerprint, c.operation))
        except DomainError as refusal:
            answers.append(refusal)
    return answers


async def settle_keys(session: AsyncSession, outcomes: Mapping[int, dict[str, Any] | DomainError]
                      ) -> None:
    """Record each claimed key's outcome (by record id), in the caller's transaction: a
    result or a business refusal is kept for replays; a key whose request was refused
    for its input is released, as if never used."""
    kept = [dict(id=claim_id, status="succeeded" if isinstance(outcome, dict) else
                 "failed", result=outcome if isinstance(outcome, dict) else outcome.as_dict())
            for claim_id, outcome in outcomes.items()
            if isinstance(outcome, dict) or outcome.recorded]
    released = [claim_id for claim_id, outcome in outcomes.items()
                if not isinstance(outcome, dict) and not outcome.recorded]
    if kept:
        await update_rows(session, IdempotencyRecord.__table__, kept)
    if released:
        await session.execute(delete(IdempotencyRecord).where(
            IdempotencyRecord.id.in_(released)).execution_options(synchronize_session=False))


async def run_idempotent(sessions: async_sessionmaker[AsyncSession], *, scope: str, key: str,
                         operation: str, request: Mapping[str, Any],
                         action: Action) -> dict[str, Any]:
    """Run ``action`` once per (scope, key) in one database transaction; return its result.

    ``action`` returns a JSON-serialisable dict (stored for replays) or raises
    :class:`DomainError`. A replayed result carries ``replayed: True``.
    """
    claim = Claim.of(scope, key, operation, request)
    refusal: BusinessRefusal | None = None
    async with sessions() as session, session.begin():
        [claimed] = await claim_keys(session, [claim])
        if isinstance(claimed, DomainError):
            raise claimed
        if isinstance(claimed, dict):
            return claimed
        try:
            async with session.begin_nested():
                result = await action(session)
        except BusinessRefusal as exc:
            refusal = exc
            await settle_keys(session, {claimed: exc})
        else:
            await settle_keys(session, {claimed: result})
    if refusal is not None:
        raise refusal
    return {**result, "replayed": False}
