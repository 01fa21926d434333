#!/usr/bin/env bash
# Cross-validated, paired comparison (issue 13): ERMoE-ViT vs dense ViT, parameter-matched dense ViT, softmax top-k
# MoE ViT (Switch loss) and SFCN on one synthetic cohort. K outer folds (every subject tested once), lr (and SFCN's
# optimiser, and the ERMoE design) chosen per fold on an inner split, bias correction fitted on that inner split,
# paired per-subject statistics. Protocol: configs/compare/*.yaml; logic: brainage.training.compare.
# Usage: pipelines/compare.sh [OUT]
#   env: N (subjects, 400), SEED (cohort seed, 1), PROTOCOL (configs/compare/cpu_3mm.yaml), THREADS (torch threads,
#        2), ARMS (only these arms, default all), EXTRA (more arguments, e.g. "--set trainer.accelerator=gpu")
# Resumable: rerun the same command and finished units are kept; adding a config to an arm fits only the new
# candidates. Point 5 (mean pooling, longer budget): PROTOCOL=configs/compare/pool_mean.yaml with the same OUT.
# Output: OUT/table_<protocol>.md and .json (e.g. table_cpu_3mm.md), OUT/results/<arm>/fold<k>/, OUT/units/; the
# last line printed is one JSON object with the full table.
set -euo pipefail
OUT=${1:-compare-output}
N=${N:-400}
SEED=${SEED:-1}
PROTOCOL=${PROTOCOL:-configs/compare/cpu_3mm.yaml}
THREADS=${THREADS:-2}
start=$(date +%s)

if [ ! -f "$OUT/cohort/participants.tsv" ]; then
  echo "== synth: brainage synth --n $N --seed $SEED --out $OUT/cohort =="
  brainage synth --n "$N" --seed "$SEED" --out "$OUT/cohort"
fi

echo "== compare: $PROTOCOL on $OUT/cohort =="
# shellcheck disable=SC2086  # ARMS and EXTRA are word lists
python -m brainage.training.compare run --protocol "$PROTOCOL" --root "$OUT/cohort" --out "$OUT" \
  --threads "$THREADS" ${ARMS:+--arms $ARMS} ${EXTRA:-}
echo "compare.sh finished in $(( $(date +%s) - start )) s" >&2
