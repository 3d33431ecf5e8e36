"""vLLM's GrammarOutput (structured-output bitmask) <-> wire.GrammarMask.

The coordinator's scheduler computes the bitmask; it rides in the step plan
as raw little-endian int32 bytes, checked against its declared shape on the
way in. Nothing is unpickled.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shared import wire

_INT32 = np.dtype("<i4")


def mask_from_grammar_output(grammar_output: Any) -> wire.GrammarMask:
    """Coordinator: vLLM GrammarOutput -> GrammarMask."""
    bitmask = np.ascontiguousarray(grammar_output.grammar_bitmask, dtype=_INT32)
    if bitmask.ndim != 2:
        raise ValueError(f"grammar bitmask must be 2-D, got shape {bitmask.shape}")
    return wire.GrammarMask(
        req_ids=list(grammar_output.structured_output_request_ids),
        bitmask=bitmask.tobytes(),
        rows=int(bitmask.shape[0]),
        words=int(bitmask.shape[1]),
    )


def grammar_output_from_mask(mask: wire.GrammarMask) -> Any:
    """Last stage: GrammarMask -> vLLM GrammarOutput for the runner's sample_tokens."""
    from vllm.v1.core.sched.output import GrammarOutput

    if mask.rows < len(mask.req_ids) or mask.words <= 0:
        raise wire.WireError(
            f"grammar mask of {mask.rows}x{mask.words} words for {len(mask.req_ids)} requests"
        )
    if len(mask.bitmask) != mask.rows * mask.words * _INT32.itemsize:
        raise wire.WireError(
            f"grammar mask holds {len(mask.bitmask)} bytes, not {mask.rows}x{mask.words} int32"
        )
    bitmask = np.frombuffer(mask.bitmask, dtype=_INT32).reshape(mask.rows, mask.words)
    return GrammarOutput(list(mask.req_ids), bitmask.astype(np.int32))
