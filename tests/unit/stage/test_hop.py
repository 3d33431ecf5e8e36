"""The activation hop with a fake worker and fake sockets (services/stage/hop.py).

Only vLLM's SchedulerOutput is real here (the plan is rebuilt into one before
the worker runs); the worker, the links and the control socket are fakes that
record what the hop hands them.
"""

from __future__ import annotations

import itertools
import queue
import threading
from types import SimpleNamespace
from typing import Any

from services.stage.hop import ActivationHop
from services.stage.membership import Membership
from services.stage.metrics import StageMetrics
from services.stage.plan_validation import PlanLimits
from services.stage.step_stats import StepStats
from shared import codec, dropped, wire

COORDINATOR = "C" * 40
UPSTREAM = "U" * 40
LAST = "L" * 40
GENERATION = 3
LIMITS = PlanLimits(
    num_blocks=8,
    num_kv_groups=1,
    block_size=16,
    vocab_size=100,
    max_model_len=64,
    max_num_seqs=4,
    max_num_batched_tokens=32,
    hidden_size=4,
)
_names = itertools.count()


class Frame(bytes):
    """A received frame that names the CURVE key that sent it, as zmq.Frame's User-Id does."""

    user = ""

    def get(self, prop: str) -> str:
        assert prop == "User-Id"
        return self.user


def frames_of(msg: wire.Step | wire.Tokens, sender: str = "") -> list[Any]:
    """What the activation ROUTER receives: identity, tag, body (from sender's key)."""
    tag, body = codec.encode(msg)
    last = Frame(body)
    last.user = sender
    return [b"peer", tag, last]


def plan(rows: dict[str, list[int]], sources: dict[str, list[int]] | None = None) -> wire.StepPlan:
    ids = list(rows)
    return wire.StepPlan(
        new_requests=[],
        cached=wire.CachedRequestsPlan(
            req_ids=ids,
            resumed_req_ids=[],
            new_token_ids=[list(rows[r]) for r in ids],
            all_token_ids={},
            new_block_ids=[None] * len(ids),
            num_computed_tokens=[10] * len(ids),
            num_output_tokens=[1] * len(ids),
        ),
        num_scheduled_tokens={r: len(rows[r]) for r in ids},
        total_num_scheduled_tokens=sum(len(v) for v in rows.values()),
        finished_req_ids=[],
        token_sources=sources or {},
    )


def step(step_id: int, p: wire.StepPlan, generation: int = GENERATION) -> wire.Step:
    return wire.Step(step_id=step_id, plan=p, tensors=[], generation=generation)


class FakeWorker:
    """Runs nothing: records each SchedulerOutput, samples token 7 for every request."""

    def __init__(self, is_first: bool = False, is_last: bool = False) -> None:
        self.is_first, self.is_last = is_first, is_last
        self.ran: list[Any] = []
        self.fail: Exception | None = None

    def adopt(self, resumed: list[Any]) -> None:
        assert resumed == []

    def run(self, scheduler_output: Any, tensors: Any, grammar: Any) -> tuple[Any, Any]:
        if self.fail is not None:
            raise self.fail
        self.ran.append(scheduler_output)
        ids = list(scheduler_output.num_scheduled_tokens)
        return {}, SimpleNamespace(req_ids=ids, sampled_token_ids=[[7]] * len(ids), logprobs=None)


class Recorder:
    """Stands in for the control DEALER, the next hop and the ring link; logs in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        self.waits = 0
        self.connected = True
        self.ring_address = ""

    # control DEALER
    def send_multipart(self, parts: list[Any], flags: int = 0) -> None:
        self.log.append(("coordinator", codec.decode(parts)))

    # NextHop
    def open(self, address: str, key: str) -> None:
        self.connected = bool(address)

    def wait_for_sends(self) -> None:
        self.waits += 1

    def send(self, frames: list[Any]) -> None:
        self.log.append(("next", codec.decode(frames)))

    def close(self) -> None:
        pass


class FakeRing:
    """Stands in for RingLink, logging into the Recorder's list."""

    def __init__(self, out: Recorder) -> None:
        self.out = out
        self.address = ""

    def open(self, address: str, key: str) -> None:
        self.address = address

    @property
    def active(self) -> bool:
        return bool(self.address)

    def send(self, msg: wire.Tokens) -> None:
        self.out.log.append(("ring", msg))

    def close(self) -> None:
        pass


