"""`layerbus probe`: this host's capacity for placement, as a stage object for `layerbus plan`."""

from __future__ import annotations

import dataclasses
import json
import socket
import sys
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.ops.command_settings import CommandSettings

DESCRIPTION = """Print this host's device, the memory a stage here may use for weights and KV cache,
and one decoder layer's forward time at decode and prefill sizes, as JSON that
`layerbus plan --stages FILE` reads (one file per host, or a list of them).
"""


class ProbeCommand(CommandSettings):
    """`layerbus probe`: this host's capacity, as a stage for `layerbus plan`."""

    model_config = SettingsConfigDict(json_schema_extra={"description": DESCRIPTION})

    name: str = Field("", description="the stage's name in the plan (default: this host's name)")
    memory_gb: float | None = Field(
        None,
        description="cap on the memory the stage may use (default: 90% of the available host "
        "memory on a CPU; on a GPU, --gpu-memory-utilization of it)",
    )
    model: str = Field(
        "", description="the model whose layer shape is timed (default: the bundled one)"
    )
    dtype: str = Field("", description="weights dtype (default: this host's, as a stage would run)")
    device: str = Field("", description="GPU to probe, cuda:N (default: the first)")
    gpu_memory_utilization: float | None = Field(
        None, description="share of the GPU's memory a stage may use (vLLM's; default 0.9)"
    )
    threads: int | None = Field(
        None,
        description="torch CPU threads, as the stage's --threads (default: torch's); on a busy "
        "host, threads that wait for each other make the figures noisy",
    )
    coordinator: str = Field(
        "",
        description="also time the round trip to this coordinator (link_ms); with CURVE, "
        "--secret-key must be a key it answers status queries from (a gateway's)",
    )
    secret_key: str = Field("", description="CURVE .key_secret file for --coordinator")
    coordinator_key: str = Field("", description="the coordinator's public .key file")

    def cli_cmd(self) -> None:
        sys.exit(main(self))


def main(args: ProbeCommand) -> int:
    """Entry point of `layerbus probe`: 0 with the JSON, 1 with no memory, 2 on bad input."""
    from services.stage.capacity import CapacityError, probe_capacity
    from services.stage.link_probe import round_trip_s
    from shared.curve import KeyFileError
    from shared.engine_settings import EngineSettings
    from shared.platform_defaults import select_device
    from shared.settings import TransportSettings

    try:
        select_device(args.device)
        given: dict[str, Any] = {"model": args.model} if args.model else {}
        engine = EngineSettings(**given)
        dtype = args.dtype or engine.platform_choice().dtype
        with open(f"{engine.resolved_model()}/config.json") as f:
            config = json.load(f)
        if args.threads is not None:
            import torch

            torch.set_num_threads(args.threads)
        offer = probe_capacity(config, dtype, args.memory_gb, args.gpu_memory_utilization)
        if args.coordinator:
            keys = {"secret_key": args.secret_key, "coordinator_key": args.coordinator_key}
            given = {k: v for k, v in keys.items() if v}
            transport = TransportSettings(**given)
            link = round_trip_s(args.coordinator, transport)
            offer = dataclasses.replace(offer, link_s=link)
    except CapacityError as err:
        print(f"layerbus probe: {err}", file=sys.stderr)
        return 1
    except (ValueError, OSError, AttributeError, TimeoutError, KeyFileError) as err:
        print(f"layerbus probe: {err}", file=sys.stderr)
        return 2
    print(json.dumps(offer.plan_item(args.name or socket.gethostname()), indent=2))
    print(f"memory: {offer.memory.why}", file=sys.stderr)
    return 0
