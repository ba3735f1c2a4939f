"""Bearer tokens: JWT verified with PyJWT, HS256 with ``serve.jwt_secret`` (the local default) or the keys of
``serve.jwks_url`` (RS256/ES256, production). A token must carry ``sub``, ``exp`` and ``roles``; every other
claim is available to the model's row filters. Nothing here logs a token or a secret."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jwt

from cdcwh.config import ServeSettings
from cdcwh.errors import ConfigError
from cdcwh.serve.compile import Principal

MIN_SECRET_BYTES = 32
SYMMETRIC = ("HS256", "HS384", "HS512")
JWKS_LIFESPAN_S = 300.0


class AuthError(Exception):
    """No token, or not a valid one: 401 (the reason is for the log, never the token)."""


def check_settings(settings: ServeSettings) -> None:
    """Fail fast, naming the setting, when tokens could not be verified."""
    if settings.jwt_secret is None and settings.jwks_url is None:
        raise ConfigError(
            "cdcwh serve needs CDCWH_SERVE__JWT_SECRET (serve.jwt_secret, HS256) "
            "or CDCWH_SERVE__JWKS_URL (serve.jwks_url, RS256/ES256) to verify tokens"
        )
    known = set(jwt.algorithms.get_default_algorithms()) - {"none"}
    unknown = [a for a in settings.jwt_algorithms if a not in known]
    if unknown:
        raise ConfigError(
            f"CDCWH_SERVE__JWT_ALGORITHMS (serve.jwt_algorithms): {unknown} not accepted; "
            f"one or more of {sorted(known)}"
        )
    if settings.jwks_url is not None and set(settings.jwt_algorithms) <= set(SYMMETRIC):
        raise ConfigError(
            "CDCWH_SERVE__JWT_ALGORITHMS (serve.jwt_algorithms): serve.jwks_url needs an asymmetric "
            "algorithm (RS256, ES256, ...); the default HS256 is for serve.jwt_secret only"
        )
    if settings.jwt_secret is not None:
        if len(settings.jwt_secret.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"CDCWH_SERVE__JWT_SECRET (serve.jwt_secret): at least {MIN_SECRET_BYTES} bytes"
            )
        if not set(settings.jwt_algorithms) & set(SYMMETRIC) and settings.jwks_url is None:
            raise ConfigError(
                "CDCWH_SERVE__JWT_ALGORITHMS (serve.jwt_algorithms): no HS algorithm for the secret"
            )


class Authenticator:
    def __init__(self, settings: ServeSettings) -> None:
        check_settings(settings)
        self.settings = settings
        self._jwks = (
            jwt.PyJWKClient(
                settings.jwks_url,
                cache_keys=True,
                cache_jwk_set=True,
                lifespan=JWKS_LIFESPAN_S,
                cooldown_duration=settings.jwks_refresh_s,  # an unknown kid refetches at most this often
            )
            if settings.jwks_url
            else None
        )

    @property
    def blocking(self) -> bool:
        """Whether ``principal`` may do network I/O (fetching the JWKS): then call it in a thread."""
        return self._jwks is not None

    async def principal_async(self, token: str | None) -> Principal:
        if self.blocking:
            return await asyncio.to_thread(self.principal, token)
        return self.principal(token)

    def principal(self, token: str | None) -> Principal:
        """The verified caller; ``AuthError`` otherwise. May fetch the JWKS (blocking): call off the loop."""
        if not token:
            raise AuthError("no bearer token")
        try:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg")
            if algorithm not in self.settings.jwt_algorithms:
                raise AuthError(f"algorithm {algorithm!r} not accepted")
            key: Any
            if algorithm in SYMMETRIC:
                if self.settings.jwt_secret is None:
                    raise AuthError("no secret for HS tokens")
                key = self.settings.jwt_secret.get_secret_value()
            elif self._jwks is not None:
                key = self._jwks.get_signing_key_from_jwt(token).key
            else:
                raise AuthError("no JWKS for asymmetric tokens")
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                options={"require": ["exp", "sub"], "verify_aud": self.settings.jwt_audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(type(exc).__name__) from None
        roles = claims.get("roles")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise AuthError("roles claim missing or not a list of strings")
        return Principal(subject=str(claims["sub"]), roles=tuple(roles), claims=claims)


def bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def issue(
    secret: str,
    *,
    subject: str,
    roles: Sequence[str],
    claims: Mapping[str, Any],
    ttl_s: int,
    algorithm: str = "HS256",
) -> str:
    """An HS256 token (``cdcwh token`` and the tests)."""
    now = int(time.time())
    payload = {**claims, "sub": subject, "roles": list(roles), "iat": now, "exp": now + ttl_s}
    return jwt.encode(payload, secret, algorithm=algorithm)
