"""TransportSettings: --metrics-advertise is read and checked at start-up."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.settings import TransportSettings


def test_metrics_advertise_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERBUS_METRICS_ADVERTISE", "203.0.113.7:19100")
    assert TransportSettings().metrics_advertise == "203.0.113.7:19100"


def test_metrics_advertise_defaults_to_unset() -> None:
    assert TransportSettings.model_validate({}).metrics_advertise == ""


def test_a_url_is_refused_with_the_setting_named() -> None:
    with pytest.raises(ValidationError, match="LAYERBUS_METRICS_ADVERTISE"):
        TransportSettings.model_validate({"metrics_advertise": "http://h:9100/metrics"})
