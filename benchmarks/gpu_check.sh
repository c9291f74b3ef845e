#!/usr/bin/env bash
# The GPU measurements of `make bench-teleports BENCH_DEVICE=cuda` that fit one short session (about 5 minutes
# on one GPU): the teleport with AMP off and on (ResNet-18 and GPT; float16 with a GradScaler), the attention
# heads' closed form, the whole networks' teleport cost and the discovery time, each part under its own time
# limit, most important first, so that a part cut short leaves the others' files.
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh      # default: build/bench
#   PY=/path/to/python bash benchmarks/gpu_check.sh    # a Python with torch for CUDA and symtele's requirements
#
# Writes amp_cost-cuda.json, attention_cost-cuda.json, network_cost-cuda.json, discovery_time-cuda.json,
# gpu.txt (nvidia-smi, torch) and gpu_check.log under $OUT; copy the JSON to benchmarks/results/ to show it in
# the report. Exits non-zero when there is no GPU or a part failed (a part cut by its limit says so in the log).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-build/bench}"
py="${PY:-python}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
log="$out/gpu_check.log"
{ nvidia-smi || true; "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'; } > "$out/gpu.txt" 2>&1
if ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "no CUDA device: nothing measured (see $out/gpu.txt)" | tee "$log"
    exit 1
fi
status=0
for part in "amp 120" "attention 60" "networks 60" "discovery 30"; do
    set -- $part
    echo "== $1 (limit $2 s)" >> "$log"
    timeout "$2" "$py" benchmarks/run.py --device cuda --out "$out" --only "$1" >> "$log" 2>&1
    code=$?
    if [ "$code" -ne 0 ]; then
        echo "== $1: exit $code$([ "$code" -eq 124 ] && echo ' (cut by its time limit)')" >> "$log"
        status=1
    fi
done
cat "$log"
exit "$status"
