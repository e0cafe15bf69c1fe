//! What a JPEG 2000 codestream's headers commit the decoder to, read before the decoder runs.
//!
//! The decoder's work and memory grow with structures the headers declare, not only with the
//! pixels: the tile grid, per tile the resolution levels, precincts and code-blocks, and the
//! coding passes. Five bombs found so far, each a few kilobytes:
//! - 1x1-pixel tiles: 782 MB and 7.5 s for 1 MP (a hostile-input review);
//! - 1-pixel-wide tiles with 64x4 code-blocks (found by fuzzing): `hayro-jpeg2000` builds each
//!   precinct's two tag trees as full quad-trees over max(blocks wide, blocks high)², so a
//!   1 x 67 grid of code-blocks costs 4^7 nodes per tree; 413 such tiles took 0.6 s for a
//!   413x531 image, and the same shape at 40 MP would take minutes;
//! - coding passes without data (built by hand after a fuzzing timeout in CI): the decoder runs
//!   every coding pass a packet header declares over every sample of the code-block, whether or
//!   not any bytes follow, and a header may declare up to 94 passes (32 bit-planes) in 16 bits:
//!   3.8 KB made 1 MP of four components cost 0.9 s, 130 KB at 36 MP 22 s and 1.5 GB;
//! - layers (built by hand): the decoder keeps a record per code-block per layer, data or not:
//!   202 bytes of 2x2-pixel precincts and 32 layers took 1.1 GB at 1 MP;
//! - memory without work (built by hand): one bit-plane in four components costs little time
//!   but the decoder's full buffers, 115 KB declaring 39.7 MP took 1.6 GB; the 202-byte file
//!   with one layer, 227 MB for 1 MP.
//!
//! So the main header and every tile-part header are walked (SIZ, COD, COC, QCD, QCC), and an
//! upper bound of the tag-tree nodes, code-blocks, code-block layers, packets and sample passes
//! is computed from the worst coding style found (smallest code-blocks and precincts, most
//! levels and layers), the most bit-planes any quantization gives each subband, the tile size
//! and the components. Refused above the budgets, which ordinary files are far below (a 40 MP
//! single-tile RGB photo with 64x64 code-blocks: ~5.5·10^5 tag-tree nodes, under 1% of the
//! budget); the sample passes grow with the pixels, so they are held to what an 8-bit photo of
//! the image's size may need, and 2^30 in all (about 11 MP of 8-bit RGB: JPEG 2000's use here is
//! the chip photo, 0.2 MP); the memory those numbers and the samples imply, to 512 MiB.

use super::{check_size, DecodeLimits};
use crate::error::VisionError;

/// Most tiles a JPEG 2000 image may declare. 1x1-pixel tiles made a 1.3 MB file cost 782 MB and
/// 7.5 s at 1 MP. Passport chip photos have one tile; a camera's tiling of a 40 MP frame at
/// 256x256 has ~610.
pub const MAX_JPEG2000_TILES: u64 = 1024;
/// Most components (colour planes) facegate reads: grey, grey + alpha, RGB, RGBA/CMYK.
pub const MAX_JPEG2000_COMPONENTS: u16 = 4;
/// Tag-tree nodes the decoder may have to build (bounded from the headers) without regard to the
/// image size: 2^26 nodes are about a quarter of a second here (the fuzzed file's 1.6·10^8 took
/// 0.6 s for 0.2 MP).
pub const MAX_JPEG2000_TAG_NODES: u128 = 1 << 26;
/// Beyond [`MAX_JPEG2000_TAG_NODES`], tag-tree nodes allowed per pixel: structure may cost about
/// as much as decoding the pixels, not orders of magnitude more (4x1024 code-blocks, the thinnest
/// the standard allows, in 256-pixel tiles of a 40 MP image: ~2 per pixel, 0.3 s of 4.2 s).
pub const MAX_JPEG2000_TAG_NODES_PER_PIXEL: u128 = 8;
/// Most code-blocks: a 40 MP RGB image with 16x16 code-blocks has ~4.7·10^5.
pub const MAX_JPEG2000_CODE_BLOCKS: u128 = 1 << 22;
/// Most packets (layers x precincts x components x tiles): each is parsed even when empty.
pub const MAX_JPEG2000_PACKETS: u128 = 1 << 24;
/// Most code-blocks x layers: the decoder keeps a record per code-block per layer (~24 bytes),
/// allocated whether or not any packet has data. A 202-byte file of 2x2-pixel precincts (one
/// code-block each per subband) and 32 layers took 1.1 GB at 1 MP (353 MB with one layer); 2^23
/// is ~200 MB. A 40 MP RGB photo with 64x64 code-blocks and 32 layers needs ~5·10^6.
pub const MAX_JPEG2000_CODE_BLOCK_LAYERS: u128 = 1 << 23;
/// Sample passes (samples x coding passes: a pass visits every sample of its code-block, with or
/// without data) allowed per pixel, bounded from each subband's bit-planes and size: an 8-bit
/// RGB photo needs up to ~96 (OpenJPEG's lossless ~88, lossy ~95 at 0.5 MP; the chip photos
/// ~80), RGBA up to 128 (lossy at 0.5 MP: 128 refused it), while a header declaring the most
/// passes for four components commits the decoder to 376. 16-bit RGB (~165) is refused above
/// [`MIN_JPEG2000_SAMPLE_PASSES`] (~0.1 MP).
pub const MAX_JPEG2000_SAMPLE_PASSES_PER_PIXEL: u128 = 144;
/// Sample passes allowed whatever the size (small images' bounds are dominated by rounding):
/// ~25 ms of a Zen 4 core in a release build (about 1.5 ns a visit).
pub const MIN_JPEG2000_SAMPLE_PASSES: u128 = 1 << 24;
/// Sample passes allowed at most: ~1.6 s (8-bit RGB up to ~11 MP). Without the bound a 130 KB
/// file declaring 94 passes over 36 MP in four components took 22 s and 1.5 GB.
pub const MAX_JPEG2000_SAMPLE_PASSES: u128 = 1 << 30;
/// The sample passes an image of `pixels` may cost.
fn sample_pass_budget(pixels: u128) -> u128 {
    (MAX_JPEG2000_SAMPLE_PASSES_PER_PIXEL * pixels)
        .clamp(MIN_JPEG2000_SAMPLE_PASSES, MAX_JPEG2000_SAMPLE_PASSES)
}

