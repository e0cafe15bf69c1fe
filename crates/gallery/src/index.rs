//! Exact top-k search over templates held in memory.
//!
//! The scan runs on int8 codes (4x less memory traffic than f32, and int8 multiply-adds are the
//! densest SIMD arithmetic), then the candidates are re-scored in f32. The result is *provably* the
//! same as an exhaustive f32 search, not just usually: for every row the scan knows a bound on how far
//! its int8 score can be from the f32 score (Cauchy-Schwarz on the quantisation residuals), and it
//! keeps every row whose upper bound reaches the k-th best lower bound seen so far.
//!
//! Ranking score: `s = q·x − |x|²/2`. It orders rows like the Euclidean distance
//! (`|q−x|² = |q|² − 2s`) and like cosine similarity when templates are unit length, so one scan
//! serves both metrics.
//!
//! Layout: rows are stored in blocks of 16, interleaved by groups of 4 dimensions, so that one
//! 64-byte load holds the same 4 dimensions of 16 rows. With AVX-512 VNNI one `vpdpbusd` then
//! advances 16 dot products by 4 dimensions each, with no horizontal sums. A batch is scanned up
//! to 8 queries at a time (`index_kernel.rs`): each row vector, loaded once, is multiplied into
//! every query of the group (register blocking), so a batch is bound by multiply-adds, not loads.
//!
//! Two memory layouts, same results: the default keeps the f32 templates beside the codes
//! (664 B per 128-D row, re-scoring from RAM); the compact one keeps only codes and bounds
//! (152 B per 128-D row, 10^8 rows in 15.2 GB) and re-scores the few candidates through a
//! [`TemplateSource`] (the store decrypts them from disk).

use crate::error::{GalleryError, Result};
use multiversion::multiversion;
use rayon::prelude::*;
use zeroize::{Zeroize, Zeroizing};

const LANES: usize = 16;

#[cfg(target_arch = "x86_64")]
#[path = "index_amx.rs"]
mod amx;
#[path = "index_kernel.rs"]
mod kernel;
pub use kernel::{advise_huge_pages, int8_peak_gmacs, PEAK_CHAINS};
use kernel::{
    group_size, tile_blocks, BlockMeta, Kernel, LaneBounds, Thresholds, MAX_GROUP, MAX_TILE_BLOCKS,
};

/// Where a compact index gets the f32 templates of its candidates for exact re-scoring.
pub trait TemplateSource: Sync {
    /// The templates of these row ids, in order; `None` for a row that is gone (erased while
    /// the search ran): it is left out of the result.
    fn templates(&self, ids: &[u64]) -> Result<Vec<Option<Zeroizing<Vec<f32>>>>>;
}

/// For indexes that keep their templates in memory.
pub struct NoSource;

impl TemplateSource for NoSource {
    fn templates(&self, _ids: &[u64]) -> Result<Vec<Option<Zeroizing<Vec<f32>>>>> {
        Err(GalleryError::Invalid(
            "a compact index needs a template source to re-score candidates".into(),
        ))
    }
}

/// Expiry times arrive as Unix milliseconds (the store's clock) and are held as u32 whole seconds,
/// rounded down: 4 bytes a row instead of 8. Rounding both the expiry and `now` down keeps every
/// expired row expired (a row can drop out up to a second early, never late). Exact until 2106,
/// when "never" rows would start to count as expired; later expiries saturate and stay live.
fn expiry_code(t_ms: i64) -> u32 {
    t_ms.div_euclid(1000).clamp(0, u32::MAX as i64) as u32
}

/// What the store needs from a search structure: the exact index (default) and the approximate
/// HNSW index implement it, so a gallery switches by policy and callers do not change.
pub trait SearchIndex: Send + Sync {
    /// "exact" or "hnsw".
    fn kind(&self) -> &'static str;
    fn dim(&self) -> usize;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn push(&mut self, id: u64, x: &[f32], expires: i64);
    fn remove(&mut self, id: u64) -> usize;
    /// Top-`k` by q·x − |x|²/2, best first; rows expired at `now` and (with `floor`) rows scoring
    /// below it are left out. `source` supplies templates an index does not keep in memory.
    fn search(
        &self,
        queries: &[&[f32]],
        k: usize,
        floor: Option<f32>,
        now: i64,
        source: &dyn TemplateSource,
    ) -> Result<Vec<Vec<Hit>>>;
    /// Whether templates are re-scored through the source (ids then name templates, not subjects).
    fn is_compact(&self) -> bool {
        false
    }
    fn memory_bytes(&self) -> usize;
    fn lock_memory(&mut self) -> bool;
}

