#!/usr/bin/env bash
# Dense-localization measurement on the synthetic UnAV-like benchmark (issue 4 acceptance, first pass).
# CPU only: synth (300 videos, 10-30 s, 10 classes) -> extract (tiny random-weight VGG-19 + VGGish on the
# 0.32-s grid) -> train/test LoCo, UnAV, CCNet small and a visual-only LoCo (configs/synthetic/*.yaml).
#
# Usage: benchmarks/dense_synthetic.sh [WORKDIR]        (default /tmp/dense_synthetic)
# Env:   AVEL=path/to/avel  VIDEOS=300  EPOCHS=N (overrides optim.epochs)  PARALLEL=4 (concurrent trainings)
# Timings on the 2-core dev box (2026-11-23, shared with other jobs, load 5-14): extract 642 s; the 4 trainings run
# together 61-65 min (LoCo/UnAV 24 epochs; CCNet 14 epochs, ~2x slower per epoch, was restarted and took ~45 min).
# Test average mAP then: LoCo 0.599, UnAV 0.569, CCNet 0.540, visual-only LoCo 0.225.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
W="${1:-/tmp/dense_synthetic}"
AVEL="${AVEL:-avel}"
VIDEOS="${VIDEOS:-300}"
PARALLEL="${PARALLEL:-4}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1   # 1 thread per process: oversubscribed threads were ~10x slower
mkdir -p "$W"
DATA="$W/syn$VIDEOS"; STORE="$W/store"; ANN="$DATA/unav100_annotations.json"
SET=()
if [[ -n "${EPOCHS:-}" ]]; then SET=(--set "optim.epochs=$EPOCHS"); fi

# 1. synthesize
[[ -f "$ANN" ]] || "$AVEL" synth unav100 --out "$DATA" --videos "$VIDEOS" --seed 0 --workers 2

# 2. extract (resumable): tiny VGG-19 2x2x32 = 128-d, 0.96-s windows every 0.32 s; tiny VGGish with a
#    64-d embedding (the tiny preset's 16 is a very narrow random projection), hop 0.32 s
cat > "$W/extract.yaml" <<YAML
dataset: unav100
videos: $DATA/videos
annotations: $ANN
extractors: [vgg19, vggish]
preset: tiny
random_weights: true
runner: local
batch_size: 64
device: cpu
out: $STORE
extractor_options:
  vgg19: {fps: 12.5, window_frames: 12, stride_frames: 4}
  vggish: {hop_s: 0.32, embedding_size: 64}
YAML
t0=$SECONDS
"$AVEL" extract --config "$W/extract.yaml" --json > "$W/extract_report.json"
echo "extract: $((SECONDS - t0)) s"

# 3. train, select on validation, evaluate on test (RUN/summary.json)
CFGS=(loco_small unav_small ccnet_small loco_small_visual_only)
t0=$SECONDS
running=0
for cfg in "${CFGS[@]}"; do
  rm -rf "$W/run-$cfg"
  ( s=$SECONDS
    "$AVEL" train --config "$REPO/configs/synthetic/$cfg.yaml" --store "$STORE" --annotations "$ANN" \
      --out "$W/run-$cfg" ${SET[@]+"${SET[@]}"} > "$W/train-$cfg.log" 2>&1
    echo "train $cfg: $((SECONDS - s)) s" ) &
  running=$((running + 1))
  if (( running >= PARALLEL )); then wait -n; running=$((running - 1)); fi
done
wait
echo "training: $((SECONDS - t0)) s"

# 4. report test mAP@0.5:0.9 and the average
for cfg in "${CFGS[@]}"; do
  python3 - "$cfg" "$W/run-$cfg/summary.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[2]))["test"]
keys = [f"mAP@{x}" for x in ("0.5", "0.6", "0.7", "0.8", "0.9")] + ["average_mAP"]  # average: over tIoU 0.1:0.9
print(f"{sys.argv[1]:24s} " + "  ".join(f"{k} {float(t[k]):.3f}" for k in keys))
PY
done
