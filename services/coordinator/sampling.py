"""wire.SamplingSpec -> vLLM SamplingParams, filled by field name as vLLM's frontend fills it.

Every SamplingSpec field except `structured` is a SamplingParams field of the same name,
so a sampling parameter added to the wire reaches vLLM with no change here. What vLLM's
InputProcessor then does to every request (generation_config defaults, the tokenizer's
part: bad_words -> token ids) is done here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from services.coordinator.structured import structured_outputs_params
from shared import wire

# Loads the engine's tokenizer; called only for a request that needs it (bad_words).
TokenizerSource = Callable[[], Any]


def engine_tokenizer(vllm_config: Any) -> TokenizerSource:
    """The tokenizer of the engine built from vllm_config, loaded (and cached by vLLM) on use."""

    def load() -> Any:
        from vllm.tokenizers import cached_tokenizer_from_config

        return cached_tokenizer_from_config(model_config=vllm_config.model_config)

    return load


def sampling_params(
    spec: wire.SamplingSpec,
    generation_config: dict[str, Any],
    eos: int | None,
    tokenizer: TokenizerSource,
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
        params.update_from_tokenizer(tokenizer())
    return params
