"""Structured-output constraints of a request -> wire.StructuredSpec (400 when malformed)."""

from __future__ import annotations

import pytest

from services.gateway.errors import APIError
from services.gateway.protocol import StructuredOutputs
from services.gateway.structured import structured_spec


def test_one_choice_constraint_passes() -> None:
    spec = structured_spec(None, StructuredOutputs(choice=["yes", "no"]))
    assert spec is not None and spec.choice == ["yes", "no"]


@pytest.mark.parametrize("tag", ["", "[1]", "not json"])
def test_structural_tag_must_be_a_json_object(tag: str) -> None:
    with pytest.raises(APIError) as err:
        structured_spec(None, StructuredOutputs(structural_tag=tag))
    assert err.value.status == 400


def test_no_constraint_is_refused() -> None:
    with pytest.raises(APIError) as err:
        structured_spec(None, StructuredOutputs())
    assert err.value.status == 400