impl SearchIndex for ExactIndex {
    fn kind(&self) -> &'static str {
        if self.keep_exact {
            "exact"
        } else {
            "compact"
        }
    }
    fn dim(&self) -> usize {
        ExactIndex::dim(self)
    }
    fn len(&self) -> usize {
        ExactIndex::len(self)
    }
    fn push(&mut self, id: u64, x: &[f32], expires: i64) {
        ExactIndex::push(self, id, x, expires)
    }
    fn remove(&mut self, id: u64) -> usize {
        ExactIndex::remove(self, id)
    }
    fn search(
        &self,
        queries: &[&[f32]],
        k: usize,
        floor: Option<f32>,
        now: i64,
        source: &dyn TemplateSource,
    ) -> Result<Vec<Vec<Hit>>> {
        self.search_with(queries, k, floor, now, source)
    }
    fn is_compact(&self) -> bool {
        !self.keep_exact
    }
    fn memory_bytes(&self) -> usize {
        ExactIndex::memory_bytes(self)
    }
    fn lock_memory(&mut self) -> bool {
        ExactIndex::lock_memory(self)
    }
}

/// One result row: `id` is the caller's id for the template.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub id: u64,
    /// q·x in f32.
    pub dot: f32,
    /// Ranking score q·x − |x|²/2 in f32.
    pub score: f32,
}

/// Templates of one gallery, in memory. Decrypted data lives only here: zeroised on drop and
/// locked against swap when the OS allows (`lock_memory`).
pub struct ExactIndex {
    dim: usize,
    /// dim rounded up to a multiple of 4.
    dim_p: usize,
    kernel: Kernel,
    /// Blocks of 16 rows × dim_p bytes, interleaved (see module docs), each code stored offset
    /// by 128 as an unsigned byte ([`stored`]): `vpdpbusd` multiplies unsigned bytes by signed
    /// ones, and with the rows unsigned the query's signed bytes can be its broadcast operand.
    codes: Vec<u8>,
    /// Per row, padded to whole blocks (padding rows can never be candidates: half_norm2 = +inf).
    scale: Vec<f32>,
    half_norm2: Vec<f32>,
    residual: Vec<f32>,
    /// The largest residual and |x|²/2 of any row pushed (removals leave them: still upper
    /// bounds), for the scan's prefilter ([`kernel::prefilter_tau`]).
    residual_max: f32,
    half_norm2_max: f32,
    /// The f32 templates, unless compact.
    keep_exact: bool,
    exact: Vec<f32>,
    ids: Vec<u64>,
    expires: Vec<u32>,
    locks: Vec<region::LockGuard>,
}

impl Drop for ExactIndex {
    fn drop(&mut self) {
        self.locks.clear();
        self.codes.zeroize();
        self.exact.zeroize();
    }
}

/// A code as the index stores it: offset by 128, unsigned (−127..=127 → 1..=255; 0 → 128).
#[inline]
fn stored(code: i8) -> u8 {
    code as u8 ^ 0x80
}

/// The code a stored byte holds ([`stored`]'s inverse).
#[inline]
fn code_of(byte: u8) -> i8 {
    (byte ^ 0x80) as i8
}

fn quantise(x: &[f32], codes: &mut [i8]) -> (f32, f32) {
    let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if max == 0.0 || !max.is_finite() {
        codes.iter_mut().for_each(|c| *c = 0);
        let r = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        return (0.0, (r * (1.0 + 1e-6)) as f32);
    }
    let scale = max / 127.0;
    let mut r2 = 0.0f64;
    for (c, v) in codes.iter_mut().zip(x) {
        // Round half away from zero by adding ±0.5 and truncating: plain SSE2 (`round` is a libm
        // call per value on baseline x86-64). The residual below is measured from the codes
        // actually chosen, so the bound holds whatever the rounding.
        let t = v / scale;
        let q = ((t + 0.5f32.copysign(t)) as i32).clamp(-127, 127) as f32;
        *c = q as i8;
        r2 += (*v as f64 - scale as f64 * q as f64).powi(2);
    }
    // Round the residual up so the bound stays a bound after f32 conversion.
    (scale, (r2.sqrt() * (1.0 + 1e-6) + 1e-12) as f32)
}

/// The f32 inner product every exact score uses (fixed summation order, so "exact" is one function
/// whatever the CPU).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    dot_f32_simd(a, b)
}

#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+fma", "x86_64+avx2+fma"))]
fn dot_f32_simd(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = a.len() / 16;
    for c in 0..chunks {
        for l in 0..16 {
            acc[l] += a[c * 16 + l] * b[c * 16 + l];
        }
    }
    let mut tail = 0.0f32;
    for i in chunks * 16..a.len() {
        tail += a[i] * b[i];
    }
    let mut s = 0.0f32;
    for v in acc {
        s += v;
    }
    s + tail
}

