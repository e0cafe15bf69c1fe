//! The block kernels of the int8 scan: upper bounds of 16 rows' scores against one query, or
//! of up to 8 blocks against up to 8 queries at once (register-blocked), portable, AVX2 and
//! AVX-512 VNNI, with the same floating-point operations in the same order so all give the same
//! bounds.
//!
//! The VNNI kernel first tests each lane's approximate score (without its error bound) against
//! a lower threshold, [`prefilter_tau`], that every lane whose full upper bound reaches tau
//! also reaches; only where a lane passes does it compute the bounds. Once tau has risen few
//! do, so most (block, query) pairs cost 5 vector operations after their multiply-adds instead
//! of 11, and the masks stay those of the portable kernel, bit for bit.

use super::{Query, LANES};
use multiversion::multiversion;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kernel {
    /// Intel AMX int8 tiles for groups of queries (`super::amx`); a single query goes through
    /// the VNNI kernel, which streams its rows better.
    Amx,
    Vnni512,
    /// AVX2 without VNNI (x86-64 CPUs without AVX-512: AMD before Zen 4, Intel client cores,
    /// virtual machines not given AVX-512): 16-bit multiply-adds (`vpmaddwd`), exact.
    Avx2,
    Portable,
}

impl Kernel {
    pub(super) fn detect() -> Kernel {
        Kernel::available()[0]
    }

    /// The kernels this CPU can run, fastest first (the portable one always).
    pub(super) fn available() -> Vec<Kernel> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vnni")
            {
                if super::amx::usable() {
                    out.push(Kernel::Amx);
                }
                out.push(Kernel::Vnni512);
            }
            if std::is_x86_feature_detected!("avx2") {
                out.push(Kernel::Avx2);
            }
        }
        out.push(Kernel::Portable);
        out
    }

    /// The kernel called `name` ([`Kernel::name`]), if this CPU can run it.
    pub(super) fn available_named(name: &str) -> Option<Kernel> {
        Kernel::available().into_iter().find(|k| k.name() == name)
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Kernel::Amx => "amx-int8",
            Kernel::Vnni512 => "avx512-vnni",
            Kernel::Avx2 => "avx2",
            Kernel::Portable => "portable",
        }
    }
}

/// Relative slack on |x| recomputed from the stored f32 |x|²/2: that value is within 2⁻²⁴ of the
/// true one and f32 sqrt adds 2⁻²⁴, so 2·10⁻⁶ keeps the result an upper bound.
const NORM_SLACK: f32 = 1.0 + 2e-6;

/// |x| (rounded up) from the stored |x|²/2. Not kept per row: 4 bytes a row saved, one sqrt per 16
/// rows. Padding rows hold +inf, giving an infinite or NaN bound that is never ≥ tau.
#[inline]
pub(super) fn row_norm(half_norm2: f32) -> f32 {
    (half_norm2 + half_norm2).sqrt() * NORM_SLACK
}

/// The per-row inputs of the bound computation, 16 lanes per block, for one or more consecutive
/// blocks (the per-row arrays are contiguous, so one set of slices serves a whole tile call).
pub(super) struct BlockMeta<'a> {
    pub(super) scale: &'a [f32],
    pub(super) half_norm2: &'a [f32],
    pub(super) residual: &'a [f32],
}

impl BlockMeta<'_> {
    /// The inputs of blocks `first..first + n` of these.
    fn blocks(&self, first: usize, n: usize) -> BlockMeta<'_> {
        let r = first * LANES..(first + n) * LANES;
        BlockMeta {
            scale: &self.scale[r.clone()],
            half_norm2: &self.half_norm2[r.clone()],
            residual: &self.residual[r],
        }
    }
}

/// The largest error bound `a · residual + b · |x|` any of some rows can have for a query with
/// bound coefficients `a, b ≥ 0`, from the largest residual and |x| ([`row_norm`]) among those
/// rows, computed with the kernels' operations: f32 rounding is monotone, so each lane's bound,
/// rounded the same way, is at most this.
pub(super) fn largest_bound(a: f32, b: f32, residual_max: f32, norm_max: f32) -> f32 {
    a * residual_max + b * norm_max
}