/// Most memory the decoder may take, estimated from the headers (`decode_bytes`): about what
/// the largest PNG costs (a 39.7 MP PNG took 715 MiB in a whole `detect` process, 144 its own).
/// Without it a 115 KB codestream declaring 39.7 MP in four components of one bit-plane took
/// 1.6 GB to decode, and 202 bytes of 2x2-pixel precincts 227 MB at 1 MP. Within it: the chip
/// photos (~9 MiB), 8-bit RGB up to the sample passes' limit (~11 MP, ~500 MiB with 16x16
/// code-blocks), RGBA up to ~9 MP, one component up to ~31 MP. Refused although a real encoder
/// writes them: 4x4-pixel code-blocks above ~6 MP of RGB (OpenJPEG wrote a 10 MP one that took
/// 760 MB).
pub const MAX_JPEG2000_DECODE_BYTES: u128 = 512 << 20;
/// The decoder's memory per sample (a pixel of one component: its coefficients, its output),
/// per pixel (the RGB image facegate keeps), per code-block (its record, its tag-tree nodes, its
/// segments) and per code-block per layer (a record whether or not the layer has data). Fitted
/// to the peak RSS of a process that only decodes (hayro-jpeg2000 0.3.5, release build, Zen 4):
/// 75 OpenJPEG encodings of 0.5–11 MP in 1, 3 and 4 components (lossless, lossy, three layers,
/// 512-pixel tiles, 16 to 64-pixel code-blocks) peaked at 36–104% of the estimate (tiled ones
/// lowest; 0.5 MP of one component at 115%, the process's own 2 MB); 4x4-pixel code-blocks at
/// 80–93% (1 MP RGBA, 4 and 10 MP RGB); 36 MP of one bit-plane at 77% (one component) and 68%
/// (four). Small precincts are counted up to four times over (the code-block bound): the 1 MP
/// file of 2x2-pixel precincts took a fifth of its estimate.
const DECODE_BYTES_PER_SAMPLE: u128 = 14;
const DECODE_BYTES_PER_PIXEL: u128 = 3;
const DECODE_BYTES_PER_CODE_BLOCK: u128 = 240;
const DECODE_BYTES_PER_CODE_BLOCK_LAYER: u128 = 24;

/// The decoder's memory for `pixels` in `components` with the structure `work` bounds.
fn decode_bytes(pixels: u128, components: u128, work: &Work) -> u128 {
    (DECODE_BYTES_PER_SAMPLE * components + DECODE_BYTES_PER_PIXEL)
        .saturating_mul(pixels)
        .saturating_add(work.code_blocks.saturating_mul(DECODE_BYTES_PER_CODE_BLOCK))
        .saturating_add(
            work.code_block_layers
                .saturating_mul(DECODE_BYTES_PER_CODE_BLOCK_LAYER),
        )
}

/// Bit-planes a code-block may have (hayro-jpeg2000 refuses a subband with more), so a code-block
/// has at most 1 + 3·31 = 94 coding passes.
const MAX_BITPLANES: u8 = 32;
/// Subband slots a quantization segment describes: the LL band, then HL, LH, HH for each of up
/// to 32 decomposition levels (the decoder's indexing: 1 + 3·(resolution - 1) + band).
const SUBBAND_SLOTS: usize = 1 + 3 * 32;