/// q·x̂ in f32 for one row's codes: `codes` starts at the row's first group in its block (4 codes
/// of the row every 64 bytes, see the layout above); `q` is padded to whole groups.
#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+fma", "x86_64+avx2+fma"))]
fn code_dot(q: &[f32], codes: &[u8]) -> f32 {
    let mut acc = [0.0f32; 16];
    for (g, qs) in q.chunks_exact(16).enumerate() {
        for j in 0..4 {
            let c = &codes[(g * 4 + j) * 64..(g * 4 + j) * 64 + 4];
            for i in 0..4 {
                acc[j * 4 + i] += qs[j * 4 + i] * code_of(c[i]) as f32;
            }
        }
    }
    let whole = q.len() / 16 * 16;
    let mut tail = 0.0f32;
    for (g, qs) in q[whole..].chunks_exact(4).enumerate() {
        let c = &codes[(whole / 4 + g) * 64..(whole / 4 + g) * 64 + 4];
        for i in 0..4 {
            tail += qs[i] * code_of(c[i]) as f32;
        }
    }
    acc.iter().sum::<f32>() + tail
}

struct Query {
    /// The codes (signed bytes), four per u32 (little-endian), dim_p / 4 entries.
    quads: Vec<u32>,
    /// The same codes as 16-bit integers, each group of four (one u64, little-endian) written
    /// four times: the AVX2 kernel's multiplier, one 32-byte load per group, widened and
    /// repeated once here rather than broadcast per block (measured: batch 1,035–1,080 →
    /// 1,285–1,310 QPS, 3·10^5 × 128-D, one thread, AMD EPYC without AVX-512).
    wide: Vec<u64>,
    /// 128 · Σ codes: what the rows' +128 offset adds to every int8 dot product with this query.
    offset: i32,
    scale: f32,
    /// Bound coefficients: |q̂| for the row residual, |q − q̂| + slack for |x|.
    a: f32,
    b: f32,
    /// Lower limit on the score from the caller's threshold (open-set search), if any.
    floor: f32,
    /// |q|, and the slack for f32 rounding per unit of |x| (in `b`; kept apart for
    /// `code_range`).
    norm: f64,
    slack: f64,
    /// The f32 query padded to `dim_p` (for `code_range`; empty for an index that keeps its f32
    /// rows).
    padded: Vec<f32>,
}

/// Top-k state of one query over one share of the rows.
struct Partial {
    k: usize,
    /// Min-heap of the k best lower bounds.
    lows: std::collections::BinaryHeap<std::cmp::Reverse<OrdF32>>,
    tau: f32,
    cands: Vec<(u32, f32)>,
}

#[derive(Clone, Copy, PartialEq)]
struct OrdF32(f32);
impl Eq for OrdF32 {}
impl PartialOrd for OrdF32 {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for OrdF32 {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

impl Partial {
    fn new(k: usize, floor: f32) -> Self {
        Partial {
            k,
            lows: std::collections::BinaryHeap::with_capacity(k + 1),
            tau: floor,
            cands: Vec::new(),
        }
    }

    #[inline]
    fn offer(&mut self, row: u32, upper: f32, lower: f32) {
        if upper < self.tau {
            return;
        }
        self.cands.push((row, upper));
        if self.lows.len() < self.k {
            self.lows.push(std::cmp::Reverse(OrdF32(lower)));
            if self.lows.len() == self.k {
                self.raise_tau();
            }
        } else if let Some(std::cmp::Reverse(OrdF32(min))) = self.lows.peek().copied() {
            if lower > min {
                self.lows.pop();
                self.lows.push(std::cmp::Reverse(OrdF32(lower)));
                self.raise_tau();
            }
        }
        if self.cands.len() > 4 * self.k + 256 {
            let tau = self.tau;
            self.cands.retain(|c| c.1 >= tau);
        }
    }

    fn raise_tau(&mut self) {
        if let Some(std::cmp::Reverse(OrdF32(min))) = self.lows.peek() {
            self.tau = self.tau.max(*min);
        }
    }

    /// Takes another range's tau when it is higher (whether it was).
    fn adopt(&mut self, tau: f32) -> bool {
        let higher = tau > self.tau;
        if higher {
            self.tau = tau;
        }
        higher
    }
}

/// One query's highest tau over the ranges scanned in parallel. A range's tau is the k-th best
/// lower bound among its own rows, so k rows score at least that much, and a row of any range
/// whose upper bound is below it cannot be in the top k (not even on a tie: its score is
/// strictly lower). So every range may turn rows away at the highest tau any range has reached.
/// The answer does not depend on when a range sees it: the final tau is taken over all ranges'
/// heaps again, and only candidates are re-scored. Held as an order-preserving u32 so that
/// raising it is one `fetch_max`.
struct SharedTau(std::sync::atomic::AtomicU32);

impl SharedTau {
    fn new(floor: f32) -> SharedTau {
        SharedTau(std::sync::atomic::AtomicU32::new(Self::ordered(floor)))
    }

