"""The coordinator requests behind one HTTP request: n x prompts sequences, merged."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import msgspec

from services.gateway.coordinator_client import (
    CoordinatorClient,
    CoordinatorUnavailable,
    OutputStream,
)
from services.gateway.errors import unavailable
from services.gateway.sequence import SeqDelta, SequenceState, TextOptions, TokenTexts
from shared import wire


@dataclass(frozen=True)
class PromptPlan:
    """One tokenized prompt and the sampling spec of its sequences; immutable value."""

    token_ids: list[int]
    sampling: wire.SamplingSpec


def new_request_id(prefix: str) -> str:
    """An id unique across gateways, e.g. chatcmpl-1f0c..."""
    return f"{prefix}-{uuid.uuid4().hex}"


class Generation:
    """Fans one HTTP request out to the coordinator and merges outputs; owned by its task.

    There are len(prompts) * n coordinator requests.

    Choice index i*n + j is prompt i, sample j; its coordinator id is `<id>-<index>`.
    """

    def __init__(
        self,
        client: CoordinatorClient,
        tokens: TokenTexts,
        request_id: str,
        prompts: Sequence[PromptPlan],
        n: int,
        options: TextOptions,
    ) -> None:
        self.request_id = request_id
        self._client = client
        self._stream: OutputStream | None = None
        self._messages: list[wire.Generate] = []
        self.sequences: list[SequenceState] = []
        for i, prompt in enumerate(prompts):
            for j in range(n):
                index = i * n + j
                sub_id = f"{request_id}-{index}"
                sampling = prompt.sampling
                if sampling.seed is not None and n > 1:
                    # Same seed on every sample would give n identical answers.
                    sampling = msgspec.structs.replace(sampling, seed=sampling.seed + j)
                self._messages.append(wire.Generate(sub_id, prompt.token_ids, sampling))
                self.sequences.append(
                    SequenceState(index, sub_id, tokens, prompt.token_ids, options)
                )
        self.prompt_tokens = sum(len(p.token_ids) for p in prompts)
        self._by_id = {seq.request_id: seq for seq in self.sequences}

    @property
    def request_ids(self) -> list[str]:
        """Coordinator request ids of all sequences."""
        return [seq.request_id for seq in self.sequences]

    @property
    def completion_tokens(self) -> int:
        """Tokens generated so far over all sequences."""
        return sum(seq.num_tokens for seq in self.sequences)

    def start(self) -> None:
        """Send the Generate messages; 503 if the coordinator cannot take them."""
        try:
            self._stream = self._client.generate(self._messages)
        except CoordinatorUnavailable as err:
            raise unavailable(str(err), code="coordinator_unavailable") from None

    async def deltas(self) -> AsyncIterator[SeqDelta]:
        """Client-visible changes in arrival order, until every sequence has finished."""
        if self._stream is None:
            self.start()
        assert self._stream is not None
        # Ends when every sequence finished, or early if close() aborted the rest.
        while self._stream.unfinished:
            out = await self._stream.get()
            seq = self._by_id.get(out.request_id)
            if seq is None:
                continue
            delta = seq.process(out)
            if seq.finished and out.finish_reason is None:
                # Stopped by a stop string: the coordinator is still generating.
                self._stream.finish([seq.request_id])
            yield delta

    def close(self) -> None:
        """Abort whatever is still running; safe to call any number of times."""
        if self._stream is not None:
            self._stream.close()
