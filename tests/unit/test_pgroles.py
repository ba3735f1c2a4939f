"""The SQL of ``cdcwh postgres init-roles`` without a server: the SCRAM verifier against the RFC 7677 example,
and identifiers quoted whatever the schema or prefix (the statements against a real server:
tests/integration/postgres/)."""

from __future__ import annotations

import base64
import hashlib
import hmac

from cdcwh.pgroles import RoleNames, render_sql, role_statements, scram_verifier

# RFC 7677, section 3: user "user", password "pencil"
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
NONCE = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
AUTH_MESSAGE = f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={NONCE},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={NONCE}"
SERVER_SIGNATURE = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
CLIENT_PROOF = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="


def test_the_verifier_matches_the_rfc_7677_exchange() -> None:
    verifier = scram_verifier("pencil", SALT)
    method, _, rest = verifier.partition("$")
    iterations_salt, _, keys = rest.partition("$")
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    assert (method, iterations_salt) == ("SCRAM-SHA-256", "4096:W22ZaJ0SNY7soEsUEjb6gQ==")
    signature = hmac.new(server_key, AUTH_MESSAGE.encode(), hashlib.sha256).digest()
    assert base64.b64encode(signature).decode() == SERVER_SIGNATURE
    # the client key recovered from the RFC's proof hashes to the stored key
    client_signature = hmac.new(stored_key, AUTH_MESSAGE.encode(), hashlib.sha256).digest()
    client_key = bytes(a ^ b for a, b in zip(base64.b64decode(CLIENT_PROOF), client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key


def test_names_are_quoted_and_passwords_never_appear() -> None:
    roles = RoleNames.with_prefix('x"; DROP TABLE t; --')
    script = render_sql(roles, 'ma"rts', "audit")
    assert '"x""; DROP TABLE t; --owner"' in script
    assert 'CREATE SCHEMA IF NOT EXISTS "ma""rts" AUTHORIZATION' in script
    statements = [s.as_string() for s in role_statements(roles, "marts", "audit", {"sink": "hunter2-pw"})]
    assert not any("hunter2-pw" in s for s in statements)
    assert sum("PASSWORD 'SCRAM-SHA-256$4096:" in s for s in statements) == 1
