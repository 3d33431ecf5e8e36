"""A vLLM worker that holds only layers [start, end) of the model.

vLLM's own pipeline-parallel machinery does the slicing: the worker's pipeline
group is made to report the rank that owns [start, end) in a partition
[0,start) [start,end) [end,L), so load_model() builds PPMissingLayer for every
other layer and never reads their weights. No torch.distributed group spans
stages: activations arrive and leave through ZeroMQ (services/stage/hop.py).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from services.stage.layers import LocalPartition

_RENDEZVOUS_PREFIX = "layerbus-stage-"
_RENDEZVOUS_NAME = re.compile(rf"{_RENDEZVOUS_PREFIX}(\d+)-")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_rendezvous(root: Path) -> list[Path]:
    """Remove rendezvous folders whose stage process is gone (killed stages leave them)."""
    removed = []
    for folder in root.glob(f"{_RENDEZVOUS_PREFIX}*"):
        match = _RENDEZVOUS_NAME.match(folder.name)
        if match and folder.is_dir() and not _pid_alive(int(match.group(1))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _private_init_method() -> str:
    """A file rendezvous for this process's world of one: no port to race for.

    torch's FileStore reopens the file for every operation, so the folder must
    live as long as the process; it goes at exit, and a later stage on the host
    sweeps the folders of stages that were killed.
    """
    root = Path(tempfile.gettempdir())
    sweep_stale_rendezvous(root)
    folder = tempfile.mkdtemp(prefix=f"{_RENDEZVOUS_PREFIX}{os.getpid()}-", dir=root)
    atexit.register(shutil.rmtree, folder, True)
    return f"file://{folder}/torch-dist-init"


def _install_pipeline_rank(part: LocalPartition) -> None:
    """Make vLLM's (single-process) PP group report rank part.rank of part.size."""
    from vllm.distributed import parallel_state

    pp = parallel_state.get_pp_group()
    pp.world_size = part.size
    pp.rank_in_group = part.rank
    pp.ranks = [pp.rank - part.rank + k for k in range(part.size)]


