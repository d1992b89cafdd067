#!/usr/bin/env bash
# Checkouts of the reference code the parity fixtures are recorded from, outside this repo.
#
#   benchmarks/parity/setup_refs.sh DIR [VIDEO_FEATURES_SRC] [PYTORCH_I3D_SRC] [TORCHVGGISH_SRC] [ONE_PEACE_SRC]
#
# DIR/vfsetup/{vf,deps,bin}  v-iashin/video_features (benchmarks/setup_video_features.sh)
# DIR/pytorch-i3d            piergiaj/pytorch-i3d at the commit below
# DIR/torchvggish            harritaylor/torchvggish at the commit below
# DIR/one-peace              OFA-Sys/ONE-PEACE at the commit below (model code; fairseq is stood in for)
# Sources default to the GitHub repositories; a local clone or bare mirror works too.
# Then: python benchmarks/parity/record.py --refs DIR  (with our venv's python on PATH).
set -euo pipefail
dir=${1:?usage: setup_refs.sh DIR [VIDEO_FEATURES_SRC] [PYTORCH_I3D_SRC] [TORCHVGGISH_SRC] [ONE_PEACE_SRC]}
vf_src=${2:-https://github.com/v-iashin/video_features}
i3d_src=${3:-https://github.com/piergiaj/pytorch-i3d}
vggish_src=${4:-https://github.com/harritaylor/torchvggish}
onepeace_src=${5:-https://github.com/OFA-Sys/ONE-PEACE}
i3d_commit=05783d11f9632b25fe3d50395a9c9bb51f848d6d      # master, 2018-06-28
vggish_commit=f3f90969ce8fb77a05d984b892ddf662e8466377   # master, 2021-11-03
onepeace_commit=71cfadf0566879ccaeb59bb114bd0c4ae14020c2  # main, 2024-10-06
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/setup_video_features.sh" "$dir/vfsetup" "$vf_src" >/dev/null
checkout() {  # SRC DEST COMMIT: the code only (no weights, images, audio or video files)
    [ -d "$2/.git" ] || git clone --quiet --no-checkout "$1" "$2"
    git -C "$2" ls-tree -r --name-only "$3" | grep -v -E '\.(pt|pth|png|jpe?g|gif|mp4|wav|pdf|bin)$' \
        | xargs git -C "$2" checkout --quiet "$3" --
}
checkout "$i3d_src" "$dir/pytorch-i3d" "$i3d_commit"
checkout "$vggish_src" "$dir/torchvggish" "$vggish_commit"
checkout "$onepeace_src" "$dir/one-peace" "$onepeace_commit"
echo "$dir"
