"""``cdcwh token`` signs what ``cdcwh serve`` accepts, and both refuse to run without a way to verify tokens,
naming the setting."""

from __future__ import annotations

import pytest

from cdcwh.cli import main
from cdcwh.config import ServeSettings
from cdcwh.serve.auth import Authenticator

SECRET = "cli-secret-0123456789abcdef-0123456789ab"  # noqa: S105 (a key for the tests only)


def test_token_prints_a_token_serve_accepts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CDCWH_SERVE__JWT_SECRET", SECRET)
    argv = ["token", "--role", "analyst", "--role", "dashboard", "--claim", "country=DE", "--subject", "ann"]
    assert main(argv) == 0
    token = capsys.readouterr().out.strip()
    principal = Authenticator(ServeSettings(jwt_secret=SECRET)).principal(token)  # type: ignore[arg-type]
    assert principal.subject == "ann" and principal.roles == ("analyst", "dashboard")
    assert principal.claims["country"] == "DE"


def test_token_and_serve_without_a_secret_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CDCWH_SERVE__JWT_SECRET", raising=False)
    assert main(["token", "--role", "analyst"]) != 0
    assert main(["serve"]) != 0
    err = capsys.readouterr().err
    assert err.count("CDCWH_SERVE__JWT_SECRET") == 2 and "CDCWH_SERVE__JWKS_URL" in err
