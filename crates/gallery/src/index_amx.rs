//! The AMX tile kernel of the int8 scan (Intel Xeon from Sapphire Rapids on): the dot products of
//! a group of queries with blocks of rows as tile matrix products (`tdpbsud`), then the same
//! bounds as the VNNI kernel ([`block_bounds_512`]), so masks and bounds agree with the portable
//! kernel bit for bit.
//!
//! The rows' layout is already what a tile multiply wants: a block stores, per group of 4
//! dimensions, the 16 rows' 4 bytes side by side (64 bytes), which is the "VNNI-packed" layout
//! of a tile's second operand. So 16 consecutive groups of a block (1 KB, contiguous) are one B
//! tile of 16 rows x 64 dimensions, loaded as it lies; the queries' codes, row-major, are the A
//! tile (one row a query, 64 dimensions); `tdpbsud` (signed A, unsigned B) adds every query's
//! dot product with every row into a C tile of 32-bit sums. A dimension count that is not a
//! multiple of 64 leaves a last chunk of 4-60 bytes, which two more tiles of that width take.
//!
//! Nothing here has run on AMX hardware: no host this project has had since the issue has AMX.
//! It is tested against the portable kernel under Bochs's Sapphire Rapids model
//! (`scripts/amx_emulated.sh`), which checks the results, not the speed.

use super::kernel::{block_bounds_512, BlockMeta, LaneBounds, Thresholds};
use super::{Query, LANES};
use std::arch::asm;
use std::arch::x86_64::{__m512i, _mm512_loadu_si512, _mm512_set1_epi32, _mm512_sub_epi32};
use std::sync::OnceLock;

/// Whether this process may run AMX int8 tile instructions: the CPU reports AMX-TILE and
/// AMX-INT8, and the OS has granted the process the tile data state. On Linux (5.16 on) a process
/// must ask for it (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), or its first tile instruction is killed
/// with SIGILL; the grant is process-wide and permanent, so it is asked once. Other systems:
/// not used.
pub(super) fn usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| cpu_has_amx_int8() && os_grants_tile_data())
}

/// CPUID leaf 7, sub-leaf 0, EDX bit 24 (AMX-TILE) and bit 25 (AMX-INT8).
fn cpu_has_amx_int8() -> bool {
    use std::arch::x86_64::{__cpuid_count, __get_cpuid_max};
    // CPUID is available on every x86-64 CPU and only reads identification registers.
    let (max_leaf, _) = __get_cpuid_max(0);
    if max_leaf < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    edx >> 24 & 1 == 1 && edx >> 25 & 1 == 1
}

#[cfg(target_os = "linux")]
fn os_grants_tile_data() -> bool {
    /// arch/x86/include/uapi/asm/prctl.h.
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    /// The tile data state component (XSAVE feature 18).
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM, 18) takes two integers and reads or writes no
    // memory of this process; it only records in the kernel that the process may use tile data
    // (or fails with EINVAL/EOPNOTSUPP on a kernel or CPU without it, which this returns as false).
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn os_grants_tile_data() -> bool {
    false
}

/// The 64-byte operand of `ldtilecfg` (palette 1): each tile's rows and bytes per row.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// Tile registers: A (queries), B (a block's rows) for two blocks, C (sums) for two blocks, and
/// the last chunk's A and B when the dimensions are not a multiple of 64.
const T_A: usize = 0;
const T_B0: usize = 1;
const T_B1: usize = 2;
const T_C0: usize = 4;
const T_C1: usize = 5;
const T_A_REST: usize = 6;
const T_B_REST: usize = 7;

impl TileConfig {
    /// Tiles for `q` queries (1-16) and a last chunk of `rest` bytes (a multiple of 4 below 64).
    fn new(q: usize, rest: usize) -> TileConfig {
        let mut c = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        let mut set = |t: usize, rows: usize, colsb: usize| {
            c.rows[t] = rows as u8;
            c.colsb[t] = colsb as u16;
        };
        set(T_A, q, 64);
        set(T_B0, LANES, 64);
        set(T_B1, LANES, 64);
        set(T_C0, q, 4 * LANES);
        set(T_C1, q, 4 * LANES);
        if rest > 0 {
            set(T_A_REST, q, rest);
            set(T_B_REST, rest / 4, 64);
        }
        c
    }
}

