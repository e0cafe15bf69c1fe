#!/usr/bin/env python3
"""Cross-check facegate's tracking metrics with the `motmetrics` package on the same boxes.

    facegate eval video --images DIR --mot-dir OUT [...]
    python3 -m venv /tmp/mot && /tmp/mot/bin/pip install motmetrics
    /tmp/mot/bin/python scripts/mot_crosscheck.py OUT

For every sceneN_gt.txt / sceneN_hyp.txt pair (MOTChallenge format) it computes MOTA, IDF1,
identity switches, misses and false positives with motmetrics (IoU >= 0.5) and prints them next
to the figures facegate computed (sceneN_facegate.json).
"""
import json
import pathlib
import sys

import motmetrics as mm
import numpy as np


def load(path):
    rows = [l.split(",") for l in path.read_text().splitlines() if l.strip()]
    by_frame = {}
    for r in rows:
        f, i = int(r[0]), int(r[1])
        by_frame.setdefault(f, []).append((i, [float(x) for x in r[2:6]]))
    return by_frame


def main(out):
    out = pathlib.Path(out)
    print(f"motmetrics {mm.__version__}")
    worst = 0.0
    for gt_path in sorted(out.glob("scene*_gt.txt")):
        name = gt_path.name[: -len("_gt.txt")]
        gt = load(gt_path)
        hyp = load(out / f"{name}_hyp.txt")
        acc = mm.MOTAccumulator(auto_id=False)
        for f in sorted(set(gt) | set(hyp)):
            g = gt.get(f, [])
            h = hyp.get(f, [])
            d = mm.distances.iou_matrix(
                np.array([b for _, b in g]).reshape(-1, 4),
                np.array([b for _, b in h]).reshape(-1, 4),
                max_iou=0.5,
            )
            acc.update([i for i, _ in g], [i for i, _ in h], d, frameid=f)
        m = mm.metrics.create().compute(
            acc,
            metrics=["mota", "idf1", "num_switches", "num_misses", "num_false_positives"],
            name=name,
        )
        ours = json.loads((out / f"{name}_facegate.json").read_text())
        row = m.iloc[0]
        pairs = [
            ("MOTA", row["mota"], ours["mota"]),
            ("IDF1", row["idf1"], ours["idf1"]),
            ("switches", row["num_switches"], ours["id_switches"]),
            ("misses", row["num_misses"], ours["misses"]),
            ("false positives", row["num_false_positives"], ours["false_positives"]),
        ]
        print(name + ": " + "; ".join(f"{k} motmetrics {a:.4f} facegate {b:.4f}" for k, a, b in pairs))
        worst = max(worst, abs(row["mota"] - ours["mota"]), abs(row["idf1"] - ours["idf1"]))
    print(f"largest MOTA/IDF1 difference: {worst:.6f}")


if __name__ == "__main__":
    main(sys.argv[1])
