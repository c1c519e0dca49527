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
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import insert_ignoring_conflict
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


async def run_idempotent(sessions: async_sessionmaker[AsyncSession], *, scope: str, key: str,
                         operation: str, request: Mapping[str, Any],
                         action: Action) -> dict[str, Any]:
    """Run ``action`` once per (scope, key) in one database transaction; return its result.

    ``action`` returns a JSON-serialisable dict (stored for replays) or raises
    :class:`DomainError`. A replayed result carries ``replayed: True``.
    """
    check_key(key)
    expected = fingerprint(operation, request)
    refusal: BusinessRefusal | None = None
    async with sessions() as session, session.begin():
        claimed = await session.scalar(
            insert_ignoring_conflict(
                session, IdempotencyRecord,
                dict(scope=scope, key=key, operation=operation, fingerprint=expected,
                     status="pending"),
                ["scope", "key"],
            ).returning(IdempotencyRecord.id)
        )
        if claimed is None:
            record = await session.scalar(select(IdempotencyRecord).where(
                IdempotencyRecord.scope == scope, IdempotencyRecord.key == key))
            assert record is not None
            return _replay(record, expected, operation)
        try:
            async with session.begin_nested():
                result = await action(session)
        except BusinessRefusal as exc:
            refusal = exc
            status, stored = "failed", exc.as_dict()
        else:
            status, stored = "succeeded", result
        await session.execute(
            update(IdempotencyRecord).where(IdempotencyRecord.id == claimed)
            .values(status=status, result=stored)
        )
    if refusal is not None:
        raise refusal
    return {**stored, "replayed": False}
