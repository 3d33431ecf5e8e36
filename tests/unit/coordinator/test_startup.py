"""The coordinator refuses, before it binds, settings its engine would refuse only later."""

from __future__ import annotations

import pytest

from services.coordinator.startup import startup_error
from shared.engine_settings import EngineSettings

pytest.importorskip("vllm.model_executor.model_loader")


def engine(load_format: str) -> EngineSettings:
    # The other fields have defaults; mypy sees pydantic-settings fields as required.
    return EngineSettings(load_format=load_format)  # type: ignore[call-arg]


def test_a_vllm_load_format_may_start() -> None:
    assert startup_error(engine("dummy")) is None
    assert startup_error(engine("auto")) is None


def test_an_unknown_load_format_is_refused_naming_the_setting() -> None:
    error = startup_error(engine("weightless"))
    assert error is not None
    assert "--load-format (LAYERBUS_LOAD_FORMAT) 'weightless'" in error
    assert "dummy" in error  # the choices are listed
