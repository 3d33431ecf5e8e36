"""What a request asks of sampling: SamplingSpec and the value ranges it carries.

The ranges are msgspec Meta, so the typed decode of a Generate enforces them.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

# The values a request may carry, declared once: the typed decode enforces them (a
# Generate out of range never reaches the coordinator's engine), and the gateway's
# request models take their ranges from here (services/gateway/protocol.py).
MAX_LOGPROBS = 20  # vLLM's default max_logprobs
MAX_SEED = 2**63 - 1
MAX_STOP_TOKEN_IDS = 1024

# A token id: at least 0 here; below the vocabulary size (known to the coordinator) is
# checked there for every field of this type (services/coordinator/validation.py).
TokenId = Annotated[int, Meta(ge=0, extra={"token_id": True})]
NonEmptyText = Annotated[str, Meta(min_length=1)]


class StructuredSpec(msgspec.Struct, omit_defaults=True):
    """One structured-output constraint (vLLM StructuredOutputsParams); exactly one is set.

    json is a JSON Schema as JSON text; the options mirror vLLM's.
    """

    json: str | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    structural_tag: str | None = None
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None


class SamplingSpec(msgspec.Struct, omit_defaults=True):
    """User-facing sampling settings for one sequence (n is fanned out by the gateway).

    Every field is a vLLM SamplingParams field of the same name and meaning (the
    coordinator passes them on by name: services/coordinator/sampling.py), except
    structured (vLLM's structured_outputs). Bounds that depend on the model (token
    ids within the vocabulary, the context length) are checked by the coordinator.
    """

    max_tokens: Annotated[int, Meta(ge=1)]
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[float, Meta(gt=0.0, le=1.0)] = 1.0
    top_k: Annotated[int, Meta(ge=-1)] = 0  # 0 or -1: off
    min_p: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.0
    seed: Annotated[int, Meta(ge=-MAX_SEED, le=MAX_SEED)] | None = None
    presence_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] = 0.0
    repetition_penalty: Annotated[float, Meta(gt=0.0, le=10.0)] = 1.0
    logprobs: Annotated[int, Meta(ge=0, le=MAX_LOGPROBS)] | None = None
    ignore_eos: bool = False
    min_tokens: Annotated[int, Meta(ge=0)] = 0
    stop_token_ids: Annotated[list[TokenId], Meta(max_length=MAX_STOP_TOKEN_IDS)] = []
    logit_bias: dict[TokenId, float] | None = None  # vLLM clamps each bias to [-100, 100]
    allowed_token_ids: Annotated[list[TokenId], Meta(min_length=1)] | None = None
    bad_words: list[NonEmptyText] = []  # the coordinator tokenizes them as vLLM does
    structured: StructuredSpec | None = None
