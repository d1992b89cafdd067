#!/usr/bin/env bash
# One short GPU run (< 8 minutes on one GPU): windows/s of I3D RGB, RAFT + I3D flow and VGGish
# on real clips in fp32 and bf16, GPU utilisation (nvidia-smi every 200 ms), decode-bound or
# model-bound, the end-to-end `avel extract` rate, and the estimate for all of UnAV-100.
#
#   benchmarks/gpu_check.sh [OUT.json] [-- extra options of benchmarks/gpu_check.py]
#
# Clips: video_features' two sample videos (real H.264 + AAC, 32 s), from CLIPS_DIR if set,
# else from the git repository VF_REPO (default: the mirror used by this project). Python:
# PYTHON (default: python on PATH), run from the repository root with PYTHONPATH set to it.
# A test runs it as `benchmarks/gpu_check.sh OUT -- --device cpu --dry`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-gpu_check.json}
shift || true
[ "${1:-}" = "--" ] && shift
python=${PYTHON:-python}
vf_repo=${VF_REPO:-/work/.mirror/v-iashin+video_features/repo}
clips=$(mktemp -d)
trap 'rm -rf "$clips"' EXIT
for name in v_GGSY1Qvo990 v_ZNVhz7ctTq0; do
    if [ -n "${CLIPS_DIR:-}" ]; then
        cp "$CLIPS_DIR/$name.mp4" "$clips/"
    else
        git -C "$vf_repo" show "HEAD:sample/$name.mp4" > "$clips/$name.mp4"
    fi
done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
echo "cpus: $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg)"
# 470 s: the whole check stays under 8 minutes on a GPU even when a step hangs
# (GPU_CHECK_TIMEOUT_S overrides it: the CPU dry run of the test is slower on a loaded machine)
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" timeout "${GPU_CHECK_TIMEOUT_S:-470}" "$python" "$root/benchmarks/gpu_check.py" \
    "$clips/v_GGSY1Qvo990.mp4" "$clips/v_ZNVhz7ctTq0.mp4" "$@" | tee "$out"
