"""The cache's invalidation by mart generation, the bearer-token checks (HS256, and RS256 through a JWKS
served over real HTTP), the settings that must fail fast, and the mart announcement's channel and payload."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from cdcwh import martnotify
from cdcwh.config import ServeSettings, load_settings
from cdcwh.errors import ConfigError
from cdcwh.serve.auth import Authenticator, AuthError, check_settings, issue
from cdcwh.serve.cache import ResultCache

SECRET = "unit-secret-0123456789abcdef-0123456789"  # noqa: S105 (a key for the tests only)


def test_cache_drops_only_answers_reading_a_changed_mart() -> None:
    cache: ResultCache[str] = ResultCache(10)
    for key, marts in (("a", {"orders"}), ("b", {"customers", "dim_customers"})):
        assert cache.put(key, frozenset(marts), key.upper(), cache.generations(marts))
    assert cache.get("a") == "A" and cache.get("b") == "B"
    assert cache.invalidate({"dim_customers"}) == 1
    assert cache.get("b") is None and cache.get("a") == "A"


def test_an_answer_computed_across_an_announcement_is_not_cached() -> None:
    cache: ResultCache[str] = ResultCache(10)
    marts = frozenset({"orders"})
    taken = cache.generations(marts)
    cache.invalidate({"orders"})  # announced while the query ran
    assert not cache.put("a", marts, "stale", taken)
    taken = cache.generations(marts)
    cache.invalidate(None)  # the listener reconnected: anything may have changed
    assert not cache.put("a", marts, "stale", taken) and cache.get("a") is None


def test_cache_keeps_at_most_its_size() -> None:
    cache: ResultCache[int] = ResultCache(2)
    for i in range(3):
        cache.put(i, frozenset({"m"}), i, cache.generations({"m"}))
    assert cache.get(0) is None and cache.get(2) == 2


def test_cache_keeps_at_most_its_rows() -> None:
    cache: ResultCache[str] = ResultCache(10, max_rows=5)
    g = cache.generations({"m"})
    assert not cache.put("huge", frozenset({"m"}), "H", g, rows=6)  # alone more than the bound
    for key, rows in (("a", 2), ("b", 2), ("c", 2)):  # c pushes out a, the least recently used
        assert cache.put(key, frozenset({"m"}), key, g, rows=rows)
    assert cache.get("a") is None and cache.get("b") == "b" and cache.get("c") == "c"
    assert cache.rows == 4
    cache.invalidate({"m"})
    assert cache.rows == 0


def test_hs256_tokens() -> None:
    auth = Authenticator(ServeSettings(jwt_secret=SECRET))
    principal = auth.principal(
        issue(SECRET, subject="ann", roles=["analyst"], claims={"country": "DE"}, ttl_s=60)
    )
    assert (principal.subject, principal.roles, principal.claims["country"]) == ("ann", ("analyst",), "DE")
    for bad in (
        None,
        "",
        "x.y.z",
        issue(SECRET, subject="ann", roles=["analyst"], claims={}, ttl_s=-1),  # expired
        issue("another-secret-0123456789abcdef-0123456", subject="a", roles=["analyst"], claims={}, ttl_s=60),
        jwt.encode({"sub": "a", "exp": 2**40}, SECRET, algorithm="HS256"),  # no roles
        jwt.encode(
            {"sub": "a", "roles": ["analyst"], "exp": 2**40}, SECRET * 2, algorithm="HS512"
        ),  # not accepted
    ):
        with pytest.raises(AuthError):
            auth.principal(bad)


FETCHES: list[str] = []


@pytest.fixture
def jwks() -> Iterator[tuple[str, rsa.RSAPrivateKey]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            FETCHES.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", key
    server.shutdown()


def test_rs256_tokens_from_a_jwks(jwks: tuple[str, rsa.RSAPrivateKey]) -> None:
    url, key = jwks
    auth = Authenticator(ServeSettings(jwks_url=url, jwt_algorithms=["RS256"], jwt_audience="cdcwh"))
    claims = {"sub": "svc", "roles": ["dashboard"], "aud": "cdcwh", "exp": 2**40}
    good = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
    assert auth.principal(good).roles == ("dashboard",)
    with pytest.raises(AuthError):  # another audience
        auth.principal(jwt.encode({**claims, "aud": "other"}, key, algorithm="RS256", headers={"kid": "k1"}))
    with pytest.raises(AuthError):  # an HS token when only RS256 is accepted
        auth.principal(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_unknown_key_ids_do_not_refetch_the_jwks_each_time(jwks: tuple[str, rsa.RSAPrivateKey]) -> None:
    url, key = jwks
    auth = Authenticator(ServeSettings(jwks_url=url, jwt_algorithms=["RS256"]))
    claims = {"sub": "svc", "roles": ["dashboard"], "exp": 2**40}
    FETCHES.clear()
    assert auth.principal(jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})).subject == "svc"
    for n in range(5):
        with pytest.raises(AuthError):
            auth.principal(jwt.encode(claims, key, algorithm="RS256", headers={"kid": f"unknown-{n}"}))
    assert len(FETCHES) == 1  # the first fetch; unknown kids wait for serve.jwks_refresh_s


def test_misconfiguration_fails_fast_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="CDCWH_SERVE__JWT_SECRET.*CDCWH_SERVE__JWKS_URL"):
        check_settings(ServeSettings())
    with pytest.raises(ConfigError, match="CDCWH_SERVE__JWT_SECRET .*at least 32 bytes"):
        check_settings(ServeSettings(jwt_secret="short"))  # noqa: S106
    for algorithms in (["none"], ["HS256", "HS257"]):
        with pytest.raises(ConfigError, match=r"CDCWH_SERVE__JWT_ALGORITHMS .*not accepted"):
            check_settings(ServeSettings(jwt_secret=SECRET, jwt_algorithms=algorithms))
    with pytest.raises(ConfigError, match="CDCWH_SERVE__JWT_ALGORITHMS .*asymmetric"):
        check_settings(ServeSettings(jwks_url="https://idp.example/jwks.json"))  # HS256 by default
    check_settings(ServeSettings(jwks_url="https://idp.example/jwks.json", jwt_algorithms=["RS256"]))
    monkeypatch.setenv("CDCWH_SERVE__RATE_LIMIT", "often")
    with pytest.raises(ConfigError, match="CDCWH_SERVE__RATE_LIMIT"):
        load_settings()


def test_announcement_channel_and_payload() -> None:
    assert martnotify.channel("marts") == "cdcwh_marts_marts"
    long = martnotify.channel("s" * 80)
    assert len(long) <= 63 and long != martnotify.channel("s" * 81)
    assert martnotify.decode(martnotify.encode({"orders": 7})) == {"orders": 7}
    with pytest.raises(ValueError, match="not a mart announcement"):
        martnotify.decode('{"marts": {"orders": "x"}}')