/// A coding style (COD or COC): what the work depends on.
#[derive(Debug, Clone, Copy)]
struct Style {
    levels: u8,
    /// Code-block size exponents (already + 2).
    xcb: u8,
    ycb: u8,
    layers: u16,
    /// Precinct size exponents per resolution (15 = the default, one precinct).
    precincts: [(u8, u8); 33],
}

/// Upper bounds of the decoder's work for one image.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Work {
    pub tag_nodes: u128,
    pub code_blocks: u128,
    pub code_block_layers: u128,
    pub packets: u128,
    pub sample_passes: u128,
}

/// The most bit-planes (Mb = guard bits + exponent - 1, T.800 equation E-2) any quantization
/// segment (QCD, QCC) gives each subband slot; a slot a segment does not list gets that segment's
/// largest, a derived (one-exponent) segment its base exponent everywhere (the derived exponents
/// are smaller), and more than the decoder allows counts as the most it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BitPlanes([u8; SUBBAND_SLOTS]);

impl BitPlanes {
    /// Where no quantization segment was read: nothing known, so the worst.
    const WORST: BitPlanes = BitPlanes([MAX_BITPLANES; SUBBAND_SLOTS]);

    /// SPqcd/SPqcc with its style byte first (Sqcd, Sqcc).
    fn read(sq: &[u8]) -> Result<BitPlanes, VisionError> {
        let style = *sq.first().ok_or_else(|| bad("quantization cut short"))?;
        let guard = style >> 5;
        let exponents: Vec<u8> = match style & 0x1F {
            // No quantization: one byte per subband, the exponent in its top five bits.
            0 => sq[1..].iter().map(|b| b >> 3).collect(),
            // Scalar derived (one 16-bit value) or expounded (one per subband): exponent in the
            // top five bits.
            1 | 2 => sq[1..].chunks_exact(2).map(|v| v[0] >> 3).collect(),
            other => return Err(bad(&format!("quantization style {other}"))),
        };
        let planes = |e: u8| (guard + e).saturating_sub(1).min(MAX_BITPLANES);
        let largest = exponents
            .iter()
            .copied()
            .map(planes)
            .max()
            .ok_or_else(|| bad("quantization without step sizes"))?;
        let mut out = [largest; SUBBAND_SLOTS];
        if style & 0x1F != 1 {
            for (slot, &e) in out.iter_mut().zip(&exponents) {
                *slot = planes(e);
            }
        }
        Ok(BitPlanes(out))
    }

    fn worst_of(&mut self, other: &BitPlanes) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = (*a).max(b);
        }
    }

    /// Coding passes a code-block of `slot` may have: 1 + 3·(Mb - 1).
    fn passes(&self, slot: usize) -> u128 {
        match self.0.get(slot).copied().unwrap_or(MAX_BITPLANES) {
            0 => 0,
            mb => 1 + 3 * (mb as u128 - 1),
        }
    }
}

fn bad(why: &str) -> VisionError {
    VisionError::Decode(format!("JPEG 2000: {why}"))
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    b.get(o..o + 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], o: usize) -> Option<u64> {
    b.get(o..o + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as u64)
}

/// SPcod/SPcoc (levels, code-block sizes, precincts) after the first bytes of the segment.
fn read_style(sp: &[u8], has_precincts: bool, layers: u16) -> Result<Style, VisionError> {
    let cut = || bad("coding style cut short");
    let levels = *sp.first().ok_or_else(cut)?;
    if levels > 32 {
        return Err(bad(&format!("{levels} decomposition levels (at most 32)")));
    }
    let xcb = sp.get(1).ok_or_else(cut)?.saturating_add(2);
    let ycb = sp.get(2).ok_or_else(cut)?.saturating_add(2);
    let mut precincts = [(15u8, 15u8); 33];
    if has_precincts {
        for (r, p) in precincts.iter_mut().enumerate().take(levels as usize + 1) {
            let v = *sp.get(5 + r).ok_or_else(cut)?;
            *p = (v & 0x0F, v >> 4);
        }
    }
    Ok(Style {
        levels,
        xcb,
        ycb,
        layers,
        precincts,
    })
}

fn div_ceil_pow2(x: u128, e: u32) -> u128 {
    if e >= 127 {
        return u128::from(x > 0);
    }
    x.div_ceil(1u128 << e)
}

fn ceil_log2(x: u128) -> u32 {
    if x <= 1 {
        0
    } else {
        128 - (x - 1).leading_zeros()
    }
}

