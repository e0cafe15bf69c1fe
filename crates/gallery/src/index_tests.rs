//! Tests of `index`, kept beside it so the module reads as the algorithm.

use super::*;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

fn vecs(seed: u8, n: usize, dim: usize, clustered: bool) -> Vec<Vec<f32>> {
    let mut rng = ChaCha20Rng::from_seed([seed; 32]);
    let mut u = move || (rng.next_u32() as f64 / u32::MAX as f64 * 2.0 - 1.0) as f32;
    let centre: Vec<f32> = (0..dim).map(|_| u() * 0.2).collect();
    (0..n)
        .map(|_| {
            (0..dim)
                .map(|c| {
                    if clustered {
                        centre[c] + u() * 0.02
                    } else {
                        u() * 0.2
                    }
                })
                .collect()
        })
        .collect()
}

/// A full index of `base` (ids 0, 1, …, never expiring), scanned by `kernel`.
fn index_of<V: AsRef<[f32]>>(base: &[V], dim: usize, kernel: Kernel) -> ExactIndex {
    let mut idx = ExactIndex::new(dim);
    idx.kernel = kernel;
    for (i, x) in base.iter().enumerate() {
        idx.push(i as u64, x.as_ref(), i64::MAX);
    }
    idx
}

#[test]
fn int8_scan_equals_exhaustive_f32() {
    for (dim, clustered) in [(128, false), (128, true), (512, false), (37, true)] {
        let base = vecs(1, 3000, dim, clustered);
        for kernel in Kernel::available() {
            let mut idx = ExactIndex::new(dim);
            idx.kernel = kernel;
            for (i, x) in base.iter().enumerate() {
                // Some rows expire in the past and must never come back.
                let exp = if i % 7 == 0 { 100 } else { i64::MAX };
                idx.push(i as u64 * 3, x, exp);
            }
            let queries: Vec<Vec<f32>> = vecs(2, 20, dim, clustered)
                .into_iter()
                .chain(base.iter().take(5).cloned())
                .collect();
            let qs: Vec<&[f32]> = queries.iter().map(|q| q.as_slice()).collect();
            for k in [1, 10, 50] {
                let got = idx.search(&qs, k, None, 1000);
                for (q, g) in qs.iter().zip(&got) {
                    let want = idx.search_exhaustive(q, k, None, 1000);
                    assert_eq!(g, &want, "{kernel:?} dim {dim} clustered {clustered} k {k}");
                    assert!(g.iter().all(|h| (h.id / 3) % 7 != 0));
                }
            }
            // A floor (open-set threshold) leaves out weaker rows, exactly as exhaustive search does.
            let floor = idx.search_exhaustive(qs[0], 5, None, 1000)[4].score;
            let got = idx.search(&qs[..1], 50, Some(floor), 1000);
            assert_eq!(got[0], idx.search_exhaustive(qs[0], 50, Some(floor), 1000));
            assert_eq!(got[0].len(), 5);
        }
    }
}

#[test]
fn batches_of_every_size_equal_exhaustive_search() {
    // Groups of 8, 4, 2 and 1 queries and calls of four, two or one blocks: every batch size up
    // to 19 covers each combination, on every kernel the CPU has; 71 blocks make two cache
    // tiles.
    let dim = 64;
    let base = vecs(5, 16 * 70 + 5, dim, true);
    let queries = vecs(6, 19, dim, true);
    for kernel in Kernel::available() {
        let idx = index_of(&base, dim, kernel);
        for n in 1..=queries.len() {
            let qs: Vec<&[f32]> = queries[..n].iter().map(|q| q.as_slice()).collect();
            let got = idx.search(&qs, 7, None, 0);
            for (q, g) in qs.iter().zip(&got) {
                assert_eq!(
                    g,
                    &idx.search_exhaustive(q, 7, None, 0),
                    "{kernel:?} batch of {n}"
                );
            }
        }
    }
}

