"""Time one decoder layer of the model's shape at decode and prefill sizes (as Petals does).

The LM head is timed too, at decode size: the last stage runs it on every sampled token.

The probe builds a layer of the model's dimensions with random weights (attention
with grouped KV heads, gated MLP, RMS norms; rotary embeddings are left out, being
elementwise and cheap) and times its forward on this device: a decode step of
several sequences attending to a context, and a prefill chunk. It needs no weights
on disk and no vLLM engine, so a stage can measure itself before it knows its layers.
The figures rank devices for placement; they are not vLLM's kernels' exact times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from services.stage.capacity import DECODE_BATCH, DECODE_CONTEXT, PREFILL_TOKENS

REPEATS = 7
# Each size is timed for at least this long (short calls run many times), at most MAX_RUNS.
WINDOW_S = 0.3
MAX_RUNS = 200


@dataclass(frozen=True)
class LayerShape:
    """The dimensions of one decoder layer and of the LM head's vocabulary (immutable)."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int = 0  # 0: no LM head to time

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LayerShape:
        cfg = dict(config.get("text_config", config))
        hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        return cls(
            hidden=hidden,
            heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            intermediate=int(cfg.get("intermediate_size") or 4 * hidden),
            vocab=int(cfg.get("vocab_size") or 0),
        )


@dataclass(frozen=True)
class LayerSpeed:
    """Seconds for one decoder layer's forward at each size (the fastest of the repeats).

    head_s: the final norm and LM head over one decode step's tokens (None: not timed).
    """

    decode_s: float
    prefill_s: float
    head_s: float | None = None


class ReferenceLayer(nn.Module):
    """A decoder layer of a given shape with random weights; run by the probing thread."""

    def __init__(self, shape: LayerShape, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.shape = shape
        h = shape.hidden
        q_dim, kv_dim = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
        kw: dict[str, Any] = {"bias": False, "dtype": dtype, "device": device}
        self.input_norm = nn.RMSNorm(h, dtype=dtype, device=device)
        self.q = nn.Linear(h, q_dim, **kw)
        self.k = nn.Linear(h, kv_dim, **kw)
        self.v = nn.Linear(h, kv_dim, **kw)
        self.o = nn.Linear(q_dim, h, **kw)
        self.post_norm = nn.RMSNorm(h, dtype=dtype, device=device)
        self.gate = nn.Linear(h, shape.intermediate, **kw)
        self.up = nn.Linear(h, shape.intermediate, **kw)
        self.down = nn.Linear(shape.intermediate, h, **kw)

    def forward(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """x: [batch, tokens, hidden]; past: keys and values [batch, kv_heads, context, dim]."""
        s = self.shape
        batch, tokens, _ = x.shape
        h = self.input_norm(x)
        q = self.q(h).view(batch, tokens, s.heads, s.head_dim).transpose(1, 2)
        k = self.k(h).view(batch, tokens, s.kv_heads, s.head_dim).transpose(1, 2)
        v = self.v(h).view(batch, tokens, s.kv_heads, s.head_dim).transpose(1, 2)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        attn = functional.scaled_dot_product_attention(
            q, k, v, is_causal=past is None and tokens > 1, enable_gqa=s.kv_heads != s.heads
        )
        x = x + self.o(attn.transpose(1, 2).reshape(batch, tokens, s.heads * s.head_dim))
        h = self.post_norm(x)
        return x + self.down(functional.silu(self.gate(h)) * self.up(h))

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def fastest_time(
    run: Callable[[], object],
    repeats: int,
    sync: Callable[[], None],
    window_s: float = 0.0,
    max_runs: int = MAX_RUNS,
) -> float:
    """Least seconds of the timed calls of run, after one warm-up call.

    Other work on the host only ever slows a call down, so the fastest call is the
    closest to the device's own speed, which is what placement compares. At least
    `repeats` calls, and more until `window_s` has passed (at most max_runs): a
    short call gets many chances to run while the host is quiet.
    """
    run()
    sync()
    times: list[float] = []
    while len(times) < repeats or (sum(times) < window_s and len(times) < max_runs):
        started = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - started)
    return min(times)


@torch.inference_mode()
def probe_speed(
    shape: LayerShape,
    dtype: torch.dtype,
    device: torch.device,
    decode_batch: int = DECODE_BATCH,
    decode_context: int = DECODE_CONTEXT,
    prefill_tokens: int = PREFILL_TOKENS,
    repeats: int = REPEATS,
    window_s: float = WINDOW_S,
) -> LayerSpeed:
    """Time one layer of `shape` at decode and prefill sizes on `device`."""
    layer = ReferenceLayer(shape, dtype, device).eval()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    new = torch.randn(decode_batch, 1, shape.hidden, dtype=dtype, device=device)
    past_shape = (decode_batch, shape.kv_heads, decode_context, shape.head_dim)
    past = (
        torch.randn(past_shape, dtype=dtype, device=device),
        torch.randn(past_shape, dtype=dtype, device=device),
    )
    chunk = torch.randn(1, prefill_tokens, shape.hidden, dtype=dtype, device=device)
    head_s = None
    if shape.vocab:
        # Its own cost: the vocabulary matmul batches better than a small layer's.
        norm = nn.RMSNorm(shape.hidden, dtype=dtype, device=device)
        head = nn.Linear(shape.hidden, shape.vocab, bias=False, dtype=dtype, device=device)
        head_s = fastest_time(lambda: head(norm(new)), repeats, sync, window_s)
    return LayerSpeed(
        decode_s=fastest_time(lambda: layer(new, past), repeats, sync, window_s),
        prefill_s=fastest_time(lambda: layer(chunk), repeats, sync, window_s),
        head_s=head_s,
    )