def make_hop(
    worker: FakeWorker,
    secure: bool = False,
    fed: bool = False,
    ring: str = "",
    results: Any = None,
) -> tuple[ActivationHop, Recorder]:
    chain = Membership(COORDINATOR.encode(), secure)
    chain.generation, chain.in_chain, chain.limits = GENERATION, True, LIMITS
    # The first stage's steps come from the coordinator, its ring tokens from the last stage.
    chain.admit_keys("" if fed else UPSTREAM, LAST if fed else "")
    out = Recorder()
    hop = ActivationHop(
        f"hop-test-{next(_names)}",
        worker,  # type: ignore[arg-type]
        chain,
        out,  # type: ignore[arg-type]
        out,  # type: ignore[arg-type]
        FakeRing(out),  # type: ignore[arg-type]
        StageMetrics("hop-test", 0, 1),
        StepStats(),
        results,
    )
    hop.open_ring(GENERATION, fed=fed, address=ring, key="")
    return hop, out


def test_a_middle_stage_runs_a_step_and_passes_it_on() -> None:
    worker = FakeWorker()
    hop, out = make_hop(worker)
    hop.on_data(frames_of(step(1, plan({"a": [5]}))))
    assert len(worker.ran) == 1 and worker.ran[0].num_scheduled_tokens == {"a": 1}
    assert out.waits == 1  # the previous activations left before the runner reuses memory
    [(where, sent)] = out.log
    assert where == "next" and isinstance(sent, wire.Step)
    assert (sent.step_id, sent.generation, sent.plan) == (1, GENERATION, plan({"a": [5]}))
    assert hop.stats.steps == 1


def test_steps_from_a_peer_other_than_the_upstream_hop_are_dropped() -> None:
    worker = FakeWorker()
    hop, out = make_hop(worker, secure=True)
    before = dropped.count("stage-data", "unauthorized")
    hop.on_data(frames_of(step(1, plan({"a": [5]})), sender=LAST))
    assert dropped.count("stage-data", "unauthorized") == before + 1
    assert worker.ran == [] and out.log == []
    hop.on_data(frames_of(step(2, plan({"a": [5]})), sender=UPSTREAM))
    assert len(worker.ran) == 1


def test_a_step_of_an_earlier_chain_is_dropped_without_an_answer() -> None:
    worker = FakeWorker()
    hop, out = make_hop(worker)
    before = dropped.count("stage-data", "stale")
    hop.on_data(frames_of(step(1, plan({"a": [5]}), generation=GENERATION - 1)))
    assert dropped.count("stage-data", "stale") == before + 1
    assert worker.ran == [] and out.log == []


def test_an_invalid_step_is_refused_and_reported_failed() -> None:
    worker = FakeWorker()
    hop, out = make_hop(worker)
    before = dropped.count("stage-data", "invalid")
    hop.on_data(frames_of(step(4, plan({"a": [100]}))))  # token id past the vocabulary
    assert dropped.count("stage-data", "invalid") == before + 1
    assert worker.ran == []
    [(where, result)] = out.log
    assert where == "coordinator" and isinstance(result, wire.StepResult)
    assert result.step_id == 4 and result.generation == GENERATION
    assert result.error.startswith(f"{hop.name}: refused an invalid step: ")
    assert "token id 100 outside [0, 100)" in result.error


