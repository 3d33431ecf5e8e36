"""PipelineExecutor: pairs each step's sample future with its own step (no sockets)."""

from __future__ import annotations

import inspect
from concurrent.futures import Future
from typing import Any

import pytest
from vllm.v1.core.sched.output import SchedulerOutput
from vllm.v1.executor.abstract import Executor
from vllm.v1.outputs import EMPTY_MODEL_RUNNER_OUTPUT

from services.coordinator.executor import PipelineExecutor
from services.coordinator.pipeline import PipelineFailed
from shared import wire


class FakeLink:
    """Records submitted plans; the test resolves their futures."""

    def __init__(self) -> None:
        self.sent: list[tuple[wire.StepPlan, Future[Any]]] = []
        self.chain: list[Any] = []
        self.failure: str | None = None

        self.next_step = 1

    def new_step_id(self) -> int:
        self.next_step += 1
        return self.next_step - 1

    def submit(self, plan: wire.StepPlan, step_id: int | None = None) -> Future[Any]:
        future: Future[Any] = Future()
        self.sent.append((plan, future))
        return future


def make_executor(link: FakeLink) -> PipelineExecutor:
    cls = PipelineExecutor.bind(link, configure_timeout_s=1)  # type: ignore[arg-type]
    executor = object.__new__(cls)  # no VllmConfig needed for the step path
    executor._init_executor()
    return executor


def step(tokens: int) -> SchedulerOutput:
    out = SchedulerOutput.make_empty()
    if tokens:
        out.num_scheduled_tokens = {"a": tokens - 1, "b": 1}
        out.total_num_scheduled_tokens = tokens
    return out


def test_step_with_tokens_samples_from_its_own_result() -> None:
    link = FakeLink()
    ex = make_executor(link)
    assert ex.execute_model(step(3), non_block=True).result() is None
    first = ex.sample_tokens(None, non_block=True)
    assert ex.execute_model(step(2), non_block=True).result() is None
    second = ex.sample_tokens(None, non_block=True)
    # Results arrive in order; each future gets its own step's tokens.
    link.sent[1][1].set_result(wire.StepResult(step_id=2, req_ids=["b"], sampled_token_ids=[[9]]))
    link.sent[0][1].set_result(
        wire.StepResult(step_id=1, req_ids=["a", "b"], sampled_token_ids=[[], [7]])
    )
    out1, out2 = first.result(), second.result()
    assert out1.req_id_to_index == {"a": 0, "b": 1} and out1.sampled_token_ids == [[], [7]]
    assert out2.req_ids == ["b"] and out2.sampled_token_ids == [[9]]


def test_empty_step_still_travels_and_yields_an_empty_output() -> None:
    link = FakeLink()
    ex = make_executor(link)
    future = ex.execute_model(step(0), non_block=True)
    assert len(link.sent) == 1 and not future.done()
    link.sent[0][1].set_result(wire.StepResult(step_id=1, req_ids=[], sampled_token_ids=[]))
    assert future.result() is EMPTY_MODEL_RUNNER_OUTPUT
    with pytest.raises(PipelineFailed):
        ex.sample_tokens(None, non_block=True)


def test_a_failed_step_raises_instead_of_returning_a_placeholder() -> None:
    link = FakeLink()
    ex = make_executor(link)
    ex.execute_model(step(4), non_block=True)
    sample = ex.sample_tokens(None, non_block=True)
    link.sent[0][1].set_exception(PipelineFailed("stage-1 stopped responding"))
    with pytest.raises(PipelineFailed, match="stage-1"):
        sample.result()


def test_every_method_the_executor_overrides_is_still_vllms_by_name_and_parameters() -> None:
    for name, method in vars(PipelineExecutor).items():
        if name.startswith("__") or not callable(method) or name in ("bind", "_plan", "_make_plan"):
            continue
        theirs = getattr(Executor, name, None)
        assert theirs is not None, (
            f"vLLM's Executor no longer has {name}(); EngineCore will not call "
            f"services/coordinator/executor.py:PipelineExecutor.{name}"
        )
        ours, expected = inspect.signature(method), inspect.signature(theirs)
        assert list(ours.parameters) == list(expected.parameters), (
            f"vLLM's Executor.{name}{expected} changed; PipelineExecutor.{name}{ours} must follow"
        )