/// `nb` consecutive blocks against `Q` queries (2-16) with AMX, two blocks at a time, into
/// `out[b * Q + q]`; as [`Kernel::tile`](super::kernel::Kernel::tile).
///
/// # Safety
/// [`usable`] must have returned true in this process and the CPU must support AVX-512F (both
/// checked by `Kernel::available` before this kernel can be chosen).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tile_amx<const Q: usize>(
    queries: &[Query],
    nb: usize,
    blocks: &[u8],
    meta: &BlockMeta,
    th: Thresholds,
    out: &mut [LaneBounds],
) -> bool {
    assert!((1..=16).contains(&Q) && queries.len() == Q && out.len() >= nb * Q);
    assert!(th.tau.len() == Q && th.pre.len() == Q);
    let n = queries[0].quads.len();
    assert!(queries.iter().all(|q| q.quads.len() == n));
    let (dim_p, bb) = (4 * n, 64 * n);
    assert!(blocks.len() >= nb * bb);
    let rows = nb * LANES;
    assert!(
        meta.scale.len() >= rows && meta.half_norm2.len() >= rows && meta.residual.len() >= rows
    );
    let (full, rest) = (dim_p / 64, dim_p % 64);
    // The A operand: the queries' codes, one row each.
    let mut a = vec![0u8; Q * dim_p];
    for (row, q) in a.chunks_exact_mut(dim_p).zip(queries) {
        for (d, w) in row.chunks_exact_mut(4).zip(&q.quads) {
            d.copy_from_slice(&w.to_le_bytes());
        }
    }
    let config = TileConfig::new(Q, rest);
    // The C tiles' sums, stored: per block, Q rows of 16 lanes (64 bytes a row).
    let mut sums = [[[0i32; LANES]; Q]; 2];
    let (ap, bp, sa) = (a.as_ptr(), blocks.as_ptr(), dim_p);
    // SAFETY (all the asm below): tile instructions need AMX-TILE/AMX-INT8 and the OS's grant
    // of tile data, which `usable` established (this function's contract); they touch no
    // general register or flag but their operands, and no stack. Memory: every `tileloadd` reads
    // `rows` rows of `colsb` bytes, row i at base + i * stride, with the shapes `config` gives:
    // - A at `ap + 64 * ch` (ch < full), Q rows of 64 bytes, stride dim_p: the last byte read
    //   is (Q - 1) * dim_p + 64 * ch + 63 < Q * dim_p = a.len(), as 64 * (ch + 1) <= dim_p;
    // - A's last chunk at `ap + 64 * full`, Q rows of `rest` bytes: ends at (Q - 1) * dim_p +
    //   64 * full + rest = Q * dim_p;
    // - B at `bp + b * bb + 1024 * ch`, 16 rows of 64 bytes, stride 64: 1,024 contiguous bytes
    //   ending at b * bb + 1024 * (ch + 1) <= (b + 1) * bb <= nb * bb <= blocks.len();
    // - B's last chunk at `bp + b * bb + 1024 * full`, rest / 4 rows of 64 bytes: ends at b *
    //   bb + 1024 * full + 16 * rest = (b + 1) * bb, since 4n = 64 * full + rest.
    // `tilestored` writes Q rows of 64 bytes, stride 64, into `sums[i]`: exactly its Q * 64
    // bytes. `tdpbsud`'s shapes agree (C: Q x 64 bytes = A's rows x B's bytes per row; A's bytes
    // per row = 4 x B's rows), which the CPU checks too (#UD otherwise, never wrong results).
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly, preserves_flags));
    }
    let mut any = false;
    let mut b = 0;
    while b < nb {
        let two = b + 1 < nb;
        let (b0, b1) = (b * bb, (b + 1) * bb);
        unsafe {
            asm!(
                "tilezero tmm4",
                "tilezero tmm5",
                options(nostack, nomem, preserves_flags)
            );
        }
        // The products of the dimensions from byte `at` of a row on (one chunk) into C0 (block
        // b) and, with `two`, C1 (block b + 1): A, B0 and B1 name the chunk's tiles (tmm0, 1,
        // 2 for whole 64-byte chunks; tmm6, 7, 7 for the narrower last one). A block's chunk
        // starts at 16 * at: 16 rows' bytes side by side.
        macro_rules! products {
            ($a:literal, $b0:literal, $b1:literal, $at:expr) => {
                asm!(
                    concat!("tileloadd ", $a, ", [{a} + {sa} * 1]"),
                    concat!("tileloadd ", $b0, ", [{b0} + {s64} * 1]"),
                    concat!("tdpbsud tmm4, ", $a, ", ", $b0),
                    a = in(reg) ap.add($at),
                    sa = in(reg) sa,
                    b0 = in(reg) bp.add(b0 + 16 * $at),
                    s64 = in(reg) 64usize,
                    options(nostack, readonly, preserves_flags),
                );
                if two {
                    asm!(
                        concat!("tileloadd ", $b1, ", [{b1} + {s64} * 1]"),
                        concat!("tdpbsud tmm5, ", $a, ", ", $b1),
                        b1 = in(reg) bp.add(b1 + 16 * $at),
                        s64 = in(reg) 64usize,
                        options(nostack, readonly, preserves_flags),
                    );
                }
            };
        }
        for ch in 0..full {
            unsafe {
                products!("tmm0", "tmm1", "tmm2", 64 * ch);
            }
        }
        if rest > 0 {
            unsafe {
                products!("tmm6", "tmm7", "tmm7", 64 * full);
            }
        }
        unsafe {
            asm!(
                "tilestored [{c} + {s64} * 1], tmm4",
                c = in(reg) sums[0].as_mut_ptr(),
                s64 = in(reg) 64usize,
                options(nostack, preserves_flags),
            );
            if two {
                asm!(
                    "tilestored [{c} + {s64} * 1], tmm5",
                    c = in(reg) sums[1].as_mut_ptr(),
                    s64 = in(reg) 64usize,
                    options(nostack, preserves_flags),
                );
            }
        }
        for (i, block_sums) in sums.iter().enumerate().take(if two { 2 } else { 1 }) {
            // Each query's sums minus the rows' +128 (`offset`), as the VNNI kernel's
            // accumulators start at −offset: the same integer.
            let dots: [__m512i; Q] = std::array::from_fn(|q| {
                // SAFETY: `block_sums[q]` is 16 i32 = 64 bytes, one unaligned load; AVX-512F is
                // this function's target feature.
                unsafe {
                    _mm512_sub_epi32(
                        _mm512_loadu_si512(block_sums[q].as_ptr() as *const _),
                        _mm512_set1_epi32(queries[q].offset),
                    )
                }
            });
            let blk = b + i;
            // SAFETY: AVX-512F, this function's contract; `meta` holds nb * 16 rows (asserted
            // above).
            any |= unsafe {
                block_bounds_512::<Q>(
                    queries,
                    &dots,
                    meta,
                    blk * LANES,
                    th,
                    &mut out[blk * Q..(blk + 1) * Q],
                )
            } != 0;
        }
        b += if two { 2 } else { 1 };
    }
    // Back to the init state, so the OS need not save 8 KB of tiles at every context switch.
    unsafe {
        asm!("tilerelease", options(nostack, nomem, preserves_flags));
    }
    any
}