def test_a_malformed_message_is_dropped() -> None:
    hop, out = make_hop(FakeWorker())
    before = dropped.count("stage-data", "malformed")
    hop.on_data([b"peer", *codec.encode(wire.Reset(generation=1))])
    assert dropped.count("stage-data", "malformed") == before + 1
    assert out.log == []


def test_a_step_the_worker_fails_is_reported_and_counted() -> None:
    worker = FakeWorker()
    worker.fail = RuntimeError("out of memory")
    hop, out = make_hop(worker)
    hop.on_data(frames_of(step(6, plan({"a": [5]}))))
    [(where, result)] = out.log
    assert where == "coordinator" and isinstance(result, wire.StepResult)
    assert result.error == f"{hop.name}: RuntimeError: out of memory"
    assert hop.stats.steps == 1  # the time it took still counts as busy


def test_the_first_stage_waits_for_ring_tokens_from_the_last_stage() -> None:
    worker = FakeWorker(is_first=True)
    hop, out = make_hop(worker, secure=True, fed=True)
    hop.on_data(frames_of(step(5, plan({"a": [-1]}, {"a": [4]})), sender=COORDINATOR))
    assert worker.ran == [] and hop.ring.waiting() == 1
    tokens = wire.Tokens(step_id=4, generation=GENERATION, req_ids=["a"], sampled_token_ids=[[42]])
    before = dropped.count("stage-data", "unauthorized")
    hop.on_data(frames_of(tokens, sender=UPSTREAM))  # only the last stage sends tokens
    assert dropped.count("stage-data", "unauthorized") == before + 1
    assert worker.ran == []
    hop.on_data(frames_of(tokens, sender=LAST))
    assert hop.ring.waiting() == 0
    [(where, sent)] = out.log
    assert where == "next" and isinstance(sent, wire.Step)
    assert sent.plan.cached.new_token_ids == [[42]] and sent.plan.token_sources == {}


def test_a_step_that_failed_on_the_way_frees_the_plans_behind_it() -> None:
    worker = FakeWorker(is_first=True)
    hop, out = make_hop(worker, secure=True, fed=True)
    hop.on_data(frames_of(step(5, plan({"a": [-1]}, {"a": [4]})), sender=COORDINATOR))
    failed = wire.Tokens(step_id=4, generation=GENERATION, failed=True)
    hop.on_data(frames_of(failed, sender=COORDINATOR))
    assert len(worker.ran) == 1  # token 0 stands in; the coordinator failed that request


def test_a_plan_whose_step_fails_here_does_not_hold_back_the_next() -> None:
    worker = FakeWorker(is_first=True)
    hop, out = make_hop(worker, fed=True)
    worker.fail = RuntimeError("boom")
    hop.on_data(frames_of(step(5, plan({"a": [5]}))))
    worker.fail = None
    hop.on_data(frames_of(step(6, plan({"a": [-1]}, {"a": [5]}))))
    assert len(worker.ran) == 1
    assert [where for where, _ in out.log] == ["coordinator", "next"]


def test_a_new_chain_drops_the_plans_waiting_for_the_old_ones_tokens() -> None:
    hop, _ = make_hop(FakeWorker(is_first=True), fed=True)
    hop.on_data(frames_of(step(5, plan({"a": [-1]}, {"a": [4]}))))
    hop.open_ring(GENERATION + 1, fed=True, address="", key="")
    assert hop.ring.waiting() == 0 and hop.ring.generation == GENERATION + 1


def test_ring_tokens_at_a_stage_that_does_not_wait_for_them_are_stale() -> None:
    hop, _ = make_hop(FakeWorker())
    before = dropped.count("stage-data", "stale")
    hop.on_data(frames_of(wire.Tokens(step_id=1, generation=GENERATION)))
    assert dropped.count("stage-data", "stale") == before + 1


