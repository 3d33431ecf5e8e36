"""Engine settings that the coordinator and every stage must agree on."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EngineSettings(BaseSettings):
    """vLLM engine shape: the same values on the coordinator and on each stage."""

    model_config = SettingsConfigDict(env_prefix="LAYERBUS_", extra="ignore")

    model: str = Field("", description="local HF model folder; empty = bundled default")
    dtype: str = Field(
        "float32",
        description="weights/activations dtype; float32 suits CPUs, use bfloat16 or auto on GPUs",
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

    def fingerprint(self) -> str:
        """What a stage reports so the coordinator can refuse a mismatched stage."""
        return (
            f"dtype={self.dtype} max_model_len={self.max_model_len} "
            f"max_num_seqs={self.max_num_seqs} "
            f"max_num_batched_tokens={self.max_num_batched_tokens} "
            f"block_size={self.block_size}"
        )

    def resolved_model(self) -> str:
        """The model folder, preparing the bundled default model when none is named."""
        if self.model:
            return self.model
        from shared.default_model import prepare_default_model

        return str(prepare_default_model())


def model_num_layers(model: str) -> int:
    """Number of decoder layers, read from the model folder's config.json."""
    import json
    from pathlib import Path

    config = json.loads((Path(model) / "config.json").read_text())
    return int(config.get("text_config", config)["num_hidden_layers"])


def build_vllm_config(
    engine: EngineSettings,
    *,
    pipeline_size: int,
    executor: Any = None,
    kv_cache_bytes: int | None = None,
    scheduler_cls: Any = None,
    tokenizer: bool = False,
) -> Any:
    """A VllmConfig for this engine shape (vLLM imported lazily: it is slow).

    tokenizer: load the tokenizer (the coordinator's structured-output grammars need it).
    """
    from vllm.engine.arg_utils import EngineArgs

    args = EngineArgs(
        model=engine.resolved_model(),
        dtype=engine.dtype,  # type: ignore[arg-type]
        max_model_len=engine.max_model_len,
        max_num_seqs=engine.max_num_seqs,
        max_num_batched_tokens=engine.max_num_batched_tokens,
        block_size=engine.block_size,
        enable_prefix_caching=engine.enable_prefix_caching,
        enable_chunked_prefill=True,
        enforce_eager=True,
        seed=engine.seed,
        pipeline_parallel_size=pipeline_size,
        distributed_executor_backend=executor,
        scheduler_cls=scheduler_cls,
        kv_cache_memory_bytes=kv_cache_bytes,
        async_scheduling=False,
        skip_tokenizer_init=not tokenizer,
        gpu_memory_utilization=0.05,
    )
    return args.create_engine_config()