/// `iters` rounds of six `tdpbsud` (16 x 16 x 64 each, into six independent C tiles: more than
/// the instruction's latency over its throughput), no memory traffic after the first loads:
/// the AMX int8 peak the batch scan is compared with. Returns the multiply-adds done.
///
/// # Safety
/// [`usable`] must have returned true in this process.
pub(super) unsafe fn amx_chains(iters: u64) -> u64 {
    let ones = [1u8; 1024];
    let mut config = TileConfig::new(16, 0);
    for t in 2..8 {
        config.rows[t] = 16;
        config.colsb[t] = 64;
    }
    // SAFETY: as in `tile_amx` (the grant is this function's contract); both loads read 16 rows
    // of 64 bytes, stride 64, from `ones` (1,024 bytes).
    unsafe {
        asm!(
            "ldtilecfg [{cfg}]",
            "tileloadd tmm0, [{p} + {s} * 1]",
            "tileloadd tmm1, [{p} + {s} * 1]",
            cfg = in(reg) &config,
            p = in(reg) ones.as_ptr(),
            s = in(reg) 64usize,
            options(nostack, readonly, preserves_flags),
        );
        for _ in 0..iters {
            asm!(
                "tdpbsud tmm2, tmm0, tmm1",
                "tdpbsud tmm3, tmm0, tmm1",
                "tdpbsud tmm4, tmm0, tmm1",
                "tdpbsud tmm5, tmm0, tmm1",
                "tdpbsud tmm6, tmm0, tmm1",
                "tdpbsud tmm7, tmm0, tmm1",
                options(nostack, nomem, preserves_flags),
            );
        }
        asm!("tilerelease", options(nostack, nomem, preserves_flags));
    }
    iters * 6 * 16 * 16 * 64
}
