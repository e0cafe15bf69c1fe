#!/usr/bin/env python3
"""Exact top-k 1:N search, facegate vs FAISS IndexFlatIP, same data, same k, same threads, one run.

Data: n unit-length Gaussian vectors (the gallery stores cosine templates unit length; for unit
vectors inner-product and Euclidean rankings agree), queries drawn the same way, seed fixed.
Ground truth: float64 brute force in NumPy. FAISS gets its best settings: batched queries with
distance_compute_blas_threshold lowered to 20 (BLAS sgemm path); single queries use its SIMD path;
and its bundled OpenBLAS runs the best kernel family this CPU has (OPENBLAS_CORETYPE picked from
the CPU flags: SkylakeX with AVX-512, Haswell with AVX2), because the OpenBLAS inside the faiss-cpu
wheel is older than some CPUs and may fall back to generic kernels on its own. The output prints
threadpoolctl's view of every BLAS library FAISS loaded (version and the kernel family it runs).
FAISS's own int8 path, IndexScalarQuantizer QT_8bit, is measured too. Needs
`pip install faiss-cpu numpy threadpoolctl`.

usage: scripts/bench_search_faiss.py [--n 1000000] [--dims 128 512] [--threads 1 2] [--batch 256] [--repeat 5]
       [--index exact compact]   (facegate layouts to run; compact re-scores from the vectors file's rows)
       [--openblas-coretype auto|none|NAME]   (FAISS's OpenBLAS kernels: auto = from the CPU flags)
"""
import argparse, json, os, subprocess, sys, tempfile, time

import numpy as np

from machine import describe, openblas_coretype


def unit(rng, n, d):
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def truth(base, q, k):
    best = np.full((len(q), k), -np.inf)
    ids = np.zeros((len(q), k), dtype=np.int64)
    qd = q.astype(np.float64)
    for s in range(0, len(base), 100_000):
        sc = qd @ base[s:s + 100_000].astype(np.float64).T
        allsc = np.concatenate([best, sc], axis=1)
        allid = np.concatenate([ids, np.arange(s, s + sc.shape[1])[None, :].repeat(len(q), 0)], axis=1)
        top = np.argsort(-allsc, axis=1)[:, :k]
        best = np.take_along_axis(allsc, top, 1)
        ids = np.take_along_axis(allid, top, 1)
    return ids


