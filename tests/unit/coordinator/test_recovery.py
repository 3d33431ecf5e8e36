"""services/coordinator/recovery.py: adopting offered chains, and giving up in time."""

from __future__ import annotations

from services.coordinator.pipeline import PipelineFailed
from services.coordinator.recovery import (
    RETRY_S,
    ChainRebuild,
    Rebuilt,
    Unavailable,
    unavailable_message,
)
from tests.unit.coordinator.engine_fakes import FakeLink, FakeStage


class Clock:
    """Monotonic time the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def rebuild_of(link: FakeLink, clock: Clock) -> ChainRebuild:
    return ChainRebuild(link, 30.0, 60.0, clock)  # type: ignore[arg-type]


def broken_chain() -> tuple[FakeLink, list[FakeStage]]:
    s0, s1 = FakeStage("s0", (0, 2)), FakeStage("s1", (2, 4), state="dead")
    link = FakeLink([s0, s1])
    link.broken = "s1 stopped responding"
    return link, [s0, FakeStage("s1b", (2, 4))]


def test_an_offered_chain_is_configured_afresh_and_serves() -> None:
    link, replacement = broken_chain()
    rebuild = rebuild_of(link, Clock())
    assert link.chain_requests == 1 and rebuild.poll() is None
    link.offers.append(replacement)
    assert rebuild.poll() == Rebuilt("s0 -> s1b")
    assert link.broken is None and link.reconfigured == [["s0", "s1b"]]


def test_a_chain_that_fails_to_configure_is_dropped_and_another_asked_for() -> None:
    link, replacement = broken_chain()
    rebuild = rebuild_of(link, Clock())
    link.offers.append(replacement)
    link.reconfigure_error = PipelineFailed("s1b could not configure: out of memory")
    clock = rebuild.clock
    assert rebuild.poll() is None
    assert link.broken == "s1b could not configure: out of memory"
    # The same live stages would offer the same chain at once: asked for again a little later.
    assert link.chain_requests == 1
    clock.now += RETRY_S  # type: ignore[attr-defined]
    assert rebuild.poll() is None and link.chain_requests == 2


def test_a_chain_is_sized_before_it_is_configured_and_a_refused_size_is_not_configured() -> None:
    link, replacement = broken_chain()
    prepared: list[list[str]] = []

    def prepare(chain: list[FakeStage]) -> None:
        prepared.append([r.name for r in chain])
        if len(prepared) == 1:
            raise PipelineFailed("s1b cannot hold the KV cache of one request")

    rebuild = ChainRebuild(link, 30.0, 60.0, Clock(), prepare=prepare)  # type: ignore[arg-type]
    link.offers.append(replacement)
    assert rebuild.poll() is None and link.reconfigured == []
    assert link.broken == "s1b cannot hold the KV cache of one request"
    rebuild.clock.now += RETRY_S  # type: ignore[attr-defined]
    link.offers.append(replacement)
    assert rebuild.poll() == Rebuilt("s0 -> s1b")
    assert prepared == [["s0", "s1b"], ["s0", "s1b"]] and link.reconfigured == [["s0", "s1b"]]


def test_a_stage_dying_while_configuring_leaves_the_chain_broken() -> None:
    link, replacement = broken_chain()
    rebuild = rebuild_of(link, Clock())
    link.offers.append(replacement)
    link.dies_while_configuring = True
    assert rebuild.poll() is None and link.broken == "s1b died"


def test_no_chain_in_time_makes_the_pipeline_unavailable_once() -> None:
    link, replacement = broken_chain()
    clock = Clock()
    rebuild = rebuild_of(link, clock)
    clock.now += 60.0
    assert rebuild.poll() is None  # not past the deadline yet
    clock.now += 0.1
    outcome = rebuild.poll()
    assert isinstance(outcome, Unavailable) and "layers 2:4" in outcome.message
    assert link.failure == outcome.message
    assert rebuild.poll() is None  # said once; the rebuild goes on waiting
    link.offers.append(replacement)
    assert rebuild.poll() == Rebuilt("s0 -> s1b")


def test_the_unavailable_message_names_the_missing_layers_and_the_setting() -> None:
    message = unavailable_message(
        [(2, 4), (0, 2), (4, 6)], [FakeStage("s0", (0, 2))], timeout_s=60.0
    )
    assert "no stage for layers 2:4, 4:6 joined within 60 s" in message
    assert "LAYERBUS_RECOVERY_TIMEOUT_S" in message
    assert "layers ? joined" in unavailable_message([(0, 2)], [FakeStage("s0", (0, 2))], 5.0)
