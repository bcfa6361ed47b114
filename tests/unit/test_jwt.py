"""JwtVerifier: HMAC or RSA keys, exp/sub/roles rules, session ids, issuer and audience, and
the HS256 fast path deciding every generated token exactly as PyJWT does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from mesaya_realtime.domain.errors import AuthError
from mesaya_realtime.infrastructure.jwt_verifier import JwtVerifier, load_rsa_public_key

SECRET = "unit-secret-" + "0123456789abcdef" * 4


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def token(claims: dict[str, Any], key: Any = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def claims(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"sub": "user-1", "roles": ["USER"], "exp": int(time.time()) + 3600}
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
def test_hmac_algorithms_are_accepted(algorithm: str) -> None:
    principal = JwtVerifier(secret=SECRET).verify(token(claims(), algorithm=algorithm))
    assert principal.user_id == "user-1"
    assert principal.roles == ("USER",)


def test_the_principal_keeps_token_and_expiry() -> None:
    exp = int(time.time()) + 600
    raw = token(claims(exp=exp))
    principal = JwtVerifier(secret=SECRET).verify(raw)
    assert principal.token == raw
    assert principal.expires_at == exp


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "garbage",
        "a.b.c",
        token(claims(), key="another-secret-" + "x" * 64),
        jwt.encode(claims(), None, algorithm="none"),
    ],
)
def test_malformed_or_wrongly_signed_tokens_are_refused(raw: str) -> None:
    with pytest.raises(AuthError) as raised:
        JwtVerifier(secret=SECRET).verify(raw)
    assert raised.value.reason == "invalid token"


def test_an_expired_token_is_refused_without_leeway() -> None:
    verifier = JwtVerifier(secret=SECRET)
    with pytest.raises(AuthError):
        verifier.verify(token(claims(exp=int(time.time()) - 1)))
    with pytest.raises(AuthError):
        verifier.verify(token(claims(exp=int(time.time()) - 3600)))


def test_a_token_without_exp_is_accepted_unless_required() -> None:
    raw = token(claims(exp=None))
    principal = JwtVerifier(secret=SECRET).verify(raw)
    assert principal.expires_at is None
    with pytest.raises(AuthError):
        JwtVerifier(secret=SECRET, require_exp=True).verify(raw)


def test_small_clock_skew_on_iat_and_nbf_is_tolerated() -> None:
    # golang-jwt v5 parses with a 5 s leeway and does not check iat: a token minted by a
    # host whose clock runs a little ahead must not be refused.
    now = int(time.time())
    verifier = JwtVerifier(secret=SECRET)
    assert verifier.verify(token(claims(iat=now + 3))).user_id == "user-1"
    assert verifier.verify(token(claims(nbf=now + 3))).user_id == "user-1"
    with pytest.raises(AuthError):
        verifier.verify(token(claims(nbf=now + 120)))


@pytest.mark.parametrize(
    "body",
    [
        claims(sub=None),
        claims(sub=""),
        claims(sub=42),
        claims(roles="ADMIN"),
        claims(roles={"ADMIN": True}),
        claims(roles=["ADMIN", 7]),
        claims(exp="tomorrow"),
    ],
)
def test_bad_claims_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(AuthError):
        JwtVerifier(secret=SECRET).verify(token(body))


def test_roles_none_when_absent_and_kept_as_given() -> None:
    verifier = JwtVerifier(secret=SECRET)
    assert verifier.verify(token(claims(roles=None))).roles is None
    assert verifier.verify(token(claims(roles=[]))).roles == ()
    principal = verifier.verify(token(claims(roles=["owner", "User"])))
    assert principal.roles == ("owner", "User")
    assert principal.upper_roles == ("OWNER", "USER")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"sid": "s-1", "jti": "j-1", "exp": 2_000_000_000}, "s-1"),
        ({"jti": "j-1", "exp": 2_000_000_000}, "j-1"),
        ({"sid": "", "jti": "j-1", "exp": 2_000_000_000}, "j-1"),
        ({"exp": 2_000_000_000}, "user-1:2000000000"),
        ({"exp": None}, "user-1"),
    ],
)
def test_session_id_falls_back_sid_jti_sub_exp_sub(extra: dict[str, Any], expected: str) -> None:
    assert JwtVerifier(secret=SECRET).verify(token(claims(**extra))).session_id == expected


@pytest.mark.parametrize(
    ("roles", "audience"),
    [
        (["ADMIN", "USER"], "admin"),
        (["owner", "user"], "owner"),
        (["USER"], "user"),
        ([], "user"),
        (None, "user"),
    ],
)
def test_audience_from_roles(roles: list[str] | None, audience: str) -> None:
    principal = JwtVerifier(secret=SECRET).verify(token(claims(roles=roles)))
    assert principal.audience == audience
    assert principal.is_admin == (audience == "admin")


@pytest.mark.parametrize("algorithm", ["RS256", "RS384", "RS512"])
def test_rsa_algorithms_with_a_public_key(rsa_key: rsa.RSAPrivateKey, algorithm: str) -> None:
    verifier = JwtVerifier(public_key=load_rsa_public_key(public_pem(rsa_key)))
    assert verifier.verify(token(claims(), key=rsa_key, algorithm=algorithm)).user_id == "user-1"


def test_a_public_key_refuses_hmac_tokens(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = public_pem(rsa_key)
    verifier = JwtVerifier(secret=SECRET, public_key=load_rsa_public_key(pem))
    with pytest.raises(AuthError):
        verifier.verify(token(claims()))
    # Algorithm confusion: an HS256 token "signed" with the public key text is refused too.
    with pytest.raises(AuthError):
        verifier.verify(hs256_signed_with(pem.encode(), claims()))


def hs256_signed_with(key: bytes, body: dict[str, Any]) -> str:
    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = part(b'{"alg":"HS256","typ":"JWT"}') + "." + part(json.dumps(body).encode())
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + part(signature)


def test_a_token_signed_by_another_rsa_key_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    verifier = JwtVerifier(public_key=load_rsa_public_key(public_pem(rsa_key)))
    with pytest.raises(AuthError):
        verifier.verify(token(claims(), key=other, algorithm="RS256"))


def test_issuer_and_audience_are_checked_when_configured() -> None:
    verifier = JwtVerifier(secret=SECRET, issuer="mesaYA-auth", audience="realtime")
    good = claims(iss="mesaYA-auth", aud="realtime")
    assert verifier.verify(token(good)).user_id == "user-1"
    assert verifier.verify(token(claims(iss="mesaYA-auth", aud=["x", "realtime"]))).user_id == "user-1"
    for bad in (
        claims(iss="someone-else", aud="realtime"),
        claims(iss="mesaYA-auth", aud="other"),
        claims(aud="realtime"),
        claims(iss="mesaYA-auth"),
    ):
        with pytest.raises(AuthError):
            verifier.verify(token(bad))


def test_without_issuer_or_audience_config_those_claims_are_ignored() -> None:
    verifier = JwtVerifier(secret=SECRET)
    assert verifier.verify(token(claims(iss="anyone", aud="anything"))).user_id == "user-1"


def test_a_key_is_required() -> None:
    with pytest.raises(ValueError, match="secret or public key"):
        JwtVerifier()
    with pytest.raises(ValueError):
        JwtVerifier(secret="")


def test_load_rsa_public_key_accepts_quotes_and_literal_newlines(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = public_pem(rsa_key)
    expected = rsa_key.public_key().public_numbers()
    for text in (pem, f'"{pem}"', pem.strip().replace("\n", "\\n"), f"  '{pem}'  "):
        assert load_rsa_public_key(text).public_numbers() == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a pem",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
    ],
)
def test_load_rsa_public_key_refuses_what_is_not_an_rsa_public_key(text: str) -> None:
    with pytest.raises(ValueError):
        load_rsa_public_key(text)


def test_verified_tokens_are_cached_but_expire_on_time(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "a-secret-of-at-least-32-bytes-long!"
    verifier = JwtVerifier(secret=secret)
    token = jwt.encode({"sub": "u1", "exp": int(time.time()) + 60}, secret, algorithm="HS256")
    first = verifier.verify(token)
    calls: list[str] = []
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: calls.append("decode"))
    assert verifier.verify(token) is first
    assert calls == []  # served from the cache
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(AuthError):
        verifier.verify(token)


def test_the_token_cache_is_bounded() -> None:
    secret = "a-secret-of-at-least-32-bytes-long!"
    verifier = JwtVerifier(secret=secret, cache_size=3)
    tokens = [jwt.encode({"sub": f"u{i}"}, secret, algorithm="HS256") for i in range(5)]
    for token in tokens:
        verifier.verify(token)
    assert list(verifier._verified) == tokens[2:]


def test_a_bad_token_is_never_cached() -> None:
    secret = "a-secret-of-at-least-32-bytes-long!"
    verifier = JwtVerifier(secret=secret)
    forged = jwt.encode({"sub": "u1"}, "another-secret-of-32-bytes-or-more!", algorithm="HS256")
    for _ in range(2):
        with pytest.raises(AuthError):
            verifier.verify(forged)
    assert verifier._verified == {}


# -- the HS256 fast path decides exactly as PyJWT does ------------------------------------------

_NOW = int(time.time())
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.lists(st.text(max_size=5), max_size=3),
)
_times = st.one_of(st.integers(_NOW - 100, _NOW + 100), st.integers(0, 2**40), _values)
_claims = st.fixed_dictionaries(
    {},
    optional={
        "sub": st.one_of(st.text(min_size=0, max_size=8), _values),
        "roles": st.one_of(st.lists(st.sampled_from(["USER", "OWNER", "ADMIN"]), max_size=2), _values),
        "exp": _times,
        "nbf": _times,
        "iat": _times,
        "jti": st.one_of(st.text(max_size=8), _values),
        "sid": _values,
    },
)


def _outcome(verifier: JwtVerifier, raw: str) -> object:
    try:
        principal = verifier.verify(raw)
    except AuthError:
        return "refused"
    return (principal.user_id, principal.roles, principal.session_id, principal.expires_at)


@settings(max_examples=400, deadline=None)
@given(
    _claims,
    st.sampled_from([SECRET, SECRET + "-other"]),
    st.sampled_from([{"typ": "JWT"}, {}, {"kid": "k1"}, {"typ": "JWT", "crit": ["x"]}]),
    st.sampled_from(["HS256", "HS384"]),
    st.booleans(),
)
def test_the_fast_path_decides_every_token_as_pyjwt_does(
    body: dict[str, Any], key: str, headers: dict[str, Any], algorithm: str, require_exp: bool
) -> None:
    raw = jwt.encode(body, key, algorithm=algorithm, headers=headers or None)
    fast = JwtVerifier(secret=SECRET, require_exp=require_exp)
    slow = JwtVerifier(secret=SECRET, require_exp=require_exp)
    slow._fast_key = None  # PyJWT alone
    assert _outcome(fast, raw) == _outcome(slow, raw)
    # A token tampered with after signing is refused by both.
    head, payload, signature = raw.split(".")
    for bad in (f"{head}.{payload}x.{signature}", f"{head}.{payload}.{signature[:-2]}", f"{head}.{payload}"):
        assert _outcome(fast, bad) == _outcome(slow, bad)
