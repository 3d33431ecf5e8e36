"""Request fields take their bounds from the wire; wire errors name the request parameter."""

from __future__ import annotations

import msgspec
import pytest
from pydantic import BaseModel, ValidationError

from services.gateway.wire_fields import wire_field, wire_param
from shared import wire


class Body(BaseModel):
    temperature: float | None = wire_field("temperature")
    stop_token_ids: list[int] | None = wire_field("stop_token_ids")
    allowed_token_ids: list[int] | None = wire_field("allowed_token_ids")


@pytest.mark.parametrize(
    "body",
    [
        {"temperature": 2.01},
        {"temperature": -0.1},
        {"stop_token_ids": [1] * (wire.MAX_STOP_TOKEN_IDS + 1)},
        {"allowed_token_ids": []},
    ],
)
def test_values_the_wire_refuses_are_refused_by_the_request_model(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Body.model_validate(body)


def test_values_within_the_wire_bounds_pass() -> None:
    Body.model_validate({"temperature": 2.0, "stop_token_ids": [1], "allowed_token_ids": [3]})


def test_a_wire_error_names_the_parameter() -> None:
    with pytest.raises(msgspec.ValidationError) as err:
        msgspec.convert({"max_tokens": 1, "logit_bias": {"x": 1}}, wire.SamplingSpec, strict=False)
    assert wire_param(err.value) == "logit_bias"
    assert wire_param(msgspec.ValidationError("no path")) is None