/// A threshold on a lane's approximate score `s · dot − |x|²/2` (its upper bound without the
/// error bound) that every lane whose upper bound reaches `tau` reaches, given `bound_max` ≥
/// every lane's error bound ([`largest_bound`]). The upper bound is fl(approx + bound); if it is
/// ≥ tau then approx + bound > pred(tau), the float just below tau (rounding is monotone and
/// pred(tau) rounds to itself), so approx > pred(tau) − bound_max. Rounding that difference (to
/// f64, then to f32) cannot take it above approx, a float: rounding is monotone. (tau −
/// bound_max would not do: the sum may have been rounded up to tau.) Not finite: −inf, every
/// lane passes.
pub(super) fn prefilter_tau(tau: f32, bound_max: f32) -> f32 {
    if !(tau.is_finite() && bound_max.is_finite()) {
        return f32::NEG_INFINITY;
    }
    (tau.next_down() as f64 - bound_max as f64) as f32
}

/// Upper bounds of the 16 rows' scores and a mask of those at or above `tau`. `quads` packs
/// four query codes per u32; the rows' bytes are codes + 128, whose offset `q.offset` removes.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2+fma"))]
fn block_upper_portable(
    q: &Query,
    block: &[u8],
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
                s += qb[b] as i8 as i32 * group[l * 4 + b] as i32;
            }
            acc[l] += s;
        }
    }
    let mut mask = 0u32;
    for l in 0..LANES {
        let dot = (acc[l] - q.offset) as f32;
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

/// The blocks a tile call should take with `remaining` blocks left in the tile: 8, 4, 2 or 1.
/// The VNNI kernel takes them in steps of as many blocks as fit its registers with the group's
/// queries ([`Kernel::tile`]); more blocks per call spread the call's fixed costs.
pub(super) fn tile_blocks(remaining: usize) -> usize {
    match remaining {
        MAX_TILE_BLOCKS.. => MAX_TILE_BLOCKS,
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

/// Each query's tau and the prefilter threshold that goes with it ([`prefilter_tau`]; −inf
/// when not known).
#[derive(Clone, Copy)]
pub(super) struct Thresholds<'a> {
    pub(super) tau: &'a [f32],
    pub(super) pre: &'a [f32],
}

impl Kernel {
    /// Bounds of `nb` consecutive blocks (see [`tile_blocks`]; their codes in `blocks`, their
    /// per-row inputs in `meta`) against each of `queries` (see [`group_size`]), each query
    /// against its own tau: `out[b * queries.len() + q]`. Returns whether any lane of any pair
    /// reached its tau (when not, the caller need not look at `out`). The VNNI kernel loads each
    /// row vector once for all the queries (register blocking), which is what makes a batch
    /// cheaper per query than single searches.
    pub(super) fn tile(
        self,
        queries: &[Query],
        nb: usize,
        blocks: &[u8],
        meta: &BlockMeta,
        th: Thresholds,
        out: &mut [LaneBounds],
    ) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self == Kernel::Amx && queries.len() > 1 {
            macro_rules! go {
                ($q:literal) => {
                    // SAFETY: Amx is only chosen after `amx::usable` and AVX-512F were found.
                    unsafe { super::amx::tile_amx::<$q>(queries, nb, blocks, meta, th, out) }
                };
            }
            return match queries.len() {
                2 => go!(2),
                4 => go!(4),
                8 => go!(8),
                _ => tile_portable(queries, nb, blocks, meta, th.tau, out),
            };
        }
        #[cfg(target_arch = "x86_64")]
        if matches!(self, Kernel::Vnni512 | Kernel::Amx) {
            macro_rules! go {
                ($b:literal, $q:literal) => {
                    // SAFETY: Vnni512 (and Amx, for one query) is only chosen after runtime
                    // detection of both features.
                    unsafe { tile_vnni_steps::<$b, $q>(queries, nb, blocks, meta, th, out) }
                };
            }
            // Blocks per step: at most 16 accumulators (B × Q) in registers.
            return match (nb, queries.len()) {
                (1, 1) => go!(1, 1),
                (1, 2) => go!(1, 2),
                (1, 4) => go!(1, 4),
                (1, 8) => go!(1, 8),
                (2, 1) => go!(2, 1),
                (2, 2) => go!(2, 2),
                (2, 4) => go!(2, 4),
                (2 | 4 | 8, 8) => go!(2, 8),
                (4, 1) => go!(4, 1),
                (4 | 8, 2) => go!(4, 2),
                (4 | 8, 4) => go!(4, 4),
                (8, 1) => go!(8, 1),
                _ => tile_portable(queries, nb, blocks, meta, th.tau, out),
            };
        }
        #[cfg(target_arch = "x86_64")]
        if self == Kernel::Avx2 {
            let stride = queries.len();
            // SAFETY (each call): Avx2 is only chosen after runtime detection of AVX2.
            return match stride {
                1 => unsafe { tile_avx2::<1>(queries, 0, stride, nb, blocks, meta, th, out) },
                2 => unsafe { tile_avx2::<2>(queries, 0, stride, nb, blocks, meta, th, out) },
                4 => unsafe { tile_avx2::<4>(queries, 0, stride, nb, blocks, meta, th, out) },
                // Eight as two fours: sixteen registers hold one group of four's accumulators,
                // and the second four find the tile's rows in L1.
                8 => {
                    let first =
                        unsafe { tile_avx2::<4>(queries, 0, stride, nb, blocks, meta, th, out) };
                    let second =
                        unsafe { tile_avx2::<4>(queries, 4, stride, nb, blocks, meta, th, out) };
                    first | second
                }
                _ => tile_portable(queries, nb, blocks, meta, th.tau, out),
            };
        }
        tile_portable(queries, nb, blocks, meta, th.tau, out)
    }
}

/// [`Kernel::tile`] one pair at a time with the portable block kernel.
fn tile_portable(
    queries: &[Query],
    nb: usize,
    blocks: &[u8],
    meta: &BlockMeta,
    taus: &[f32],
    out: &mut [LaneBounds],
) -> bool {
    let bb = queries.first().map_or(0, |q| q.quads.len() * 64);
    let mut any = 0;
    for b in 0..nb {
        let m = &meta.blocks(b, 1);
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
            any |= o.mask;
        }
    }
    any != 0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
/// `B` blocks against `Q` queries with AVX-512 VNNI, register-blocked: per group of 4
/// dimensions, each block's 64-byte row vector (unsigned bytes) is loaded once and multiplied
/// into the `Q` queries' accumulators, each query's 4 signed bytes the instruction's broadcast
/// memory operand (no broadcast instruction of its own: measured 0.65 → 0.74 of the int8 peak
/// for this kernel in L1), so a batch moves `Q` times fewer row bytes per multiply-add than one
/// query at a time. Each query's accumulators start at −`offset`, which removes the rows' +128
/// as the portable kernel's subtraction does (the same integer). Then each block's bounds
/// ([`block_bounds_512`]).
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512 VNNI (checked by `Kernel::detect` before any call).
#[inline]
unsafe fn tile_vnni<const B: usize, const Q: usize>(
    queries: &[Query],
    blocks: &[u8],
    meta: &BlockMeta,
    th: Thresholds,
    out: &mut [LaneBounds],
) -> bool {
    use std::arch::x86_64::*;
    assert!(queries.len() == Q && th.tau.len() == Q && th.pre.len() == Q && out.len() == B * Q);
    let n = queries[0].quads.len();
    assert!(queries.iter().all(|q| q.quads.len() == n));
    let bb = n * 64;
    assert!(blocks.len() >= B * bb);
    let rows = B * LANES;
    assert!(
        meta.scale.len() >= rows && meta.half_norm2.len() >= rows && meta.residual.len() >= rows
    );
    let p = blocks.as_ptr();
    let mut qp = [std::ptr::null::<u32>(); Q];
    for (d, q) in qp.iter_mut().zip(queries) {
        *d = q.quads.as_ptr();
    }
    let mut acc = [[_mm512_setzero_si512(); Q]; B];
    for row in acc.iter_mut() {
        for (a, q) in row.iter_mut().zip(queries) {
            *a = _mm512_set1_epi32(-q.offset);
        }
    }
    if Q == 1 {
        // One query: nothing to share a loaded row vector with, so the blocks are read one after
        // the other, each from start to end: one sequential stream the hardware prefetcher
        // follows. Reading the blocks' j-th vectors side by side (below) made 8 streams 2 KB
        // apart at 128-D, which held a single query's scan to 0.42-0.45 of the bandwidth probe
        // on a Zen 4 core against 0.72-0.76 this way (10^6 x 128-D, 11.8-12.6 -> 7.1-7.2 ms).
        // Two accumulators per block so consecutive multiply-adds do not wait on each other;
        // integer sums, so the order changes nothing.
        for (b, a) in acc.iter_mut().enumerate() {
            let mut odd = _mm512_setzero_si512();
            for j in 0..n {
                // SAFETY: b * bb + j * 64 + 64 <= B * bb <= blocks.len() and j < n ==
                // queries[0].quads.len() (both asserted above): both reads are in bounds.
                let (r, x) = unsafe {
                    (
                        _mm512_loadu_si512(p.add(b * bb + j * 64) as *const _),
                        _mm512_set1_epi32(*qp[0].add(j) as i32),
                    )
                };
                if j % 2 == 0 {
                    a[0] = _mm512_dpbusd_epi32(a[0], r, x);
                } else {
                    odd = _mm512_dpbusd_epi32(odd, r, x);
                }
            }
            a[0] = _mm512_add_epi32(a[0], odd);
        }
    } else {
        let mut v = [_mm512_setzero_si512(); B];
        for j in 0..n {
            for (b, vb) in v.iter_mut().enumerate() {
                // SAFETY: b * bb + j * 64 + 64 <= B * bb <= blocks.len() (asserted above): the
                // 64-byte unaligned load stays inside `blocks`.
                *vb = unsafe { _mm512_loadu_si512(p.add(b * bb + j * 64) as *const _) };
            }
            for q in 0..Q {
                // SAFETY: j < n == queries[q].quads.len() (asserted above), so the read is in
                // bounds.
                let x = _mm512_set1_epi32(unsafe { *qp[q].add(j) } as i32);
                for b in 0..B {
                    acc[b][q] = _mm512_dpbusd_epi32(acc[b][q], v[b], x);
                }
            }
        }
    }
    let mut any: u16 = 0;
    for (b, dots) in acc.iter().enumerate() {
        // SAFETY: the caller's CPU has AVX-512F (this function's contract); `meta` holds B * 16
        // rows (asserted above).
        any |= unsafe {
            block_bounds_512::<Q>(
                queries,
                dots,
                meta,
                b * LANES,
                th,
                &mut out[b * Q..(b + 1) * Q],
            )
        };
    }
    any != 0
}

/// Bounds and masks of one block's 16 lanes (rows `r..r + 16` of `meta`) against each of `Q`
/// queries, from the queries' integer dot products with the rows (the rows' +128 removed), into
/// `out[q]`; returns the lanes that reached some query's tau. Each lane's approximate score is
/// tested against the prefilter threshold ([`prefilter_tau`]), and only a pair with a lane
/// through it gets its bounds, with the same operations in the same order as
/// [`block_upper_portable`] (the integer part is exact, the float operations the same, so the
/// bounds and masks agree bit for bit; the tests compare them), the per-row norm computed once
/// per block, and only for a block some pair needs it. Shared by the VNNI and AMX kernels,
/// which differ only in how they get the dot products.
///
/// # Safety
/// The CPU must support AVX-512F, and `meta`'s slices must hold at least `r + 16` rows (the
/// callers assert it for all their blocks at once: asserted here, per block, it cost the
/// 128-D batch 1.5-2.5%).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn block_bounds_512<const Q: usize>(
    queries: &[Query],
    dots: &[std::arch::x86_64::__m512i; Q],
    meta: &BlockMeta,
    r: usize,
    th: Thresholds,
    out: &mut [LaneBounds],
) -> u16 {
    use std::arch::x86_64::*;
    let end = r + LANES;
    debug_assert!(queries.len() == Q && out.len() == Q && th.tau.len() == Q && th.pre.len() == Q);
    debug_assert!(
        meta.scale.len() >= end && meta.half_norm2.len() >= end && meta.residual.len() >= end
    );
    let mut any: u16 = 0;
    // SAFETY (both loads): each slice holds at least r + 16 f32 (this function's contract), so
    // the 64-byte unaligned load at element r is in bounds.
    let (scale, hn) = unsafe {
        (
            _mm512_loadu_ps(meta.scale.as_ptr().add(r)),
            _mm512_loadu_ps(meta.half_norm2.as_ptr().add(r)),
        )
    };
    let mut approx = [_mm512_setzero_ps(); Q];
    let mut pre = [0u16; Q];
    let mut some: u16 = 0;
    for (q, query) in queries.iter().enumerate() {
        let dot = _mm512_cvtepi32_ps(dots[q]);
        approx[q] = _mm512_sub_ps(
            _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(query.scale), scale), dot),
            hn,
        );
        pre[q] = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(approx[q], _mm512_set1_ps(th.pre[q]));
        some |= pre[q];
    }
    if some == 0 {
        for o in out.iter_mut() {
            o.mask = 0;
        }
        return 0;
    }
    // SAFETY: as for the loads above.
    let res = unsafe { _mm512_loadu_ps(meta.residual.as_ptr().add(r)) };
    let nrm = _mm512_mul_ps(
        _mm512_sqrt_ps(_mm512_add_ps(hn, hn)),
        _mm512_set1_ps(NORM_SLACK),
    );
    for (q, query) in queries.iter().enumerate() {
        let o = &mut out[q];
        if pre[q] == 0 {
            o.mask = 0;
            continue;
        }
        let bnd = _mm512_add_ps(
            _mm512_mul_ps(_mm512_set1_ps(query.a), res),
            _mm512_mul_ps(_mm512_set1_ps(query.b), nrm),
        );
        let u = _mm512_add_ps(approx[q], bnd);
        let mask = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(u, _mm512_set1_ps(th.tau[q]));
        o.mask = mask as u32;
        any |= mask;
        if mask != 0 {
            // SAFETY: `upper` and `bound` are 16 f32 = 64 bytes each, one unaligned store each.
            unsafe {
                _mm512_storeu_ps(o.upper.as_mut_ptr(), u);
                _mm512_storeu_ps(o.bound.as_mut_ptr(), bnd);
            }
        }
    }
    any
}

