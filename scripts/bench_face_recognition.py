#!/usr/bin/env python3
"""Side-by-side peer: the same stages as `facegate bench`, through face_recognition / dlib.

Needs dlib built from source with OpenBLAS (the strong build):
    apt-get install cmake libopenblas-dev liblapack-dev
    pip install --no-build-isolation dlib face_recognition
Usage: OMP_NUM_THREADS=1 python3 scripts/bench_face_recognition.py IMAGE [ITERS]
Prints JSON with medians in ms; compare with `facegate bench IMAGE --threads 1 --json`.
"""
import json, os, platform, statistics, sys, time

import dlib
import face_recognition
import face_recognition_models as frm
import numpy as np

path = sys.argv[1]
iters = int(sys.argv[2]) if len(sys.argv) > 2 else 20
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
    "machine": platform.processor() or platform.machine(),
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
    },
}
print(json.dumps(out, indent=1))
