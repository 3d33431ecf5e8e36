"""Engine settings that the coordinator and every stage must agree on."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.platform_defaults import (
    Platform,
    PlatformChoice,
    choose,
    cudagraph_mode_name,
    detect_platform,
)

# vLLM's load format that fills every weight with random values and reads no weight file.
DUMMY_LOAD_FORMAT = "dummy"


class EngineSettings(BaseSettings):
    """vLLM engine shape: the same values on the coordinator and on each stage."""

    model_config = SettingsConfigDict(env_prefix="LAYERBUS_", extra="ignore")

    model: str = Field("", description="local HF model folder; empty = bundled default")
    dtype: str = Field(
        "",
        description="weights/activations dtype (default: bfloat16 on CUDA, float32 on CPU)",
    )
    enforce_eager: bool | None = Field(
        None, description="no CUDA graphs (default: graphs on CUDA, eager on CPU)"
    )
    torch_compile: bool | None = Field(
        None,
        description="CUDA: run the layers through torch.compile with piecewise and full CUDA "
        "graphs, as `vllm serve` does (default: on; compiled once per layer range and cached, "
        "a restart loads it); --no-torch-compile: full CUDA graphs of decode batches only, "
        "a few seconds faster to restart. Ignored on CPU",
    )
    cudagraph_mode: str = Field(
        "",
        description="CUDA: vLLM's CUDA graph mode (NONE, PIECEWISE, FULL, FULL_DECODE_ONLY, "
        "FULL_AND_PIECEWISE); default: FULL_DECODE_ONLY without compile, vLLM's own with "
        "--torch-compile. Ignored on CPU",
    )
    max_model_len: int = Field(2048, description="longest prompt + completion, tokens")
    max_num_seqs: int = Field(64, description="most sequences in one engine step")
    max_num_batched_tokens: int = Field(
        512, description="most tokens in one engine step (longer prefills are chunked)"
    )
    block_size: int | None = Field(
        None, description="KV cache block size, tokens (default: the platform's)"
    )
    enable_prefix_caching: bool = Field(True, description="reuse KV blocks of shared prefixes")
    seed: int = Field(0, description="engine random seed")
    load_format: str = Field(
        "auto",
        description="how vLLM reads the weights: any vLLM load format (auto, safetensors, pt, "
        "dummy = random weights from config.json alone, for benchmarks, ...)",
    )
    model_loader_extra_config: str = Field(
        "", description="JSON object handed to vLLM's model loader (e.g. tensorizer options)"
    )

    @field_validator("load_format")
    @classmethod
    def _lowercase(cls, value: str) -> str:
        # vLLM lowercases it too; the fingerprint must compare what vLLM runs.
        return value.strip().lower() or "auto"

    @field_validator("cudagraph_mode")
    @classmethod
    def _graph_mode(cls, value: str) -> str:
        return cudagraph_mode_name(value)

    @field_validator("model_loader_extra_config")
    @classmethod
    def _json(cls, value: str) -> str:
        _json_object(value)
        return value

    def fingerprint(self) -> str:
        """What a stage reports so the coordinator can refuse a mismatched stage.

        The load format counts only as random or real weights: stages that read the same
        checkpoint differently (safetensors, pt, tensorizer) compute the same model, but a
        stage with random weights next to one with real weights computes nonsense.
        """
        return (
            f"dtype={self.platform_choice().dtype} max_model_len={self.max_model_len} "
            f"max_num_seqs={self.max_num_seqs} "
            f"max_num_batched_tokens={self.max_num_batched_tokens} "
            f"block_size={self.block_size} weights={self.weights_kind()}"
        )

    def weights_kind(self) -> str:
        """Random weights (vLLM's dummy load format) or weights read from files: a checkpoint."""
        return "random" if self.load_format == DUMMY_LOAD_FORMAT else "checkpoint"

    def loader_extra_config(self) -> dict[str, Any]:
        """--model-loader-extra-config as a dict, empty when unset."""
        return _json_object(self.model_loader_extra_config)

    def platform_choice(
        self,
        kv_cache_gb: float | None = None,
        gpu_memory_utilization: float | None = None,
        platform: Platform | None = None,
    ) -> PlatformChoice:
        """dtype, graphs and KV cache sizing for this process's platform."""
        return choose(
            platform or detect_platform(),
            dtype=self.dtype,
            enforce_eager=self.enforce_eager,
            kv_cache_gb=kv_cache_gb,
            gpu_memory_utilization=gpu_memory_utilization,
            torch_compile=self.torch_compile,
            cudagraph_mode=self.cudagraph_mode,
        )

    def resolved_model(self) -> str:
        """The model folder, preparing the bundled default model when none is named."""
        if self.model:
            return self.model
        from shared.default_model import prepare_default_model

        return str(prepare_default_model())


def _json_object(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"--model-loader-extra-config (LAYERBUS_MODEL_LOADER_EXTRA_CONFIG) is not JSON: {err}"
        ) from None
    if not isinstance(value, dict):
        raise ValueError(
            "--model-loader-extra-config (LAYERBUS_MODEL_LOADER_EXTRA_CONFIG) must be a JSON "
            f"object, got {type(value).__name__}"
        )
    return value


def config_dtype(config: Any) -> str:
    """The dtype a built VllmConfig runs, as a flag value ("bfloat16", not "torch.bfloat16")."""
    return str(config.model_config.dtype).removeprefix("torch.")


def model_num_layers(model: str) -> int:
    """Number of decoder layers, read from the model folder's config.json."""
    import json
    from pathlib import Path

    config = json.loads((Path(model) / "config.json").read_text())
    return int(config.get("text_config", config)["num_hidden_layers"])


def supported_load_formats() -> frozenset[str]:
    """The load formats vLLM knows in this process, plugins' registered loaders included.

    Relies on vLLM's loader table `vllm.model_executor.model_loader._LOAD_FORMAT_TO_MODEL_LOADER`
    (what `get_model_loader` looks a format up in).
    """
    from vllm.model_executor import model_loader

    return frozenset(model_loader._LOAD_FORMAT_TO_MODEL_LOADER)


def check_load_format(load_format: str) -> None:
    """Refuse a load format vLLM has no loader for, naming the setting and the choices."""
    known = supported_load_formats()
    if load_format not in known:
        raise ValueError(
            f"--load-format (LAYERBUS_LOAD_FORMAT) {load_format!r} is not a vLLM load format; "
            f"choose one of {', '.join(sorted(known))}"
        )


def build_vllm_config(
    engine: EngineSettings,
    *,
    pipeline_size: int,
    executor: Any = None,
    choice: PlatformChoice | None = None,
    scheduler_cls: Any = None,
    tokenizer: bool = False,
    async_scheduling: bool = False,
) -> Any:
    """A VllmConfig for this engine shape (vLLM imported lazily: it is slow).

    tokenizer: load the tokenizer (the coordinator's structured-output grammars need it).
    async_scheduling: the coordinator plans ahead (vLLM's async scheduling); stages never
    set it: their runners stay synchronous and the first stage fills in the tokens.
    choice: platform choices (a stage passes its KV cache sizing); default: this platform's.
    """
    choice = choice or engine.platform_choice()
    check_load_format(engine.load_format)
    from vllm.engine.arg_utils import EngineArgs

    extra: dict[str, Any] = {}
    if choice.compilation is not None:
        extra["compilation_config"] = choice.compilation
    args = EngineArgs(
        model=engine.resolved_model(),
        dtype=choice.dtype,  # type: ignore[arg-type]
        max_model_len=engine.max_model_len,
        max_num_seqs=engine.max_num_seqs,
        max_num_batched_tokens=engine.max_num_batched_tokens,
        block_size=engine.block_size,
        enable_prefix_caching=engine.enable_prefix_caching,
        enable_chunked_prefill=True,
        enforce_eager=choice.enforce_eager,
        seed=engine.seed,
        pipeline_parallel_size=pipeline_size,
        distributed_executor_backend=executor,
        scheduler_cls=scheduler_cls,
        kv_cache_memory_bytes=choice.kv_cache_bytes,
        async_scheduling=async_scheduling,
        skip_tokenizer_init=not tokenizer,
        gpu_memory_utilization=choice.gpu_memory_utilization,
        load_format=engine.load_format,
        model_loader_extra_config=engine.loader_extra_config(),
        **extra,
    )
    return args.create_engine_config()
