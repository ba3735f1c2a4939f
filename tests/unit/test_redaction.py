"""``cdcwh.redaction``: DSNs shown without their password, and registered secrets scrubbed from any text."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr

from cdcwh import redaction
from cdcwh.config import Settings
from cdcwh.redaction import UNPARSABLE, redact_dsn, remember_secrets, scrub

PASSWORD = "Sekr3t-pw"  # noqa: S105 - a test secret


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    yield
    redaction.forget_secrets()


@pytest.mark.parametrize(
    ("dsn", "masked", "dropped"),
    [
        (
            f"postgresql://ada:{PASSWORD}@db.example:5432/wh?sslmode=require",
            "postgresql://ada:***@db.example:5432/wh?sslmode=require",
            "postgresql://ada@db.example:5432/wh?sslmode=require",
        ),
        (
            f"postgresql+psycopg://ada:{PASSWORD}@db/catalog",
            "postgresql+psycopg://ada:***@db/catalog",
            "postgresql+psycopg://ada@db/catalog",
        ),
        (
            f"postgresql://ada@db/wh?password={PASSWORD}&sslmode=require",
            "postgresql://ada@db/wh?password=***&sslmode=require",
            "postgresql://ada@db/wh?sslmode=require",
        ),
        ("postgresql://postgres:@/shop?host=/tmp/x", "postgresql://postgres:@/shop?host=/tmp/x", None),
    ],
)
def test_uris_lose_their_password(dsn: str, masked: str, dropped: str | None) -> None:
    assert redact_dsn(dsn) == masked
    assert redact_dsn(dsn, placeholder=None) == (dropped or masked)


def test_key_value_dsns_lose_their_password() -> None:
    dsn = f"host=db.example port=5432 user=ada password='{PASSWORD}' dbname=wh"
    masked = redact_dsn(dsn)
    assert PASSWORD not in masked
    assert conninfo_to_dict(masked) == {
        "host": "db.example",
        "port": "5432",
        "user": "ada",
        "password": "***",
        "dbname": "wh",
    }
    assert "password" not in conninfo_to_dict(redact_dsn(dsn, placeholder=None))


def test_a_dsn_that_does_not_parse_is_not_shown_at_all() -> None:
    # libpq's own error for this one quotes "et", the end of the password
    assert redact_dsn("host=x password=Sekr et") == UNPARSABLE


def test_scrub_masks_every_secret_of_the_settings() -> None:
    settings = Settings.model_validate(
        {
            "postgres": {"dsn": SecretStr(f"postgresql://ada:{PASSWORD}@db/wh")},
            "kafka": {"sasl_password": SecretStr("kafka-Sasl-9"), "extra": {"ssl.key.password": "key-Pw-77"}},
            "schema_registry": {"basic_auth": SecretStr("reg:Registry-Pw")},
            "iceberg": {"catalog_uri": "postgresql+psycopg://ic:Cat%40log-pw@db/cat"},
        }
    )
    remember_secrets(settings)
    text = (
        f"could not connect to postgresql://ada:{PASSWORD}@db/wh; also {PASSWORD}, kafka-Sasl-9, key-Pw-77, "
        "reg:Registry-Pw, Registry-Pw, Cat%40log-pw, Cat@log-pw"
    )
    scrubbed = scrub(text)
    for secret in (PASSWORD, "kafka-Sasl-9", "key-Pw-77", "Registry-Pw", "Cat%40log-pw", "Cat@log-pw"):
        assert secret not in scrubbed
    assert scrubbed.startswith("could not connect to ***; also ***, ***")
    assert scrub("nothing secret here") == "nothing secret here"


def test_the_log_handler_masks_registered_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    from cdcwh.logs import StderrHandler, TextFormatter

    remember_secrets(Settings(), PASSWORD)
    handler = StderrHandler()
    handler.setFormatter(TextFormatter("test"))
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("connecting with %s", f"postgresql://ada:{PASSWORD}@db/wh")
        try:
            raise RuntimeError(f"refused: password {PASSWORD}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert PASSWORD not in err
    assert "connecting with postgresql://ada:***@db/wh" in err
    assert "RuntimeError: refused: password ***" in err
