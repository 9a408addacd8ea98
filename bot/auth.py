"""Bearer JWTs for the REST API: HS256, claims sub / role / iss / exp."""

from __future__ import annotations

import os
import secrets
import time
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


class SecretNotFound(Exception):
    """No secret to sign with: neither AUTOTRAIN_JWT_SECRET nor the file `autotrain serve` generates."""


def existing_secret(settings: Settings) -> str | None:
    """The server's HS256 secret as `serve` would find it, or None when there is none yet. Creates nothing."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    if settings.uses_postgres:  # no file to be beside: the instances share AUTOTRAIN_JWT_SECRET
        return None
    path = secret_file_for(settings)
    if path.exists():
        return path.read_text().strip()
    return None


def missing_secret_message(settings: Settings) -> str:
    """What was looked for, and how to point a client command at the server's secret."""
    if settings.uses_postgres:
        return POSTGRES_NEEDS_SECRET
    path = secret_file_for(settings).absolute()
    database = settings.database_path.absolute()
    why = (
        "the database is there, so the server probably has AUTOTRAIN_JWT_SECRET set"
        if database.exists()
        else "there is no database there either: `autotrain serve` has not run in this folder"
    )
    return (
        f"no JWT secret found: AUTOTRAIN_JWT_SECRET is not set and there is no {path}, the secret file "
        f"`autotrain serve` generates beside its database (AUTOTRAIN_DATABASE_URL={settings.database_url}, "
        f"from the environment or ./.env, relative to {Path.cwd()}); {why}. Run this in the folder where "
        "`autotrain serve` runs, or set AUTOTRAIN_DATABASE_URL or AUTOTRAIN_JWT_SECRET as the server has them. "
        "Nothing was created: only `autotrain serve` creates the secret."
    )


POSTGRES_NEEDS_SECRET = (
    "AUTOTRAIN_JWT_SECRET is not set: with PostgreSQL (AUTOTRAIN_DATABASE_URL=postgresql://…) every instance must"
    " verify the tokens of the others, so they share one secret — set AUTOTRAIN_JWT_SECRET (at least 32"
    " characters) on each, or use RS256 keys"
)


def resolve_secret(settings: Settings) -> str:
    """AUTOTRAIN_JWT_SECRET, else a secret generated once and kept (mode 0600) beside the SQLite database."""
    found = existing_secret(settings)
    if found is not None:
        return found
    if settings.uses_postgres:
        raise ValueError(POSTGRES_NEEDS_SECRET)
    path = secret_file_for(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    return secret


def _pem(value: str) -> str:
    """A key given as PEM text, or as the path of a PEM file."""
    if "-----BEGIN" in value:
        return value
    return Path(value).expanduser().read_text()


def verification_key(settings: Settings) -> str:
    """What checks tokens: the HS256 secret, or the RS256 public key."""
    if settings.jwt_algorithm == "RS256":
        if not settings.jwt_public_key:
            raise ValueError("AUTOTRAIN_JWT_ALGORITHM=RS256 needs AUTOTRAIN_JWT_PUBLIC_KEY (PEM text or a file path)")
        return _pem(settings.jwt_public_key)
    return resolve_secret(settings)


def signing_key(settings: Settings) -> str:
    """What `autotrain token` and the CLI's local admin sign with: the HS256 secret, or the RS256 private key.
    Never generates a secret (a second one would sign tokens the server refuses): SecretNotFound instead."""
    if settings.jwt_algorithm == "RS256":
        if settings.jwt_private_key is None:
            raise ValueError("minting RS256 tokens needs AUTOTRAIN_JWT_PRIVATE_KEY (PEM text or a file path)")
        return _pem(settings.jwt_private_key.get_secret_value())
    found = existing_secret(settings)
    if found is None:
        raise SecretNotFound(missing_secret_message(settings))
    return found


def mint_token(key: str, *, subject: str, role: Role, ttl: timedelta = DEFAULT_TTL, algorithm: str = ALGORITHM) -> str:
    now = datetime.now(UTC)
    claims = {"sub": subject, "role": role.value, "iss": ISSUER, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, key, algorithm=algorithm)


def _verify(key: str, token: str, algorithm: str) -> tuple[Actor, float]:
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[algorithm],  # only the configured one: no "none", no HS/RS confusion
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
    return Actor(subject, Role(role)), float(claims["exp"])


_VERIFIED: dict[tuple[str, str, str], tuple[Actor, float]] = {}
_VERIFIED_MAX = 4096  # distinct tokens remembered (a chatbot uses one; each Slack admin's CLI another)


def verify_token(key: str, token: str, algorithm: str = ALGORITHM) -> Actor:
    """The actor a token names. A token verified once is remembered until it expires, so that a client
    sending hundreds of requests a second with one token has it checked once, not on every request."""
    cache_key = (key, algorithm, token)
    known = _VERIFIED.get(cache_key)
    if known is not None and time.time() < known[1]:
        return known[0]
    actor, expires = _verify(key, token, algorithm)
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[cache_key] = (actor, expires)
    return actor