/// Queries `q0..q0 + Q` of `queries` against `nb` blocks with AVX2 (no VNNI), into
/// `out[b * stride + q]`. Exact like the others: each row's bytes are widened to 16 bits
/// (`vpmovzxbw`, once for all `Q` queries) and multiplied by the query's 16-bit codes with
/// `vpmaddwd`, whose pair sums (at most 2 · 255 · 127) cannot saturate. (`vpmaddubsw` would do
/// twice the multiply-adds per instruction, but its 16-bit pair sums saturate for these codes.)
/// A block is taken as two halves of 8 rows, each half's 32 bytes per group two widened
/// vectors of 4 rows × 4 dimensions, so one query holds 2 accumulators (pairs of partial sums
/// per row, added at the end) and 4 queries fit in the 16 registers with their rows; each
/// query's four codes come ready repeated four times ([`Query::wide`]), a plain 32-byte load
/// rather than a broadcast, which would compete with the widening for the shuffle unit. Then the
/// bounds, as [`tile_vnni`] computes them: the same operations in the same order, 8 lanes at a
/// time, so masks and bounds agree with [`block_upper_portable`] bit for bit.
///
/// # Safety
/// The CPU must support AVX2 (checked by `Kernel::detect` before any call).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2<const Q: usize>(
    queries: &[Query],
    q0: usize,
    stride: usize,
    nb: usize,
    blocks: &[u8],
    meta: &BlockMeta,
    th: Thresholds,
    out: &mut [LaneBounds],
) -> bool {
    use std::arch::x86_64::*;
    let queries = &queries[q0..q0 + Q];
    let (tau, pre) = (&th.tau[q0..q0 + Q], &th.pre[q0..q0 + Q]);
    let n = queries[0].quads.len();
    assert!(queries
        .iter()
        .all(|q| q.wide.len() == 4 * n && q.quads.len() == n));
    let bb = n * 64;
    assert!(blocks.len() >= nb * bb && out.len() >= nb.saturating_sub(1) * stride + q0 + Q);
    let rows = nb * LANES;
    assert!(
        meta.scale.len() >= rows && meta.half_norm2.len() >= rows && meta.residual.len() >= rows
    );
    let p = blocks.as_ptr();
    let mut qp = [std::ptr::null::<u64>(); Q];
    for (d, q) in qp.iter_mut().zip(queries) {
        *d = q.wide.as_ptr();
    }
    let mut any = false;
    for b in 0..nb {
        // Each query's 16 integer dot products, lanes 0-7 and 8-15.
        let mut dots = [[_mm256_setzero_si256(); 2]; Q];
        for (h, half) in [0usize, 32].into_iter().enumerate() {
            let mut acc = [[_mm256_setzero_si256(); 2]; Q];
            for j in 0..n {
                let at = b * bb + j * 64 + half;
                // SAFETY: at + 32 <= nb * bb <= blocks.len() (asserted above): both 16-byte
                // unaligned loads stay inside `blocks`.
                let (r0, r1) = unsafe {
                    (
                        _mm256_cvtepu8_epi16(_mm_loadu_si128(p.add(at) as *const __m128i)),
                        _mm256_cvtepu8_epi16(_mm_loadu_si128(p.add(at + 16) as *const __m128i)),
                    )
                };
                for q in 0..Q {
                    // SAFETY: 4j + 4 <= 4n == queries[q].wide.len() (asserted above): the
                    // 32-byte unaligned load stays inside `wide`.
                    let x = unsafe { _mm256_loadu_si256(qp[q].add(4 * j) as *const __m256i) };
                    acc[q][0] = _mm256_add_epi32(acc[q][0], _mm256_madd_epi16(r0, x));
                    acc[q][1] = _mm256_add_epi32(acc[q][1], _mm256_madd_epi16(r1, x));
                }
            }
            for (q, query) in queries.iter().enumerate() {
                // Pair sums of rows 0-3 and 4-7 of the half: hadd gives rows 0 1 4 5 | 2 3 6 7
                // (per 128-bit lane); the permute puts them in order. Then the rows' +128.
                let s = _mm256_hadd_epi32(acc[q][0], acc[q][1]);
                let s = _mm256_permute4x64_epi64::<0b11_01_10_00>(s);
                dots[q][h] = _mm256_sub_epi32(s, _mm256_set1_epi32(query.offset));
            }
        }
        let r = b * LANES;
        let mut approx = [[_mm256_setzero_ps(); 2]; Q];
        let mut passed = [false; Q];
        let mut hn = [_mm256_setzero_ps(); 2];
        for h in 0..2 {
            // SAFETY (both loads): each slice holds at least nb * 16 f32 (asserted above), so
            // the 32-byte unaligned load at element r + 8h is in bounds.
            let scale = unsafe { _mm256_loadu_ps(meta.scale.as_ptr().add(r + 8 * h)) };
            hn[h] = unsafe { _mm256_loadu_ps(meta.half_norm2.as_ptr().add(r + 8 * h)) };
            for (q, query) in queries.iter().enumerate() {
                let dot = _mm256_cvtepi32_ps(dots[q][h]);
                approx[q][h] = _mm256_sub_ps(
                    _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(query.scale), scale), dot),
                    hn[h],
                );
                let m = _mm256_cmp_ps::<_CMP_GE_OQ>(approx[q][h], _mm256_set1_ps(pre[q]));
                passed[q] |= _mm256_movemask_ps(m) != 0;
            }
        }
        for (q, query) in queries.iter().enumerate() {
            let o = &mut out[b * stride + q0 + q];
            o.mask = 0;
            if !passed[q] {
                continue;
            }
            for h in 0..2 {
                // SAFETY: as for the loads above.
                let res = unsafe { _mm256_loadu_ps(meta.residual.as_ptr().add(r + 8 * h)) };
                let nrm = _mm256_mul_ps(
                    _mm256_sqrt_ps(_mm256_add_ps(hn[h], hn[h])),
                    _mm256_set1_ps(NORM_SLACK),
                );
                let bnd = _mm256_add_ps(
                    _mm256_mul_ps(_mm256_set1_ps(query.a), res),
                    _mm256_mul_ps(_mm256_set1_ps(query.b), nrm),
                );
                let u = _mm256_add_ps(approx[q][h], bnd);
                let m = _mm256_cmp_ps::<_CMP_GE_OQ>(u, _mm256_set1_ps(tau[q]));
                o.mask |= (_mm256_movemask_ps(m) as u32) << (8 * h);
                // SAFETY: `upper` and `bound` are 16 f32; elements 8h..8h + 8 are in bounds.
                unsafe {
                    _mm256_storeu_ps(o.upper.as_mut_ptr().add(8 * h), u);
                    _mm256_storeu_ps(o.bound.as_mut_ptr().add(8 * h), bnd);
                }
            }
            any |= o.mask != 0;
        }
    }
    any
}

