"""Bearer JWTs for the REST API: HS256, claims sub / role / iss / exp."""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt

from autotrain.policy import Actor, Role
from autotrain.settings import Settings

ISSUER = "autotrain"
ALGORITHM = "HS256"
DEFAULT_TTL = timedelta(days=30)


class TokenError(Exception):
    pass


def secret_file_for(settings: Settings) -> Path:
    database = settings.database_path
    return database.with_name(database.name + ".jwt-secret")


def resolve_secret(settings: Settings) -> str:
    """AUTOTRAIN_JWT_SECRET, else a secret generated once and kept (mode 0600) beside the database."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    path = secret_file_for(settings)
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return secret


def mint_token(secret: str, *, subject: str, role: Role, ttl: timedelta = DEFAULT_TTL) -> str:
    now = datetime.now(UTC)
    claims = {"sub": subject, "role": role.value, "iss": ISSUER, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_token(secret: str, token: str) -> Actor:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["sub", "exp", "iss", "role"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("the token has expired") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {exc}") from exc
    role = claims.get("role")
    if role not in (Role.REPORTER.value, Role.ADMIN.value):
        raise TokenError("the token's role must be reporter or admin")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > 128:
        raise TokenError("the token's subject must be a non-empty string")
    return Actor(subject, Role(role))
