"""``cdcwh.schema_registry.RegistrySchemas``: what it caches and what it shows. The registry is the HTTP
stand-in of tests/support/schema_registry_standin.py (a schema registry server cannot run here); every request
it receives is counted through ``state.authorizations``, and time is a hand-driven clock."""

from __future__ import annotations

import pytest

import cdcwh.schema_registry as registry_module
from cdcwh.config import SchemaRegistrySettings
from cdcwh.errors import ConfigError, TransientError
from cdcwh.schema_registry import NEGATIVE_TTL_S, RegistrySchemas
from tests.support.schema_registry_standin import RegistryState, schema_registry_standin


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_unknown_id_is_asked_again_after_a_short_while_and_not_before() -> None:
    """Id 1 is unknown, then registered: it is found once the negative answer expires, not before."""
    state, clock = RegistryState(), Clock()
    with schema_registry_standin(state) as (url, _):
        schemas = RegistrySchemas(SchemaRegistrySettings(url=url), clock=clock)
        assert schemas.writer_schemas([1]).by_id == {1: None}
        asked = len(state.authorizations)
        assert asked >= 1
        assert state.register("t-value", '{"type": "long"}') == 1
        clock.now += NEGATIVE_TTL_S / 2
        assert schemas.writer_schemas([1, 1]).by_id == {1: None}  # the short negative cache: no request
        assert len(state.authorizations) == asked
        clock.now += NEGATIVE_TTL_S / 2
        assert schemas.writer_schemas([1]).by_id == {1: '{"type": "long"}'}
        assert len(state.authorizations) > asked


def test_known_schemas_are_kept_in_a_bounded_lru(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "POSITIVE_MAX", 2)
    state = RegistryState()
    ids = [state.register(f"s{i}", f'{{"type": "fixed", "name": "F{i}", "size": {i}}}') for i in range(3)]
    with schema_registry_standin(state) as (url, _):
        schemas = RegistrySchemas(SchemaRegistrySettings(url=url))
        for schema_id in ids:
            assert schemas.writer_schemas([schema_id]).by_id[schema_id] == state.schemas[schema_id]
        assert list(schemas._known) == ids[1:]  # the oldest went
        schemas.writer_schemas([ids[1]])
        assert list(schemas._known) == [ids[2], ids[1]]  # used last, dropped last
        assert schemas.writer_schemas(ids[:1]).by_id == {ids[0]: state.schemas[ids[0]]}  # fetched again
        assert list(schemas._known) == [ids[1], ids[0]]


@pytest.mark.parametrize("fail_with", [None, 401, 500])
def test_a_password_in_the_url_is_never_shown(
    fail_with: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    """The 404 warning, the 401 configuration error and the 5xx transient error name the registry by its URL,
    with the password masked."""
    state = RegistryState(fail_with=fail_with)
    with schema_registry_standin(state) as (url, _):
        with_password = url.replace("http://", "http://reader:s3cret-pw@")
        schemas = RegistrySchemas(SchemaRegistrySettings(url=with_password))
        shown = ""
        with caplog.at_level("WARNING", logger="cdcwh.schema_registry"):
            try:
                schemas.writer_schemas([42])
            except (ConfigError, TransientError) as exc:
                shown = str(exc)
        shown += caplog.text
    assert url.removeprefix("http://") in shown  # the registry is named
    assert "reader" in shown
    assert "s3cret-pw" not in shown
