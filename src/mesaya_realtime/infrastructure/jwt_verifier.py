"""Token verification with PyJWT: HS256/384/512 with a secret, or RS256/384/512 with a PEM key."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import math
import time
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from mesaya_realtime.domain.errors import AuthError
from mesaya_realtime.domain.identity import Principal

__all__ = ["JwtVerifier", "load_rsa_public_key"]

HMAC_ALGORITHMS = ["HS256", "HS384", "HS512"]
RSA_ALGORITHMS = ["RS256", "RS384", "RS512"]
#: Clock-skew tolerance for ``nbf`` while parsing, as golang-jwt's 5 s; ``exp`` is then
#: re-checked with no leeway by :func:`principal_from_claims` (reference §3.1).
LEEWAY_SECONDS = 5


def load_rsa_public_key(pem: str) -> RSAPublicKey:
    """Parse a PEM RSA public key; literal ``\\n`` sequences count as newlines.

    Raises ValueError when the text is not an RSA public key.
    """
    text = pem.strip().strip("\"'").replace("\\n", "\n").strip()
    key = load_pem_public_key(text.encode())
    if not isinstance(key, RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


class JwtVerifier:
    """Verifies signature, ``exp`` (no leeway), ``sub``, and optionally ``iss`` and ``aud``.

    >>> verifier = JwtVerifier(secret="a-secret-of-at-least-32-bytes-!!")
    >>> verifier.verify(jwt.encode({"sub": "u1"}, "a-secret-of-at-least-32-bytes-!!")).user_id
    'u1'
    """

    def __init__(
        self,
        *,
        secret: str | None = None,
        public_key: RSAPublicKey | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        require_exp: bool = False,
        cache_size: int = 10_000,
    ) -> None:
        self.cache_size = max(1, cache_size)
        self._verified: dict[str, Principal] = {}
        if public_key is not None:
            self._key: Any = public_key
            self._algorithms = RSA_ALGORITHMS
        elif secret:
            self._key = secret
            self._algorithms = HMAC_ALGORITHMS
        else:
            raise ValueError("a JWT secret or public key is required")
        self._issuer = issuer or None
        self._audience = audience or None
        #: The HS256 fast path (see :func:`_fast_hs256`): with a secret and no issuer or
        #: audience to check; everything else goes through PyJWT.
        self._fast_key = (
            secret.encode() if secret and public_key is None and not issuer and not audience else None
        )
        self._require_exp = require_exp
        required = ["sub"]
        if require_exp:
            required.append("exp")
        self._options: Any = {
            "require": required,
            "verify_aud": self._audience is not None,
            "verify_iss": self._issuer is not None,
            # golang-jwt v5 does not check iat by default; a skewed issuer clock is fine.
            "verify_iat": False,
        }

    def verify(self, token: str) -> Principal:
        """The token's principal; a token verified before is looked up, its expiry re-checked.

        Reconnect storms (a node restarting, a network blip) bring the same tokens back at
        once; the cache makes each of those handshakes a dictionary lookup instead of a
        signature check. Only tokens that verified are cached, keyed by their full text.
        """
        known = self._verified.get(token)
        if known is not None:
            if known.valid_at(time.time()):
                return known
            del self._verified[token]
            raise AuthError()
        principal = self._verify(token)
        if len(self._verified) >= self.cache_size:
            del self._verified[next(iter(self._verified))]  # the oldest
        self._verified[token] = principal
        return principal

    def _verify(self, token: str) -> Principal:
        if self._fast_key is not None:
            claims = _fast_hs256(token, self._fast_key, self._require_exp)
            if claims is not None:
                return principal_from_claims(claims, token)
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                options=self._options,
                leeway=LEEWAY_SECONDS,
            )
        except (jwt.PyJWTError, ValueError, TypeError) as error:
            raise AuthError() from error
        return principal_from_claims(claims, token)


#: The header of nearly every HS256 token (``{"alg":"HS256","typ":"JWT"}``, in either key order).
_HS256_HEADERS = frozenset(
    base64.urlsafe_b64encode(orjson.dumps(header)).rstrip(b"=").decode()
    for header in ({"alg": "HS256", "typ": "JWT"}, {"typ": "JWT", "alg": "HS256"})
)


@functools.lru_cache(maxsize=4)
def _hmac_states(key: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256's inner and outer hashes with ``key`` absorbed (RFC 2104), copied per token:
    the key's setup is done once (1.9 µs a token instead of 5 µs with ``hmac.digest``)."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return (
        hashlib.sha256(bytes(byte ^ 0x36 for byte in key)),
        hashlib.sha256(bytes(byte ^ 0x5C for byte in key)),
    )


def _fast_hs256(token: str, key: bytes, require_exp: bool) -> dict[str, Any] | None:
    """The claims of a plain HS256 token whose signature is right, checked as PyJWT checks
    them; None for anything else (a wrong signature too), which PyJWT then decides.

    PyJWT spends ~60-100 µs on a token it has not seen; a handshake's whole budget is ~110 µs
    (docs/BENCHMARKS.md "Handshakes"). This path accepts only what PyJWT would accept: the
    canonical header, the canonical base64url signature of ``header.payload``, a JSON object
    payload whose ``sub`` is a string, ``exp`` an integer if present, ``jti`` a string if
    present, and no ``nbf``; the rest (and every refusal) is PyJWT's
    (tests/unit/test_jwt.py compares both on generated tokens).
    """
    head, dot, rest = token.partition(".")
    if not dot or head not in _HS256_HEADERS:
        return None
    body, dot, signature = rest.partition(".")
    if not dot or "." in signature or not body:
        return None
    inner, outer = _hmac_states(key)
    inner = inner.copy()
    inner.update(f"{head}.{body}".encode())
    outer = outer.copy()
    outer.update(inner.digest())
    mac = outer.digest()
    if not hmac.compare_digest(base64.urlsafe_b64encode(mac).rstrip(b"="), signature.encode()):
        return None
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(claims, dict) or "nbf" in claims or not isinstance(claims.get("sub"), str):
        return None
    if "exp" in claims and type(claims["exp"]) is not int:
        return None
    if require_exp and "exp" not in claims:
        return None
    if "jti" in claims and not isinstance(claims["jti"], str):
        return None
    if "exp" in claims and claims["exp"] <= time.time() - LEEWAY_SECONDS:
        return None  # expired: PyJWT says so (and counts the same refusal)
    return claims


def principal_from_claims(claims: dict[str, Any], token: str) -> Principal:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AuthError()
    raw_roles = claims.get("roles")
    roles: tuple[str, ...] | None
    if raw_roles is None:
        roles = None
    elif isinstance(raw_roles, list) and all(isinstance(role, str) for role in raw_roles):
        roles = tuple(raw_roles)
    else:
        raise AuthError()
    expires = claims.get("exp")
    if isinstance(expires, bool):
        raise AuthError()
    expires_at = float(expires) if isinstance(expires, int | float) else None
    # Infinity and NaN parse as JSON numbers; neither is a time.
    if expires_at is not None and (not math.isfinite(expires_at) or expires_at <= time.time()):
        raise AuthError()
    session_id = next(
        (str(value) for value in (claims.get("sid"), claims.get("jti")) if value),
        f"{subject}:{int(expires_at)}" if expires_at is not None else subject,
    )
    return Principal(
        user_id=subject,
        roles=roles,
        session_id=session_id,
        token=token,
        expires_at=expires_at,
    )
