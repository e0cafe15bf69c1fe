//! The block kernels of the int8 scan: upper bounds of 16 rows' scores against one query, or
//! of one or two blocks against up to 8 queries at once (register-blocked), portable and AVX-512
//! VNNI, with the same floating-point operations in the same order so both give the same bounds.

use super::{Query, LANES};
use multiversion::multiversion;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kernel {
    Vnni512,
    Portable,
}

impl Kernel {
    pub(super) fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vnni")
            {
                return Kernel::Vnni512;
            }
        }
        Kernel::Portable
    }
}

/// Relative slack on |x| recomputed from the stored f32 |x|²/2: that value is within 2⁻²⁴ of the
/// true one and f32 sqrt adds 2⁻²⁴, so 2·10⁻⁶ keeps the result an upper bound.
const NORM_SLACK: f32 = 1.0 + 2e-6;

/// |x| (rounded up) from the stored |x|²/2. Not kept per row: 4 bytes a row saved, one sqrt per 16
/// rows. Padding rows hold +inf, giving an infinite or NaN bound that is never ≥ tau.
#[inline]
fn row_norm(half_norm2: f32) -> f32 {
    (half_norm2 + half_norm2).sqrt() * NORM_SLACK
}

/// The per-row inputs of the bound computation, 16 lanes per block, for one or more consecutive
/// blocks (the per-row arrays are contiguous, so one set of slices serves a whole tile call).
pub(super) struct BlockMeta<'a> {
    pub(super) scale: &'a [f32],
    pub(super) half_norm2: &'a [f32],
    pub(super) residual: &'a [f32],
    /// 128 · Σ codes: removes the +128 offset of the unsigned query bytes.
    pub(super) offset: &'a [i32],
}

impl BlockMeta<'_> {
    /// The inputs of the `b`-th block of these.
    fn block(&self, b: usize) -> BlockMeta<'_> {
        let r = b * LANES..(b + 1) * LANES;
        BlockMeta {
            scale: &self.scale[r.clone()],
            half_norm2: &self.half_norm2[r.clone()],
            residual: &self.residual[r.clone()],
            offset: &self.offset[r],
        }
    }
}

/// Upper bounds of the 16 rows' scores and a mask of those at or above `tau`.
/// `quads` packs four offset query bytes (code + 128) per u32.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2+fma"))]
fn block_upper_portable(
    q: &Query,
    block: &[i8],
    m: &BlockMeta,
    tau: f32,
    upper: &mut [f32; LANES],
    bound: &mut [f32; LANES],
) -> u32 {
    let mut acc = [0i32; LANES];
    for (j, qw) in q.quads.iter().enumerate() {
        let qb = qw.to_le_bytes();
        let group = &block[j * 64..j * 64 + 64];
        for l in 0..LANES {
            let mut s = 0i32;
            for b in 0..4 {
                s += qb[b] as i32 * group[l * 4 + b] as i32;
            }
            acc[l] += s;
        }
    }
    let mut mask = 0u32;
    for l in 0..LANES {
        let dot = (acc[l] - m.offset[l]) as f32;
        bound[l] = q.a * m.residual[l] + q.b * row_norm(m.half_norm2[l]);
        upper[l] = q.scale * m.scale[l] * dot - m.half_norm2[l] + bound[l];
        mask |= ((upper[l] >= tau) as u32) << l;
    }
    mask
}

/// Most queries one tile call serves. Two blocks × 8 queries = 16 accumulators, plus the two
/// row vectors and a broadcast: within the 32 AVX-512 registers, and enough independent
/// accumulators to keep two `vpdpbusd` a cycle busy through their latency.
pub(super) const MAX_GROUP: usize = 8;

/// Most blocks one tile call covers: 4 for groups of up to 4 queries, 2 for 8 (at most 16
/// accumulators either way). More blocks per call spread its fixed costs over more rows, which
/// matters most for a single query, whose scan is bound by memory.
pub(super) const MAX_TILE_BLOCKS: usize = 8;

/// The blocks a tile call should take for a group of `g` queries with `remaining` blocks left
/// in the tile: 4, 2 or 1 (one compiled kernel each).
pub(super) fn tile_blocks(g: usize, remaining: usize) -> usize {
    let most = match g {
        1 => MAX_TILE_BLOCKS,
        2 | 4 => 4,
        _ => 2,
    };
    match remaining {
        r if r >= most => most,
        4.. => 4,
        2..=3 => 2,
        _ => 1,
    }
}

