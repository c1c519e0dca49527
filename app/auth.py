"""Bearer tokens: minting development tokens and verifying the ones clients send.

A token is an HS256 JWT signed with ``LIVEGIFTS_JWT_SECRET``: ``sub`` names the
user, ``roles`` lists viewer, creator, admin and/or brand, ``aud`` is the configured
audience; a brand partner's token also carries ``brand``, the one brand it may see.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

import jwt

from app.settings import Settings

USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Role(StrEnum):
    VIEWER = "viewer"
    CREATOR = "creator"
    ADMIN = "admin"
    BRAND = "brand"  # a brand partner; the token's "brand" claim names the one brand


class AuthError(Exception):
    """The bearer token is missing, malformed, expired or not signed by us."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as the verified token says."""

    name: str
    roles: frozenset[Role]
    brand: str | None = None
    birthdate: date | None = None  # vouched for by the identity provider, if it knows

    def has(self, role: Role) -> bool:
        return role in self.roles


def mint_token(settings: Settings, name: str, roles: list[Role],
               ttl_seconds: int | None = None, brand: str | None = None,
               birthdate: date | None = None) -> str:
    if not USER_NAME.match(name):
        raise ValueError("user name must be 1-64 letters, digits, '.', '_' or '-'")
    if (Role.BRAND in roles) != (brand is not None):
        raise ValueError("a brand partner token needs --brand, and only brand tokens take it")
    now = int(time.time())
    claims = {
        "sub": name,
        "roles": sorted({Role(r).value for r in roles}),
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + (ttl_seconds or settings.token_ttl_seconds),
    }
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if brand is not None:
        claims["brand"] = brand
    if birthdate is not None:
        claims["birthdate"] = birthdate.isoformat()
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


def verify_token(settings: Settings, token: str) -> Principal:
    """The principal a token names; :class:`AuthError` if it is not valid now.

    A client sends the same token with every request: the signature and claims of a
    token are checked once (per secret, audience and issuer) and only its expiry again
    after."""
    principal, expires = _verified(settings.jwt_secret, settings.jwt_audience,
                                   settings.jwt_issuer, token)
    if expires <= time.time():  # as PyJWT decides it
        raise AuthError("Invalid bearer token: it has expired; get a new one.")
    return principal


@functools.lru_cache(maxsize=8192)  # a failure raises, so only valid tokens are kept
def _verified(secret: str, audience: str, issuer: str | None, token: str
              ) -> tuple[Principal, int]:
    required = ["sub", "exp", "aud", *(["iss"] if issuer else [])]
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], audience=audience,
                            issuer=issuer or None, options={"require": required})
    except jwt.PyJWTError as exc:
        raise AuthError(f"Invalid bearer token: {_reason(exc)}.") from exc
    name, roles = claims.get("sub"), claims.get("roles", [])
    if not isinstance(name, str) or not USER_NAME.match(name):
        raise AuthError("Invalid bearer token: the subject is not a valid user name.")
    try:
        parsed = frozenset(Role(role) for role in roles)
    except (TypeError, ValueError) as exc:
        raise AuthError("Invalid bearer token: unknown role in 'roles'.") from exc
    brand = claims.get("brand")
    if (Role.BRAND in parsed) != isinstance(brand, str):
        raise AuthError("Invalid bearer token: a brand partner token names exactly one brand.")
    try:
        born = date.fromisoformat(claims["birthdate"]) if "birthdate" in claims else None
    except (TypeError, ValueError) as exc:
        raise AuthError("Invalid bearer token: 'birthdate' is not an ISO date.") from exc
    return Principal(name=name, roles=parsed or frozenset({Role.VIEWER}), brand=brand,
                     birthdate=born), int(claims["exp"])  # PyJWT checked it is one


def _reason(error: jwt.PyJWTError) -> str:
    """Why a token was refused, in the API's words (not the JWT library's internals)."""
    if isinstance(error, jwt.ExpiredSignatureError):
        return "it has expired; get a new one"
    if isinstance(error, jwt.InvalidAudienceError):
        return "it was issued for another audience ('aud')"
    if isinstance(error, jwt.InvalidIssuerError):
        return "it was issued by another issuer ('iss')"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "it is not valid yet ('nbf' or 'iat' in the future)"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"it has no '{error.claim}' claim"
    if isinstance(error, jwt.InvalidSignatureError):
        return "its signature does not match: it was not issued for this server"
    return "it is not a well-formed JWT"


def principal_from_header(settings: Settings, authorization: str | None) -> Principal | None:
    """Parse an ``Authorization`` header; ``None`` means an anonymous caller."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Invalid Authorization header: expected 'Bearer <token>'.")
    return verify_token(settings, token.strip())
