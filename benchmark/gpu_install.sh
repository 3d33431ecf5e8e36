#!/usr/bin/env bash
# On the GPU host: join the bundle parts of benchmark/gpu_bundle.sh (PARTS_DIR holds
# bundle.tar.NN), install into SITE what the image lacks, and print the exports.
set -euo pipefail
PARTS_DIR=${1:?parts folder}; SITE=${2:-/tmp/site}
mkdir -p "$SITE" /tmp/bundle
cat "$PARTS_DIR"/bundle.tar.* | tar -C /tmp/bundle -xf -
python3 - "$SITE" <<'PY'
import importlib.metadata as md, pathlib, re, sys, zipfile
site = sys.argv[1]
need = []
for whl in sorted(pathlib.Path("/tmp/bundle/wheels").glob("*.whl")):
    name = re.sub(r"[-_.]+", "-", whl.name.split("-")[0]).lower()
    try:
        md.version(name)
        print("image has", name)
    except md.PackageNotFoundError:
        need.append(str(whl))
# A wheel is a zip laid out for site-packages; no console scripts are needed.
for whl in need:
    zipfile.ZipFile(whl).extractall(site)
zipfile.ZipFile("/tmp/bundle/vllm-slim.zip").extractall(site)
print("installed", len(need), "wheels and vllm into", site)
PY
# Fail here, not in the middle of a benchmark, if the image lacks something the bundle
# left out (gpu_bundle.sh's IMAGE_HAS); importing also writes the bytecode caches once.
PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" python3 -c '
import importlib, sys, time
started = time.monotonic()
for name in ("vllm", "vllm.entrypoints.openai.api_server", "vllm.benchmarks.serve", "zmq",
             "msgspec", "pydantic_settings", "uvicorn", "starlette", "httpx", "orjson",
             "prometheus_client", "transformers", "numba", "llvmlite", "aiohttp", "tiktoken"):
    importlib.import_module(name)
import vllm
print(f"imports ok in {time.monotonic() - started:.0f} s: vllm", vllm.__version__, "from", vllm.__file__)
'
