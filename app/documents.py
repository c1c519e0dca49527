"""GraphQL documents sent by hash: automatic persisted queries and trusted documents.

Automatic persisted queries are Apollo's protocol, which Apollo Client and urql speak: a
client sends ``extensions.persistedQuery.sha256Hash`` instead of the document. A server that
knows the hash runs its document; one that does not answers ``PERSISTED_QUERY_NOT_FOUND``,
and the client sends hash and document together once, which the server checks and
remembers (in each process, the most recent :data:`REMEMBERED` documents).

Trusted documents are the ones an operator added (``livegifts documents add FILE``, kept
in the database): every process knows them by hash from the start. With
``LIVEGIFTS_TRUSTED_DOCUMENTS_ONLY`` nothing else runs, whether sent by hash or in full.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from app.db import SessionFactory, insert_ignoring_conflict
from app.models import TrustedDocument

REMEMBERED = 5000


def sha256_of(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


class DocumentRefused(Exception):
    """A request's document cannot be run; ``code`` goes to ``extensions.code``."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message, self.code = message, code


@dataclass(frozen=True, slots=True)
class Manifested:
    sha256: str
    name: str
    document: str


class Documents:
    def __init__(self, sessions: SessionFactory, trusted_only: bool) -> None:
        self.sessions, self.trusted_only = sessions, trusted_only
        self._trusted: dict[str, str] = {}
        self._remembered: OrderedDict[str, str] = OrderedDict()

    async def resolve(self, document: str | None, extensions: Any) -> str | None:
        """The document to run for a request's ``query`` and ``extensions``.

        None when the request has neither (GraphQL then explains what is missing);
        raises :class:`DocumentRefused` when the hash is unknown, does not match the
        document, or the document is not trusted where only trusted ones run.
        """
        wanted = _persisted_hash(extensions)
        if wanted is None:
            if document is not None and self.trusted_only and \
                    await self._trusted_document(sha256_of(document)) is None:
                raise _untrusted()
            return document
        if document is not None:
            if sha256_of(document) != wanted:
                raise DocumentRefused("provided sha does not match query",
                                      "PERSISTED_QUERY_HASH_MISMATCH")
        found = self._remembered.get(wanted) if not self.trusted_only else None
        if found is None:
            found = await self._trusted_document(wanted)
        if found is not None:
            return found
        if self.trusted_only:
            raise _untrusted()
        if document is None:
            raise DocumentRefused("PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND")
        self._remembered[wanted] = document
        if len(self._remembered) > REMEMBERED:
            self._remembered.popitem(last=False)
        return document

    async def _trusted_document(self, sha256: str) -> str | None:
        if sha256 not in self._trusted:
            async with self.sessions() as session:
                found = await session.scalar(select(TrustedDocument.document)
                                             .where(TrustedDocument.sha256 == sha256))
            if found is None:
                return None
            self._trusted[sha256] = found  # trusted documents are never changed
        return self._trusted[sha256]


def _untrusted() -> DocumentRefused:
    return DocumentRefused("Only trusted documents run on this server: ask its operator to "
                           "add yours with 'livegifts documents add'.", "DOCUMENT_NOT_TRUSTED")


def _persisted_hash(extensions: Any) -> str | None:
    if not isinstance(extensions, dict) or "persistedQuery" not in extensions:
        return None
    persisted = extensions["persistedQuery"]
    if not isinstance(persisted, dict) or persisted.get("version", 1) != 1 or \
            not isinstance(persisted.get("sha256Hash"), str):
        raise DocumentRefused("extensions.persistedQuery needs version 1 and a sha256Hash.",
                              "PERSISTED_QUERY_INVALID")
    return persisted["sha256Hash"].lower()


def read_manifest(text: str, filename: str) -> list[Manifested]:
    """The documents in a file: an Apollo persisted query manifest, a JSON object of hash
    to document (as GraphQL Codegen and Relay write them), or one GraphQL document.

    Raises ValueError naming what is wrong; a hash that does not match its document is
    refused, so a manifest cannot smuggle in a document under another's hash.
    """
    if not filename.endswith(".json"):
        if not text.strip():
            raise ValueError(f"{filename} holds no GraphQL document.")
        return [Manifested(sha256_of(text), filename.rsplit("/", 1)[-1], text)]
    try:
        data = json.loads(text)
    except ValueError as error:
        raise ValueError(f"{filename} is not JSON: {error}") from None
    if isinstance(data, dict) and isinstance(data.get("operations"), list):
        pairs = [(op.get("id"), op.get("name") or "", op.get("body"))
                 for op in data["operations"] if isinstance(op, dict)]
    elif isinstance(data, dict):
        pairs = [(sha, "", body) for sha, body in data.items()]
    else:
        raise ValueError(f"{filename}: expected an Apollo manifest or an object of hash to "
                         "document.")
    found = []
    for sha, name, body in pairs:
        if not isinstance(body, str) or not isinstance(sha, str):
            raise ValueError(f"{filename}: every entry needs a hash and a document.")
        if sha256_of(body) != sha.lower():
            raise ValueError(f"{filename}: the hash {sha} is not the SHA-256 of its document.")
        found.append(Manifested(sha.lower(), name, body))
    if not found:
        raise ValueError(f"{filename} holds no documents.")
    return found


async def add_trusted(sessions: SessionFactory, documents: list[Manifested]) -> int:
    """Trust ``documents``; how many were new."""
    distinct = {d.sha256: d for d in documents}.values()
    async with sessions() as session, session.begin():
        added = (await session.scalars(insert_ignoring_conflict(
            session, TrustedDocument.__table__,
            [{"sha256": d.sha256, "name": d.name[:200], "document": d.document}
             for d in distinct], ["sha256"]).returning(TrustedDocument.sha256))).all()
    return len(added)
