#!/usr/bin/env bash
# The registry's full-data students on a lent GPU, in one call of about nine minutes: every
# student of bench/registry_students.py not yet exported, trained side by side
# (`--jobs 3 --train-only`, precision auto: bf16). Prepare as for bench/gpu_check.sh
# (`bash bench/gpu_prepare.sh`, carry `.gpu_shared` and `.whl`). The run folders come back as
# $OUT/registry_runs.tar (weights, logs, summaries, checkpoints; not the teacher cache); then,
# here, the students are exported and measured on this machine's CPU:
#   mkdir -p ../mtkdrl_registry && tar xf FILES_AT/registry_runs.tar -C ../mtkdrl_registry
#   python bench/registry_students.py
# Extra arguments go to registry_students.py (e.g. --students NAME...).
set -uo pipefail
OUT=${OUT:-bench/results/gpu}
WORK=/tmp/mtkdrl_registry
mkdir -p "$OUT" "$WORK"
. bench/gpu_setup.sh
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
timeout "${TRAIN_SECONDS:-480}" python3 bench/registry_students.py --work "$WORK" --jobs 3 \
  --train-only "$@" 2>&1 | tee "$OUT/registry.txt"
for log in "$WORK"/*/registry.log; do
  echo "== $log"; tail -c 600 "$log" | tr '\r' '\n' | tail -n 4
done | tee -a "$OUT/registry.txt"
tar cf "$OUT/registry_runs.tar" -C "$WORK" --exclude=teacher_cache .
ls -la "$OUT"