#[test]
fn ranges_scanned_in_parallel_share_tau_and_still_answer_as_exhaustive_search() {
    // 8 threads scan 16 ranges, each taking the highest tau any range has published. The rows
    // come in copies placed in different ranges (ties across ranges), scores of either sign, and
    // a floor is tried too.
    // (The bounds are conservative, so a tau published a bound too high mostly goes unnoticed;
    // what this catches is a tau that does not hold: wrong sign, wrong end, wrong query.)
    let dim = 128;
    let distinct = vecs(11, 16 * 40, dim, true);
    let base: Vec<&Vec<f32>> = distinct.iter().chain(distinct.iter().rev()).collect();
    // Queries near the rows (positive scores) and their opposites (every score negative).
    let near = vecs(12, 24, dim, true);
    let queries: Vec<Vec<f32>> = near
        .iter()
        .cloned()
        .chain(near.iter().map(|q| q.iter().map(|v| -v).collect()))
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(8)
        .build()
        .unwrap();
    for kernel in Kernel::available() {
        let idx = index_of(&base, dim, kernel);
        let qs: Vec<&[f32]> = queries
            .iter()
            .map(|q| q.as_slice())
            .chain(distinct.iter().step_by(97).map(|x| x.as_slice()))
            .collect();
        for k in [1, 9, 40] {
            let got = pool.install(|| idx.search(&qs, k, None, 0));
            for (q, g) in qs.iter().zip(&got) {
                assert_eq!(g, &idx.search_exhaustive(q, k, None, 0), "{kernel:?} k {k}");
            }
        }
        let floor = idx.search_exhaustive(qs[0], 6, None, 0)[5].score;
        let got = pool.install(|| idx.search(&qs[..1], 40, Some(floor), 0));
        assert_eq!(got[0], idx.search_exhaustive(qs[0], 40, Some(floor), 0));
    }
}

#[test]
fn shared_tau_keeps_the_order_of_every_value_and_only_rises() {
    let values = [
        f32::NEG_INFINITY,
        -3.0e38,
        -1.5,
        -1.0e-30,
        -0.0,
        0.0,
        1.0e-30,
        0.25,
        7.0,
        3.0e38,
        f32::INFINITY,
    ];
    for w in values.windows(2) {
        assert!(
            SharedTau::ordered(w[0]) <= SharedTau::ordered(w[1]),
            "{w:?}"
        );
    }
    for &v in &values {
        let t = SharedTau::new(v);
        assert_eq!(t.get().to_bits(), v.to_bits());
    }
    let t = SharedTau::new(f32::NEG_INFINITY);
    for v in [-1.5, 0.25, -7.0, 0.2, 3.0] {
        t.raise(v);
    }
    assert_eq!(t.get(), 3.0);
}

/// The AMX kernel is offered exactly where Linux says the CPU has AMX int8 (its
/// `/proc/cpuinfo` flags; on the AMD hosts of this project, nowhere). Where a run sets
/// `FACEGATE_EXPECT_AMX` (`scripts/amx_emulated.sh`, on an emulated Sapphire Rapids) it must be
/// the kernel chosen: without this the twin tests would pass there without ever running it.
#[test]
fn amx_is_offered_where_the_cpu_and_os_have_it() {
    let available = Kernel::available();
    if std::env::var_os("FACEGATE_EXPECT_AMX").is_some() {
        assert_eq!(available[0], Kernel::Amx, "{available:?}");
    }
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let flags = cpuinfo.lines().find(|l| l.starts_with("flags")).unwrap();
        let has = |f: &str| flags.split_whitespace().any(|w| w == f);
        let linux_says = has("amx_tile") && has("amx_int8") && has("avx512_vnni");
        assert_eq!(amx::usable(), has("amx_tile") && has("amx_int8"), "{flags}");
        assert_eq!(
            available.contains(&Kernel::Amx),
            linux_says,
            "{available:?}"
        );
    }
}