/// What a tile kernel reports for one (block, query) pair: the lanes whose upper bound reaches
/// the query's tau and, when there is one, the 16 upper bounds and error bounds.
#[derive(Clone, Copy)]
pub(super) struct LaneBounds {
    pub(super) mask: u32,
    pub(super) upper: [f32; LANES],
    pub(super) bound: [f32; LANES],
}

impl Default for LaneBounds {
    fn default() -> Self {
        LaneBounds {
            mask: 0,
            upper: [0.0; LANES],
            bound: [0.0; LANES],
        }
    }
}

/// The queries a tile call should take of `remaining`: 8, 4, 2 or 1 (one compiled kernel each).
pub(super) fn group_size(remaining: usize) -> usize {
    match remaining {
        8.. => 8,
        4..=7 => 4,
        2..=3 => 2,
        _ => 1,
    }
}

impl Kernel {
    /// Bounds of `nb` consecutive blocks (see [`tile_blocks`]; their codes in `blocks`, their
    /// per-row inputs in `meta`) against each of `queries` (see [`group_size`]), each query
    /// against its own tau: `out[b * queries.len() + q]`. The VNNI kernel loads each row vector
    /// once for all the queries (register blocking), which is what makes a batch cheaper per
    /// query than single searches.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn tile(
        self,
        queries: &[Query],
        nb: usize,
        blocks: &[i8],
        meta: &BlockMeta,
        taus: &[f32],
        out: &mut [LaneBounds],
    ) {
        #[cfg(target_arch = "x86_64")]
        if self == Kernel::Vnni512 {
            macro_rules! go {
                ($b:literal, $q:literal) => {
                    // SAFETY: Vnni512 is only chosen after runtime detection of both features.
                    unsafe { tile_vnni::<$b, $q>(queries, blocks, meta, taus, out) }
                };
            }
            match (nb, queries.len()) {
                (1, 1) => go!(1, 1),
                (1, 2) => go!(1, 2),
                (1, 4) => go!(1, 4),
                (1, 8) => go!(1, 8),
                (2, 1) => go!(2, 1),
                (2, 2) => go!(2, 2),
                (2, 4) => go!(2, 4),
                (2, 8) => go!(2, 8),
                (4, 1) => go!(4, 1),
                (4, 2) => go!(4, 2),
                (4, 4) => go!(4, 4),
                (8, 1) => go!(8, 1),
                _ => tile_portable(queries, nb, blocks, meta, taus, out),
            }
            return;
        }
        tile_portable(queries, nb, blocks, meta, taus, out)
    }
}

