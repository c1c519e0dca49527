"""Checkpoints: the journal's seals, signed and kept outside the database.

This module owns the checkpoint file, its format and its key. The seals' hash chain
(:mod:`app.ledger.journal`) shows a sealed transaction edited afterwards, but whoever can
write to the database around its triggers can also recompute that transaction's digest and
every seal after it: the chain holds again and the audit passes. A checkpoint file, kept
where that person cannot write, records each seal's chain value as it was, so such a
rewrite shows as a seal that differs from its checkpoint.

The file is JSON lines, appended to and never rewritten, one line per seal::

    {"seal": 12, "through": 4711, "chain": "<64 hex>", "at": "2026-05-01T03:00:00+00:00",
     "signature": "hmac-sha256:<64 hex>"}

``through`` is the last transaction the seal covers, ``at`` when the line was written. The
signature is HMAC-SHA256 over the other four fields (canonical JSON) with a key the
database never holds: a key file or ``LIVEGIFTS_CHECKPOINT_KEY`` (:func:`load_key`), at
least 32 bytes. HMAC rather than a public-key signature such as Ed25519: the job that
verifies the file is the one that extends it, so it holds the signing key either way, and
HMAC needs nothing beyond the standard library. Ed25519 would let someone verify without
being able to sign; nothing here needs that yet.

One line per seal, not only the latest: :func:`verify` then names the first seal that
differs from (or is missing against) its line. The seals before it are as checkpointed, so
what was rewritten lies in the transactions after theirs. :func:`append` verifies the file
again and appends lines for the seals since its last one only when nothing differs:
appending after a difference would anchor the rewritten chain. Both take a file lock, so
overlapping runs neither interleave lines nor read a half-written one (POSIX ``flock``).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.ledger.audit import AuditFinding
from app.models import LedgerSeal

KEY_VARIABLE = "LIVEGIFTS_CHECKPOINT_KEY"
MIN_KEY_BYTES = 32
SCHEME = "hmac-sha256:"
DOMAIN = b"livegifts checkpoint v1\n"  # prefixes what is signed: the key signs nothing else
CHECK = "checkpoint"
NOT_A_LINE = "not a checkpoint line (a JSON object of seal, through, chain, at and signature)"
FORGED = ("its signature does not match: the line was edited or forged, or signed with "
          "another key")


class CheckpointError(Exception):
    """The key or the file cannot be used; the message says why."""


class CheckpointDiffers(Exception):
    """:func:`append` wrote nothing: the file does not match the database."""

    def __init__(self, findings: list[AuditFinding]) -> None:
        super().__init__("; ".join(str(finding) for finding in findings))
        self.findings = findings


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One line of the file: a seal as it was when the line was written."""

    seal: int
    through: int
    chain: str
    at: str

    def signature(self, key: bytes) -> str:
        content = json.dumps({"seal": self.seal, "through": self.through, "chain": self.chain,
                              "at": self.at}, sort_keys=True, separators=(",", ":"))
        return SCHEME + hmac.new(key, DOMAIN + content.encode(), hashlib.sha256).hexdigest()

    def line(self, key: bytes) -> bytes:
        return json.dumps({"seal": self.seal, "through": self.through, "chain": self.chain,
                           "at": self.at, "signature": self.signature(key)}).encode() + b"\n"


def load_key(key_file: Path | None) -> bytes:
    """The signing key: the contents of ``key_file`` if given, else ``LIVEGIFTS_CHECKPOINT_KEY``
    (surrounding whitespace removed either way)."""
    if key_file is not None:
        try:
            key, source = key_file.read_bytes().strip(), f"the key file {key_file}"
        except OSError as error:
            raise CheckpointError(f"cannot read the checkpoint key file {key_file}: "
                                  f"{error.strerror}") from None
    else:
        key, source = os.environ.get(KEY_VARIABLE, "").strip().encode(), KEY_VARIABLE
        if not key:
            raise CheckpointError(
                f"checkpoints are signed with a key the database does not hold: give its file "
                f"with --checkpoint-key FILE or set {KEY_VARIABLE}")
    if len(key) < MIN_KEY_BYTES:
        raise CheckpointError(f"the checkpoint key in {source} is {len(key)} bytes; it needs at "
                              f"least {MIN_KEY_BYTES} (make one with: openssl rand -hex 32)")
    return key


async def verify(session: AsyncSession, path: Path, key: bytes) -> list[AuditFinding]:
    """Check every line's signature and compare each recorded seal with the database's.

    Names each line that is not a signed checkpoint and the first seal that differs from its
    checkpoint or is missing. A file that does not exist yet holds no checkpoints.
    """
    checkpoints, findings = _read_file(path, key)
    return findings + await _compare(session, checkpoints)


