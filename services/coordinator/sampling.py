"""wire.SamplingSpec -> vLLM SamplingParams, filled by field name as vLLM's frontend fills it.

Every SamplingSpec field except `structured` is a SamplingParams field of the same name,
so a sampling parameter added to the wire reaches vLLM with no change here. What vLLM's
InputProcessor then does to every request (generation_config defaults, the tokenizer's
part: bad_words -> token ids) is done here too.
"""

from __future__ import annotations

from typing import Any

import msgspec

from services.coordinator.structured import structured_outputs_params
from shared import wire

# The engine whose tokenizer serves update_from_tokenizer; set by the coordinator's I/O
# thread before it hands the engine thread the first request (bind_engine).
_engine_config: Any = None


def bind_engine(vllm_config: Any) -> None:
    """Use this engine's tokenizer for the requests that follow (once per engine)."""
    global _engine_config
    _engine_config = vllm_config


def _tokenizer() -> Any:
    from vllm.tokenizers import cached_tokenizer_from_config

    return cached_tokenizer_from_config(model_config=_engine_config.model_config)


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
    if params.bad_words:
        if _engine_config is None:
            raise ValueError("bad_words need the engine's tokenizer: no engine is bound yet")
        params.update_from_tokenizer(_tokenizer())
    return params