/// Upper bounds of the structure's work for one component of one tile of `tw` x `th` pixels in
/// `style` (ITU-T T.800 B.5–B.7; every division rounded up and one added where a grid may be
/// misaligned).
fn tile_component_work(tw: u128, th: u128, s: &Style) -> Work {
    let mut w = Work::default();
    for r in 0..=s.levels as u32 {
        let d = s.levels as u32 - r;
        let rw = div_ceil_pow2(tw, d) + 1;
        let rh = div_ceil_pow2(th, d) + 1;
        let (ppx, ppy) = s.precincts[r as usize];
        let (bands, bw, bh, pbx, pby) = if r == 0 {
            (1u128, rw, rh, ppx, ppy)
        } else {
            (
                3,
                rw.div_ceil(2),
                rh.div_ceil(2),
                ppx.saturating_sub(1),
                ppy.saturating_sub(1),
            )
        };
        // Along each axis: one precinct when it covers the resolution (two where a tile is not
        // aligned to the grid hold no more code-blocks between them than one whole: the cost
        // grows faster than the size), else the grid's precincts at full precinct size.
        let axis = |len: u128, pp: u8, band: u128, pb: u8| -> (u128, u128) {
            if len <= 1u128 << pp {
                (1, band)
            } else {
                (div_ceil_pow2(len, pp as u32) + 1, band.min(1u128 << pb))
            }
        };
        let (npx, pw) = axis(rw, ppx, bw, pbx);
        let (npy, ph) = axis(rh, ppy, bh, pby);
        let precincts = npx.saturating_mul(npy);
        let (cbw, cbh) = (s.xcb.min(pbx) as u32, s.ycb.min(pby) as u32);
        let cbx = div_ceil_pow2(pw, cbw) + 1;
        let cby = div_ceil_pow2(ph, cbh) + 1;
        // A full quad-tree of depth L = ceil(log2(max side)): (4^(L+1) - 1) / 3 nodes.
        let depth = ceil_log2(cbx.max(cby)).min(60);
        let per_tree = ((1u128 << (2 * (depth + 1))) - 1) / 3;
        let n = bands.saturating_mul(precincts);
        w.tag_nodes = w
            .tag_nodes
            .saturating_add(n.saturating_mul(2).saturating_mul(per_tree));
        w.code_blocks = w
            .code_blocks
            .saturating_add(n.saturating_mul(cbx).saturating_mul(cby));
        w.code_block_layers = w.code_block_layers.saturating_add(
            n.saturating_mul(cbx)
                .saturating_mul(cby)
                .saturating_mul(s.layers as u128),
        );
        w.packets = w
            .packets
            .saturating_add(precincts.saturating_mul(s.layers as u128));
    }
    w
}

/// Upper bound of the sample passes for one component of the whole image (`w` x `h` pixels in
/// `ntx` x `nty` tiles) in `style` with `planes`: each subband's samples times its code-blocks'
/// most passes. Along an axis the tiles' subband sizes add up to the image's divided by
/// 2^level plus at most one per tile (T.800 B.5, equation B-15), so edge tiles count as what
/// they are, not as whole tiles (two per tile are added).
fn sample_passes(w: u128, h: u128, ntx: u128, nty: u128, s: &Style, planes: &BitPlanes) -> u128 {
    let mut total = 0u128;
    for r in 0..=s.levels as u32 {
        let d = s.levels as u32 - r;
        // LL at the lowest resolution; HL, LH, HH one level finer at every other.
        let (level, first_slot, bands) = if r == 0 {
            (d, 0, 1)
        } else {
            (d + 1, 1 + 3 * (r as usize - 1), 3)
        };
        let bw = div_ceil_pow2(w, level).saturating_add(2 * ntx);
        let bh = div_ceil_pow2(h, level).saturating_add(2 * nty);
        for slot in first_slot..first_slot + bands {
            total = total.saturating_add(bw.saturating_mul(bh).saturating_mul(planes.passes(slot)));
        }
    }
    total
}

/// What the main header and the tile-part headers commit the decoder to: every coding style
/// (COD, COC) and the most bit-planes of any quantization (QCD, QCC).
struct Segments {
    styles: Vec<Style>,
    /// `None` while no quantization segment has been read.
    planes: Option<BitPlanes>,
}