async def append(session: AsyncSession, path: Path, key: bytes, *,
                 up_to_seal: int | None = None) -> int:
    """Verify the file, then append a line for each seal after its last one (up to
    ``up_to_seal``, if given: the seals an audit has just checked); return how many.

    Creates the file if need be. Raises :class:`CheckpointDiffers`, writing nothing, when
    :func:`verify` would report anything.
    """
    with _locked(path, "a+b") as handle:
        checkpoints, findings = _read(path, handle, key)
        findings += await _compare(session, checkpoints)
        if findings:
            raise CheckpointDiffers(findings)
        query = (select(LedgerSeal.id, LedgerSeal.through_transaction_id, LedgerSeal.chain)
                 .where(LedgerSeal.id > max((c.seal for c in checkpoints), default=0))
                 .order_by(LedgerSeal.id))
        if up_to_seal is not None:
            query = query.where(LedgerSeal.id <= up_to_seal)
        at = datetime.now(UTC).isoformat(timespec="seconds")
        lines = [Checkpoint(row.id, row.through_transaction_id, row.chain, at).line(key)
                 for row in await session.execute(query)]
        try:
            handle.write(b"".join(lines))
            handle.flush()
            os.fsync(handle.fileno())
        except OSError as error:
            raise CheckpointError(f"cannot write the checkpoint file {path}: "
                                  f"{error.strerror}") from None
    return len(lines)


@contextmanager
def _locked(path: Path, mode: str) -> Iterator[IO[bytes]]:
    """The file open in ``mode``, locked: shared to read, exclusive to append."""
    try:
        handle = open(path, mode)
    except OSError as error:
        raise CheckpointError(f"cannot open the checkpoint file {path}: "
                              f"{error.strerror}") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_SH if mode == "rb" else fcntl.LOCK_EX)
        handle.seek(0)
        yield handle


def _read_file(path: Path, key: bytes) -> tuple[list[Checkpoint], list[AuditFinding]]:
    if not path.exists():
        return [], []
    with _locked(path, "rb") as handle:
        return _read(path, handle, key)


def _read(path: Path, handle: IO[bytes], key: bytes
          ) -> tuple[list[Checkpoint], list[AuditFinding]]:
    """The file's checkpoints whose signature holds, and a finding for each other line."""
    checkpoints: list[Checkpoint] = []
    bad: list[tuple[int, str]] = []
    for number, line in enumerate(handle.read().split(b"\n"), 1):
        if line.strip():
            parsed = _parse(line, key)
            if isinstance(parsed, Checkpoint):
                checkpoints.append(parsed)
            else:
                bad.append((number, parsed))
    if len(bad) > 1 and not checkpoints and all(problem == FORGED for _, problem in bad):
        return [], [AuditFinding(CHECK, str(path), f"none of its {len(bad)} lines has a "
                                 "signature this key makes: is it the key the file was "
                                 "written with?")]
    return checkpoints, [AuditFinding(CHECK, f"{path} line {number}", problem)
                         for number, problem in bad]


def _parse(line: bytes, key: bytes) -> Checkpoint | str:
    """The line's checkpoint, or what is wrong with the line."""
    try:
        record = json.loads(line)
        checkpoint = Checkpoint(record["seal"], record["through"], record["chain"],
                                record["at"])
        signature = record["signature"]
    except (ValueError, KeyError, TypeError):
        return NOT_A_LINE
    if not (type(checkpoint.seal) is int and type(checkpoint.through) is int
            and isinstance(checkpoint.chain, str) and isinstance(checkpoint.at, str)
            and isinstance(signature, str)):
        return NOT_A_LINE
    if not hmac.compare_digest(signature.encode(), checkpoint.signature(key).encode()):
        return FORGED
    return checkpoint


async def _compare(session: AsyncSession, checkpoints: list[Checkpoint]
                   ) -> list[AuditFinding]:
    """The first checkpointed seal (by id) the database no longer holds as recorded."""
    if not checkpoints:
        return []
    checkpoints = sorted(checkpoints, key=lambda c: c.seal)
    stored = {row.id: (row.through_transaction_id, row.chain) for row in await session.execute(
        select(LedgerSeal.id, LedgerSeal.through_transaction_id, LedgerSeal.chain)
        .where(LedgerSeal.id >= checkpoints[0].seal))}
    since = 0  # the last transaction under the seals found as checkpointed
    for checkpoint in checkpoints:
        seal = stored.get(checkpoint.seal)
        if seal is None:
            return [AuditFinding(
                CHECK, f"seal {checkpoint.seal}",
                f"missing: the checkpoint written at {checkpoint.at} records it, through "
                f"transaction {checkpoint.through}; it was deleted, or the database restored "
                "to an earlier moment")]
        if seal != (checkpoint.through, checkpoint.chain):
            return [AuditFinding(
                CHECK, f"seal {checkpoint.seal}",
                f"differs from the checkpoint written at {checkpoint.at}: it, or transactions "
                f"{since + 1}..{checkpoint.through} under it, were rewritten since")]
        since = checkpoint.through
    return []
