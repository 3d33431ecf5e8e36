"""Structured-output requests: wire.StructuredSpec -> vLLM StructuredOutputsParams.

vLLM's own machinery does the rest: the coordinator's scheduler compiles the
grammar (xgrammar or guidance, as vLLM picks) and computes each step's bitmask;
the last stage applies it before sampling.
"""

from __future__ import annotations

from typing import Any

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
    try:
        return StructuredOutputsParams(
            json=schema,
            regex=spec.regex,
            choice=None if spec.choice is None else list(spec.choice),
            grammar=spec.grammar,
            json_object=spec.json_object,
            structural_tag=spec.structural_tag,
            disable_any_whitespace=spec.disable_any_whitespace,
            disable_additional_properties=spec.disable_additional_properties,
            whitespace_pattern=spec.whitespace_pattern,
        )
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
