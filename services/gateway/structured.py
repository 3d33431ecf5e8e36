"""Structured-output constraints of a request -> wire.StructuredSpec.

Mirrors vLLM's `structured_outputs_from_response_format`: `response_format`
overrides the constraint of vLLM's `structured_outputs` extension and keeps
its options. Grammars are compiled and enforced by vLLM on the coordinator
and the last stage; the gateway only checks the shape of the request.
"""

from __future__ import annotations

import msgspec
import orjson

from services.gateway.errors import bad_request
from services.gateway.protocol import ResponseFormat, StructuredOutputs
from shared import wire

_CONSTRAINTS = ("json", "regex", "choice", "grammar", "json_object", "structural_tag")


def _from_extension(ext: StructuredOutputs) -> wire.StructuredSpec:
    fields = ext.model_dump(by_alias=True)
    schema = fields["json"]
    if schema is not None and not isinstance(schema, str):
        fields["json"] = _dumps(schema)
    return msgspec.convert(fields, wire.StructuredSpec)


def _dumps(schema: object) -> str:
    return orjson.dumps(schema).decode()


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(orjson.loads(text), dict)
    except orjson.JSONDecodeError:
        return False


def _constraints(spec: wire.StructuredSpec) -> list[str]:
    return [name for name in _CONSTRAINTS if getattr(spec, name) is not None]


def structured_spec(
    response_format: ResponseFormat | None, extension: StructuredOutputs | None
) -> wire.StructuredSpec | None:
    """The request's one structured-output constraint, or None; 400 when malformed."""
    spec = None if extension is None else _from_extension(extension)
    if spec is not None:
        used = _constraints(spec)
        if len(used) != 1:
            which = ", ".join(used) if used else "none"
            raise bad_request(
                f"structured_outputs needs exactly one constraint of {', '.join(_CONSTRAINTS)} "
                f"(got {which})",
                param="structured_outputs",
            )
        if spec.choice is not None and not spec.choice:
            raise bad_request("structured_outputs.choice must not be empty", "structured_outputs")
        if spec.structural_tag is not None and not _is_json_object(spec.structural_tag):
            raise bad_request(
                "structured_outputs.structural_tag must be a JSON object (as a string)",
                "structured_outputs",
            )
        if spec.json_object is False:
            raise bad_request(
                "structured_outputs.json_object must be true if set", "structured_outputs"
            )
    if response_format is None or response_format.type == "text":
        return spec
    if response_format.type == "json_object":
        override = wire.StructuredSpec(json_object=True)
    else:
        js = response_format.json_schema
        if js is None or js.json_schema is None:
            raise bad_request(
                "response_format.json_schema.schema is required when type is 'json_schema'",
                param="response_format.json_schema",
            )
        override = wire.StructuredSpec(json=_dumps(js.json_schema))
    if spec is None:
        return override
    return wire.StructuredSpec(
        json=override.json,
        json_object=override.json_object,
        disable_any_whitespace=spec.disable_any_whitespace,
        disable_additional_properties=spec.disable_additional_properties,
        whitespace_pattern=spec.whitespace_pattern,
    )
