"""EngineCore's outputs -> wire.Outputs for the gateway that asked (no sockets, no vLLM import).

Each running request belongs to the gateway (ROUTER identity) that submitted it.
One engine step's outputs go out as one wire.Outputs per gateway. A request that
finishes, fails or is aborted is forgotten here and in vLLM's metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from services.coordinator.engine_stats import EngineStats
from shared import wire

Send = Callable[[bytes, msgspec.Struct], None]


def wire_logprobs(lp: Any, count: int) -> list[wire.TokenLogprob] | None:
    """vLLM's LogprobsLists (row i: the sampled token, then the top ones) -> wire rows."""
    if lp is None:
        return None
    rows = []
    ids, values, ranks = lp.logprob_token_ids, lp.logprobs, lp.sampled_token_ranks
    for i in range(min(count, len(ids))):
        top = [
            wire.TopLogprob(token_id=int(t), logprob=float(v))
            for t, v in zip(ids[i][1:], values[i][1:], strict=False)
        ]
        rows.append(
            wire.TokenLogprob(
                token_id=int(ids[i][0]), logprob=float(values[i][0]), rank=int(ranks[i]), top=top
            )
        )
    return rows


class OutputPublisher:
    """Which gateway owns each running request, and what it is sent; engine thread only."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.owner: dict[str, bytes] = {}
        self.prompt_len: dict[str, int] = {}
        # Prompt tokens served from the prefix cache: vLLM reports them once, in the
        # prefill_stats of a request's first output; every later output repeats them.
        self.cached: dict[str, int] = {}
        self.stats: EngineStats | None = None  # vllm:* metrics, set once EngineCore runs

    def adopt(self, rid: str, identity: bytes, prompt_len: int) -> None:
        """A request entered EngineCore on behalf of `identity`."""
        self.owner[rid] = identity
        self.prompt_len[rid] = prompt_len

    def owner_of(self, rid: str) -> bytes | None:
        return self.owner.get(rid)

    def running(self) -> list[str]:
        """Every request that has an owner, oldest first."""
        return list(self.owner)

    def forget(self, rid: str) -> None:
        self.owner.pop(rid, None)
        self.prompt_len.pop(rid, None)
        self.cached.pop(rid, None)
        if self.stats is not None:
            self.stats.forget(rid)

    def publish(self, outputs: dict[int, Any]) -> None:
        """One step's EngineCoreOutputs (client index -> outputs) to their owners."""
        by_owner: dict[bytes, list[wire.RequestOutput]] = {}
        for eco in outputs.values():
            for o in eco.outputs:
                identity = self.owner.get(o.request_id)
                if identity is None:
                    continue
                finish = None if o.finish_reason is None else str(o.finish_reason)
                if o.prefill_stats is not None:
                    self.cached[o.request_id] = o.prefill_stats.num_cached_tokens
                item = wire.RequestOutput(
                    request_id=o.request_id,
                    token_ids=list(o.new_token_ids),
                    logprobs=wire_logprobs(o.new_logprobs, len(o.new_token_ids)),
                    finish_reason=finish,
                    stop_reason=o.stop_reason,
                    num_prompt_tokens=self.prompt_len.get(o.request_id, 0),
                    num_cached_tokens=self.cached.get(o.request_id, 0),
                )
                by_owner.setdefault(identity, []).append(item)
                if finish is not None:
                    self.forget(o.request_id)
        for identity, items in by_owner.items():
            self.send(identity, wire.Outputs(items=items))

    def fail(self, rids: Iterable[str], reason: str) -> None:
        """End these requests with an error; each owner gets one message."""
        by_owner: dict[bytes, list[wire.RequestOutput]] = {}
        for rid in rids:
            identity = self.owner.get(rid)
            if identity is None:
                continue
            item = wire.RequestOutput(
                request_id=rid, token_ids=[], finish_reason="error", error=reason
            )
            by_owner.setdefault(identity, []).append(item)
            self.forget(rid)
        for identity, items in by_owner.items():
            self.send(identity, wire.Outputs(items=items))

    def refuse(self, identity: bytes, rid: str, error: str, invalid: bool) -> None:
        """Answer a request EngineCore never took (invalid: the request itself is at fault)."""
        out = wire.RequestOutput(
            request_id=rid, token_ids=[], finish_reason="error", error=error, invalid=invalid
        )
        self.send(identity, wire.Outputs(items=[out]))
