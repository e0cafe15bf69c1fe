#!/usr/bin/env python3
"""Side-by-side peer: the same stages as `facegate bench`, through face_recognition / dlib, then
facegate on the same image in the same run, and the ratios.

Needs dlib built from source with OpenBLAS (the strong build):
    apt-get install cmake libopenblas-dev liblapack-dev
    pip install wheel && pip install --no-build-isolation dlib face_recognition
Usage: OMP_NUM_THREADS=1 python3 scripts/bench_face_recognition.py IMAGE [ITERS]
       [--facegate target/release/facegate] [--min-face 100 --max-face 400]
Prints dlib's medians (JSON), facegate's (`facegate bench --threads 1 --json`), and a table.
"""
import json, os, statistics, sys, time

from machine import describe, openblas_coretype

# Debian's OpenBLAS 0.3.21 does not recognise this VM's CPU model and falls back to its generic
# "Prescott" kernels (dlib's descriptor 32-34 ms instead of 18-19): give the peer its best by
# naming the kernel family the CPU supports, unless the caller chose one.
if "OPENBLAS_CORETYPE" not in os.environ:
    core = openblas_coretype()
    if core:
        os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, "OPENBLAS_CORETYPE": core})

import dlib
import face_recognition
import face_recognition_models as frm
import numpy as np

import argparse
import subprocess

ap = argparse.ArgumentParser()
ap.add_argument("image")
ap.add_argument("iters", nargs="?", type=int, default=20)
ap.add_argument("--facegate", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "facegate"))
ap.add_argument("--min-face", default="100")
ap.add_argument("--max-face", default="400")
args = ap.parse_args()
path, iters = args.image, args.iters
img = face_recognition.load_image_file(path)
hog = dlib.get_frontal_face_detector()
cnn = dlib.cnn_face_detection_model_v1(frm.cnn_face_detector_model_location())
sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())


def median_ms(fn, n=iters):
    fn()
    t = []
    for _ in range(n):
        s = time.perf_counter()
        fn()
        t.append((time.perf_counter() - s) * 1e3)
    return statistics.median(t)


rect = hog(img, 0)[0]
shape = sp(img, rect)
chip = dlib.get_face_chip(img, shape, 150, 0.25)
out = {
    "machine": describe(),
    "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
    "dlib": dlib.__version__,
    "ms": {
        "detect_hog_u0": median_ms(lambda: hog(img, 0)),
        "detect_mmod_u0_full_pyramid": median_ms(lambda: cnn(img, 0), max(3, iters // 4)),
        "landmarks_5": median_ms(lambda: sp(img, rect), iters * 10),
        "chip": median_ms(lambda: dlib.get_face_chip(img, shape, 150, 0.25), iters * 10),
        "descriptor_single": median_ms(lambda: net.compute_face_descriptor(chip)),
        "descriptor_per_face_batch16": median_ms(lambda: net.compute_face_descriptor([chip] * 16)) / 16,
        "face_recognition_locations_plus_encodings": median_ms(
            lambda: face_recognition.face_encodings(img, face_recognition.face_locations(img))),
        "face_recognition_hog_u0_locations_plus_encodings": median_ms(
            lambda: face_recognition.face_encodings(
                img, face_recognition.face_locations(img, number_of_times_to_upsample=0))),
    },
}
out["blas"] = bool(getattr(dlib, "DLIB_USE_BLAS", False))
out["openblas_coretype"] = os.environ.get("OPENBLAS_CORETYPE", "auto")
print(json.dumps(out, indent=1))

# facegate on the same image, same thread count, right after: with the pack's MMOD detector and
# with dlib's HOG detector (`--detector hog`).
def facegate_bench(*extra):
    return json.loads(subprocess.run(
        [args.facegate, "bench", path, "--threads", "1", "--iters", str(iters), "--json",
         "--min-face", args.min_face, "--max-face", args.max_face, *extra],
        capture_output=True, text=True, check=True).stdout)


fg = facegate_bench()
fg_hog = facegate_bench("--detector", "hog")
print(json.dumps(fg, indent=1))
print(json.dumps(fg_hog, indent=1))
d, f = out["ms"], fg["ms"]
for k, v in fg_hog["ms"].items():
    f["hog_" + k] = v
rows = [
    ("descriptor, single face", "descriptor_single", "descriptor_single"),
    ("descriptor per face, batch of 16", "descriptor_per_face_batch16", "descriptor_per_face_batch16"),
    ("MMOD detection, full pyramid", "detect_full_pyramid", "detect_mmod_u0_full_pyramid"),
    ("5 landmarks", "landmarks_5", "landmarks_5"),
    ("chip", "chip", "chip"),
    (f"end to end (facegate: MMOD {args.min_face}-{args.max_face} px; face_recognition: HOG u1 locate + encode)",
     "end_to_end_face_range_excl_decode", "face_recognition_locations_plus_encodings"),
    ("HOG detection, full pyramid, upsample 0 (boxes identical to dlib's)", "hog_detect_full_pyramid",
     "detect_hog_u0"),
    (f"end to end (facegate: HOG {args.min_face}-{args.max_face} px; face_recognition: HOG u1 locate + encode)",
     "hog_end_to_end_face_range_excl_decode", "face_recognition_locations_plus_encodings"),
    (f"end to end (facegate: HOG {args.min_face}-{args.max_face} px; face_recognition: HOG u0 locate + encode)",
     "hog_end_to_end_face_range_excl_decode", "face_recognition_hog_u0_locations_plus_encodings"),
]
print()
print(f"machine: {out['machine']}; threads: 1; dlib {out['dlib']} (BLAS: {out['blas']}, OpenBLAS kernels: "
      f"{out['openblas_coretype']}); medians of {iters} runs")
print("| stage | facegate ms | dlib / face_recognition ms | ratio |")
print("|---|---|---|---|")
for name, fk, dk in rows:
    print(f"| {name} | {f[fk]:.2f} | {d[dk]:.2f} | {d[dk] / f[fk]:.1f}x |")
