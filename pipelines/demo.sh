#!/usr/bin/env bash
# The main job on embedded defaults: synthetic cohort -> fit -> predict on held-out subjects -> report.
# Thin orchestration over the `brainage` console script; all logic lives in the package.
set -euo pipefail
OUT=demo-output                    # fixed: configs/demo.yaml reads and writes under demo-output/
N=${N:-400}                        # subjects in the synthetic cohort
SEED=${SEED:-1}
SYNTH_ARGS=${SYNTH_ARGS:-}         # extra `brainage synth` options  } tests/test_help_examples.py
FIT_ARGS=${FIT_ARGS:-}             # extra `brainage fit` overrides  } runs a tiny demo with these
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}
start=$(date +%s)

echo "== 1/4 synth: $N synthetic T1 scans on the ICBM152 template =="
# shellcheck disable=SC2086 # SYNTH_ARGS is a list of options
brainage synth --n "$N" --seed "$SEED" --out "$OUT/cohort" $SYNTH_ARGS

echo "== 2/4 fit: ERMoE 3D ViT (configs/demo.yaml) =="
# shellcheck disable=SC2086 # FIT_ARGS is a list of overrides
brainage fit --config configs/demo.yaml $FIT_ARGS

echo "== 3/4 predict: held-out test subjects ($OUT/train/test.csv) =="
status=0
brainage predict --model "$OUT/train/checkpoints/best.ckpt" --input "$OUT/train/test.csv" \
  --output "$OUT/predictions.csv" | tee "$OUT/predict-summary.txt" || status=$?
[ "$status" -le 1 ] || exit "$status"

echo "== 4/4 report: expert-region attribution (attached to the fit's MLflow run) =="
RUN_ID=$(cat "$OUT/train/mlflow_run_id.txt")   # written by the fit (brainage.training.callbacks.TrackedConfig)
# the model's sections on the held-out scans; the model-free regional age models (cross-validated, registered) on the
# whole cohort
brainage report --model "$OUT/train/checkpoints/best.ckpt" --input "$OUT/train/test.csv" \
  --predictions "$OUT/predictions.csv" --out "$OUT/report" --regional-input "$OUT/cohort" \
  --ground-truth "$OUT/cohort/ground_truth.json" --mlflow-run "$RUN_ID"

echo
echo "== demo finished in $(( $(date +%s) - start )) s =="
grep -E "MAE|baseline" "$OUT/predict-summary.txt" || true
echo "cohort:       $OUT/cohort (participants.tsv, ground_truth.json)"
echo "checkpoint:   $OUT/train/checkpoints/best.ckpt (+ best.card.json)"
echo "predictions:  $OUT/predictions.csv"
echo "report:       $OUT/report/index.html"
echo "MLflow:       $MLFLOW_TRACKING_URI (experiment brainage-demo, run $RUN_ID: params, best/val_mae, test/mae,"
echo "              checkpoint, card and report); browse with: mlflow ui --backend-store-uri $MLFLOW_TRACKING_URI"