    /// f32 → u32 with the same order (for every non-NaN value; taus are never NaN).
    fn ordered(x: f32) -> u32 {
        let b = x.to_bits();
        if b >> 31 == 1 {
            !b
        } else {
            b | 0x8000_0000
        }
    }

    fn get(&self) -> f32 {
        let u = self.0.load(std::sync::atomic::Ordering::Relaxed);
        f32::from_bits(if u >> 31 == 1 { u & 0x7fff_ffff } else { !u })
    }

    fn raise(&self, tau: f32) {
        self.0
            .fetch_max(Self::ordered(tau), std::sync::atomic::Ordering::Relaxed);
    }
}

/// Blocks per cache tile (a tile is scanned against every query of the batch while it is in cache).
const SHARE_BLOCKS: usize = 64;

impl ExactIndex {
    pub fn new(dim: usize) -> Self {
        ExactIndex {
            dim,
            dim_p: dim.div_ceil(4) * 4,
            kernel: Kernel::detect(),
            codes: Vec::new(),
            scale: Vec::new(),
            half_norm2: Vec::new(),
            residual: Vec::new(),
            residual_max: 0.0,
            half_norm2_max: 0.0,
            keep_exact: true,
            exact: Vec::new(),
            ids: Vec::new(),
            expires: Vec::new(),
            locks: Vec::new(),
        }
    }

    /// An index that keeps only the int8 codes and their bounds in memory; searches re-score
    /// candidates through a [`TemplateSource`] and return exactly what the full index returns.
    pub fn compact(dim: usize) -> Self {
        let mut idx = ExactIndex::new(dim);
        idx.keep_exact = false;
        idx
    }

    /// Which scan kernel runs: "amx-int8", "avx512-vnni", "avx2" or "portable".
    pub fn kernel_name(&self) -> &'static str {
        self.kernel.name()
    }

    /// The scan kernels this CPU can run, by name, fastest first ("portable" always).
    pub fn kernels_available() -> Vec<&'static str> {
        Kernel::available().into_iter().map(Kernel::name).collect()
    }

