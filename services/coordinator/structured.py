"""Structured-output requests: wire.StructuredSpec -> vLLM StructuredOutputsParams.

vLLM's own machinery does the rest: the coordinator's scheduler compiles the
grammar (xgrammar or guidance, as vLLM picks) and computes each step's bitmask;
the last stage applies it before sampling.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from shared import wire


def structured_outputs_params(spec: wire.StructuredSpec) -> Any:
    """vLLM StructuredOutputsParams for one request (raises ValueError when malformed)."""
    from vllm.exceptions import VLLMError
    from vllm.sampling_params import StructuredOutputsParams

    schema: Any = None
    if spec.json is not None:
        try:
            schema = orjson.loads(spec.json)
        except orjson.JSONDecodeError as err:
            raise ValueError(f"structured output JSON schema is not valid JSON: {err}") from None
    fields = msgspec.structs.asdict(spec)
    fields["json"] = schema
    try:
        return StructuredOutputsParams(**fields)
    except VLLMError as err:  # vLLM's validation errors are not ValueErrors
        raise ValueError(str(err)) from None


def verify_structured(params: Any, vllm_config: Any) -> None:
    """vLLM's own request check (as its InputProcessor runs it): picks the backend."""
    from vllm.exceptions import VLLMError
    from vllm.tokenizers import cached_tokenizer_from_config

    tokenizer = cached_tokenizer_from_config(model_config=vllm_config.model_config)
    try:
        params.verify(
            vllm_config.model_config,
            vllm_config.speculative_config,
            vllm_config.structured_outputs_config,
            tokenizer,
        )
    except VLLMError as err:
        raise ValueError(str(err)) from None