#[test]
fn tile_kernels_agree_bit_for_bit() {
    let fast: Vec<Kernel> = Kernel::available()
        .into_iter()
        .filter(|k| *k != Kernel::Portable)
        .collect();
    if fast.is_empty() {
        eprintln!("no AVX2 or AVX-512 VNNI on this CPU: only the portable kernel exists here");
        return;
    }
    for (fast, dim) in fast.iter().flat_map(|f| [128, 512, 37].map(|d| (*f, d))) {
        let base = vecs(7, LANES * 10, dim, false);
        let mut idx = ExactIndex::new(dim);
        for (i, x) in base.iter().enumerate() {
            idx.push(i as u64, x, i64::MAX);
        }
        let queries: Vec<Query> = vecs(8, 8, dim, false)
            .iter()
            .map(|q| idx.prepare(q, None))
            .collect();
        let bb = LANES * idx.dim_p;
        for g in [1, 2, 4, 8] {
            for nb in [1, 2, 4, 8] {
                for b0 in [0, 10 - nb] {
                    let metas = idx.block_meta(b0, nb);
                    let codes = &idx.codes[b0 * bb..(b0 + nb) * bb];
                    let group = &queries[8 - g..];
                    // First every lane (tau -inf), then each query's tau exactly at its median,
                    // then its largest, upper bound in the first block, so the masks are partial
                    // and a lane sits exactly on tau: the prefilter must let it through.
                    let mut all = vec![LaneBounds::default(); nb * g];
                    let open = vec![f32::NEG_INFINITY; g];
                    let th = Thresholds {
                        tau: &open,
                        pre: &open,
                    };
                    assert!(Kernel::Portable.tile(group, nb, codes, &metas, th, &mut all));
                    assert!(all.iter().all(|o| o.mask == 0xffff));
                    let (residual_max, norm_max) = idx.bound_inputs_max();
                    // Each query's prefilter threshold for these taus, as the scan computes it.
                    let pre_for = |taus: &[f32]| -> Vec<f32> {
                        group
                            .iter()
                            .zip(taus)
                            .map(|(q, t)| {
                                let m = kernel::largest_bound(q.a, q.b, residual_max, norm_max);
                                kernel::prefilter_tau(*t, m)
                            })
                            .collect()
                    };
                    for pick in [LANES / 2, LANES - 1] {
                        let taus: Vec<f32> = (0..g)
                            .map(|q| {
                                let mut u = all[q].upper;
                                u.sort_by(f32::total_cmp);
                                u[pick]
                            })
                            .collect();
                        let pre = pre_for(&taus);
                        let th = Thresholds {
                            tau: &taus,
                            pre: &pre,
                        };
                        let mut want = vec![LaneBounds::default(); nb * g];
                        let mut got = vec![LaneBounds::default(); nb * g];
                        let any_want =
                            Kernel::Portable.tile(group, nb, codes, &metas, th, &mut want);
                        let any_got = fast.tile(group, nb, codes, &metas, th, &mut got);
                        assert!(any_want && any_got);
                        for (w, o) in want.iter().zip(&got) {
                            assert_eq!(
                                w.mask, o.mask,
                                "{fast:?} dim {dim} group {g} blocks {nb} lane {pick}"
                            );
                            assert!(w.mask != 0 && w.mask != 0xffff || nb > 1);
                            for l in (0..LANES).filter(|l| w.mask >> l & 1 == 1) {
                                assert_eq!(w.upper[l].to_bits(), o.upper[l].to_bits());
                                assert_eq!(w.bound[l].to_bits(), o.bound[l].to_bits());
                            }
                        }
                        // A tau above every lane: no lane, and the kernels say so.
                        let high: Vec<f32> = taus.iter().map(|t| t + 1.0).collect();
                        let pre = pre_for(&high);
                        let th = Thresholds {
                            tau: &high,
                            pre: &pre,
                        };
                        if nb == 1 {
                            assert!(!fast.tile(group, nb, codes, &metas, th, &mut got));
                            assert!(!Kernel::Portable.tile(group, nb, codes, &metas, th, &mut want));
                            assert!(got.iter().chain(&want).all(|o| o.mask == 0));
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn the_prefilter_threshold_lets_through_every_lane_whose_upper_bound_reaches_tau() {
    // For approx and bound as the kernel has them, upper = fl(approx + bound); with tau exactly
    // at that upper bound (the tightest tau the lane still reaches) and any bound_max >= bound,
    // approx must reach prefilter_tau(tau, bound_max). Values cover the scores' range, values
    // that cancel (approx close to -bound), tiny and large magnitudes.
    let mut rng = ChaCha20Rng::seed_from_u64(41);
    let mut unit = || (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32;
    let mut tight = 0.0f64;
    for i in 0..400_000 {
        let mag = [1.0f32, 1e-3, 1e-20, 1e3][i % 4];
        let approx = (unit() * 3.0 - 1.5) * mag;
        let bound = match i % 3 {
            0 => unit() * 0.1 * mag,
            1 => -approx * (1.0 + (unit() - 0.5) * 1e-6),
            _ => unit() * mag,
        };
        if bound < 0.0 {
            continue;
        }
        let upper = approx + bound;
        for bound_max in [bound, bound + unit() * 0.01 * mag] {
            let t = kernel::prefilter_tau(upper, bound_max);
            assert!(
                approx >= t,
                "approx {approx:e} bound {bound:e} max {bound_max:e}: threshold {t:e}"
            );
            // Not much below the exact difference either (a few floats).
            let gap = (upper as f64 - bound_max as f64) - t as f64;
            tight = tight.max(gap / (upper.abs() as f64 + bound_max as f64));
        }
    }
    assert!(
        tight < 1e-6,
        "threshold {tight:e} (relative) below tau - bound_max"
    );
    assert_eq!(
        kernel::prefilter_tau(f32::NEG_INFINITY, 0.1),
        f32::NEG_INFINITY
    );
    assert_eq!(kernel::prefilter_tau(0.3, f32::INFINITY), f32::NEG_INFINITY);
    assert_eq!(kernel::prefilter_tau(0.3, f32::NAN), f32::NEG_INFINITY);
}

/// The rows whose code range reaches the k-th best lower end (and the floor): what a compact
/// index fetches when every row is a candidate.
fn kept_by_code_ranges(idx: &ExactIndex, q: &[f32], floor: Option<f32>, k: usize) -> Vec<u32> {
    let prepared = idx.prepare(q, floor);
    let ranges: Vec<(f32, f32)> = (0..idx.len())
        .map(|r| idx.code_range(&prepared, r))
        .collect();
    let mut lows: Vec<f32> = ranges.iter().map(|r| r.0).collect();
    lows.sort_by(|a, b| b.total_cmp(a));
    let tau = lows[k - 1].max(prepared.floor);
    (0..idx.len() as u32)
        .filter(|&r| ranges[r as usize].1 >= tau)
        .collect()
}

#[test]
fn code_ranges_hold_every_score_and_keep_the_true_top_k_and_few_else() {
    // Every row's range from its codes holds its exact score; ranked by them, what stays holds
    // the exhaustive top k (and the rows at or above a floor), and far fewer rows than there are.
    for (dim, clustered) in [(512, false), (128, true), (37, false)] {
        let base = vecs(9, 3000, dim, clustered);
        let mut idx = ExactIndex::compact(dim);
        let mut full = ExactIndex::new(dim);
        for (i, x) in base.iter().enumerate() {
            idx.push(i as u64, x, i64::MAX);
            full.push(i as u64, x, i64::MAX);
        }
        for q in vecs(10, 12, dim, clustered) {
            let prepared = idx.prepare(&q, None);
            for h in full.search_exhaustive(&q, base.len(), None, 0) {
                let (lo, hi) = idx.code_range(&prepared, h.id as usize);
                assert!(
                    lo <= h.score && h.score <= hi,
                    "dim {dim}: {lo} {} {hi}",
                    h.score
                );
            }
            for k in [1, 10] {
                let kept = kept_by_code_ranges(&idx, &q, None, k);
                for h in full.search_exhaustive(&q, k, None, 0) {
                    assert!(kept.contains(&(h.id as u32)), "dim {dim} k {k}");
                }
                assert!(
                    kept.len() < base.len() / 4,
                    "dim {dim}: {} kept",
                    kept.len()
                );
            }
            let floor = full.search_exhaustive(&q, 3, None, 0)[2].score;
            let kept = kept_by_code_ranges(&idx, &q, Some(floor), 50);
            for h in full.search_exhaustive(&q, 50, Some(floor), 0) {
                assert!(kept.contains(&(h.id as u32)));
            }
        }
    }
}

/// Templates by id from a table, counting what was asked (ids of rows in `gone` are erased).
struct TableSource<'a> {
    rows: &'a [Vec<f32>],
    gone: Vec<u64>,
    asked: std::sync::atomic::AtomicUsize,
}

impl TemplateSource for TableSource<'_> {
    fn templates(&self, ids: &[u64]) -> Result<Vec<Option<Zeroizing<Vec<f32>>>>> {
        self.asked
            .fetch_add(ids.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(ids
            .iter()
            .map(|id| {
                (!self.gone.contains(id)).then(|| Zeroizing::new(self.rows[*id as usize].clone()))
            })
            .collect())
    }
}

#[test]
fn compact_index_returns_what_the_full_index_returns() {
    for (dim, clustered) in [(128, false), (128, true), (37, true)] {
        let base = vecs(5, 4000, dim, clustered);
        let mut full = ExactIndex::new(dim);
        let mut compact = ExactIndex::compact(dim);
        compact.reserve(base.len());
        for (i, x) in base.iter().enumerate() {
            let exp = if i % 5 == 0 { 100 } else { i64::MAX };
            full.push(i as u64, x, exp);
            compact.push(i as u64, x, exp);
        }
        let queries: Vec<Vec<f32>> = vecs(6, 30, dim, clustered)
            .into_iter()
            .chain(base.iter().skip(1).take(4).cloned())
            .collect();
        let qs: Vec<&[f32]> = queries.iter().map(|q| q.as_slice()).collect();
        let src = TableSource {
            rows: &base,
            gone: vec![],
            asked: Default::default(),
        };
        for k in [1, 10] {
            let want = full.search(&qs, k, None, 1000);
            let got = compact.search_with(&qs, k, None, 1000, &src).unwrap();
            assert_eq!(got, want, "dim {dim} clustered {clustered} k {k}");
        }
        // Only candidates are fetched (a few percent of the rows here, where every score is
        // close), never the gallery.
        let asked = src.asked.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            asked < 2 * qs.len() * base.len() / 10,
            "fetched {asked} rows for {} searches of {}",
            2 * qs.len(),
            base.len()
        );
        // A row erased while the search ran is left out, the others stay exact.
        let best = full.search(&qs[..1], 1, None, 1000)[0][0].id;
        let src = TableSource {
            rows: &base,
            gone: vec![best],
            asked: Default::default(),
        };
        let got = compact.search_with(&qs[..1], 5, None, 1000, &src).unwrap();
        assert!(got[0].iter().all(|h| h.id != best));
        assert!(!got[0].is_empty());
        // Without a source a compact index fails loudly instead of answering wrongly.
        assert!(compact
            .search_with(&qs[..1], 5, None, 1000, &NoSource)
            .is_err());
        assert_eq!(SearchIndex::kind(&compact), "compact");
        if dim == 128 {
            // 128 code bytes, 3 f32 bounds, 8-byte id, 4-byte expiry.
            assert_eq!(compact.memory_bytes(), base.len() * 152);
        }
    }
}

#[test]
fn expiry_codes_keep_the_order_that_matters() {
    // Searches skip a row when code(expires) <= code(now): every row with expires <= now
    // must be skipped; a live row may only be skipped within the second it expires.
    let now = 1_800_000_000_123i64;
    for (expires, skipped) in [
        (100, true),
        (now - 1000, true),
        (now, true),
        (now + 500, true),
        (now + 877, false),
        (now + 86_400_000, false),
        (-5, true),
        (i64::MAX, false),
        (5_000_000_000_000, false),
    ] {
        assert_eq!(
            expiry_code(expires) <= expiry_code(now),
            skipped,
            "{expires}"
        );
    }
}

#[test]
fn remove_and_edge_cases() {
    let base = vecs(3, 100, 16, false);
    let mut idx = ExactIndex::new(16);
    for (i, x) in base.iter().enumerate() {
        idx.push(i as u64 % 50, x, i64::MAX);
    }
    assert_eq!(idx.remove(7), 2);
    assert_eq!(idx.len(), 98);
    let hits = idx.search(&[&base[7][..]], 100, None, 0);
    assert!(hits[0].iter().all(|h| h.id != 7));
    assert_eq!(hits[0].len(), 98);
    // Zero vector and k = 0 are fine.
    let zero = [0.0f32; 16];
    assert_eq!(idx.search(&[&zero[..]], 0, None, 0)[0].len(), 0);
    assert_eq!(idx.search(&[&zero[..]], 3, None, 0)[0].len(), 3);
    assert!(ExactIndex::new(16).search(&[&zero[..]], 3, None, 0)[0].is_empty());
}

#[test]
fn scan_bytes_counts_every_padded_row_once() {
    // 17 rows of 130 dimensions: two blocks of 16 rows, dimensions padded to 132.
    let mut idx = ExactIndex::new(130);
    for i in 0..17u64 {
        let row: Vec<f32> = (0..130)
            .map(|d| ((i as usize * 7 + d) % 11) as f32 - 5.0)
            .collect();
        idx.push(i, &row, i64::MAX);
    }
    assert_eq!(idx.scan_bytes(), 2 * LANES * (132 + 12));
}

/// The `VmFlags` of the mapping holding `addr`, from /proc/self/smaps.
#[cfg(target_os = "linux")]
fn vm_flags_at(addr: usize) -> Option<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                inside = (a..b).contains(&addr);
                continue;
            }
        }
        if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return Some(flags.trim().to_string());
            }
        }
    }
    None
}

