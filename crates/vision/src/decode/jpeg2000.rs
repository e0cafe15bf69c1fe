//! What a JPEG 2000 codestream's headers commit the decoder to, read before the decoder runs.
//!
//! The decoder's work and memory grow with structures the headers declare, not only with the
//! pixels: the tile grid, and per tile the resolution levels, precincts and code-blocks. Two
//! bombs found so far, both a few kilobytes:
//! - 1x1-pixel tiles: 782 MB and 7.5 s for 1 MP (a hostile-input review);
//! - 1-pixel-wide tiles with 64x4 code-blocks (found by fuzzing): `hayro-jpeg2000` builds each
//!   precinct's two tag trees as full quad-trees over max(blocks wide, blocks high)², so a
//!   1 x 67 grid of code-blocks costs 4^7 nodes per tree; 413 such tiles took 0.6 s for a
//!   413x531 image, and the same shape at 40 MP would take minutes.
//!
//! So the main header and every tile-part header are walked (SIZ, COD, COC), and an upper bound
//! of the tag-tree nodes, code-blocks and packets is computed from the worst coding style found
//! (smallest code-blocks and precincts, most levels and layers), the tile size and the
//! components. Refused above the budgets, which ordinary files are far below (a 40 MP
//! single-tile RGB photo with 64x64 code-blocks: ~5.5·10^5 tag-tree nodes, under 1% of the budget).

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
    pub packets: u128,
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

/// Upper bounds of the work for one component of one tile of `tw` x `th` pixels in `style`
/// (ITU-T T.800 B.5–B.7; every division rounded up and one added where a grid may be misaligned).
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
        w.packets = w
            .packets
            .saturating_add(precincts.saturating_mul(s.layers as u128));
    }
    w
}

/// Every coding style in the main header and the tile-part headers (COD and COC segments).
fn coding_styles(cs: &[u8], components: u16) -> Result<Vec<Style>, VisionError> {
    let mut styles = Vec::new();
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
        match marker {
            0xFF52 => {
                // COD: Scod, progression, layers, MCT, then SPcod.
                let scod = *seg.first().ok_or_else(|| bad("COD cut short"))?;
                layers = u16_at(seg, 2).ok_or_else(|| bad("COD cut short"))?;
                styles.push(read_style(
                    seg.get(5..).ok_or_else(|| bad("COD cut short"))?,
                    scod & 1 != 0,
                    layers,
                )?);
            }
            0xFF53 => {
                // COC: component index (1 or 2 bytes), Scoc, then SPcoc.
                let c = if components < 257 { 1 } else { 2 };
                let scoc = *seg.get(c).ok_or_else(|| bad("COC cut short"))?;
                styles.push(read_style(
                    seg.get(c + 1..).ok_or_else(|| bad("COC cut short"))?,
                    scoc & 1 != 0,
                    layers,
                )?);
            }
            0xFF90 => {
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
                    let sg = cs.get(p + 4..p + 2 + l).unwrap_or(&[]);
                    if m == 0xFF52 || m == 0xFF53 {
                        let off = if m == 0xFF52 {
                            5
                        } else if components < 257 {
                            2
                        } else {
                            3
                        };
                        let flag = if m == 0xFF52 {
                            sg.first()
                        } else {
                            sg.get(off - 1)
                        };
                        if let (Some(f), Some(sp)) = (flag, sg.get(off..)) {
                            let tl = if m == 0xFF52 {
                                u16_at(sg, 2).unwrap_or(layers)
                            } else {
                                layers
                            };
                            styles.push(read_style(sp, f & 1 != 0, tl)?);
                        }
                    }
                    p += 2 + l;
                }
                if psot == 0 || end <= at {
                    break;
                }
                at = end;
                continue;
            }
            _ => {}
        }
        at += 2 + len;
    }
    if styles.is_empty() {
        return Err(bad("no coding style (COD) in the header"));
    }
    Ok(styles)
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
    let tiles = (x - xto).div_ceil(xt) * (y - yto).div_ceil(yt);
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
    let work = work_bound(cs, w, h, xt, yt, tiles, components)?;
    let node_budget =
        MAX_JPEG2000_TAG_NODES.max(MAX_JPEG2000_TAG_NODES_PER_PIXEL * w as u128 * h as u128);
    for (what, n, max) in [
        ("tag-tree nodes", work.tag_nodes, node_budget),
        ("code-blocks", work.code_blocks, MAX_JPEG2000_CODE_BLOCKS),
        ("packets", work.packets, MAX_JPEG2000_PACKETS),
    ] {
        if n > max {
            return Err(bad(&format!(
                "the headers commit the decoder to up to {n} {what} (limit {max}): tiles, code-blocks or precincts too small for the image"
            )));
        }
    }
    Ok((w as u32, h as u32))
}

/// The work bound: the worst coding style applied to every component of every tile, each tile
/// taken at the full tile size (edge tiles are smaller).
fn work_bound(
    cs: &[u8],
    w: u64,
    h: u64,
    xt: u64,
    yt: u64,
    tiles: u64,
    components: u16,
) -> Result<Work, VisionError> {
    let (tw, th) = (xt.min(w) as u128, yt.min(h) as u128);
    let mut worst = Work::default();
    for s in coding_styles(cs, components)? {
        let one = tile_component_work(tw, th, &s);
        worst.tag_nodes = worst.tag_nodes.max(one.tag_nodes);
        worst.code_blocks = worst.code_blocks.max(one.code_blocks);
        worst.packets = worst.packets.max(one.packets);
    }
    let n = tiles as u128 * components as u128;
    Ok(Work {
        tag_nodes: worst.tag_nodes.saturating_mul(n),
        code_blocks: worst.code_blocks.saturating_mul(n),
        packets: worst.packets.saturating_mul(n),
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
    fn hostile_numbers_do_not_overflow() {
        let mut s = style(32, 0, 0);
        s.layers = u16::MAX;
        s.precincts = [(0, 0); 33];
        let w = tile_component_work(u32::MAX as u128, u32::MAX as u128, &s);
        assert!(w.tag_nodes > MAX_JPEG2000_TAG_NODES && w.packets > MAX_JPEG2000_PACKETS);
    }
}