/// [`tile_vnni`] over `nb` blocks, `B` at a time (`nb` a multiple of `B`): one call from the scan
/// for up to 8 blocks whatever the group's size.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512 VNNI (checked by `Kernel::detect` before any call).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn tile_vnni_steps<const B: usize, const Q: usize>(
    queries: &[Query],
    nb: usize,
    blocks: &[u8],
    meta: &BlockMeta,
    th: Thresholds,
    out: &mut [LaneBounds],
) -> bool {
    assert!(nb.is_multiple_of(B) && !queries.is_empty());
    let bb = queries[0].quads.len() * 64;
    let mut any = false;
    for s in 0..nb / B {
        // SAFETY: the caller's CPU has both features (this function's contract).
        any |= unsafe {
            tile_vnni::<B, Q>(
                queries,
                &blocks[s * B * bb..(s + 1) * B * bb],
                &meta.blocks(s * B, B),
                th,
                &mut out[s * B * Q..(s + 1) * B * Q],
            )
        };
    }
    any
}

/// Asks Linux to back `v`'s allocation with transparent huge pages (2 MiB) where it is
/// touched from now on: a scan streams hundreds of MB, and on 4 KiB pages the hardware
/// prefetcher stops at every page boundary. Measured on a Zen 4 core (10^6 rows, one thread,
/// single queries): 128-D 7.1-7.2 -> 4.6-4.8 ms, 512-D 23.4-24.6 -> 18.4-19.5 ms, with the
/// machine's THP set to `madvise` (the Debian default), where nothing gets huge pages unasked.
/// Only an optimisation: an allocation under 2 MiB, another OS, or a kernel that refuses
/// changes nothing. `bench-search`'s bandwidth probe asks the same for its buffer, so the two
/// are compared on equal pages.
pub fn advise_huge_pages<T>(v: &Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let page = region::page::size();
        let start = v.as_ptr() as usize;
        let Some(end) = std::mem::size_of::<T>()
            .checked_mul(v.capacity())
            .and_then(|bytes| start.checked_add(bytes))
        else {
            return;
        };
        let (first, last) = (start.next_multiple_of(page), end / page * page);
        if last <= first || last - first < HUGE {
            return;
        }
        // SAFETY: madvise(MADV_HUGEPAGE) changes only how the kernel backs the range's pages (2
        // MiB pages when they are faulted in, or collapsed later); never their contents, whether
        // they are mapped, or who may access them, so no reference into `v` (or anything else)
        // sees a change. The range is inside `v`'s allocation (capacity × size of T from its
        // pointer, overflow checked above), page-aligned inward as madvise requires. Its result
        // is ignored on purpose: a refusal (THP disabled, an old kernel) leaves everything as it
        // was. The portable twin is not asking: `advice_changes_no_contents_and_no_results`.
        unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_HUGEPAGE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// Asks for `bytes` to be brought into the L2 cache ahead of their use (a hint; nothing on
/// other architectures).
pub(super) fn prefetch_l2(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch reads nothing into the program and never faults; the address is
        // inside `bytes` anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                line.as_ptr() as *const i8
            )
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Independent accumulators in the peak probe: more than `vpdpbusd`'s latency times its
/// throughput on any core with it, so the probe measures throughput.
pub const PEAK_CHAINS: usize = 16;

/// One core's integer multiply-add peak in GMAC/s for the named scan kernel
/// ([`ExactIndex::kernel_name`](super::ExactIndex::kernel_name)), and how it was measured
/// (`None` for the portable kernel or one this CPU lacks): the rate the batch scan is compared
/// with (`bench-search`), best of `reps`. AMX: `tdpbsud` (16 x 16 x 64 multiply-adds); AVX-512
/// VNNI: `vpdpbusd` (64 multiply-adds); AVX2: `vpmaddwd` + `vpaddd`, the AVX2 kernel's inner
/// pair (16 multiply-adds).
pub fn int8_peak_gmacs(kernel: &str, reps: usize) -> Option<(f64, &'static str)> {
    let kernel = Kernel::available_named(kernel)?;
    #[cfg(target_arch = "x86_64")]
    {
        /// Runs `iters` rounds, returns the multiply-adds done.
        type Chains = unsafe fn(u64) -> u64;
        let (chains, iters, how): (Chains, u64, &'static str) = match kernel {
            Kernel::Amx => (
                super::amx::amx_chains,
                100_000,
                "AMX tdpbsud (16 x 16 x 64 multiply-adds each)",
            ),
            Kernel::Vnni512 => (
                vnni_chains,
                4_000_000,
                "AVX-512 VNNI vpdpbusd (64 multiply-adds each)",
            ),
            Kernel::Avx2 => (
                avx2_chains,
                4_000_000,
                "AVX2 vpmaddwd + vpaddd (16 multiply-adds each)",
            ),
            Kernel::Portable => return None,
        };
        let mut best = 0.0f64;
        for _ in 0..reps.max(1) {
            let t = std::time::Instant::now();
            // SAFETY: `Kernel::available` found what `chains` needs on this CPU (the target
            // features; for AMX also the OS's grant of tile data).
            let macs = unsafe { chains(std::hint::black_box(iters)) };
            best = best.max(macs as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
        Some((best, how))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kernel, reps);
        None
    }
}

/// `iters` rounds of one `vpmaddwd` added into each of [`PEAK_CHAINS`] accumulators (no memory
/// traffic); returns the multiply-adds done.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2_chains(iters: u64) -> u64 {
    use std::arch::x86_64::*;
    let a = std::hint::black_box(_mm256_set1_epi16(3));
    let b = std::hint::black_box(_mm256_set1_epi16(5));
    let mut acc = [_mm256_setzero_si256(); PEAK_CHAINS];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm256_add_epi32(*x, _mm256_madd_epi16(a, b));
        }
    }
    let mut sum = _mm256_setzero_si256();
    for x in acc {
        sum = _mm256_add_epi32(sum, x);
    }
    std::hint::black_box(_mm256_extract_epi32::<0>(sum));
    iters * PEAK_CHAINS as u64 * 16
}

/// `iters` rounds of one `vpdpbusd` on each of [`PEAK_CHAINS`] accumulators (no memory
/// traffic); returns the multiply-adds done.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512 VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn vnni_chains(iters: u64) -> u64 {
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
    std::hint::black_box(_mm512_reduce_add_epi32(sum));
    iters * PEAK_CHAINS as u64 * 64
}
