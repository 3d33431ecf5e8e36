"""Request fields that carry a wire contract: their bounds come from shared/wire/sampling.py.

A range is declared once, as msgspec Meta on wire.SamplingSpec; the request models
(protocol.py) take it from here, so the gateway refuses with a 400 what the
coordinator's typed decode would refuse. A request object that is a wire struct
field for field (vLLM's `structured_outputs`) is built from the struct itself.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from pydantic import BaseModel, Field, create_model

from shared import wire


def _bounds(kind: Any) -> dict[str, Any]:
    """Pydantic constraints equal to one msgspec type's Meta (numbers, lengths)."""
    if isinstance(kind, msgspec.inspect.UnionType):
        inner = [t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType)]
        return _bounds(inner[0]) if len(inner) == 1 else {}
    names = ("gt", "ge", "lt", "le", "min_length", "max_length")
    return {n: v for n in names if (v := getattr(kind, n, None)) is not None}


_SPEC_INFO = msgspec.inspect.type_info(wire.SamplingSpec)
assert isinstance(_SPEC_INFO, msgspec.inspect.StructType)
_WIRE_BOUNDS = {f.name: _bounds(f.type) for f in _SPEC_INFO.fields}


def wire_field(name: str, default: Any = None) -> Any:
    """A request field with the bounds shared.wire.SamplingSpec declares for `name`."""
    return Field(default, **_WIRE_BOUNDS[name])


def wire_param(err: msgspec.ValidationError) -> str | None:
    """The parameter a wire.SamplingSpec validation error names (`$.logit_bias` -> logit_bias)."""
    match = re.search(r"`\$\.(\w+)", str(err))
    return match.group(1) if match else None


def struct_model(
    name: str,
    struct: type[msgspec.Struct],
    base: type[BaseModel],
    doc: str,
    widen: dict[str, Any] | None = None,
) -> type[BaseModel]:
    """A pydantic request model with one field per field of a wire struct (same defaults).

    `widen` gives a field a wider request type (the gateway converts it before the wire).
    A field whose name a pydantic model already has (`json`) is stored as `name_` and
    read from the body under its own name.
    """
    widen = widen or {}
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    bounds = {f.name: _bounds(f.type) for f in info.fields}
    fields: dict[str, Any] = {}
    for f in msgspec.structs.fields(struct):
        shadows = hasattr(base, f.name)
        options: dict[str, Any] = {**bounds[f.name], "alias": f.name if shadows else None}
        if f.default_factory is not msgspec.NODEFAULT:
            options["default_factory"] = f.default_factory
        else:
            options["default"] = ... if f.default is msgspec.NODEFAULT else f.default
        fields[f"{f.name}_" if shadows else f.name] = (widen.get(f.name, f.type), Field(**options))
    return create_model(name, __base__=base, __doc__=doc, __module__=base.__module__, **fields)
