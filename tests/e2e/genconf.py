"""The bundled model with sampling defaults in its generation_config.json, and its tool flags.

test_clients.py and test_sampling_parameters.py run against the same layerbus stack and
`vllm serve` reference of this folder (fixtures in conftest.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

NAME = "SmolLM2-genconf"
TEMPLATE = Path(__file__).with_name("templates") / "hermes_tools.jinja"
TOOL_ARGS = ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
TOOL_ARGS += ["--chat-template", str(TEMPLATE)]
GENERATION = {"temperature": 0.7, "top_p": 0.8, "top_k": 20}


def write_genconf_model(model_path: str, models: Path) -> str:
    """A folder of symlinks to the bundled model, its generation_config.json with GENERATION."""
    folder = models / NAME
    folder.mkdir()
    for item in Path(model_path).iterdir():
        if item.name != "generation_config.json":
            os.symlink(item, folder / item.name)
    config = json.loads((Path(model_path) / "generation_config.json").read_text())
    config.pop("_from_model_config", None)
    config.update(GENERATION)
    (folder / "generation_config.json").write_text(json.dumps(config))
    return str(folder)