impl Segments {
    /// One marker segment (`seg`: its contents after the length); `layers` is the layer count a
    /// COC inherits.
    fn read(
        &mut self,
        marker: u16,
        seg: &[u8],
        components: u16,
        layers: u16,
    ) -> Result<(), VisionError> {
        // COC and QCC name their component in one byte, or two above 256 components.
        let c = if components < 257 { 1 } else { 2 };
        match marker {
            0xFF52 => {
                // COD: Scod, progression, layers, MCT, then SPcod.
                let scod = *seg.first().ok_or_else(|| bad("COD cut short"))?;
                let layers = u16_at(seg, 2).ok_or_else(|| bad("COD cut short"))?;
                let sp = seg.get(5..).ok_or_else(|| bad("COD cut short"))?;
                self.styles.push(read_style(sp, scod & 1 != 0, layers)?);
            }
            0xFF53 => {
                // COC: component, Scoc, then SPcoc.
                let scoc = *seg.get(c).ok_or_else(|| bad("COC cut short"))?;
                let sp = seg.get(c + 1..).ok_or_else(|| bad("COC cut short"))?;
                self.styles.push(read_style(sp, scoc & 1 != 0, layers)?);
            }
            0xFF5C | 0xFF5D => {
                // QCD: Sqcd, SPqcd; QCC: component, Sqcc, SPqcc.
                let sq = if marker == 0xFF5C {
                    seg
                } else {
                    seg.get(c..).unwrap_or(&[])
                };
                let read = BitPlanes::read(sq)?;
                match &mut self.planes {
                    Some(planes) => planes.worst_of(&read),
                    None => self.planes = Some(read),
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Every coding style and quantization in the main header and the tile-part headers.
fn header_segments(cs: &[u8], components: u16) -> Result<Segments, VisionError> {
    let mut found = Segments {
        styles: Vec::new(),
        planes: None,
    };
    let mut layers = 1u16;
    let mut at = 2; // after SOC
                    // Bounded by the bytes: every step moves forward by at least two.
    while at + 4 <= cs.len() {
        let marker = u16_at(cs, at).ok_or_else(|| bad("header cut short"))?;
        match marker {
            // SOD: tile-part data follows up to the tile-part's end (found from its SOT).
            0xFF93 => return Err(bad("tile-part data outside a tile-part")),
            // EOC
            0xFFD9 => break,
            _ => {}
        }
        let len = u16_at(cs, at + 2).ok_or_else(|| bad("header cut short"))? as usize;
        if len < 2 {
            return Err(bad(&format!("marker {marker:04X} with length {len}")));
        }
        let seg = cs
            .get(at + 4..at + 2 + len)
            .unwrap_or(&cs[(at + 4).min(cs.len())..]);
        if marker == 0xFF52 {
            layers = u16_at(seg, 2).ok_or_else(|| bad("COD cut short"))?;
        }
        if marker == 0xFF90 {
            // SOT: Isot, Psot (tile-part length from this marker), TPsot, TNsot. Walk its
            // header up to SOD, then jump to the next tile-part.
            let psot = u32_at(seg, 2).ok_or_else(|| bad("SOT cut short"))? as usize;
            let end = if psot == 0 {
                cs.len()
            } else {
                at.saturating_add(psot).min(cs.len())
            };
            let mut p = at + 2 + len;
            while p + 4 <= end {
                let m = u16_at(cs, p).ok_or_else(|| bad("tile-part cut short"))?;
                if m == 0xFF93 {
                    break;
                }
                let l = u16_at(cs, p + 2).ok_or_else(|| bad("tile-part cut short"))? as usize;
                if l < 2 {
                    return Err(bad(&format!("marker {m:04X} with length {l}")));
                }
                // A segment running past the file is not read by the decoder either.
                if let Some(sg) = cs.get(p + 4..p + 2 + l) {
                    found.read(m, sg, components, layers)?;
                }
                p += 2 + l;
            }
            if psot == 0 || end <= at {
                break;
            }
            at = end;
            continue;
        }
        found.read(marker, seg, components, layers)?;
        at += 2 + len;
    }
    if found.styles.is_empty() {
        return Err(bad("no coding style (COD) in the header"));
    }
    Ok(found)
}

/// The codestream's SIZ segment and coding styles, read before the decoder sees the file: image
/// size, tile grid, components and the work they commit the decoder to, bounded first. Returns
/// the header's image size.
pub(super) fn check_jpeg2000_header(
    b: &[u8],
    limits: &DecodeLimits,
) -> Result<(u32, u32), VisionError> {
    // The codestream starts with SOC (FF4F) followed by SIZ (FF51): at the start of a raw .j2k,
    // inside the jp2c box of a .jp2.
    let at = b
        .windows(4)
        .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])
        .ok_or_else(|| bad("no codestream header (SOC, SIZ)"))?;
    let cs = &b[at..];
    let siz = cs.get(4..).ok_or_else(|| bad("SIZ cut short"))?;
    let u32_siz = |o: usize| u32_at(siz, o).ok_or_else(|| bad("SIZ cut short"));
    let (x, y, xo, yo) = (u32_siz(4)?, u32_siz(8)?, u32_siz(12)?, u32_siz(16)?);
    let (xt, yt, xto, yto) = (u32_siz(20)?, u32_siz(24)?, u32_siz(28)?, u32_siz(32)?);
    let components = u16_at(siz, 36).ok_or_else(|| bad("SIZ cut short"))?;
    if x <= xo || y <= yo || xt == 0 || yt == 0 || xto > xo || yto > yo {
        return Err(bad("inconsistent image or tile geometry"));
    }
    let (w, h) = (x - xo, y - yo);
    if w > u32::MAX as u64 || h > u32::MAX as u64 {
        return Err(bad("image larger than 2^32 pixels a side"));
    }
    check_size(w as u32, h as u32, limits)?;
    let grid = ((x - xto).div_ceil(xt), (y - yto).div_ceil(yt));
    let tiles = grid.0 * grid.1;
    if tiles > MAX_JPEG2000_TILES {
        return Err(bad(&format!(
            "{tiles} tiles of {xt}x{yt} pixels, over the limit of {MAX_JPEG2000_TILES}"
        )));
    }
    if components == 0 || components > MAX_JPEG2000_COMPONENTS {
        return Err(bad(&format!(
            "{components} components, facegate reads 1 to {MAX_JPEG2000_COMPONENTS}"
        )));
    }
    let work = work_bound(cs, w, h, xt, yt, grid, components)?;
    let pixels = w as u128 * h as u128;
    let node_budget = MAX_JPEG2000_TAG_NODES.max(MAX_JPEG2000_TAG_NODES_PER_PIXEL * pixels);
    let pass_budget = sample_pass_budget(pixels);
    let grid = "tiles, code-blocks or precincts too small for the image";
    for (what, n, max, why) in [
        ("tag-tree nodes", work.tag_nodes, node_budget, grid),
        (
            "code-blocks",
            work.code_blocks,
            MAX_JPEG2000_CODE_BLOCKS,
            grid,
        ),
        (
            "code-block layers",
            work.code_block_layers,
            MAX_JPEG2000_CODE_BLOCK_LAYERS,
            grid,
        ),
        ("packets", work.packets, MAX_JPEG2000_PACKETS, grid),
        (
            "sample passes",
            work.sample_passes,
            pass_budget,
            "more coding passes a pixel than a photo needs",
        ),
    ] {
        if n > max {
            return Err(bad(&format!(
                "the headers commit the decoder to up to {n} {what} (limit {max}): {why}"
            )));
        }
    }
    let bytes = decode_bytes(pixels, components as u128, &work);
    if bytes > MAX_JPEG2000_DECODE_BYTES {
        return Err(bad(&format!(
            "the headers commit the decoder to about {} MiB of memory (limit {} MiB): \
             too many pixels in too many components, or code-blocks too small for the image",
            bytes >> 20,
            MAX_JPEG2000_DECODE_BYTES >> 20
        )));
    }
    Ok((w as u32, h as u32))
}

/// The work bound: the worst coding style applied to every component of every tile of the
/// `grid`, each tile taken at the full tile size (edge tiles are smaller) for the structure, the
/// image's own size for the sample passes.
fn work_bound(
    cs: &[u8],
    w: u64,
    h: u64,
    xt: u64,
    yt: u64,
    (ntx, nty): (u64, u64),
    components: u16,
) -> Result<Work, VisionError> {
    let (tw, th) = (xt.min(w) as u128, yt.min(h) as u128);
    let found = header_segments(cs, components)?;
    let planes = found.planes.unwrap_or(BitPlanes::WORST);
    let mut worst = Work::default();
    for s in &found.styles {
        let one = tile_component_work(tw, th, s);
        worst.tag_nodes = worst.tag_nodes.max(one.tag_nodes);
        worst.code_blocks = worst.code_blocks.max(one.code_blocks);
        worst.code_block_layers = worst.code_block_layers.max(one.code_block_layers);
        worst.packets = worst.packets.max(one.packets);
        let passes = sample_passes(w as u128, h as u128, ntx as u128, nty as u128, s, &planes);
        worst.sample_passes = worst.sample_passes.max(passes);
    }
    let n = (ntx * nty) as u128 * components as u128;
    Ok(Work {
        tag_nodes: worst.tag_nodes.saturating_mul(n),
        code_blocks: worst.code_blocks.saturating_mul(n),
        code_block_layers: worst.code_block_layers.saturating_mul(n),
        packets: worst.packets.saturating_mul(n),
        sample_passes: worst.sample_passes.saturating_mul(components as u128),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn style(levels: u8, xcb: u8, ycb: u8) -> Style {
        Style {
            levels,
            xcb: xcb + 2,
            ycb: ycb + 2,
            layers: 1,
            precincts: [(15, 15); 33],
        }
    }

    #[test]
    fn ordinary_photos_are_far_below_the_budgets() {
        // 40 MP, one tile, 64x64 code-blocks, 5 levels, one layer: per component.
        let w = tile_component_work(7300, 5500, &style(5, 4, 4));
        assert!(w.tag_nodes * 4 < MAX_JPEG2000_TAG_NODES / 50, "{w:?}");
        assert!(w.code_blocks * 4 < MAX_JPEG2000_CODE_BLOCKS / 20, "{w:?}");
        // With 32 layers (the decoder's most), four components.
        let mut layered = style(5, 4, 4);
        layered.layers = 32;
        let l = tile_component_work(7300, 5500, &layered);
        assert!(
            l.code_block_layers * 4 < MAX_JPEG2000_CODE_BLOCK_LAYERS,
            "{l:?}"
        );
    }

    #[test]
    fn thin_code_block_grids_cost_the_square_of_their_length() {
        // The fuzzed shape: a 1x531 tile, 64x4 code-blocks, one level.
        let thin = tile_component_work(1, 531, &style(1, 4, 0));
        // About 4^7 nodes per tree, two trees per precinct, four subbands.
        assert!(thin.tag_nodes > 100_000, "{thin:?}");
        // 413 such tiles of 3 components are over the budget; the same pixels in one tile are not.
        assert!(thin.tag_nodes * 413 * 3 > MAX_JPEG2000_TAG_NODES);
        let whole = tile_component_work(413, 531, &style(1, 4, 0));
        assert!(whole.tag_nodes * 3 < MAX_JPEG2000_TAG_NODES, "{whole:?}");
    }

    #[test]
    fn bit_planes_come_from_every_quantization_style() {
        // No quantization (the 5/3 wavelet): 2 guard bits, exponents 8, 9, 9, 10.
        let none = BitPlanes::read(&[2 << 5, 8 << 3, 9 << 3, 9 << 3, 10 << 3]).unwrap();
        assert_eq!(none.0[..4], [9, 10, 10, 11]);
        assert_eq!(none.0[4], 11, "a slot not listed gets the largest");
        assert_eq!((none.passes(0), none.passes(3)), (25, 31));
        // Scalar expounded: 16-bit values, the exponent in the top five bits.
        let expounded = BitPlanes::read(&[(2 << 5) | 2, 14 << 3, 0, 8 << 3, 0x12]).unwrap();
        assert_eq!(expounded.0[..3], [15, 9, 15]);
        // Scalar derived: one value, its exponent (the largest) everywhere.
        let derived = BitPlanes::read(&[(2 << 5) | 1, 14 << 3, 0]).unwrap();
        assert!(derived.0.iter().all(|&b| b == 15), "{derived:?}");
        // More than the decoder allows counts as the most it allows: 94 passes.
        let most = BitPlanes::read(&[7 << 5, 31 << 3]).unwrap();
        assert_eq!(most.passes(0), 94);
        assert_eq!(BitPlanes::WORST.passes(SUBBAND_SLOTS - 1), 94);
        assert_eq!(BitPlanes([0; SUBBAND_SLOTS]).passes(0), 0);
        for bad in [&[][..], &[2 << 5], &[3, 0]] {
            assert!(BitPlanes::read(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn photos_fit_the_sample_pass_budget_and_the_most_passes_do_not() {
        let rgb = |side: u128, planes: &BitPlanes| {
            sample_passes(side, side, 1, 1, &style(5, 4, 4), planes) * 3
        };
        // The BSI specimen's DG2 face: 413x531, 3 components, 5 levels, 64x64 code-blocks,
        // expounded quantization with 2 guard bits and these exponents: 2/3 of its budget.
        let mut sq = vec![(2 << 5) | 2];
        for e in [14, 14, 14, 14, 13, 13, 13, 12, 12, 12, 9, 9, 9, 8, 8, 8] {
            sq.extend([e << 3, 0]);
        }
        let chip_planes = BitPlanes::read(&sq).unwrap();
        let chip = sample_passes(413, 531, 1, 1, &style(5, 4, 4), &chip_planes) * 3;
        assert!(chip * 3 < sample_pass_budget(413 * 531) * 2, "{chip}");
        // 8-bit lossless (5/3, no quantization): RGB read up to ~11 MP, RGBA too; 16-bit RGB
        // (8 more bit-planes in every subband) is not.
        let lossless = BitPlanes::read(&[2 << 5, 8 << 3, 9 << 3, 9 << 3, 10 << 3]).unwrap();
        for (side, fits) in [(2000, true), (3300, true), (3400, false)] {
            let n = rgb(side, &lossless);
            assert_eq!(n <= sample_pass_budget(side * side), fits, "{side}: {n}");
        }
        // Tiles add only their rounding: 3300x3300 in 7x7 tiles of 512 (edge tiles 228 wide), 2%.
        let whole = sample_passes(3300, 3300, 1, 1, &style(5, 4, 4), &lossless);
        let tiled = sample_passes(3300, 3300, 7, 7, &style(5, 4, 4), &lossless);
        assert!(
            tiled > whole && tiled < whole + whole / 33,
            "{whole} {tiled}"
        );
        let rgba = rgb(2000, &lossless) / 3 * 4;
        assert!(rgba <= sample_pass_budget(2000 * 2000), "{rgba}");
        // OpenJPEG's lossy RGBA (9/7, 2 guard bits, these exponents) at 800x600: 128 passes a
        // pixel, over the first budget (128 a pixel, rounding included) and within this one.
        let mut sq = vec![(2 << 5) | 2];
        for e in [
            14, 14, 14, 14, 13, 13, 13, 12, 12, 12, 10, 10, 10, 10, 10, 10,
        ] {
            sq.extend([e << 3, 0]);
        }
        let lossy = BitPlanes::read(&sq).unwrap();
        let rgba_lossy = sample_passes(800, 600, 1, 1, &style(5, 4, 4), &lossy) * 4;
        assert!(rgba_lossy > 128 * 800 * 600, "{rgba_lossy}");
        assert!(rgba_lossy <= sample_pass_budget(800 * 600), "{rgba_lossy}");
        let deep = BitPlanes::read(&[2 << 5, 16 << 3, 17 << 3, 17 << 3, 18 << 3]).unwrap();
        assert!(rgb(2000, &deep) > sample_pass_budget(2000 * 2000));
        // The most passes (94) in four components: over it from 0.25 MP; a tiny image is not
        // held to its size (the floor: ~25 ms).
        let tiny = sample_passes(100, 100, 1, 1, &style(0, 4, 4), &BitPlanes::WORST);
        assert!(tiny * 4 <= sample_pass_budget(100 * 100));
        for side in [500, 1000, 4000] {
            let bomb = sample_passes(side, side, 1, 1, &style(0, 4, 4), &BitPlanes::WORST);
            assert!(bomb * 4 > sample_pass_budget(side * side), "{side}");
        }
        assert_eq!(sample_pass_budget(64 * 48), MIN_JPEG2000_SAMPLE_PASSES);
    }

    /// The work of `components` components of one `w` x `h` tile in `s`, as [`work_bound`]
    /// takes it.
    fn image_work(w: u128, h: u128, s: &Style, components: u128) -> Work {
        let one = tile_component_work(w, h, s);
        Work {
            code_blocks: one.code_blocks * components,
            code_block_layers: one.code_block_layers * components,
            ..one
        }
    }

    #[test]
    fn photos_fit_the_memory_budget_and_declared_emptiness_does_not() {
        let fits = |w: u128, h: u128, s: &Style, c: u128| {
            decode_bytes(w * h, c, &image_work(w, h, s, c)) <= MAX_JPEG2000_DECODE_BYTES
        };
        // The chip photo (413x531 RGB, 64x64 code-blocks): ~9.4 MiB.
        let chip = decode_bytes(413 * 531, 3, &image_work(413, 531, &style(5, 4, 4), 3));
        assert!(chip < 10 << 20, "{chip}");
        // 8-bit RGB at the sample passes' limit (~11 MP) with 16x16 code-blocks; RGBA at 9 MP;
        // one component at 31 MP.
        assert!(fits(4000, 2750, &style(5, 2, 2), 3));
        assert!(fits(3840, 2340, &style(5, 4, 4), 4));
        assert!(fits(6400, 4800, &style(5, 4, 4), 1));
        // 39.7 MP in four components, whatever the code-blocks (the 115 KB file: 1.6 GB); one
        // component at 36 MP (451 MB measured).
        assert!(!fits(6300, 6300, &style(0, 4, 4), 4));
        assert!(!fits(6000, 6000, &style(0, 4, 4), 1));
        // 4x4-pixel code-blocks: RGB at 4 MP fits, at 10 MP (760 MB measured) it does not.
        assert!(fits(2000, 2000, &style(5, 0, 0), 3));
        assert!(!fits(3650, 2740, &style(5, 0, 0), 3));
        // 2x2-pixel precincts (one code-block each) at 1 MP in one component, one layer: 227 MB
        // measured for 10^6 code-blocks, counted four times over; at 0.25 MP it fits.
        let mut tiny_precincts = style(5, 0, 0);
        tiny_precincts.precincts = [(1, 1); 33];
        assert!(!fits(1000, 1000, &tiny_precincts, 1));
        assert!(fits(500, 500, &tiny_precincts, 1));
    }

    #[test]
    fn hostile_numbers_do_not_overflow() {
        let mut s = style(32, 0, 0);
        s.layers = u16::MAX;
        s.precincts = [(0, 0); 33];
        let side = u32::MAX as u128;
        let w = tile_component_work(side, side, &s);
        assert!(w.tag_nodes > MAX_JPEG2000_TAG_NODES && w.packets > MAX_JPEG2000_PACKETS);
        let passes = sample_passes(side, side, side, side, &s, &BitPlanes::WORST);
        assert!(passes > MAX_JPEG2000_SAMPLE_PASSES);
    }
}
