"""Keeping secrets out of what cdcwh prints, logs and raises.

Two tools, used together:

- ``redact_dsn(dsn)``: a DSN or URI with its password masked (``postgresql://u:***@h/db``), or dropped
  (``placeholder=None``: ``postgresql://u@h/db``, for a line a person copies into ``psql``, which then asks
  for the password). Parsed with ``psycopg.conninfo`` for libpq ``key=value`` strings; URIs of any scheme
  (``postgresql://``, ``postgresql+psycopg://``, ``http://``) by their userinfo and ``password`` parameter.
- ``scrub(text)``: every secret of the running settings (registered once at start by ``remember_secrets``:
  the ``SecretStr`` values, and the password inside each DSN or URI setting) replaced by ``***``. The stderr
  log handler (``cdcwh.logs``) and the CLI's error report pass everything through it, so a library message
  that quotes a DSN is caught too. Secrets shorter than ``MIN_SCRUBBED`` characters are not scrubbed: masking
  every "ab" in every line would garble the logs, and such a secret protects nothing anyway.

The first line of defence stays not putting secrets in messages at all: ``SecretStr`` settings, DSNs shown
only through ``redact_dsn``, and DSNs validated when the settings are read (``cdcwh.config``), since libpq's
own parse errors quote the text around the fault, which can be part of the password.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, SecretStr

if TYPE_CHECKING:
    from cdcwh.config import Settings

MASK = "***"
MIN_SCRUBBED = 4
UNPARSABLE = "(a DSN that does not parse; not shown)"
_PASSWORD_KEYS = frozenset({"password", "passwd", "sslpassword"})
_secrets: tuple[str, ...] = ()
"""The registered secrets, longest first (so that a whole DSN is masked before the password inside it)."""
_lock = threading.Lock()


def _redact_uri(uri: str, placeholder: str | None) -> str:
    parts = urlsplit(uri)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        if password:
            userinfo = user if placeholder is None else f"{user}:{placeholder}"
        netloc = f"{userinfo}@{hosts}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key.lower() in _PASSWORD_KEYS for key, _ in pairs):
        kept = [
            (key, value if key.lower() not in _PASSWORD_KEYS else placeholder)
            for key, value in pairs
            if placeholder is not None or key.lower() not in _PASSWORD_KEYS
        ]
        query = urlencode(kept, safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_dsn(dsn: str, *, placeholder: str | None = MASK) -> str:
    """``dsn`` with its password replaced by ``placeholder`` (None: removed); ``UNPARSABLE`` when it does
    not parse (libpq's parse error could quote the password, so neither it nor the text is shown)."""
    if "://" in dsn.split("=", 1)[0]:
        try:
            return _redact_uri(dsn, placeholder)
        except ValueError:
            return UNPARSABLE
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError:
        return UNPARSABLE
    masked = {
        key: value for key, value in params.items() if key not in _PASSWORD_KEYS or placeholder is not None
    }
    for key in _PASSWORD_KEYS & masked.keys():
        masked[key] = placeholder
    return make_conninfo("", **masked)


def dsn_passwords(dsn: str) -> set[str]:
    """The passwords written in a DSN or URI (as written and, for a URI, percent-decoded)."""
    found: set[str] = set()
    if "://" in dsn.split("=", 1)[0]:
        try:
            parts = urlsplit(dsn)
        except ValueError:
            return found
        userinfo = parts.netloc.rpartition("@")[0]
        if ":" in userinfo:
            raw = userinfo.partition(":")[2]
            found |= {raw, unquote(raw), quote(unquote(raw), safe="")}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key.lower() in _PASSWORD_KEYS:
                found |= {value, quote(value, safe="")}
        return found - {""}
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError:
        return found
    return {str(params[key]) for key in _PASSWORD_KEYS & params.keys() if params[key]}


def _secret_values(model: BaseModel) -> Iterable[str]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _secret_values(value)
        elif isinstance(value, SecretStr):
            secret = value.get_secret_value()
            yield secret
            yield from dsn_passwords(secret)
            if ":" in secret and "://" not in secret:  # user:password (schema_registry.basic_auth)
                yield secret.partition(":")[2]
        elif isinstance(value, str) and "://" in value:  # a URI setting (iceberg.catalog_uri)
            yield from dsn_passwords(value)
        elif isinstance(value, dict):  # passed-through client settings (kafka.extra: ssl.key.password)
            yield from (str(v) for k, v in value.items() if "password" in k or "secret" in k)


def remember_secrets(settings: Settings, *extra: str) -> None:
    """Register the secrets of ``settings`` (and ``extra`` ones) for ``scrub``; replaces earlier ones."""
    global _secrets
    values = {*_secret_values(settings), *extra}
    with _lock:
        _secrets = tuple(sorted((v for v in values if len(v) >= MIN_SCRUBBED), key=len, reverse=True))


def forget_secrets() -> None:
    """Register none (for tests that call ``cli.main`` in-process, one after another)."""
    global _secrets
    with _lock:
        _secrets = ()


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text
