#!/usr/bin/env bash
# AVE measurement on the synthetic AVE-like benchmark (issue 5 acceptance). CPU only:
# synth (400 annotated 10-s videos, 10 classes, + 13 extra background videos) -> extract (tiny random-weight
# VGG-19 with a 7 x 7 x 32 pool5 grid at 224 px, tiny VGGish with a 128-d embedding, one row per 1-s segment)
# -> train / select on validation / test AGVA, CCLN and AVLC (configs/synthetic/ave_*.yaml): fully and
# weakly supervised, CCLN cross-modal localization (CML) and the CCLN branch-mode table (fully supervised).
#
# Usage: benchmarks/ave_synthetic.sh [WORKDIR]        (default /tmp/ave_synthetic)
# Env:   AVEL=path/to/avel  VIDEOS=400  BACKGROUND=13 (extra background videos)  PARALLEL=2 (concurrent
#        trainings)  EPOCHS=N (overrides optim.epochs of every run)  RUNS="agva_fully ccln_cml ..." (subset)
# Timings: see docs/training.md (AVE section); measured on a shared 2-core box.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
W="${1:-/tmp/ave_synthetic}"
AVEL="${AVEL:-avel}"
VIDEOS="${VIDEOS:-400}"
# AVE has 178 extra background videos for 3,339 training rows (5.3 %); 13 keeps that ratio for the
# ~250 training rows of 400 synthetic videos (more would make weak supervision easier than on AVE).
BACKGROUND="${BACKGROUND:-13}"
PARALLEL="${PARALLEL:-2}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1   # 1 thread per process: oversubscribed threads were ~10x slower
mkdir -p "$W"
DATA="$W/syn$VIDEOS"; STORE="$W/store"; ANN="$DATA/Annotations.txt"; BG="$W/background"
SET=()
if [[ -n "${EPOCHS:-}" ]]; then SET=(--set "optim.epochs=$EPOCHS"); fi

# 1. synthesize (annotated videos and the event-free background videos, all in $DATA/videos)
if [[ ! -f "$ANN" ]]; then
  t0=$SECONDS
  "$AVEL" synth ave --out "$DATA" --videos "$VIDEOS" --background-videos "$BACKGROUND" --seed 0 --workers 2
  echo "synth: $((SECONDS - t0)) s"
fi

# 2. extract every video of $DATA/videos (annotated + background) into ONE store (resumable).
#    VGG-19: tiny widths (/16: 32 pool5 channels) but the full 224-px input, so pool5 is the AVE 7 x 7 grid
#    and AGVA / TSGA attend over 49 regions as on AVE; 4 frames averaged per 1-s segment (AVE: 16).
#    VGGish: tiny widths, 128-d embedding (AVE's size), one 0.96-s example per 1-s segment.
cat > "$W/extract.yaml" <<YAML
dataset: folder
videos: $DATA/videos
extractors: [vgg19, vggish]
preset: tiny
random_weights: true
runner: local
batch_size: 32
device: cpu
out: $STORE
extractor_options:
  vgg19: {fps: 4.0, window_frames: 4, stride_frames: 4, image_size: 224}
  vggish: {hop_s: 1.0, embedding_size: 128}
YAML
t0=$SECONDS
"$AVEL" extract --config "$W/extract.yaml" --json > "$W/extract_report.json"
echo "extract: $((SECONDS - t0)) s"

# 3. the extra background videos as AVE-release-style files (key avadataset, N x 10 x ...), the
#    format of data.extra_background_audio / extra_background_visual (AVE: audio_feature_noisy.h5)
python3 - "$STORE" "$DATA/background_videos.txt" "$BG" <<'PY'
import sys
from avel.datasets.annotations import AnnotationSet, Sample
from avel.datasets.interop import export_ave_h5

store, ids_file, out = sys.argv[1:]
ids = open(ids_file).read().split()
rows = [Sample(f"background-{i:04d}", vid, 10.0, None, [], {"row": i}) for i, vid in enumerate(ids)]
for path in export_ave_h5(store, AnnotationSet("ave", [], rows, background_id=0), out):
    print(f"background features: {path} ({len(ids)} videos)")
