"""Request fields take their bounds from the wire; wire errors name the request parameter."""

from __future__ import annotations

from typing import Annotated

import msgspec
import pytest
from pydantic import BaseModel, ValidationError

from services.gateway.protocol import StructuredOutputs
from services.gateway.wire_fields import struct_model, wire_field, wire_param
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


def test_the_structured_outputs_model_has_the_wire_structs_fields_and_defaults() -> None:
    fields = StructuredOutputs.model_fields
    by_wire_name = {info.alias or name: info for name, info in fields.items()}
    assert set(by_wire_name) == set(wire.StructuredSpec.__struct_fields__)
    for field in msgspec.structs.fields(wire.StructuredSpec):
        assert by_wire_name[field.name].default == field.default, field.name


def test_json_is_read_under_its_wire_name_and_may_be_an_object() -> None:
    parsed = StructuredOutputs.model_validate({"json": {"type": "object"}, "unknown": 1})
    assert parsed.model_dump(by_alias=True)["json"] == {"type": "object"}
    with pytest.raises(ValidationError):
        StructuredOutputs.model_validate({"regex": 3})


class _Bounded(msgspec.Struct):
    count: Annotated[int, msgspec.Meta(ge=1)]
    names: list[str] = msgspec.field(default_factory=list)


def test_struct_model_keeps_bounds_required_fields_and_factories() -> None:
    model = struct_model("Bounded", _Bounded, BaseModel, "A test model.")
    with pytest.raises(ValidationError):
        model.model_validate({"count": 0})
    with pytest.raises(ValidationError):
        model.model_validate({})
    assert model.model_validate({"count": 1}).model_dump() == {"count": 1, "names": []}
