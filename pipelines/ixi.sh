#!/usr/bin/env bash
# IXI in one command: T1 download + demographic sheet -> (prepare) -> fit -> predict on the held-out split -> report.
# Usage: pipelines/ixi.sh IXI_DIR [OUT] [extra `brainage fit` overrides ...]
#   IXI_DIR: the IXI-T1 images (IXI###-{Guys|HH|IOP}-####-T1.nii.gz) and IXI.xls or its CSV export (IXI_ID, AGE, SEX_ID)
#   env: RES=1p5mm|1mm (MNI grid, default 1p5mm), PREPARE=auto|skip (skip: IXI_DIR is already skull-stripped and
#        affinely aligned to MNI152), WORKERS (prepare processes, 4), MLFLOW_TRACKING_URI
# No accuracy on real IXI data has been measured with brainage until someone runs this. Research use only.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,8p' "$0" >&2; exit 2; }
IXI_DIR=$1; OUT=${2:-ixi-output}; shift $(( $# >= 2 ? 2 : 1 ))
RES=${RES:-1p5mm}
case "$RES" in 1mm) SPACING=1 ;; 1p5mm) SPACING=1.5 ;; *) echo "RES=$RES: expected 1mm or 1p5mm" >&2; exit 2 ;; esac
[ -d "$IXI_DIR" ] || { echo "IXI_DIR $IXI_DIR is not a folder" >&2; exit 2; }
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}
mkdir -p "$OUT"

echo "== 1/4 prepare =="
DATA=$IXI_DIR
if [ "${PREPARE:-auto}" != skip ] && brainage prepare --help >/dev/null 2>&1; then
  brainage prepare --input "$IXI_DIR" --out "$OUT/prepared" --spacing "$SPACING" --workers "${WORKERS:-4}"
  DATA=$OUT/prepared/manifest.csv
else
  echo "skipped (brainage prepare unavailable or PREPARE=skip):" \
       "$IXI_DIR must hold skull-stripped T1w affinely aligned to MNI152"
fi

echo "== 2/4 fit: configs/experiment/ixi.yaml + data/model ixi_$RES =="
brainage fit --config configs/experiment/ixi.yaml --data "configs/data/ixi_$RES.yaml" \
  --config "configs/model/vit_ermoe_ixi_$RES.yaml" --data.root "$DATA" --trainer.default_root_dir "$OUT/train" "$@"
best=$(find "$OUT/train" -name best.ckpt -print | head -n 1)
[ -n "$best" ] || { echo "no best.ckpt under $OUT/train" >&2; exit 1; }

echo "== 3/4 predict: held-out test subjects ($OUT/train/test.csv) =="
status=0
brainage predict --model "$best" --input "$OUT/train/test.csv" --output "$OUT/predictions.csv" || status=$?
[ "$status" -le 1 ] || exit "$status"

echo "== 4/4 report =="
# the regional age models are cross-validated, so they fit on every subject of the split (splits.csv), not only the
# held-out ones the report attributes; they need at least 20 scans with an age (MIN_SUBJECTS in
# brainage/attribution/regional.py; the report refuses fewer), and every row of splits.csv has one
regional=()
[ "$(($(wc -l < "$OUT/train/splits.csv") - 1))" -lt 20 ] || regional=(--regional-input "$OUT/train/splits.csv")
brainage report --model "$best" --input "$OUT/train/test.csv" --predictions "$OUT/predictions.csv" --out "$OUT/report" \
  ${regional[@]+"${regional[@]}"}
echo "checkpoint: $best"
echo "predictions: $OUT/predictions.csv"
echo "report: $OUT/report/index.html"
