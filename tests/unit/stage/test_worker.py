"""The vLLM behaviour StageWorker relies on to hold only layers [start, end) (no model load).

Each failure names the vLLM internal that changed; the e2e equivalence tests would
otherwise fail only as a token mismatch.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from vllm.distributed import parallel_state
from vllm.distributed.utils import get_pp_indices
from vllm.v1.worker.worker_base import WorkerBase, WorkerWrapperBase

from services.stage import worker
from services.stage.layers import local_partition


@pytest.mark.parametrize(("start", "end"), [(0, 30), (0, 15), (15, 30), (4, 24), (29, 30)])
def test_vllms_pp_indices_follow_our_partition(
    start: int, end: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    part = local_partition(start, end, 30)
    monkeypatch.setenv("VLLM_PP_LAYER_PARTITION", part.env_value)
    assert get_pp_indices(30, part.rank, part.size) == (start, end), (
        "vllm.distributed.utils.get_pp_indices must read VLLM_PP_LAYER_PARTITION: the stage "
        "loads exactly the layers of its pipeline rank"
    )


def test_the_pp_group_reports_the_rank_we_install(monkeypatch: pytest.MonkeyPatch) -> None:
    group = SimpleNamespace(world_size=1, rank_in_group=0, ranks=[0], rank=0)
    monkeypatch.setattr(parallel_state, "get_pp_group", lambda: group)
    part = local_partition(15, 30, 30)
    worker._install_pipeline_rank(part)
    assert (group.world_size, group.rank_in_group) == (part.size, part.rank)
    assert group.ranks == [k - part.rank for k in range(part.size)]
    coordinator = parallel_state.GroupCoordinator
    # Model code asks is_first_rank/is_last_rank; vLLM derives them from rank and ranks.
    group.first_rank = coordinator.first_rank.fget(group)  # type: ignore[attr-defined]
    group.last_rank = coordinator.last_rank.fget(group)  # type: ignore[attr-defined]
    assert coordinator.is_first_rank.fget(group) is False, (  # type: ignore[attr-defined]
        "vLLM's GroupCoordinator.is_first_rank compares rank with ranks[0] (first_rank)"
    )
    assert coordinator.is_last_rank.fget(group) is True, (  # type: ignore[attr-defined]
        "vLLM's GroupCoordinator.is_last_rank compares rank with ranks[-1] (last_rank)"
    )


STAGE_WORKER_CALLS = (
    "init_device",
    "load_model",
    "get_kv_cache_spec",
    "determine_available_memory",
    "get_supported_kv_cache_layouts",
    "set_kv_cache_layout",
    "initialize_from_config",
    "execute_model",
    "sample_tokens",
)


def test_the_worker_wrapper_takes_the_arguments_we_pass() -> None:
    from vllm.v1.worker.cpu_worker import CPUWorker
    from vllm.v1.worker.gpu_worker import Worker

    wrapper = inspect.signature(WorkerWrapperBase.__init__).parameters
    assert "rpc_rank" in wrapper, "WorkerWrapperBase(rpc_rank=0) picks the platform's worker"
    init = list(inspect.signature(WorkerWrapperBase.init_worker).parameters)
    assert init[1:] == ["all_kwargs"], "WorkerWrapperBase.init_worker(all_kwargs)"
    base = inspect.signature(WorkerBase.__init__).parameters
    for name in (
        "vllm_config",
        "local_rank",
        "rank",
        "distributed_init_method",
        "is_driver_worker",
    ):
        assert name in base, f"vLLM's WorkerBase.__init__ takes {name} (StageWorker passes it)"
    for cls in (Worker, CPUWorker):
        for method in STAGE_WORKER_CALLS:
            assert callable(getattr(cls, method, None)), (
                f"vLLM's {cls.__name__}.{method}() (StageWorker calls it)"
            )


def test_sweep_removes_rendezvous_folders_of_dead_stages_only(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(gone.stdout)
    dead = tmp_path / f"layerbus-stage-{dead_pid}-abc"
    alive = tmp_path / f"layerbus-stage-{os.getpid()}-def"
    unrelated = tmp_path / "layerbus-stage-xyz"
    for folder in (dead, alive, unrelated):
        folder.mkdir()
        (folder / "torch-dist-init").write_text("x")
    assert worker.sweep_stale_rendezvous(tmp_path) == [dead]
    assert not dead.exists()
    assert alive.exists() and unrelated.exists()