def test_the_last_stage_sends_tokens_round_the_ring_before_the_result() -> None:
    worker = FakeWorker(is_last=True)
    hop, out = make_hop(worker, ring="tcp://127.0.0.1:1")
    hop.on_data(frames_of(step(8, plan({"a": [5], "b": [6]}))))
    assert [where for where, _ in out.log] == ["ring", "coordinator"]
    tokens, result = out.log[0][1], out.log[1][1]
    assert tokens == wire.Tokens(
        step_id=8, generation=GENERATION, req_ids=["a", "b"], sampled_token_ids=[[7], [7]]
    )
    assert isinstance(result, wire.StepResult)
    assert (result.step_id, result.generation, result.req_ids) == (8, GENERATION, ["a", "b"])
    assert result.sampled_token_ids == [[7], [7]] and result.error == ""


def test_a_single_stage_sends_only_the_result() -> None:
    hop, out = make_hop(FakeWorker(is_first=True, is_last=True))
    hop.on_data(frames_of(step(1, plan({"a": [5]}))))
    assert [where for where, _ in out.log] == ["coordinator"]


def test_a_middle_stage_without_a_next_hop_sends_nothing() -> None:
    worker = FakeWorker()
    hop, out = make_hop(worker)
    hop.open_next("", "")
    hop.on_data(frames_of(step(1, plan({"a": [5]}))))
    assert len(worker.ran) == 1 and out.log == []


class Pending:
    """An async runner's output: its tokens reach the host when `copied` is set."""

    def __init__(self, output: Any, copied: threading.Event) -> None:
        self.output, self.copied = output, copied

    def get_output(self) -> Any:
        assert self.copied.wait(10)
        return self.output


class ResultsSocket:
    """Stands in for the output thread's DEALER: records each result and the sending thread."""

    def __init__(self) -> None:
        self.sent: queue.SimpleQueue[tuple[Any, str]] = queue.SimpleQueue()

    def send_multipart(self, parts: list[Any]) -> None:
        self.sent.put((codec.decode(parts), threading.current_thread().name))

    def close(self, linger: int = 0) -> None:
        pass


def test_async_runner_results_leave_from_the_output_thread_while_the_next_step_runs() -> None:
    copied = threading.Event()
    worker = FakeWorker(is_first=True, is_last=True)
    run = worker.run

    def async_run(scheduler_output: Any, tensors: Any, grammar: Any) -> tuple[Any, Any]:
        _, output = run(scheduler_output, tensors, grammar)
        return None, Pending(output, copied)

    worker.run = async_run  # type: ignore[method-assign]
    results = ResultsSocket()
    hop, out = make_hop(worker, results=results)
    try:
        hop.on_data(frames_of(step(1, plan({"a": [5]}))))
        hop.on_data(frames_of(step(2, plan({"a": [6]}))))  # runs before step 1's tokens are in
        assert len(worker.ran) == 2 and results.sent.empty()
        copied.set()
        first, second = results.sent.get(timeout=10), results.sent.get(timeout=10)
        assert [(r.step_id, r.generation, r.req_ids) for r, _ in (first, second)] == [
            (1, GENERATION, ["a"]),
            (2, GENERATION, ["a"]),
        ]
        assert {thread for _, thread in (first, second)} == {"outputs"}
        assert out.log == []  # nothing on the main thread's control socket
    finally:
        hop.close()


def test_an_async_step_whose_tokens_never_arrive_is_reported_failed() -> None:
    class Broken:
        def get_output(self) -> Any:
            raise RuntimeError("CUDA error: an illegal memory access")

    worker = FakeWorker(is_first=True, is_last=True)
    worker.run = lambda *a: (None, Broken())  # type: ignore[method-assign]
    results = ResultsSocket()
    hop, _ = make_hop(worker, results=results)
    try:
        hop.on_data(frames_of(step(4, plan({"a": [5]}))))
        failed, _ = results.sent.get(timeout=10)
        assert (failed.step_id, failed.generation) == (4, GENERATION)
        assert "illegal memory access" in failed.error and failed.req_ids == []
    finally:
        hop.close()
