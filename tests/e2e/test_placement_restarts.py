"""Placement across restarts and failures (issue 17), every service its own process.

(a) A re-plan gives a stage more layers than its KV memory holds blocks for at the
engine's count: the engine shrinks its KV cache (no stage over-allocates), and a
coordinator restarted afterwards serves again with the stages as they are.
(b) A stage killed while the coordinator configures its first chain is dropped, and
the coordinator plans again with the others instead of exiting.
(c) A coordinator restarted after placing its stages still re-plans when one is lost:
the stages' Register carries their offers, so it does not wait for a replacement.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from tests.e2e.cluster import Cluster, stop_group
from tests.e2e.recovery_helpers import (
    StreamResult,
    healthy,
    run_streams,
    start_stage,
    status,
    wait_for,
)
from tests.e2e.test_placement import (
    active_chain,
    covers,
    new_cluster,
    spawn_gateway,
    spawn_placed,
    stages_by_name,
    texts,
)

pytestmark = pytest.mark.e2e

STREAMS = 4
TOKENS = 16


def total_blocks(cluster: Cluster) -> int:
    return int(status(cluster)["coordinator"]["num_total_blocks"])


def restart_coordinator(cluster: Cluster) -> None:
    """SIGTERM the coordinator, start a new one on its address, wait until it serves."""
    old = status(cluster)["coordinator"]["incarnation"]
    stop_group(cluster.procs["coordinator"])
    cluster.spawn("coordinator-2", ["coordinator", "--bind", cluster.coordinator])

    def serving_again() -> bool:
        now = status(cluster)["coordinator"]
        return bool(now["incarnation"] != old and now["ready"])

    wait_for(serving_again, "the restarted coordinator serves", timeout=300)


def alive(cluster: Cluster, label: str) -> bool:
    return cluster.procs[label].poll() is None


def test_after_a_re_plan_a_restarted_coordinator_serves_the_same_text(
    model_path: str, tmp_path: Path
) -> None:
    # Both placed stages' offers in one plan, even when one measures a little slower.
    cluster = new_cluster(model_path, tmp_path, settle_s=5.0)
    try:
        # A pinned stage keeps 0:10 (its KV cache stays as allocated); two placed stages
        # share 10:30. Each stage has --kv-cache-gb 0.25.
        start_stage(cluster, 0, 10, "pinned")
        labels = {spawn_placed(cluster, label, None): label for label in ("p1", "p2")}
        spawn_gateway(cluster)
        cluster.wait_healthy(600)
        wait_for(lambda: covers(active_chain(cluster)) and len(active_chain(cluster)) == 3,
                 "three stages serve", timeout=300)
        reference = texts(run_streams(cluster.url, STREAMS, TOKENS))
        before = total_blocks(cluster)
        victim = next(n for n, a, _ in active_chain(cluster) if a == 10)
        survivor = next(n for n in labels if n != victim)

        def kill(_: list[StreamResult]) -> None:
            os.kill(cluster.procs[labels[victim]].pid, signal.SIGKILL)

        assert texts(run_streams(cluster.url, STREAMS, TOKENS, during=kill)) == reference
        chain = active_chain(cluster)
        assert sorted((a, b) for _, a, b in chain) == [(0, 10), (10, 30)], chain
        # The survivor's 0.25 GiB holds half the blocks for 20 layers it held for 10:
        # the engine took that count instead of over-allocating the stage.
        after = total_blocks(cluster)
        assert after < before, (before, after)
        log = cluster.tail("coordinator", 400)
        assert re.search(r"the KV cache shrinks from \d+ to \d+ blocks: " + survivor, log), log
        assert "the first of the" in cluster.tail("pinned", 100), "the pinned stage kept its cache"

        # Restart the coordinator: the stages keep what they hold and register again.
        restart_coordinator(cluster)
        assert texts(run_streams(cluster.url, STREAMS, TOKENS)) == reference
        assert alive(cluster, "coordinator-2") and alive(cluster, "pinned")
        assert alive(cluster, labels[survivor])
        assert total_blocks(cluster) == after
        reloads = cluster.tail(labels[survivor], 400).count("reloading for layers")
        assert reloads == 1, "only the re-plan reloaded the survivor, not the restart"
        assert "could not configure" not in cluster.tail("coordinator-2", 400)
    finally:
        cluster.stop()


def test_a_stage_killed_during_the_first_configure_is_dropped_and_the_others_serve(
    model_path: str, tmp_path: Path
) -> None:
    cluster = new_cluster(model_path, tmp_path)
    try:
        labels = {spawn_placed(cluster, label, None): label for label in ("p1", "p2")}
        spawn_gateway(cluster)
        # The coordinator says which chain it starts the engine on, then configures it
        # last stage first: the first stage, killed now, is never configured. (Usually
        # two stages share the layers; a late offer waits as a standby, which serves then.)
        started = re.compile(r"all layers covered: (\S+)\[0:\d+\].*; starting the engine")

        def first_stage() -> str:
            found = started.search(cluster.tail("coordinator", 200))
            assert found is not None
            return found.group(1)

        wait_for(lambda: bool(first_stage()), "the engine starts", timeout=600, every=0.05)
        victim = first_stage()
        os.kill(cluster.procs[labels[victim]].pid, signal.SIGKILL)
        wait_for(lambda: healthy(cluster), "the coordinator serves with the other", timeout=300)
        assert alive(cluster, "coordinator")
        log = cluster.tail("coordinator", 400)
        assert f"dropping {victim}[0:" in log, log
        chain = active_chain(cluster)
        assert len(chain) == 1 and chain[0][0] != victim and covers(chain), chain
        got = run_streams(cluster.url, 4, 8)
        assert texts(got)[3].startswith("The capital of France is Paris"), texts(got)
    finally:
        cluster.stop()



def test_a_restarted_coordinator_re_plans_a_lost_placed_stage_over_the_others(
    model_path: str, tmp_path: Path
) -> None:
    # Both offers in one plan, even when one measures a little slower.
    cluster = new_cluster(model_path, tmp_path, settle_s=5.0)
    try:
        labels = {spawn_placed(cluster, label, None): label for label in ("p1", "p2")}
        spawn_gateway(cluster)
        cluster.wait_healthy(600)
        wait_for(lambda: covers(active_chain(cluster)) and len(active_chain(cluster)) == 2,
                 "two placed stages serve", timeout=300)
        restart_coordinator(cluster)
        # The new coordinator knows the stages as placed (their Register carried the offer).
        assert all(stages_by_name(cluster)[name]["placed"] for name in labels)
        reference = texts(run_streams(cluster.url, STREAMS, TOKENS))
        victim, survivor = (name for name, _, _ in active_chain(cluster))

        def kill(_: list[StreamResult]) -> None:
            os.kill(cluster.procs[labels[victim]].pid, signal.SIGKILL)

        assert texts(run_streams(cluster.url, STREAMS, TOKENS, during=kill)) == reference
        assert active_chain(cluster) == [(survivor, 0, 30)]
        log = cluster.tail("coordinator-2", 400)
        assert "re-planned over the live stages" in log, log
        assert f"new split: {survivor}[0:30]" in log, log
    finally:
        cluster.stop()
