#!/usr/bin/env bash
# Issue-23 speed benchmarks with --device cuda, in one go (a GPU machine is often lent briefly):
# the evaluator's overhead over the model's own scoring, fit vs a bare loop, and catalogue scaling.
# Each result is written as soon as it is done, so a run cut short keeps what finished.
#
#   bash benchmarks/gpu/speed_cuda.sh OUT_DIR [ML100K_DIR]
set -u
out=${1:?usage: speed_cuda.sh OUT_DIR [ML100K_DIR]}
data=${2:-${MODALREC_SHARED_DATA:-../shared/data}/ml-100k}
mkdir -p "$out"
export PYTHONPATH=src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1
$py benchmarks/evaluator_speed.py --device cuda --items 100000 1000000 --users 4000 1000 --threads 1 \
    --repeats 5 --out "$out/evaluator_speed_cuda.json" > /dev/null || echo "evaluator_speed failed: $?"
$py benchmarks/loop_overhead.py --device cuda --data "$data" --repeats 5 --threads 1 \
    --out "$out/loop_overhead_cuda.json" > /dev/null || echo "loop_overhead failed: $?"
$py benchmarks/scale.py --device cuda --threads 1 --out "$out/scale_cuda.json" > /dev/null || echo "scale failed: $?"