FAISS_CHILD = r"""
import json, os, sys, time, numpy as np, faiss
from threadpoolctl import threadpool_info
base_p, q_p, truth_p, d, k, threads, batch, single, repeat = sys.argv[1:10]
d, k, threads, batch, single, repeat = int(d), int(k), int(threads), int(batch), int(single), int(repeat)
faiss.omp_set_num_threads(threads)
faiss.cvar.distance_compute_blas_threshold = 20
base = np.fromfile(base_p, dtype=np.float32).reshape(-1, d)
q = np.fromfile(q_p, dtype=np.float32).reshape(-1, d)
tr = np.fromfile(truth_p, dtype=np.int64).reshape(-1, k)[:batch]
blas = [{"lib": os.path.basename(i.get("filepath", "")), "version": i.get("version"), "kernels": i.get("architecture"),
         "threads": i.get("num_threads")} for i in threadpool_info() if i.get("user_api") == "blas"]
def measure(index, kernel):
    index.search(q[:1], k)
    bs = float("inf")
    for _ in range(max(repeat, 1)):
        t = time.perf_counter(); _, I = index.search(q[:batch], k); bs = min(bs, time.perf_counter() - t)
    lat = []
    for i in range(single):
        t = time.perf_counter(); index.search(q[i:i + 1], k); lat.append((time.perf_counter() - t) * 1e3)
    lat.sort()
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(I, tr)]))
    return {"engine": "faiss " + faiss.__version__, "kernel": kernel, "blas": blas, "coretype_env": os.environ.get("OPENBLAS_CORETYPE"),
            "n": len(base), "dim": d, "k": k, "threads": threads, "batch": batch,
            "batch_qps": batch / bs, "batch_repeats": max(repeat, 1), "single_ms_median": lat[len(lat) // 2], "single_ms_p99": lat[len(lat) * 99 // 100],
            "recall_at_k": recall}
t = time.perf_counter(); flat = faiss.IndexFlatIP(d); flat.add(base); build = time.perf_counter() - t
out = {"flat": measure(flat, "IndexFlatIP, BLAS sgemm batches (threshold 20), SIMD single")}
out["flat"]["build_s"] = build
del flat
t = time.perf_counter()
sq = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
sq.train(base); sq.add(base); build = time.perf_counter() - t
out["sq8"] = measure(sq, "IndexScalarQuantizer QT_8bit (int8 codes, no re-scoring)")
out["sq8"]["build_s"] = build
print(json.dumps(out))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dims", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--single", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=5, help="batch timings per engine; the fastest counts (both engines)")
    ap.add_argument("--index", nargs="+", default=["exact", "compact"], choices=["exact", "compact"])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--openblas-coretype", default="auto",
                    help="FAISS's OpenBLAS kernel family: auto (from the CPU flags), none (OpenBLAS decides), or a name")
    ap.add_argument("--facegate", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "facegate"))
    a = ap.parse_args()
    coretype = {"auto": openblas_coretype(), "none": None}.get(a.openblas_coretype, a.openblas_coretype)
    print(f"machine: {describe()}; n={a.n}, k={a.k}, batch={a.batch} (fastest of {a.repeat} timings, both engines), single={a.single}; "
          f"FAISS's OpenBLAS kernels: OPENBLAS_CORETYPE={coretype or '(unset: OpenBLAS decides)'}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for d in a.dims:
            rng = np.random.default_rng(12345 + d)
            base, q = unit(rng, a.n, d), unit(rng, max(a.batch, a.single), d)
            bp, qp, tp = (os.path.join(tmp, f"{x}{d}.bin") for x in ("base", "q", "truth"))
            base.tofile(bp)
            q.tofile(qp)
            truth(base, q, a.k).tofile(tp)
            del base
            for th in a.threads:
                env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
                if coretype:
                    env["OPENBLAS_CORETYPE"] = coretype
                env["OMP_NUM_THREADS"] = str(th)
                env["OPENBLAS_NUM_THREADS"] = str(th)
                f = subprocess.run([sys.executable, "-c", FAISS_CHILD, bp, qp, tp, str(d), str(a.k), str(th), str(a.batch), str(a.single), str(a.repeat)],
                                   env=env, capture_output=True, text=True, check=True)
                both = json.loads(f.stdout)
                fr, sq = both["flat"], both["sq8"]
                print(json.dumps(both))
                for ix in a.index:
                    g = subprocess.run([a.facegate, "bench-search", "--base", bp, "--queries", qp, "--dim", str(d), "--k", str(a.k),
                                        "--threads", str(th), "--batch", str(a.batch), "--truth", tp, "--single", str(a.single), "--repeat", str(a.repeat),
                                        "--index", ix],
                                       capture_output=True, text=True, check=True)
                    gr = json.loads(g.stdout)
                    rows.append((d, th, gr, fr, sq))
                    print(json.dumps(gr))
    print()
    print("| dim | threads | facegate index | facegate QPS (batch) | FAISS flat QPS | ratio | FAISS SQ8 QPS | ratio | facegate single ms | FAISS flat / SQ8 single ms | recall@k facegate / flat / SQ8 | facegate memory MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for d, th, g, f, sq in rows:
        print(f"| {d} | {th} | {g['index']} | {g['batch_qps']:.1f} | {f['batch_qps']:.1f} | {g['batch_qps'] / f['batch_qps']:.2f}x | "
              f"{sq['batch_qps']:.1f} | {g['batch_qps'] / sq['batch_qps']:.2f}x | "
              f"{g['single_ms_median']:.2f} | {f['single_ms_median']:.2f} / {sq['single_ms_median']:.2f} | "
              f"{g['recall_at_k']:.4f} / {f['recall_at_k']:.4f} / {sq['recall_at_k']:.4f} | {g['memory_mb']:.0f} |")
    kernels = sorted({f"{b['lib']} {b['version']}: {b['kernels']}" for r in rows for b in r[3]['blas']})
    print(f"FAISS BLAS (threadpoolctl): {'; '.join(kernels)}")
    print(f"facegate kernel: {rows[0][2]['kernel']}; facegate exact check (int8 scan == exhaustive f32): "
          f"{all(r[2]['equals_exhaustive_f32'] for r in rows)}")
    print("facegate single-query scan against this machine's streaming read bandwidth (same process, same threads; "
          "queries timed in rounds, each after one probe pass; fraction = median of the rounds' ratios):")
    for d, th, g, _, _ in rows:
        if g.get("stream_read_gbps"):
            lo, hi = g["stream_read_gbps_range"]
            print(f"  {d}-D, {th} thread(s), {g['index']}: {g['single_scan_gbps']:.1f} GB/s (median query); probe median "
                  f"{g['stream_read_gbps']:.1f} GB/s (passes {lo:.1f}-{hi:.1f}); fraction {g['single_scan_fraction_of_bandwidth']:.2f}")
    peaks = sorted({g["int8_peak_method"] for _, _, g, _, _ in rows if g.get("int8_peak_method")})
    print(f"facegate batch scan against one core's measured multiply-add peak for its kernel (same process; "
          f"{'; '.join(peaks) or 'no peak probe for the portable kernel'}):")
    for d, th, g, _, _ in rows:
        if g.get("int8_peak_gmacs_per_core"):
            print(f"  {d}-D, {th} thread(s), {g['index']}: {g['batch_int8_gmacs_per_thread']:.0f} of "
                  f"{g['int8_peak_gmacs_per_core']:.0f} GMAC/s per thread = {g['batch_fraction_of_int8_peak']:.2f}")


if __name__ == "__main__":
    main()