    /// Run the named kernel (one of [`ExactIndex::kernels_available`]), for benchmarks that
    /// compare them; false, and no change, for a kernel this CPU cannot run.
    pub fn use_kernel(&mut self, name: &str) -> bool {
        match Kernel::available_named(name) {
            Some(k) => {
                self.kernel = k;
                true
            }
            None => false,
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn reserve(&mut self, n: usize) {
        self.locks.clear();
        let padded = n.div_ceil(LANES) * LANES;
        self.codes.reserve(padded * self.dim_p);
        for v in [&mut self.scale, &mut self.half_norm2, &mut self.residual] {
            v.reserve(padded);
        }
        if self.keep_exact {
            self.exact.reserve(n * self.dim);
        }
        self.ids.reserve(n);
        self.expires.reserve(n);
        self.advise_huge_pages();
    }

    /// The scanned arrays on huge pages ([`advise_huge_pages`]), each time they may have moved.
    fn advise_huge_pages(&self) {
        advise_huge_pages(&self.codes);
        advise_huge_pages(&self.exact);
        for v in [&self.scale, &self.half_norm2, &self.residual] {
            advise_huge_pages(v);
        }
    }

    /// The capacities of the arrays [`ExactIndex::advise_huge_pages`] covers: when one changed,
    /// its buffer may have moved.
    fn scanned_capacities(&self) -> [usize; 5] {
        [
            self.codes.capacity(),
            self.exact.capacity(),
            self.scale.capacity(),
            self.half_norm2.capacity(),
            self.residual.capacity(),
        ]
    }

    #[inline]
    fn code_offset(&self, row: usize, c: usize) -> usize {
        (row / LANES) * LANES * self.dim_p + (c / 4) * 64 + (row % LANES) * 4 + c % 4
    }

    fn write_codes(&mut self, row: usize, codes: &[i8]) {
        for (c, v) in codes.iter().enumerate() {
            let o = self.code_offset(row, c);
            self.codes[o] = stored(*v);
        }
    }

    fn read_codes(&self, row: usize) -> Vec<i8> {
        (0..self.dim)
            .map(|c| code_of(self.codes[self.code_offset(row, c)]))
            .collect()
    }

    fn clear_slot(&mut self, row: usize) {
        self.write_codes(row, &vec![0; self.dim]);
        self.scale[row] = 0.0;
        self.half_norm2[row] = f32::INFINITY;
        self.residual[row] = 0.0;
    }

    /// Add a template (the caller has checked its length). `expires` is a Unix time in ms.
    pub fn push(&mut self, id: u64, x: &[f32], expires: i64) {
        assert_eq!(x.len(), self.dim, "template length checked by the caller");
        // Growing may move the buffers: locks are taken again by the next lock_memory().
        self.locks.clear();
        let row = self.ids.len();
        let capacities = self.scanned_capacities();
        if row.is_multiple_of(LANES) {
            self.codes
                .resize(self.codes.len() + LANES * self.dim_p, stored(0));
            self.scale.resize(row + LANES, 0.0);
            self.half_norm2.resize(row + LANES, f32::INFINITY);
            self.residual.resize(row + LANES, 0.0);
        }
        // Templates are at most a few hundred dimensions: codes live on the stack (no allocation
        // per row when a million rows load).
        let mut stack = [0i8; 1024];
        let mut heap = Vec::new();
        let codes: &mut [i8] = if self.dim <= stack.len() {
            &mut stack[..self.dim]
        } else {
            heap.resize(self.dim, 0);
            &mut heap
        };
        let (scale, residual) = quantise(x, codes);
        self.write_codes(row, codes);
        let n2 = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
        self.scale[row] = scale;
        self.half_norm2[row] = (n2 / 2.0) as f32;
        self.residual[row] = residual;
        self.residual_max = self.residual_max.max(residual);
        if self.half_norm2[row].is_finite() {
            self.half_norm2_max = self.half_norm2_max.max(self.half_norm2[row]);
        }
        codes.zeroize();
        if self.keep_exact {
            self.exact.extend_from_slice(x);
        }
        if capacities != self.scanned_capacities() {
            self.advise_huge_pages();
        }
        self.ids.push(id);
        self.expires.push(expiry_code(expires));
    }

    /// Remove every row with this id (swap-remove; order is not meaningful). Returns rows removed.
    pub fn remove(&mut self, id: u64) -> usize {
        self.locks.clear();
        let mut removed = 0;
        let mut i = 0;
        while i < self.ids.len() {
            if self.ids[i] != id {
                i += 1;
                continue;
            }
            let last = self.ids.len() - 1;
            let d = self.dim;
            if i != last {
                let codes = self.read_codes(last);
                self.write_codes(i, &codes);
                self.scale[i] = self.scale[last];
                self.half_norm2[i] = self.half_norm2[last];
                self.residual[i] = self.residual[last];
                if self.keep_exact {
                    self.exact.copy_within(last * d..(last + 1) * d, i * d);
                }
            }
            self.clear_slot(last);
            if self.keep_exact {
                self.exact[last * d..].zeroize();
                self.exact.truncate(last * d);
            }
            self.ids.swap_remove(i);
            self.expires.swap_remove(i);
            if last.is_multiple_of(LANES) {
                let rows = last;
                self.codes.truncate(rows * self.dim_p);
                for v in [&mut self.scale, &mut self.half_norm2, &mut self.residual] {
                    v.truncate(rows);
                }
            }
            removed += 1;
        }
        removed
    }

    /// Lock the decrypted data in RAM (mlock) where the OS allows. Returns whether it did.
    pub fn lock_memory(&mut self) -> bool {
        self.locks.clear();
        let mut ok = true;
        if !self.codes.is_empty() {
            match region::lock(self.codes.as_ptr(), self.codes.len()) {
                Ok(g) => self.locks.push(g),
                Err(_) => ok = false,
            }
        }
        if !self.exact.is_empty() {
            match region::lock(self.exact.as_ptr(), self.exact.len() * 4) {
                Ok(g) => self.locks.push(g),
                Err(_) => ok = false,
            }
        }
        ok
    }

    /// Bytes one query streams from memory: every row's int8 code and its three per-row terms
    /// (scale, half norm, residual); ids and expiry are read for candidates only.
    pub fn scan_bytes(&self) -> usize {
        self.codes.len() + (self.scale.len() + self.half_norm2.len() + self.residual.len()) * 4
    }

    /// Bytes of memory the search structures use.
    pub fn memory_bytes(&self) -> usize {
        self.codes.capacity()
            + self.exact.capacity() * 4
            + (self.scale.capacity() + self.half_norm2.capacity() + self.residual.capacity()) * 4
            + self.ids.capacity() * 8
            + self.expires.capacity() * 4
    }

    fn prepare(&self, q: &[f32], floor: Option<f32>) -> Query {
        let mut codes = vec![0i8; self.dim_p];
        let (scale, resid) = quantise(q, &mut codes[..self.dim]);
        let qhat: f64 = codes
            .iter()
            .map(|c| (scale as f64 * *c as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let qn: f64 = q.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        // Slack covers f32 rounding of both the int8 path and the f32 re-scoring (dim·2⁻²³ is a
        // generous bound for either at these dimensions).
        let slack = qn * (self.dim as f64 + 8.0) * 1.2e-7 * 4.0;
        let mut padded = Vec::new();
        if !self.keep_exact {
            padded.resize(self.dim_p, 0.0);
            padded[..self.dim].copy_from_slice(q);
        }
        let quads = codes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8]))
            .collect();
        let wide = codes
            .chunks_exact(4)
            .flat_map(|c| {
                [c.iter()
                    .enumerate()
                    .map(|(i, v)| (*v as i16 as u16 as u64) << (16 * i))
                    .fold(0, |a, b| a | b); 4]
            })
            .collect();
        Query {
            quads,
            wide,
            offset: 128 * codes.iter().map(|c| *c as i32).sum::<i32>(),
            scale,
            a: (qhat * (1.0 + 1e-6)) as f32,
            b: (resid as f64 + slack) as f32,
            floor: floor.unwrap_or(f32::NEG_INFINITY),
            norm: qn,
            slack,
            padded,
        }
    }

    /// The per-row inputs of the bounds for blocks `b..b + nb`.
    fn block_meta(&self, b: usize, nb: usize) -> BlockMeta<'_> {
        let r = b * LANES..(b + nb) * LANES;
        BlockMeta {
            scale: &self.scale[r.clone()],
            half_norm2: &self.half_norm2[r.clone()],
            residual: &self.residual[r],
        }
    }

