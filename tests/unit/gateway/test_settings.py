"""GatewaySettings: defaults, environment and overrides (flags: tests/unit/ops/test_cli.py)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.gateway.settings import GatewaySettings
from tests.unit.gateway.conftest import MODEL_PATH


def make(**overrides: Any) -> GatewaySettings:
    """GatewaySettings(**overrides), the way the CLI builds it."""
    return GatewaySettings(**overrides)


@pytest.fixture(autouse=True)
def _model_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERBUS_MODEL", str(MODEL_PATH))
    if not MODEL_PATH.is_dir():
        pytest.skip("default model folder missing")


def test_defaults() -> None:
    s = make()
    assert (s.host, s.port, s.coordinator) == ("127.0.0.1", 8000, "tcp://127.0.0.1:5555")
    assert s.api_keys == []
    assert s.model_name == MODEL_PATH.name


def test_environment_with_comma_separated_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERBUS_API_KEYS", "k1, k2,")
    monkeypatch.setenv("LAYERBUS_PORT", "9001")
    monkeypatch.setenv("LAYERBUS_SERVED_MODEL_NAME", "smol")
    s = make()
    assert (s.api_keys, s.port, s.model_name) == (["k1", "k2"], 9001, "smol")


def test_keyword_overrides_beat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERBUS_PORT", "9001")
    assert make(port=9002).port == 9002


def test_missing_model_folder_names_the_setting(tmp_path: object) -> None:
    with pytest.raises(ValidationError) as info:
        make(model="/definitely/not/here")
    assert "LAYERBUS_MODEL" in str(info.value)


def test_validation_errors_do_not_echo_api_keys() -> None:
    with pytest.raises(ValidationError) as info:
        make(api_keys=["s3cret"], port=-1)
    assert "s3cret" not in str(info.value)
