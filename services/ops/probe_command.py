"""`layerbus probe`: this host's capacity for placement, as a stage object for `layerbus plan`."""

from __future__ import annotations

import dataclasses
import json
import socket
import sys

USAGE = """usage: layerbus probe [--name NAME] [--memory-gb G] [--model DIR] [--dtype DTYPE]
                      [--device cuda:N] [--gpu-memory-utilization U] [--threads N]
                      [--coordinator tcp://HOST:PORT [--secret-key F --coordinator-key F]]

Prints this host's device, the memory a stage here may use for weights and KV cache,
and one decoder layer's forward time at decode and prefill sizes, as JSON that
`layerbus plan --stages FILE` reads (one file per host, or a list of them).

  --name NAME        the stage's name in the plan (default: this host's name)
  --memory-gb G      cap on the memory the stage may use (default: 90% of the available
                     host memory on a CPU; on a GPU, --gpu-memory-utilization of it)
  --model DIR        the model whose layer shape is timed (default: the bundled one)
  --dtype DTYPE      weights dtype (default: this host's, as a stage would run)
  --threads N        torch CPU threads, as the stage's --threads (default: torch's); on a
                     busy host, threads that wait for each other make the figures noisy
  --coordinator ADDR also time the round trip to this coordinator (link_ms); with CURVE,
                     --secret-key must be a key it answers status queries from (a gateway's)
"""

KNOWN = {"name", "memory_gb", "model", "dtype", "device", "gpu_memory_utilization", "threads"}
TRANSPORT = {"coordinator", "secret_key", "coordinator_key"}


def main(argv: list[str]) -> int:
    """Entry point of `layerbus probe`: 0 with the JSON, 1 with no memory, 2 on bad input."""
    from services.ops.cli import build, parse_flags
    from services.stage.capacity import CapacityError, probe_capacity
    from services.stage.link_probe import round_trip_s
    from shared.curve import KeyFileError
    from shared.engine_settings import EngineSettings
    from shared.platform_defaults import select_device
    from shared.settings import TransportSettings

    if "--help" in argv or "-h" in argv:
        print(USAGE)
        return 0
    flags = parse_flags(argv)
    unknown = sorted(set(flags) - KNOWN - TRANSPORT)
    if unknown:
        print(f"layerbus probe: unknown setting(s) {unknown}\n\n{USAGE}", file=sys.stderr)
        return 2
    try:
        select_device(flags.get("device", ""))
        [engine] = build([EngineSettings], {k: v for k, v in flags.items() if k == "model"})
        dtype = flags.get("dtype") or engine.platform_choice().dtype
        with open(f"{engine.resolved_model()}/config.json") as f:
            config = json.load(f)
        cap = float(flags["memory_gb"]) if "memory_gb" in flags else None
        util = float(flags["gpu_memory_utilization"]) if "gpu_memory_utilization" in flags else None
        if "threads" in flags:
            import torch

            torch.set_num_threads(int(flags["threads"]))
        offer = probe_capacity(config, dtype, cap, util)
        if "coordinator" in flags:
            [transport] = build(
                [TransportSettings],
                {k: v for k, v in flags.items() if k in TRANSPORT - {"coordinator"}},
            )
            link = round_trip_s(flags["coordinator"], transport)
            offer = dataclasses.replace(offer, link_s=link)
    except CapacityError as err:
        print(f"layerbus probe: {err}", file=sys.stderr)
        return 1
    except (ValueError, OSError, AttributeError, TimeoutError, KeyFileError) as err:
        print(f"layerbus probe: {err}", file=sys.stderr)
        return 2
    print(json.dumps(offer.plan_item(flags.get("name") or socket.gethostname()), indent=2))
    print(f"memory: {offer.memory.why}", file=sys.stderr)
    return 0
