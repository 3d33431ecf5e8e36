#!/usr/bin/env bash
# Steps of a GPU run on the lent machine, one or more per device call (docs/gpu.md has the
# exact calls). Runs in the repository root there; state lives in /tmp between calls.
#   part DIR          keep DIR/bundle.tar.NN (one part of benchmark/gpu_bundle.sh) in /tmp/parts
#   start [ARGS...]   install the joined parts once (gpu_install.sh), then start
#                     `python3 -m benchmark.gpu_bench ARGS` in its own session (it outlives
#                     the call), results in /tmp/gpu-bench
#   wait SECONDS      wait until the benchmark ends or SECONDS pass, print its progress, and
#                     copy summary.json, summary.md, its log and every log (logs.tar.gz) to $OUT
set -euo pipefail
SITE=/tmp/site
RESULTS=/tmp/gpu-bench
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export VLLM_USE_FLASHINFER_SAMPLER=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

case "${1:-}" in
part)
  mkdir -p /tmp/parts
  cp "${2:?part folder}"/bundle.tar.* /tmp/parts/
  ls -l /tmp/parts
  ;;
start)
  shift
  if [ ! -f "$SITE/.installed" ]; then
    bash benchmark/gpu_install.sh /tmp/parts "$SITE"
    touch "$SITE/.installed"
  fi
  mkdir -p "$RESULTS"
  setsid nohup python3 -m benchmark.gpu_bench --output-dir "$RESULTS" \
    --tokenizer-from /tmp/bundle/tokenizer "$@" >"$RESULTS/bench.log" 2>&1 </dev/null &
  echo $! >"$RESULTS/pid"
  echo "gpu_bench started (pid $(cat "$RESULTS/pid"))"
  ;;
wait)
  end=$((SECONDS + ${2:?seconds}))
  pid=$(cat "$RESULTS/pid" 2>/dev/null || true)
  running() { [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }
  while running && [ $SECONDS -lt $end ]; do sleep 5; done
  if running; then echo "gpu_bench still running"; else echo "gpu_bench not running"; fi
  grep -E "ready in|greedy equal|FAILED|^[a-z0-9-]+-c[0-9]+ " "$RESULTS/bench.log" 2>/dev/null \
    | cut -c1-300 || true
  if [ -n "${OUT:-}" ]; then
    for f in summary.json summary.md bench.log; do
      if [ -f "$RESULTS/$f" ]; then cp "$RESULTS/$f" "$OUT/"; fi
    done
    tar -C "$RESULTS" -czf "$OUT/logs.tar.gz" --exclude=model logs raw baseline.log 2>/dev/null || true
  fi
  if [ -f "$RESULTS/summary.md" ]; then cat "$RESULTS/summary.md"; fi
  ;;
*)
  echo "usage: $0 part DIR | start [gpu_bench args] | wait SECONDS" >&2
  exit 2
  ;;
esac