PY
WEAK=(--set "data.extra_background_audio=$BG/audio_feature.h5" --set "data.extra_background_visual=$BG/visual_feature.h5")

# 4. train, select on validation, evaluate on test (RUN/summary.json). name | config | extra --set
RUNS_ALL=(
  "ccln_fully|ave_ccln_fully|"
  "ccln_weakly|ave_ccln_weakly|weak"
  "ccln_cml|ave_ccln_cml|"
  "ccln_fully_AV|ave_ccln_fully|model.options.branch_mode=AV"
  "ccln_fully_AV+A|ave_ccln_fully|model.options.branch_mode=AV+A"
  "ccln_fully_AV+V+A|ave_ccln_fully|model.options.branch_mode=AV+V+A"
  "avlc_fully|ave_avlc_fully|"
  "avlc_weakly|ave_avlc_weakly|weak"
  "agva_fully|ave_agva_fully|"
  "agva_weakly|ave_agva_weakly|weak"
)
t0=$SECONDS
running=0
for spec in "${RUNS_ALL[@]}"; do
  IFS='|' read -r name cfg extra <<< "$spec"
  if [[ -n "${RUNS:-}" && " $RUNS " != *" $name "* ]]; then continue; fi
  args=(${SET[@]+"${SET[@]}"})
  if [[ "$extra" == weak ]]; then args+=("${WEAK[@]}"); elif [[ -n "$extra" ]]; then args+=(--set "$extra"); fi
  rm -rf "$W/run-$name"
  ( s=$SECONDS
    if "$AVEL" train --config "$REPO/configs/synthetic/$cfg.yaml" --store "$STORE" --annotations "$ANN" \
        --out "$W/run-$name" ${args[@]+"${args[@]}"} > "$W/train-$name.log" 2>&1; then
      echo "train $name: $((SECONDS - s)) s"
    else
      echo "train $name: FAILED after $((SECONDS - s)) s (see $W/train-$name.log)"
    fi ) &
  running=$((running + 1))
  if (( running >= PARALLEL )); then wait -n; running=$((running - 1)); fi
done
wait
echo "training: $((SECONDS - t0)) s"

# 5. report: test segment accuracy (best validation epoch), CML A2V / V2A, the all-background baseline
python3 - "$W" "$ANN" <<'PY'
import json, sys
from pathlib import Path
import numpy as np
import yaml
from avel.datasets.ave import load_ave, segment_labels

w, ann_path = Path(sys.argv[1]), sys.argv[2]
ann = load_ave(ann_path)
test = np.stack([segment_labels(s, background_id=ann.background_id) for s in ann.subset("test")])
bg = float((test == ann.background_id).mean())
# two label-only references: background everywhere, and the row's event class everywhere (what a weakly
# supervised model that never predicts background scores at best)
print(f"test split: {len(test)} rows, {test.size} segments; all-background accuracy {bg:.3f}, "
      f"video-class-everywhere accuracy {1 - bg:.3f}")
# CML chance: a uniformly drawn window among the T - l + 1 of an l-segment query (full-length excluded)
match = load_ave(ann_path, split="match")
lengths = [int((segment_labels(s, background_id=match.background_id) != match.background_id).sum())
           for s in match.subset("test")]
chance = [1 / (11 - n) for n in lengths if 0 < n < 10]
print(f"CML test split: {len(chance)} videos with a query; chance (uniform window) {np.mean(chance):.3f}")
for run in sorted(w.glob("run-*")):
    summary = run / "summary.json"
    if not summary.exists():
        print(f"{run.name[4:]:20s} no summary.json")
        continue
    s = json.loads(summary.read_text())
    t = s["test"]
    if "a2v_accuracy" in t:
        res = f"A2V {t['a2v_accuracy']:.3f}  V2A {t['v2a_accuracy']:.3f}  ({t['cml_videos']} videos)"
    else:
        res = f"segment accuracy {t['segment_accuracy']:.3f}"
    epochs = yaml.safe_load((run / "config.yaml").read_text())["optim"]["epochs"]
    print(f"{run.name[4:]:20s} test {res}  | best epoch {s['best_epoch']} / {epochs}, "
          f"validation score {s['best_validation_score']:.3f}")
PY
