#!/usr/bin/env bash
# A v-iashin/video_features checkout for extract_throughput.py's baseline (a), outside this repo.
#
#   benchmarks/setup_video_features.sh DIR [SOURCE]
#
# DIR/vf      video_features at the commit below (SOURCE: a git URL or a local clone;
#             default the GitHub repository)
# DIR/deps    its imports that our environment lacks (opencv-python-headless, omegaconf, resampy),
#             installed with --no-deps next to our torch
# DIR/bin     an ffmpeg executable (from imageio-ffmpeg; video_features calls the ffmpeg CLI)
#
# Prints the extract_throughput.py options that use them. Run it with our venv's python on PATH.
set -euo pipefail
dir=${1:?usage: setup_video_features.sh DIR [SOURCE]}
source=${2:-https://github.com/v-iashin/video_features}
commit=a2f61b7a4cf0ca6a2d91dcc2182f57e7cfd12664  # main on 2025-01-31, the code read for the docs
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ ! -d "$dir/vf/.git" ]; then
    git clone --quiet --no-checkout "$source" "$dir/vf"
fi
# the code only: the benchmark writes its own random checkpoint (the released ones are large)
git -C "$dir/vf" ls-tree -r --name-only "$commit" -- main.py models utils configs \
    | grep -v -E '\.(pt|pth)$' | xargs git -C "$dir/vf" checkout --quiet "$commit" --
python -m pip install --quiet --target "$dir/deps" --no-deps opencv-python-headless omegaconf \
    "antlr4-python3-runtime==4.9.3" imageio-ffmpeg resampy
mkdir -p "$dir/bin"
ln -sf "$(PYTHONPATH="$dir/deps" python -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')" "$dir/bin/ffmpeg"
echo "--video-features-repo $dir/vf --video-features-pythonpath $dir/deps --ffmpeg-dir $dir/bin"
