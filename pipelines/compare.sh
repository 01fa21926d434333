#!/usr/bin/env bash
# Side-by-side comparison on ONE synthetic cohort, ONE split, ONE budget: ERMoE-ViT, dense ViT, softmax-top-k MoE ViT
# (Switch balancing loss) and SFCN. Fit -> test on the held-out split -> one table (markdown + CSV).
# Usage: pipelines/compare.sh [OUT]   env: N (subjects, 200), EPOCHS (15), SEED (1), MLFLOW_TRACKING_URI
# Settings shared by every model: configs/experiment/compare.yaml; the models: configs/model/*.yaml.
set -euo pipefail
OUT=${1:-compare-output}
N=${N:-200}
EPOCHS=${EPOCHS:-15}
SEED=${SEED:-1}
EXPERIMENT=${EXPERIMENT:-brainage-compare}
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}
MODELS="ermoe:vit_ermoe_tiny dense:vit_dense_tiny softmax_moe:vit_softmax_moe_tiny sfcn:sfcn"

if [ ! -f "$OUT/cohort/participants.tsv" ]; then
  echo "== synth: $N synthetic T1 scans =="
  brainage synth --n "$N" --seed "$SEED" --out "$OUT/cohort"
fi

for entry in $MODELS; do
  name=${entry%%:*}; model=configs/model/${entry#*:}.yaml
  run="$OUT/runs/$name"
  layers=(--config configs/experiment/compare.yaml --config "$model" --data.root "$OUT/cohort"
          --trainer.max_epochs "$EPOCHS" --trainer.logger.init_args.experiment_name "$EXPERIMENT")
  echo "== fit $name ($model, $EPOCHS epochs) =="
  rm -rf "$run"
  brainage fit "${layers[@]}" --trainer.default_root_dir "$run" --trainer.logger.init_args.run_name "$name-fit"
  best=$(find "$run" -name best.ckpt -print | head -n 1)
  [ -n "$best" ] || { echo "no best.ckpt under $run" >&2; exit 1; }
  echo "== test $name ($best) =="
  brainage test "${layers[@]}" --trainer.default_root_dir "$run/test" \
    --trainer.logger.init_args.run_name "$name-test" --ckpt_path "$best"
done

python -m brainage.training.compare --experiment "$EXPERIMENT" --out "$OUT/table" \
  --models $(for entry in $MODELS; do printf '%s ' "${entry%%:*}"; done)
echo "table: $OUT/table.md and $OUT/table.csv (MLflow: $MLFLOW_TRACKING_URI, experiment $EXPERIMENT)"
