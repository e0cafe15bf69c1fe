#!/usr/bin/env python3
"""Cross-check facegate's tracking metrics with `motmetrics` and TrackEval on the same boxes.

    facegate eval video --images DIR --mot-dir OUT [...]
    python3 -m venv /tmp/mot && /tmp/mot/bin/pip install motmetrics
    /tmp/mot/bin/pip install --no-deps trackeval     # HOTA's reference code; needs numpy, scipy
    /tmp/mot/bin/python scripts/mot_crosscheck.py OUT

For every sceneN_gt.txt / sceneN_hyp.txt pair (MOTChallenge format) it computes MOTA, IDF1,
identity switches, misses and false positives with motmetrics (IoU >= 0.5), and HOTA, DetA,
AssA and LocA with TrackEval's HOTA metric (IoU thresholds 0.05-0.95, means over them), and
prints them next to the figures facegate computed (sceneN_facegate.json).
"""
import json
import pathlib
import sys

import motmetrics as mm
import numpy as np
import trackeval
from trackeval.datasets._base_dataset import _BaseDataset
from trackeval.metrics import HOTA


def load(path):
    rows = [l.split(",") for l in path.read_text().splitlines() if l.strip()]
    by_frame = {}
    for r in rows:
        f, i = int(r[0]), int(r[1])
        by_frame.setdefault(f, []).append((i, [float(x) for x in r[2:6]]))
    return by_frame


def hota(gt, hyp):
    """TrackEval's HOTA on one sequence: ids made dense, IoU as its MOTChallenge loader computes
    it (boxes x, y, w, h)."""
    gt_ids = {i: k for k, i in enumerate(sorted({i for f in gt.values() for i, _ in f}))}
    tr_ids = {i: k for k, i in enumerate(sorted({i for f in hyp.values() for i, _ in f}))}
    data = {"gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    for f in sorted(set(gt) | set(hyp)):
        g, h = gt.get(f, []), hyp.get(f, [])
        data["gt_ids"].append(np.array([gt_ids[i] for i, _ in g], dtype=int))
        data["tracker_ids"].append(np.array([tr_ids[i] for i, _ in h], dtype=int))
        data["similarity_scores"].append(
            _BaseDataset._calculate_box_ious(
                np.array([b for _, b in g]).reshape(-1, 4),
                np.array([b for _, b in h]).reshape(-1, 4),
                box_format="xywh",
            )
        )
    data.update(
        num_gt_ids=len(gt_ids),
        num_tracker_ids=len(tr_ids),
        num_gt_dets=sum(len(x) for x in data["gt_ids"]),
        num_tracker_dets=sum(len(x) for x in data["tracker_ids"]),
        num_timesteps=len(data["gt_ids"]),
    )
    res = HOTA().eval_sequence(data)
    return {k: float(np.mean(res[k])) for k in ("HOTA", "DetA", "AssA", "LocA")}


def main(out):
    out = pathlib.Path(out)
    print(f"motmetrics {mm.__version__}, trackeval {trackeval.__version__}")
    worst = 0.0
    worst_hota = 0.0
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
        te = hota(gt, hyp)
        mine = ours["hota"]
        hpairs = [(k, te[k], mine[k.lower()]) for k in ("HOTA", "DetA", "AssA", "LocA")]
        print(name + ": " + "; ".join(f"{k} trackeval {a:.4f} facegate {b:.4f}" for k, a, b in hpairs))
        worst_hota = max([worst_hota] + [abs(a - b) for _, a, b in hpairs])
    print(f"largest MOTA/IDF1 difference: {worst:.6f}")
    print(f"largest HOTA/DetA/AssA/LocA difference: {worst_hota:.6f}")


if __name__ == "__main__":
    main(sys.argv[1])
