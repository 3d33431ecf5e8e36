"""Typed codec for vLLM's KV cache specs and configs (dataclasses, enums, dtypes).

Only dataclasses and enums defined in vllm.v1.kv_cache_interface can be
decoded; anything else in a received message is rejected. No pickle.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import msgspec
import torch

from shared.wire import WireError


def _module() -> Any:
    from vllm.v1 import kv_cache_interface

    return kv_cache_interface


def _to_plain(value: Any) -> Any:
    if isinstance(value, torch.dtype):
        return {"__dtype__": str(value).removeprefix("torch.")}
    if isinstance(value, enum.Enum):
        return {"__enum__": type(value).__name__, "value": value.value}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__cls__": type(value).__name__, "fields": fields}
    if isinstance(value, dict):
        return {"__dict__": [[_to_plain(k), _to_plain(v)] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot encode {type(value).__name__} in a KV cache message")


def _from_plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_plain(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__dtype__" in value:
        dtype = getattr(torch, str(value["__dtype__"]), None)
        if not isinstance(dtype, torch.dtype):
            raise WireError(f"unknown dtype {value['__dtype__']!r}")
        return dtype
    if "__dict__" in value:
        return {_from_plain(k): _from_plain(v) for k, v in value["__dict__"]}
    name = value.get("__enum__") or value.get("__cls__")
    cls = getattr(_module(), str(name), None)
    if cls is None or getattr(cls, "__module__", "") != _module().__name__:
        raise WireError(f"{name!r} is not a vLLM KV cache type")
    if "__enum__" in value:
        if not (isinstance(cls, type) and issubclass(cls, enum.Enum)):
            raise WireError(f"{name!r} is not an enum")
        return cls(value["value"])
    if not dataclasses.is_dataclass(cls):
        raise WireError(f"{name!r} is not a dataclass")
    fields = {k: _from_plain(v) for k, v in value["fields"].items()}
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    obj = cls(**{k: v for k, v in fields.items() if k in init})  # type: ignore[operator]
    for key, val in fields.items():
        if key not in init:
            object.__setattr__(obj, key, val)
    return obj


def encode_kv(value: Any) -> bytes:
    """msgpack bytes for a KV cache spec dict or KVCacheConfig."""
    return msgspec.msgpack.encode(_to_plain(value))


def decode_kv(data: bytes) -> Any:
    """Inverse of encode_kv; raises WireError for anything not a vLLM KV type."""
    try:
        return _from_plain(msgspec.msgpack.decode(data))
    except (msgspec.DecodeError, TypeError, ValueError, KeyError) as err:
        if isinstance(err, WireError):
            raise
        raise WireError(f"bad KV cache message: {err}") from None