#[test]
fn advice_changes_no_contents_and_no_results() {
    use super::advise_huge_pages;
    // Too small to matter, empty, or nothing allocated: nothing asked, nothing changed.
    let small: Vec<u8> = (0..100).collect();
    advise_huge_pages(&small);
    assert_eq!(small, (0..100).collect::<Vec<u8>>());
    advise_huge_pages(&Vec::<u64>::new());
    // 8 MiB, filled before and after the advice: every value as written.
    let words = 1 << 20;
    let mut v: Vec<u64> = Vec::with_capacity(words);
    v.extend(0..1000u64);
    advise_huge_pages(&v);
    v.extend(1000..words as u64);
    assert!(v.iter().enumerate().all(|(i, x)| *x == i as u64));
    // On Linux with THP built in, the kernel took the advice: the mapping holding the buffer's
    // middle is marked for huge pages (`hg`), which a misaligned or wrongly sized range would
    // not get (madvise refuses it).
    #[cfg(target_os = "linux")]
    if std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
        let middle = v.as_ptr() as usize + words * 4;
        let flags = vm_flags_at(middle).expect("the buffer's mapping in smaps");
        assert!(flags.split_whitespace().any(|f| f == "hg"), "{flags}");
    }
    // An index advised as it grows answers as exhaustive f32 does (pushed row by row, with
    // several reallocations, and reserved up front).
    let dim = 64;
    let base = vecs(11, 40_000, dim, false);
    let queries = vecs(12, 5, dim, false);
    let qs: Vec<&[f32]> = queries.iter().map(|q| q.as_slice()).collect();
    let mut grown = ExactIndex::new(dim);
    let mut reserved = ExactIndex::new(dim);
    reserved.reserve(base.len());
    for (i, x) in base.iter().enumerate() {
        grown.push(i as u64, x, i64::MAX);
        reserved.push(i as u64, x, i64::MAX);
    }
    // Grown by reallocation, its codes (2.5 MB here) were advised where they ended up.
    #[cfg(target_os = "linux")]
    if std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
        let middle = grown.codes.as_ptr() as usize + grown.codes.len() / 2;
        let flags = vm_flags_at(middle).expect("the codes' mapping in smaps");
        assert!(flags.split_whitespace().any(|f| f == "hg"), "{flags}");
    }
    let got = grown.search(&qs, 5, None, 0);
    assert_eq!(got, reserved.search(&qs, 5, None, 0));
    for (q, hits) in qs.iter().zip(&got) {
        assert_eq!(hits, &grown.search_exhaustive(q, 5, None, 0));
    }
}