class StageWorker:
    """Owns one vLLM worker for a layer slice; used only by the stage's main thread."""

    def __init__(self, vllm_config: Any, part: LocalPartition, threads: int | None) -> None:
        from vllm.config import set_current_vllm_config

        os.environ["VLLM_PP_LAYER_PARTITION"] = part.env_value
        if threads:
            torch.set_num_threads(threads)
        self.part = part
        self.vllm_config = vllm_config
        # vLLM's async model runner (a whole model on a GPU): sampling returns before
        # the tokens reach the host, and the next step's input stays on the GPU.
        self.async_output = bool(vllm_config.scheduler_config.async_scheduling)
        from vllm.v1.worker.worker_base import WorkerWrapperBase

        # vLLM's own wrapper picks the platform's worker class (CPU or GPU) and
        # installs the platform's kernel overrides before any model code runs.
        wrapper = WorkerWrapperBase(rpc_rank=0)
        wrapper.init_worker(
            [
                {
                    "vllm_config": vllm_config,
                    "local_rank": 0,
                    "rank": 0,
                    "distributed_init_method": _private_init_method(),
                    "is_driver_worker": True,
                }
            ]
        )
        self.worker: Any = wrapper.worker
        self._config_ctx = set_current_vllm_config(vllm_config)
        self._config_ctx.__enter__()
        self.worker.init_device()
        _install_pipeline_rank(part)
        self.worker.load_model()

    @property
    def is_first(self) -> bool:
        return self.part.rank == 0

    @property
    def is_last(self) -> bool:
        return self.part.rank == self.part.size - 1

    def parameter_names(self) -> list[str]:
        """Names of the parameters this worker actually holds."""
        model = self.worker.model_runner.get_model()
        return [name for name, _ in model.named_parameters()]

    def loaded_summary(self) -> tuple[list[int], list[str]]:
        """Decoder layer indices with parameters here, and every other parameter name."""
        layers: set[int] = set()
        others: list[str] = []
        for name in self.parameter_names():
            match = re.search(r"\.layers\.(\d+)\.", name)
            if match:
                layers.add(int(match.group(1)))
            else:
                others.append(name)
        return sorted(layers), sorted(others)

    def kv_cache_spec(self) -> dict[str, Any]:
        return dict(self.worker.get_kv_cache_spec())

    def available_kv_bytes(self) -> int:
        """Free memory for the KV cache, profiled by vLLM (GPU) or as configured (CPU).

        A GPU worker capturing full CUDA graphs builds a minimal KV cache while
        profiling, which needs the layout that vLLM's engine core resolves first;
        the stage resolves it the same way from its own backends (every stage runs
        the same ones, so this matches what the coordinator later sends).
        """
        from vllm.v1.attention.backends.utils import resolve_kv_cache_layout

        layout = resolve_kv_cache_layout(
            self.vllm_config, [self.kv_cache_layouts()], list(self.kv_cache_spec().values())
        )
        self.worker.set_kv_cache_layout(layout.name)
        return int(self.worker.determine_available_memory())

    def kv_cache_layouts(self) -> list[str]:
        return list(self.worker.get_supported_kv_cache_layouts())

    def configure(self, kv_cache_config: Any, layout: str) -> None:
        """Allocate the KV cache the coordinator sized and warm up."""
        self.worker.set_kv_cache_layout(layout)
        self.worker.initialize_from_config(kv_cache_config)
        self.worker.compile_or_warm_up_model()
        runner = self.worker.model_runner
        if not self.is_first and getattr(runner, "intermediate_tensors", None) is None:
            # vLLM allocates this receive buffer only in _dummy_run, which eager CPU
            # start-up skips; without it a later stage asserts at its first step
            # (the cause of vLLM's own CPU pipeline crash, docs/vllm-pp-crash.md).
            runner.intermediate_tensors = runner.model.make_empty_intermediate_tensors(
                batch_size=runner.max_num_tokens,
                dtype=runner.model_config.dtype,
                device=runner.device,
            )

    def num_requests(self) -> int:
        """Requests whose state this worker holds (read from the heartbeat thread)."""
        runner = getattr(self.worker, "model_runner", None)
        return len(getattr(runner, "requests", ()))

    def drop_requests(self, keep: set[str]) -> int:
        """Forget every request not in `keep` (the way vLLM finishes requests); count them."""
        from vllm.v1.core.sched.output import SchedulerOutput

        runner = self.worker.model_runner
        gone = {rid for rid in runner.requests if rid not in keep}
        if gone:
            empty = SchedulerOutput.make_empty()
            empty.finished_req_ids = gone
            self.run(empty, None)
        return len(gone)

    def adopt(self, resumed: list[tuple[str, list[int], Any, list[int]]]) -> None:
        """Take up resumed requests this worker never saw (it joined after they started).

        vLLM resumes a preempted request from the state its runner kept; a stage
        that replaced a dead one has none, so it gets the same state here:
        prompt, sampling parameters and the tokens generated so far.
        """
        from vllm.sampling_params import SamplingType
        from vllm.v1.worker.gpu_input_batch import CachedRequestState

        runner = self.worker.model_runner
        for req_id, prompt, params, outputs in resumed:
            if req_id in runner.requests:
                continue
            generator = None
            if params.sampling_type == SamplingType.RANDOM_SEED:
                generator = torch.Generator(device=runner.device)
                generator.manual_seed(params.seed)
            runner.requests[req_id] = CachedRequestState(
                req_id=req_id,
                prompt_token_ids=list(prompt),
                mm_features=[],
                sampling_params=params,
                generator=generator,
                block_ids=([],),
                num_computed_tokens=0,
                output_token_ids=list(outputs),
            )

    @torch.inference_mode()
    def run(
        self,
        scheduler_output: Any,
        tensors: dict[str, torch.Tensor] | None,
        grammar_output: Any = None,
    ) -> tuple[dict[str, torch.Tensor] | None, Any]:
        """One step: (activations for the next stage, None) or (None, ModelRunnerOutput).

        grammar_output (vLLM GrammarOutput) masks the last stage's logits before sampling.
        """
        from vllm.sequence import IntermediateTensors
        from vllm.v1.outputs import ModelRunnerOutput

        intermediate = None
        if tensors is not None and not self.is_first:
            intermediate = IntermediateTensors(tensors)
        runner = self.worker.model_runner
        output = runner.execute_model(scheduler_output, intermediate)
        if isinstance(output, IntermediateTensors):
            return output.tensors, None
        if not self.is_last:
            return None, None
        if output is None:
            output = runner.sample_tokens(grammar_output)
        if not isinstance(output, ModelRunnerOutput) and not self.async_output:
            output = output.get_output()
        # With the async runner this may be an AsyncModelRunnerOutput: resolve_output().
        return None, output

    @staticmethod
    def resolve_output(output: Any) -> Any:
        """The ModelRunnerOutput of a step, waiting for its tokens to reach the host."""
        from vllm.v1.outputs import ModelRunnerOutput

        return output if isinstance(output, ModelRunnerOutput) else output.get_output()
