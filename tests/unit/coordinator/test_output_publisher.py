"""services/coordinator/output_publisher.py: vLLM's step outputs -> one wire.Outputs per gateway.

Built from vLLM's own EngineCoreOutput and LogprobsLists, so a change in their
fields fails here by name.
"""

from __future__ import annotations

import numpy as np
from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs, FinishReason
from vllm.v1.metrics.stats import PrefillStats
from vllm.v1.outputs import LogprobsLists

from services.coordinator.output_publisher import OutputPublisher, wire_logprobs
from shared import wire
from tests.unit.coordinator.engine_fakes import Sent, publisher_with

GW1, GW2 = b"gw-1", b"gw-2"


def outputs(*items: EngineCoreOutput) -> dict[int, EngineCoreOutputs]:
    return {0: EngineCoreOutputs(outputs=list(items))}


def test_one_message_per_gateway_per_step() -> None:
    sent = Sent()
    publisher = publisher_with(sent, ("a", GW1), ("b", GW2), ("c", GW1))
    publisher.publish(
        outputs(
            EngineCoreOutput(request_id="a", new_token_ids=[1]),
            EngineCoreOutput(request_id="b", new_token_ids=[2]),
            EngineCoreOutput(request_id="c", new_token_ids=[3, 4]),
        )
    )
    assert [who for who, _ in sent.messages] == [GW1, GW2]
    assert [(o.request_id, o.token_ids) for o in sent.outputs(GW1)] == [("a", [1]), ("c", [3, 4])]
    assert all(o.num_prompt_tokens == 3 and o.finish_reason is None for o in sent.outputs(GW1))


def test_a_finished_request_says_why_and_is_forgotten() -> None:
    sent = Sent()
    publisher = publisher_with(sent, ("a", GW1), ("b", GW1))
    publisher.publish(
        outputs(
            EngineCoreOutput(request_id="a", new_token_ids=[9], finish_reason=FinishReason.LENGTH),
            EngineCoreOutput(
                request_id="b", new_token_ids=[], finish_reason=FinishReason.STOP, stop_reason=42
            ),
        )
    )
    ends = [(o.request_id, o.finish_reason, o.stop_reason) for o in sent.outputs(GW1)]
    assert ends == [("a", "length", None), ("b", "stop", 42)], (
        "vLLM's FinishReason no longer prints as the OpenAI finish_reason"
    )
    assert publisher.running() == []


def test_outputs_of_requests_without_an_owner_are_dropped() -> None:
    sent = Sent()
    publisher = publisher_with(sent, ("a", GW1))
    publisher.forget("a")
    publisher.publish(outputs(EngineCoreOutput(request_id="a", new_token_ids=[1])))
    assert sent.messages == []


def test_logprobs_rows_give_the_sampled_token_then_the_top_ones() -> None:
    lp = LogprobsLists(
        logprob_token_ids=np.array([[5, 5, 8], [6, 9, 6]]),
        logprobs=np.array([[-0.1, -0.1, -2.5], [-0.7, -0.5, -0.7]]),
        sampled_token_ranks=np.array([1, 2]),
    )
    rows = wire_logprobs(lp, 2)
    assert rows == [
        wire.TokenLogprob(
            token_id=5,
            logprob=-0.1,
            rank=1,
            top=[wire.TopLogprob(5, -0.1), wire.TopLogprob(8, -2.5)],
        ),
        wire.TokenLogprob(
            token_id=6,
            logprob=-0.7,
            rank=2,
            top=[wire.TopLogprob(9, -0.5), wire.TopLogprob(6, -0.7)],
        ),
    ], "vLLM's LogprobsLists rows no longer start with the sampled token"
    assert wire_logprobs(lp, 1) == rows[:1]
    assert wire_logprobs(None, 3) is None


def test_a_published_output_carries_its_logprobs() -> None:
    sent = Sent()
    publisher = publisher_with(sent, ("a", GW1))
    lp = LogprobsLists(np.array([[4, 4]]), np.array([[-0.2, -0.2]]), np.array([1]))
    publisher.publish(outputs(EngineCoreOutput(request_id="a", new_token_ids=[4], new_logprobs=lp)))
    (item,) = sent.outputs(GW1)
    assert item.logprobs is not None and item.logprobs[0].token_id == 4


def test_failed_requests_end_with_an_error_for_their_owner() -> None:
    sent = Sent()
    publisher = publisher_with(sent, ("a", GW1), ("b", GW2))
    publisher.fail(["a", "b", "gone"], "stage-1 stopped")
    assert [(o.request_id, o.finish_reason, o.error) for o in sent.outputs(GW2)] == [
        ("b", "error", "stage-1 stopped")
    ]
    assert len(sent.messages) == 2 and publisher.running() == []


def test_a_refusal_marks_whether_the_request_was_at_fault() -> None:
    sent = Sent()
    publisher = OutputPublisher(sent)
    publisher.refuse(GW1, "a", "the prompt is empty", invalid=True)
    (item,) = sent.outputs(GW1)
    assert (item.finish_reason, item.error, item.invalid) == ("error", "the prompt is empty", True)
    assert publisher.running() == []


def test_engine_core_output_has_the_fields_the_publisher_reads() -> None:
    fields = set(EngineCoreOutput.__struct_fields__)
    for name in ("request_id", "new_token_ids", "new_logprobs", "finish_reason", "stop_reason"):
        assert name in fields, (
            f"vLLM's EngineCoreOutput lost {name} "
            "(services/coordinator/output_publisher.py:OutputPublisher.publish)"
        )
    for name in ("logprob_token_ids", "logprobs", "sampled_token_ranks"):
        assert name in LogprobsLists._fields, f"vLLM's LogprobsLists lost {name} (wire_logprobs)"


def test_the_cached_prompt_tokens_of_vllms_prefill_stats_reach_every_later_output() -> None:
    sent = Sent()
    publisher = publisher_with(sent, ("a", GW1))
    stats = PrefillStats()
    stats.set(num_prompt_tokens=3, num_local_cached_tokens=2, num_external_cached_tokens=0)
    publisher.publish(
        outputs(EngineCoreOutput(request_id="a", new_token_ids=[1], prefill_stats=stats))
    )
    publisher.publish(
        outputs(
            EngineCoreOutput(request_id="a", new_token_ids=[2], finish_reason=FinishReason.STOP)
        )
    )
    assert [o.num_cached_tokens for o in sent.outputs(GW1)] == [2, 2], (
        "vLLM's EngineCoreOutput.prefill_stats.num_cached_tokens is not what was sent"
    )
    assert publisher.cached == {}
