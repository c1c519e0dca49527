"""Per-request context: who is calling, database sessions and DataLoaders.

Authentication and authorization failures are GraphQL errors with
``extensions.code`` ``UNAUTHENTICATED`` or ``FORBIDDEN``; they are never masked.
"""

from __future__ import annotations

from typing import Any

import msgspec
from graphql import GraphQLError
from sqlalchemy import select
from strawberry.dataloader import DataLoader
from strawberry.litestar import BaseContext

from app.auth import AuthError, Principal, Role, principal_from_header
from app.runtime import Runtime
from app.services import wallets
from app.services.users import ensure_user

# What a client sees of an error it did not cause (the details go to the log).
UNEXPECTED_ERROR = "Unexpected error; please try again."


class ClientError(GraphQLError):
    """An error meant for the client, shown as is (everything else is masked)."""

    def __init__(self, message: str, code: str, **extensions: Any) -> None:
        super().__init__(message, extensions={"code": code, **extensions})


class Context(BaseContext, kw_only=True):
    runtime: Runtime
    authorization: str | None = None
    connection_params: dict[str, Any] | None = None  # set by graphql-transport-ws
    cache: dict[str, Any] = msgspec.field(default_factory=dict)

    def principal(self) -> Principal | None:
        """The verified caller, or None when anonymous; a bad token is an error."""
        if "principal" not in self.cache:
            header = self.authorization
            if header is None and isinstance(self.connection_params, dict):
                header = self.connection_params.get("Authorization") or \
                    self.connection_params.get("authorization")
            try:
                self.cache["principal"] = principal_from_header(self.runtime.settings, header)
            except AuthError as exc:
                raise ClientError(str(exc), "UNAUTHENTICATED") from exc
        return self.cache["principal"]

    def require(self, role: Role | None = None) -> Principal:
        principal = self.principal()
        if principal is None:
            raise ClientError("Authentication required: send 'Authorization: Bearer <token>' "
                              "(mint one with '.venv/bin/livegifts token --user NAME', or "
                              "'livegifts token --user NAME' where livegifts is on your PATH).",
                              "UNAUTHENTICATED")
        if role is not None and not principal.has(role) and not principal.has(Role.ADMIN):
            raise ClientError(f"Forbidden: this needs the {role.value} role.", "FORBIDDEN")
        return principal

    async def user_id(self) -> int:
        """The caller's user id, creating the user on first sight."""
        principal = self.require()
        if "user_id" not in self.cache:
            known = self.runtime.known_users
            key = (principal.name, principal.birthdate)
            if key not in known:
                async with self.runtime.sessions() as session, session.begin():
                    user = await ensure_user(session, principal.name, principal.birthdate)
                known.remember(key, user.id)  # committed: users are never renamed or removed
            self.cache["user_id"] = known[key]
        return self.cache["user_id"]

    def is_admin(self) -> bool:
        principal = self.principal()
        return principal is not None and principal.has(Role.ADMIN)

    def rows_loader(self, model: Any) -> DataLoader[int, Any]:
        """Rows of ``model`` by primary key, one query per batch, None where missing.

        Batching only, no cache: a WebSocket connection keeps one context for all its
        operations, and a row read by one of them must not be served to a later one.
        """
        key = f"rows:{model.__tablename__}"
        if key not in self.cache:
            async def load(ids: list[int]) -> list[Any]:
                async with self.runtime.reads() as session:
                    found = {row.id: row for row in (await session.scalars(
                        select(model).where(model.id.in_(set(ids))))).all()}
                return [found.get(i) for i in ids]

            self.cache[key] = DataLoader(load_fn=load, cache=False)
        return self.cache[key]

    @property
    def entries_loader(self) -> DataLoader[int, list]:
        if "entries" not in self.cache:
            async def load(ids: list[int]) -> list[list]:
                async with self.runtime.reads() as session:
                    grouped = await wallets.entries_of(session, ids)
                return [grouped[i] for i in ids]

            self.cache["entries"] = DataLoader(load_fn=load)
        return self.cache["entries"]