    /// The largest residual and |x| of any row (padding and cleared rows, |x|²/2 = +inf, are
    /// left out: their bounds are never reached anyway). One pair for the whole index, not per
    /// tile: computed per tile, it was a pass over each tile's rows per single query, which then
    /// ran no faster than before the prefilter (measured); a tighter pair would filter little
    /// better (rows of one model have much the same norms).
    fn bound_inputs_max(&self) -> (f32, f32) {
        (self.residual_max, kernel::row_norm(self.half_norm2_max))
    }

    fn scan(
        &self,
        queries: &[Query],
        k: usize,
        now: u32,
        blocks: std::ops::Range<usize>,
        shared: &[SharedTau],
    ) -> Vec<Partial> {
        let bb = LANES * self.dim_p;
        let mut parts: Vec<Partial> = queries.iter().map(|q| Partial::new(k, q.floor)).collect();
        let mut out = [LaneBounds::default(); MAX_TILE_BLOCKS * MAX_GROUP];
        let mut taus = [0.0f32; MAX_GROUP];
        // Per query: the largest error bound any row can have, and the prefilter threshold for
        // the query's tau (recomputed when tau rises).
        let (residual_max, norm_max) = self.bound_inputs_max();
        let bound_max: Vec<f32> = queries
            .iter()
            .map(|q| kernel::largest_bound(q.a, q.b, residual_max, norm_max))
            .collect();
        let mut pre: Vec<f32> = parts
            .iter()
            .zip(&bound_max)
            .map(|(part, m)| kernel::prefilter_tau(part.tau, *m))
            .collect();
        // Tiles of blocks stay in cache while every query of the batch passes over them, up to 8
        // queries at a time through the kernel (each row vector loaded once for the group); each
        // query's top-k state carries over from tile to tile, so its bound tightens early. Rows
        // are offered to a query in row order whatever the grouping, so the result is the same.
        let mut tile = blocks.start;
        while tile < blocks.end {
            let tile_end = (tile + SHARE_BLOCKS).min(blocks.end);
            let mut q0 = 0;
            while q0 < queries.len() {
                let g = group_size(queries.len() - q0);
                let group = &queries[q0..q0 + g];
                let mut b = tile;
                while b < tile_end {
                    let nb = tile_blocks(tile_end - b);
                    for (qi, part) in parts[q0..q0 + g].iter_mut().enumerate() {
                        if part.adopt(shared[q0 + qi].get()) {
                            pre[q0 + qi] = kernel::prefilter_tau(part.tau, bound_max[q0 + qi]);
                        }
                        taus[qi] = part.tau;
                    }
                    if q0 == 0 && queries.len() > g && b + SHARE_BLOCKS + nb <= blocks.end {
                        // The first group's pass over this tile brings the next tile into L2
                        // as it goes, so the next first group does not wait on memory (the
                        // later groups find their tile in L2 anyway).
                        let next = b + SHARE_BLOCKS;
                        kernel::prefetch_l2(&self.codes[next * bb..(next + nb) * bb]);
                    }
                    let any = self.kernel.tile(
                        group,
                        nb,
                        &self.codes[b * bb..(b + nb) * bb],
                        &self.block_meta(b, nb),
                        Thresholds {
                            tau: &taus[..g],
                            pre: &pre[q0..q0 + g],
                        },
                        &mut out[..nb * g],
                    );
                    if !any {
                        b += nb;
                        continue;
                    }
                    for bi in 0..nb {
                        for (qi, part) in parts[q0..q0 + g].iter_mut().enumerate() {
                            let o = &out[bi * g + qi];
                            let mut mask = o.mask;
                            while mask != 0 {
                                let l = mask.trailing_zeros() as usize;
                                mask &= mask - 1;
                                let row = (b + bi) * LANES + l;
                                // tau may have risen since the kernel was handed it (earlier
                                // rows of this call): such a row would be turned away anyway.
                                if row >= self.ids.len()
                                    || self.expires[row] <= now
                                    || o.upper[l] < part.tau
                                {
                                    continue;
                                }
                                let (mut lower, mut upper) =
                                    (o.upper[l] - 2.0 * o.bound[l], o.upper[l]);
                                if !self.keep_exact {
                                    // A compact index pays a fetch (in a gallery: a read and a
                                    // decryption) per candidate, so every row the scan lets
                                    // through gets the tighter range from its codes now, while
                                    // its block is still in cache. Both ranges hold the score,
                                    // so their intersection does, and the tighter lower ends
                                    // raise tau sooner.
                                    let (lo, hi) = self.code_range(&group[qi], row);
                                    lower = lower.max(lo);
                                    upper = upper.min(hi);
                                }
                                part.offer(row as u32, upper, lower);
                            }
                        }
                    }
                    for (qi, part) in parts[q0..q0 + g].iter().enumerate() {
                        if part.tau != taus[qi] {
                            pre[q0 + qi] = kernel::prefilter_tau(part.tau, bound_max[q0 + qi]);
                            shared[q0 + qi].raise(part.tau);
                        }
                    }
                    b += nb;
                }
                q0 += g;
            }
            tile = tile_end;
        }
        parts
    }