/// [`Kernel::tile`] one pair at a time with the portable block kernel.
fn tile_portable(
    queries: &[Query],
    nb: usize,
    blocks: &[i8],
    meta: &BlockMeta,
    taus: &[f32],
    out: &mut [LaneBounds],
) {
    let bb = queries.first().map_or(0, |q| q.quads.len() * 64);
    for b in 0..nb {
        let m = &meta.block(b);
        for (qi, (q, tau)) in queries.iter().zip(taus).enumerate() {
            let o = &mut out[b * queries.len() + qi];
            o.mask = block_upper_portable(
                q,
                &blocks[b * bb..(b + 1) * bb],
                m,
                *tau,
                &mut o.upper,
                &mut o.bound,
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
/// `B` blocks against `Q` queries with AVX-512 VNNI, register-blocked: per group of 4
/// dimensions, each block's 64-byte row vector is loaded once and multiplied into the `Q`
/// queries' accumulators (one broadcast each), so a batch moves `Q` times fewer row bytes per
/// multiply-add than one query at a time. The bounds then use the same operations in the same
/// order as [`block_upper_portable`] (the integer part is exact, the float operations the same in
/// the same order, so the bounds agree bit for bit; the tests compare them), the per-row norm
/// computed once per block for all `Q` queries.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512 VNNI (checked by `Kernel::detect` before any call).
unsafe fn tile_vnni<const B: usize, const Q: usize>(
    queries: &[Query],
    blocks: &[i8],
    meta: &BlockMeta,
    taus: &[f32],
    out: &mut [LaneBounds],
) {
    use std::arch::x86_64::*;
    assert!(queries.len() == Q && taus.len() == Q && out.len() == B * Q);
    let n = queries[0].quads.len();
    assert!(queries.iter().all(|q| q.quads.len() == n));
    let bb = n * 64;
    assert!(blocks.len() >= B * bb);
    let rows = B * LANES;
    assert!(
        meta.scale.len() >= rows
            && meta.half_norm2.len() >= rows
            && meta.residual.len() >= rows
            && meta.offset.len() >= rows
    );
    let p = blocks.as_ptr();
    let mut qp = [std::ptr::null::<u32>(); Q];
    for (d, q) in qp.iter_mut().zip(queries) {
        *d = q.quads.as_ptr();
    }
    let mut acc = [[_mm512_setzero_si512(); Q]; B];
    let mut v = [_mm512_setzero_si512(); B];
    for j in 0..n {
        for (b, vb) in v.iter_mut().enumerate() {
            // SAFETY: b * bb + j * 64 + 64 <= B * bb <= blocks.len() (asserted above): the 64-byte
            // unaligned load stays inside `blocks`.
            *vb = unsafe { _mm512_loadu_si512(p.add(b * bb + j * 64) as *const _) };
        }
        for q in 0..Q {
            // SAFETY: j < n == queries[q].quads.len() (asserted above), so the read is in bounds.
            let x = _mm512_set1_epi32(unsafe { *qp[q].add(j) } as i32);
            for b in 0..B {
                acc[b][q] = _mm512_dpbusd_epi32(acc[b][q], x, v[b]);
            }
        }
    }
    for b in 0..B {
        let r = b * LANES;
        // SAFETY (all four loads): each slice holds at least B * 16 elements of 4 bytes
        // (asserted above), so the 64-byte unaligned load at element b * 16 is in bounds.
        let (scale, hn, res, off) = unsafe {
            (
                _mm512_loadu_ps(meta.scale.as_ptr().add(r)),
                _mm512_loadu_ps(meta.half_norm2.as_ptr().add(r)),
                _mm512_loadu_ps(meta.residual.as_ptr().add(r)),
                _mm512_loadu_si512(meta.offset.as_ptr().add(r) as *const _),
            )
        };
        let nrm = _mm512_mul_ps(
            _mm512_sqrt_ps(_mm512_add_ps(hn, hn)),
            _mm512_set1_ps(NORM_SLACK),
        );
        for (q, query) in queries.iter().enumerate() {
            let dot = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[b][q], off));
            let bnd = _mm512_add_ps(
                _mm512_mul_ps(_mm512_set1_ps(query.a), res),
                _mm512_mul_ps(_mm512_set1_ps(query.b), nrm),
            );
            let approx = _mm512_sub_ps(
                _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(query.scale), scale), dot),
                hn,
            );
            let u = _mm512_add_ps(approx, bnd);
            let mask = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(u, _mm512_set1_ps(taus[q]));
            let o = &mut out[b * Q + q];
            o.mask = mask as u32;
            if mask != 0 {
                // SAFETY: `upper` and `bound` are 16 f32 = 64 bytes each, one unaligned store each.
                unsafe {
                    _mm512_storeu_ps(o.upper.as_mut_ptr(), u);
                    _mm512_storeu_ps(o.bound.as_mut_ptr(), bnd);
                }
            }
        }
    }
}

/// Independent accumulators in the peak probe: more than `vpdpbusd`'s latency times its
/// throughput on any core with it, so the probe measures throughput.
pub const PEAK_CHAINS: usize = 16;

/// One core's int8 multiply-add peak in GMAC/s with AVX-512 VNNI (`None` without it): the rate
/// the batch scan is compared with (`bench-search`), best of `reps`.
pub fn int8_peak_gmacs(reps: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vnni") {
        let iters = 4_000_000u64;
        let mut best = 0.0f64;
        for _ in 0..reps.max(1) {
            let t = std::time::Instant::now();
            // SAFETY: both target features were detected on this CPU just above.
            std::hint::black_box(unsafe { vnni_chains(std::hint::black_box(iters)) });
            let macs = iters as f64 * PEAK_CHAINS as f64 * 64.0;
            best = best.max(macs / t.elapsed().as_secs_f64() / 1e9);
        }
        return Some(best);
    }
    None
}

/// `iters` rounds of one `vpdpbusd` on each of [`PEAK_CHAINS`] accumulators (no memory traffic).
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512 VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn vnni_chains(iters: u64) -> i32 {
    use std::arch::x86_64::*;
    let a = std::hint::black_box(_mm512_set1_epi32(0x0101_0101));
    let b = std::hint::black_box(_mm512_set1_epi32(0x0102_0304));
    let mut acc = [_mm512_setzero_si512(); PEAK_CHAINS];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm512_dpbusd_epi32(*x, a, b);
        }
    }
    let mut sum = _mm512_setzero_si512();
    for x in acc {
        sum = _mm512_add_epi32(sum, x);
    }
    _mm512_reduce_add_epi32(sum)
}
