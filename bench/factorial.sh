#!/usr/bin/env bash
# Issue 24's factorial comparison, in the order its question needs it: first the question the
# issue turns on (is MTKD-RL, by default and with its label reward, ahead of avg with the same
# hint term on the pools with a bad or weak teacher and on the held-out pool?) over all five
# seeds, then the other weighting methods of the hint column, then the `none` and `map` columns;
# `avg` on shared4 beside them, for bench/headroom.py.
# Resumable: recorded runs are skipped, a cut-off run continues; the records are
# docs/results/compare/<pool>/results.json. One thread per run (run it beside other work):
#   OMP_NUM_THREADS=1 bash bench/factorial.sh
# (COMPARE_OUT=DIR writes the records elsewhere, e.g. when this runs from a copy of the repo.)
set -euo pipefail
cd "$(dirname "$0")/.."
HINT="hint:stage=2,beta=100"  # beta chosen on shared4 (docs/results/README.md)
LABEL="mtkdrl:agent_update=reinforce,reward=label"
GAIN="mtkdrl:agent_update=reinforce,reward=gain"  # the other batch's CE gain (docs/methods/mtkdrl.md)
# ca_mkd has no hint row: it feeds the student's map to each teacher's classifier head, which
# takes the last stage's width (64), and the hint term reads stage 2 (32 channels).
HEADLINE=(avg mtkdrl "$LABEL")
OTHERS=(ebkd aekd amtml mmkd)
run() { python bench/compare.py "$@" ${COMPARE_OUT:+--out "$COMPARE_OUT"}; }
for seed in 0 1 2 3 4; do
  run --pools shared4+swapped shared4+weak shared4+wrong44 --methods "${HEADLINE[@]}" \
    --features "$HINT" --seeds "$seed"
done
# avg on shared4 (the pools without their extra teacher) for every seed and feature term the
# pools have: what the extra teacher costs avg (bench/headroom.py).
run --pools shared4 --methods avg --features "$HINT" --seeds 3 4
for seed in 0 1 2 3 4; do
  run --pools shared4+swapped shared4+weak shared4+wrong44 --methods "$GAIN" --features "$HINT" \
    --seeds "$seed"
done
for seed in 0 1 2 3 4; do
  run --pools shared4+swapped shared4+weak --methods "${OTHERS[@]}" --features "$HINT" --seeds "$seed"
done
for seed in 0 1 2; do
  run --pools shared4+swapped shared4+weak --methods avg ebkd aekd ca_mkd amtml mtkdrl mmkd \
    "$LABEL" "$GAIN" --features none map --seeds "$seed"
  run --pools shared4+wrong44 --methods avg mtkdrl "$LABEL" "$GAIN" --features none --seeds "$seed"
  run --pools shared4 --methods avg --features map --seeds "$seed"
done
# Last, the 10,000-image check: avg and the hint column's top three rows (named once that column
# has its five seeds), 3 seeds, a record of its own per pool:
#   python bench/compare.py --train-images 10000 --pools shared4+swapped shared4+weak \
#     --methods avg ROW ROW ROW --features "$HINT" --seeds 0 1 2