    /// Exact top-`k` rows for each query by the score q·x − |x|²/2, best first, leaving out rows
    /// whose expiry is at or before `now` and, when `floor` is given, rows scoring below it.
    /// Uses the current rayon pool's threads. For an index built with `new` (templates in memory);
    /// a compact index answers through `search_with`.
    pub fn search(
        &self,
        queries: &[&[f32]],
        k: usize,
        floor: Option<f32>,
        now: i64,
    ) -> Vec<Vec<Hit>> {
        assert!(
            self.keep_exact,
            "a compact index searches through search_with"
        );
        // In-memory re-scoring cannot fail.
        self.search_with(queries, k, floor, now, &NoSource)
            .unwrap_or_default()
    }

    /// `search` for either layout: a compact index fetches its candidates' templates from
    /// `source` (once per distinct row, for the whole batch).
    pub fn search_with(
        &self,
        queries: &[&[f32]],
        k: usize,
        floor: Option<f32>,
        now: i64,
        source: &dyn TemplateSource,
    ) -> Result<Vec<Vec<Hit>>> {
        if k == 0 || self.is_empty() {
            return Ok(vec![Vec::new(); queries.len()]);
        }
        let prepared: Vec<Query> = queries.iter().map(|q| self.prepare(q, floor)).collect();
        let blocks = self.ids.len().div_ceil(LANES);
        let threads = rayon::current_num_threads().max(1);
        // One contiguous range per thread (plus a few for balance), each with its own top-k state
        // (the taus they reach are shared, below).
        let per = blocks.div_ceil(threads * 2).max(1);
        let ranges: Vec<std::ops::Range<usize>> = (0..blocks)
            .step_by(per)
            .map(|s| s..(s + per).min(blocks))
            .collect();
        let now = expiry_code(now);
        // Each query's best tau so far over all ranges: a range that starts later starts from
        // what the others found instead of from nothing (see `SharedTau`).
        let shared: Vec<SharedTau> = prepared.iter().map(|q| SharedTau::new(q.floor)).collect();
        let partials: Vec<Vec<Partial>> = ranges
            .into_par_iter()
            .map(|r| self.scan(&prepared, k, now, r, &shared))
            .collect();
        // Candidate rows per query: upper bound at or above the global tau (the k-th best lower
        // bound over all shares' heaps).
        let candidates: Vec<Vec<u32>> = (0..queries.len())
            .map(|qi| {
                let mut lows: Vec<f32> = partials
                    .iter()
                    .flat_map(|p| p[qi].lows.iter().map(|r| r.0 .0))
                    .collect();
                lows.sort_by(|a, b| b.total_cmp(a));
                let tau = lows
                    .get(k - 1)
                    .copied()
                    .unwrap_or(f32::NEG_INFINITY)
                    .max(prepared[qi].floor);
                partials
                    .iter()
                    .flat_map(|p| p[qi].cands.iter())
                    .filter(|c| c.1 >= tau)
                    .map(|c| c.0)
                    .collect()
            })
            .collect();
        let fetched: Option<std::collections::HashMap<u32, Zeroizing<Vec<f32>>>> =
            if self.keep_exact {
                None
            } else {
                let mut rows: Vec<u32> = candidates.iter().flatten().copied().collect();
                rows.sort_unstable();
                rows.dedup();
                let ids: Vec<u64> = rows.iter().map(|&r| self.ids[r as usize]).collect();
                let got = source.templates(&ids)?;
                if got.len() != rows.len() {
                    return Err(GalleryError::Invalid(
                        "template source returned the wrong number of rows".into(),
                    ));
                }
                let mut map = std::collections::HashMap::with_capacity(rows.len());
                for (r, t) in rows.into_iter().zip(got) {
                    match t {
                        Some(t) if t.len() == self.dim => {
                            map.insert(r, t);
                        }
                        Some(_) => {
                            return Err(GalleryError::Invalid(
                                "template source returned a template of the wrong length".into(),
                            ))
                        }
                        None => {}
                    }
                }
                Some(map)
            };
        Ok(candidates
            .into_par_iter()
            .enumerate()
            .map(|(qi, rows)| {
                let mut hits: Vec<(u32, Hit)> = rows
                    .into_iter()
                    .filter_map(|row| {
                        let x: &[f32] = match &fetched {
                            None => self.exact_row(row as usize),
                            Some(m) => m.get(&row)?,
                        };
                        Some((row, self.exact_hit(queries[qi], x, row as usize)))
                    })
                    .filter(|(_, h)| floor.is_none_or(|f| h.score >= f))
                    .collect();
                hits.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then(a.0.cmp(&b.0)));
                hits.truncate(k);
                hits.into_iter().map(|(_, h)| h).collect()
            })
            .collect())
    }

    /// A second range of row `row`'s score, computed from its codes: q·x = q·x̂ + q·(x − x̂), and
    /// |q·(x − x̂)| ≤ |q|·|x − x̂|. The scan's range also pays for quantising the query
    /// (|q − q̂|·|x|); this one does not, so it is about half as wide and about a quarter as many
    /// rows stay candidates (measured: 178 → ~45 per query at 512-D over 10^6 unit vectors).
    /// The slack covers f32 rounding of q·x̂ (at most dim·2⁻²⁴·|q|·|x̂|, in any summation order)
    /// as it covers the scan's; the ends are rounded outwards to f32. For a compact index only
    /// (`q.padded` is the f32 query).
    fn code_range(&self, q: &Query, row: usize) -> (f32, f32) {
        let dot = code_dot(&q.padded, &self.codes[self.code_offset(row, 0)..]) as f64;
        let centre = self.scale[row] as f64 * dot - self.half_norm2[row] as f64;
        let norm = (2.0 * self.half_norm2[row] as f64).sqrt();
        let err = q.norm * self.residual[row] as f64 + q.slack * norm;
        let (lo, hi) = (centre - err, centre + err);
        let (mut lo32, mut hi32) = (lo as f32, hi as f32);
        if lo32 as f64 > lo {
            lo32 = lo32.next_down();
        }
        if (hi32 as f64) < hi {
            hi32 = hi32.next_up();
        }
        (lo32, hi32)
    }

    fn exact_row(&self, row: usize) -> &[f32] {
        &self.exact[row * self.dim..(row + 1) * self.dim]
    }

    fn exact_hit(&self, q: &[f32], x: &[f32], row: usize) -> Hit {
        let dot = dot_f32(q, x);
        Hit {
            id: self.ids[row],
            dot,
            score: dot - self.half_norm2[row],
        }
    }

    /// Exhaustive f32 search with the same scoring function: `search` must equal it.
    pub fn search_exhaustive(&self, q: &[f32], k: usize, floor: Option<f32>, now: i64) -> Vec<Hit> {
        let now = expiry_code(now);
        let mut hits: Vec<(u32, Hit)> = (0..self.len())
            .filter(|&r| self.expires[r] > now)
            .map(|r| (r as u32, self.exact_hit(q, self.exact_row(r), r)))
            .filter(|(_, h)| floor.is_none_or(|f| h.score >= f))
            .collect();
        hits.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        hits.into_iter().map(|(_, h)| h).collect()
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
