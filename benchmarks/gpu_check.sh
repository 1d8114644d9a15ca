#!/usr/bin/env bash
# Everything lmforge checks on a GPU, in one call (a lent GPU's time is short): the CUDA tests, then
# the GPU rows of the benchmarks, then the CLI tests with CUDA visible (device "auto" picks it), each
# step under its own time limit so one failure costs only its step. Logs and result JSON go to $OUT.
#
#   OUT=/tmp/gpu-check bash benchmarks/gpu_check.sh [PREPARED_DATA] [SECONDS]
#
# PREPARED_DATA: a `lmforge prepare` directory for gpu_speedrun.py (default: its own tiny
# Shakespeare); SECONDS: the whole script's budget (default 500), the last step gets what is left.
set -u
OUT=${OUT:-/tmp/gpu-check}
DATA=${1:-}
BUDGET=${2:-500}
PY=${PYTHON:-python3}
mkdir -p "$OUT/logs"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
deadline=$(( $(date +%s) + BUDGET ))

step() {  # step NAME SECONDS COMMAND...: run, log, one summary line
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  timeout "$limit" "$@" >"$OUT/logs/$name.log" 2>&1
  rc=$?
  echo "$name: rc=$rc in $(( $(date +%s) - start )) s (limit $limit s)" | tee -a "$OUT/summary.txt"
  tail -n 14 "$OUT/logs/$name.log"
}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  $PY -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"
  $PY -m pip list 2>/dev/null | grep -iE "^(torch|triton|transformers|tokenizers|safetensors|numpy) "
} | tee "$OUT/summary.txt"

step cuda_tests 150 $PY -m pytest tests/test_cuda.py -q -p no:cacheprovider -rf
step gpu_compiled 150 $PY benchmarks/gpu.py --steps 30
speedrun=(--target 5.0 --max-time 120 --eval-every 25 --out "$OUT/gpu_speedrun.json")
step speedrun 200 $PY benchmarks/gpu_speedrun.py ${DATA:+--data "$DATA"} "${speedrun[@]}"
step generate 100 $PY benchmarks/generate_throughput.py --device cuda --skip-uncached
step gpu_eager 60 $PY benchmarks/gpu.py --no-compile --steps 30
cp benchmarks/results/gpu.json benchmarks/results/gpu-eager.json \
  benchmarks/results/generate_throughput-cuda.json "$OUT/" 2>/dev/null
left=$(( deadline - $(date +%s) ))
if (( left > 30 )); then
  step suite_with_cuda "$left" $PY -m pytest -q -p no:cacheprovider -n 16 -rf --continue-on-collection-errors \
    tests/commands tests/generate tests/train tests/models
fi
tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -r "$OUT/logs"
cat "$OUT/summary.txt"
