#!/usr/bin/env python3
"""Face-like vectors for approximate-search recall: a gallery of N identities (one unit-length
template each) and two query sets, written as raw little-endian files for `facegate bench-search`.

- mated: a fresh sample of an enrolled identity (cosine to its own centre ~0.8, so two samples of
  one person sit at cosine ~0.64 and different people near 0, as with ArcFace-style templates);
  this is what an e-gate or watchlist search looks like when the person is enrolled;
- random: uniform unit vectors, the worst case for a graph index (no structure at all).

Ground truth: exact top-k by inner product (= Euclidean ranking on unit vectors), float64 NumPy.

usage: scripts/make_face_like_vectors.py OUT_DIR [--n 100000] [--q 1000] [--dim 128] [--k 10]
then:  facegate bench-search --base OUT/gallery.f32 --queries OUT/mated.f32 --truth OUT/mated.truth.i64 \
         --dim 128 --index hnsw --batch 1000 --threads 2
"""
import argparse, os

import numpy as np


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def top_k(base, q, k):
    ids = np.empty((len(q), k), dtype=np.int64)
    for s in range(0, len(q), 256):
        sc = q[s:s + 256].astype(np.float64) @ base.astype(np.float64).T
        part = np.argpartition(-sc, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sc, part, 1), axis=1)
        ids[s:s + 256] = np.take_along_axis(part, order, 1)
    return ids


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--q", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    os.makedirs(a.out, exist_ok=True)
    centres = unit(rng.standard_normal((a.n, a.dim)))
    sigma = 0.75 / np.sqrt(a.dim)
    gallery = unit(centres + sigma * rng.standard_normal((a.n, a.dim)))
    who = rng.integers(0, a.n, a.q)
    mated = unit(centres[who] + sigma * rng.standard_normal((a.q, a.dim)))
    random = unit(rng.standard_normal((a.q, a.dim)))
    gallery.tofile(os.path.join(a.out, "gallery.f32"))
    for name, q in (("mated", mated), ("random", random)):
        q.tofile(os.path.join(a.out, f"{name}.f32"))
        t = top_k(gallery, q, a.k)
        t.tofile(os.path.join(a.out, f"{name}.truth.i64"))
        if name == "mated":
            print(f"mated queries whose exact nearest is their own identity: {np.mean(t[:, 0] == who):.4f}")
    print(f"wrote {a.out}: gallery {a.n} x {a.dim}, {a.q} mated and {a.q} random queries, top-{a.k} truth")


if __name__ == "__main__":
    main()
