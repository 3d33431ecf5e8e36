"""Tensors as raw zero-copy frames after a msgpack header.

Sender: each tensor is made contiguous and viewed as uint8 (bf16 has no numpy
dtype), then handed to pyzmq with copy=False. A GPU tensor is copied once into a
pinned host buffer (HostStaging) that pyzmq then sends from; the buffer is reused
only after the previous send completed (the stage waits on its send trackers).
The receiver's frames go to the GPU in one copy, by vLLM's runner. Receiver: frames received with
copy=False become tensors through torch.frombuffer, without a copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from shared.wire import TensorMeta, WireError

_DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
    "int32": torch.int32,
    "int64": torch.int64,
}


class HostStaging:
    """Pinned host buffers, one per tensor name, reused across steps (stage main thread)."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def to_host(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """A contiguous host copy of a device tensor, or the host tensor itself."""
        if tensor.device.type == "cpu":
            return tensor.detach().contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < nbytes:
            buffer = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
            self._buffers[name] = buffer
        host = buffer[:nbytes].view(tensor.dtype).view(tensor.shape)
        host.copy_(tensor.detach(), non_blocking=True)
        torch.cuda.current_stream(tensor.device).synchronize()
        return host


def tensors_to_frames(
    tensors: dict[str, torch.Tensor], staging: HostStaging | None = None
) -> tuple[list[TensorMeta], list[Any]]:
    """Metadata and buffer objects (kept alive by pyzmq until sent) for a tensor dict.

    staging: where device tensors land on the host (default: fresh pageable copies).
    """
    metas: list[TensorMeta] = []
    buffers: list[Any] = []
    for name, tensor in tensors.items():
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype not in _DTYPES:
            raise TypeError(f"tensor {name} has unsupported dtype {tensor.dtype}")
        if staging is not None:
            flat = staging.to_host(name, tensor)
        else:
            flat = tensor.detach().contiguous().cpu()
        metas.append(TensorMeta(name=name, dtype=dtype, shape=list(flat.shape)))
        buffers.append(flat.reshape(-1).view(torch.uint8).numpy() if flat.numel() else b"")
    return metas, buffers


def frames_to_tensors(
    metas: Sequence[TensorMeta], frames: Sequence[Any], max_elements: int
) -> dict[str, torch.Tensor]:
    """Rebuild tensors from frames received with copy=False; WireError if inconsistent."""
    if len(frames) != len(metas):
        raise WireError(f"header lists {len(metas)} tensors, message has {len(frames)}")
    out: dict[str, torch.Tensor] = {}
    for meta, frame in zip(metas, frames, strict=True):
        dtype = _DTYPES.get(meta.dtype)
        if dtype is None:
            raise WireError(f"tensor {meta.name}: unsupported dtype {meta.dtype!r}")
        if any(d < 0 for d in meta.shape):
            raise WireError(f"tensor {meta.name}: negative dimension in {meta.shape}")
        numel = 1
        for d in meta.shape:
            numel *= d
        if numel > max_elements:
            raise WireError(f"tensor {meta.name}: {numel} elements exceeds the cap")
        buffer = frame.buffer if hasattr(frame, "buffer") else memoryview(frame)
        expected = numel * torch.empty((), dtype=dtype).element_size()
        if buffer.nbytes != expected:
            raise WireError(
                f"tensor {meta.name}: frame has {buffer.nbytes} bytes, shape needs {expected}"
            )
        if numel == 0:
            out[meta.name] = torch.empty(meta.shape, dtype=dtype)
            continue
        raw = torch.frombuffer(buffer, dtype=torch.uint8)
        out[meta.name] = raw.view(dtype).reshape(meta.shape)
    return out
