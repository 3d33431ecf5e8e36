"""Gateway <-> coordinator: Generate, Abort and what the coordinator answers them."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from shared.wire.sampling import SamplingSpec, TokenId


class Generate(msgspec.Struct):
    """Gateway -> coordinator: start generating for one sequence."""

    request_id: str
    prompt_token_ids: Annotated[list[TokenId], Meta(min_length=1)]
    sampling: SamplingSpec


class Abort(msgspec.Struct):
    """Gateway -> coordinator: stop these requests and free their KV blocks."""

    request_ids: list[str]


class TopLogprob(msgspec.Struct, array_like=True):
    """One candidate token and its log-probability."""

    token_id: int
    logprob: float


class TokenLogprob(msgspec.Struct, array_like=True):
    """Log-probability of a sampled token, its rank and the top candidates."""

    token_id: int
    logprob: float
    rank: int
    top: list[TopLogprob]


class RequestOutput(msgspec.Struct, omit_defaults=True):
    """New tokens of one request since the last output.

    finish_reason is "stop", "length" or "abort" once the request is done;
    error is set (and finish_reason "error") when the pipeline failed it.
    """

    request_id: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    error: str | None = None
    invalid: bool = False  # the request itself is at fault (HTTP 400), not the service


class Outputs(msgspec.Struct):
    """Coordinator -> gateway: a batch of request outputs from one engine step."""

    items: list[RequestOutput]


class Accepted(msgspec.Struct):
    """Coordinator -> gateway: these Generate messages reached this incarnation.

    Sent by the coordinator's I/O thread on receipt, before it answers any later
    message from that gateway, so a gateway that gets a Status reply knows which of
    the requests it sent before that query the answering incarnation holds.
    """

    request_ids: list[str]
    incarnation: str
