"""The gateway and the protocol (shared/wire/, shared/codec.py) run without vLLM.

Imported in a fresh interpreter, so modules other tests loaded cannot hide an import.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import services.gateway
import shared.wire

GATEWAY = sorted(
    f"services.gateway.{m.name}" for m in pkgutil.iter_modules(services.gateway.__path__)
)
WIRE = sorted(f"shared.wire.{m.name}" for m in pkgutil.iter_modules(shared.wire.__path__))
PROTOCOL = ["shared.wire", *WIRE, "shared.codec"]

CHECK = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m == "vllm" or m.startswith("vllm."))))
"""


def test_importing_the_gateway_and_the_protocol_imports_no_vllm() -> None:
    assert "services.gateway.app" in GATEWAY and "services.gateway.server" in GATEWAY
    assert "shared.wire.sampling" in WIRE and "shared.wire.steps" in WIRE
    done = subprocess.run(
        [sys.executable, "-c", CHECK, *GATEWAY, *PROTOCOL],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing the gateway or the protocol imported {loaded[:5]}"
