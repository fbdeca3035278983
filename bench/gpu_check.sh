#!/usr/bin/env bash
# The checks to run when a session is lent a GPU, as one call of about nine minutes: a
# quickstart-size run in bf16 (precision `auto`), `bench/step_overhead.py` on both setups in
# bf16, a full-data CIFAR-10 epoch with the data on the GPU (`bench/gpu_epoch.py`, images/s),
# then the test suite on CUDA for the time that is left. Figures land in $OUT (or
# bench/results/gpu); the machine starts bare and cannot reach the network, so first, here, with
# the venv active: `bash bench/gpu_prepare.sh`, and carry `.gpu_shared` and `.whl`. Each step has
# its own time limit, so one slow step leaves the others their time.
set -uo pipefail
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
. bench/gpu_setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

echo "== quickstart, precision auto (bf16 on a GPU with bf16)"
/usr/bin/time -f "quickstart wall %e s" timeout 150 python3 -m mtkdrl.distill \
  recipes/quickstart.yaml output_dir=/tmp/gpu_quickstart data.num_workers=4 --overwrite \
  2>&1 | grep -E "precision|done:|wall|Error|error" | tee "$OUT/quickstart.txt"

echo "== step overhead, bf16"
timeout 90 python3 bench/step_overhead.py --setup cifar10 --batch-size 256 --steps 20 \
  --precision bf16 --markdown "$OUT/step_overhead_cifar10.md" | tail -3
timeout 120 python3 bench/step_overhead.py --setup timm224 --batch-size 64 --steps 10 \
  --precision bf16 --markdown "$OUT/step_overhead_timm224.md" | tail -3

echo "== full-data CIFAR-10 epoch, data on the GPU"
timeout 150 python3 bench/gpu_epoch.py --batch-size 256 --precision auto | tee "$OUT/gpu_epoch.txt"

echo "== test suite on CUDA (stops at its time limit)"
timeout 200 python3 -m pytest -q -x -p no:cacheprovider 2>&1 | tail -15 | tee "$OUT/suite.txt"
