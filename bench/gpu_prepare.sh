#!/usr/bin/env bash
# Run here, before a GPU call: puts what the bare device machine needs beside the working tree,
# in folders git ignores, to be named in the call's `carry` (.gpu_shared and .whl). The call
# sends at most 64 MiB, so only the files the GPU scripts read travel: the CIFAR-10 train and
# val parquet files and the four shared teachers (57 MiB), and wheels for the packages the
# device's image lacks (datasets and the two it needs), pinned to the versions installed here.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=../shared/data
mkdir -p .gpu_shared/data/cifar10-jpeg .gpu_shared/data/teachers .whl
cp "$SHARED"/cifar10-jpeg/{train,val}.parquet .gpu_shared/data/cifar10-jpeg/
cp "$SHARED"/teachers/cifar10_resnet{20,32,44,56}.safetensors .gpu_shared/data/teachers/
for folder in /.gpu_shared/ /.whl/; do
  grep -qxF "$folder" .git/info/exclude || echo "$folder" >> .git/info/exclude
done
pins=$(python -m pip list --format=freeze | grep -iE '^(datasets|dill|multiprocess)==')
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl $pins
du -sh .gpu_shared .whl
