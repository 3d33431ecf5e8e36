"""wire.SamplingSpec -> vLLM SamplingParams, filled by field name as vLLM's frontend fills it.

Every SamplingSpec field except `structured` is a SamplingParams field of the same name,
so a sampling parameter added to the wire reaches vLLM with no change here.
"""

from __future__ import annotations

from typing import Any

import msgspec

from services.coordinator.structured import structured_outputs_params
from shared import wire


def sampling_params(
    spec: wire.SamplingSpec, generation_config: dict[str, Any], eos: int | None
) -> Any:
    """vLLM SamplingParams for a request, defaults filled as vLLM's own frontend does."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    fields = msgspec.structs.asdict(spec)
    structured = fields.pop("structured")
    params = SamplingParams.from_optional(
        n=1,
        **fields,
        output_kind=RequestOutputKind.DELTA,
        detokenize=False,
        structured_outputs=None if structured is None else structured_outputs_params(structured),
    )
    params.update_from_generation_config(generation_config, eos)
    return params
