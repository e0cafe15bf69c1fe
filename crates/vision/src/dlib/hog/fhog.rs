//! The image side of the HOG detector: the RGB image as float planes, dlib's pyramid step
//! (`resize_image` with its bilinear column walk, an AVX-512 gather twin of the row loop) and the
//! 31-plane FHOG features of each pyramid level (`fhog.h`: gradients, 18 signed and 9 unsigned
//! orientation bins, 4 block normalisations, the truncation at 0.2).

use super::*;

/// An RGB image as three f32 planes holding its 0-255 values (exactly): the form in which the
/// pyramid and the FHOG features run. Gradients and their squared lengths stay exact in f32
/// (|g|² ≤ 130050 < 2²⁴), so features match those computed from bytes.
pub(super) struct Planar {
    pub(super) w: usize,
    pub(super) h: usize,
    pub(super) planes: [Vec<f32>; 3],
}

impl Planar {
    pub(super) fn from_rgb(img: &RgbImage) -> Self {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut planes = [vec![0f32; w * h], vec![0f32; w * h], vec![0f32; w * h]];
        let [r, g, b] = &mut planes;
        for (((p, r), g), b) in img
            .as_raw()
            .chunks_exact(3)
            .zip(r.iter_mut())
            .zip(g.iter_mut())
            .zip(b.iter_mut())
        {
            (*r, *g, *b) = (f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
        }
        Planar { w, h, planes }
    }
}

/// dlib's RGB `resize_image` (`pyramid_down<6>` step) plane by plane: the f32 body and f64 tail
/// of `resize_rgb_truncating`, values truncated to integers as dlib's u8 output is (tested to
/// give the same pixels).
#[inline(always)]
pub(super) fn resize_planar(src: &Planar, dw: usize, dh: usize) -> Planar {
    resize_planar_with(src, dw, dh, true)
}

/// `resize_planar`, with or without the AVX-512 gather body (`gather` lets tests compare both).
#[inline(always)]
pub(super) fn resize_planar_with(src: &Planar, dw: usize, dh: usize, gather: bool) -> Planar {
    let (sw, sh) = (src.w, src.h);
    let mut out = Planar {
        w: dw,
        h: dh,
        planes: [
            vec![0f32; dw * dh],
            vec![0f32; dw * dh],
            vec![0f32; dw * dh],
        ],
    };
    if sw < 2 || sh == 0 || dw == 0 || dh == 0 {
        return out;
    }
    let walk = ColumnWalk::new(sw, dw);
    let ns = walk.simd.len();
    let left: Vec<usize> = walk.simd.iter().map(|&(l, _)| l).collect();
    let lr: Vec<f32> = walk.simd.iter().map(|&(_, f)| f).collect();
    let inv_lr: Vec<f32> = lr.iter().map(|&f| 1.0 - f).collect();
    let (left, lr, inv_lr) = (&left[..ns], &lr[..ns], &inv_lr[..ns]);
    debug_assert_eq!(ns % 4, 0);
    #[cfg(target_arch = "x86_64")]
    let gather16 = gather
        && std::is_x86_feature_detected!("avx512f")
        && sw < i32::MAX as usize
        && left.iter().all(|&l| l + 1 < sw);
    #[cfg(target_arch = "x86_64")]
    let left32: Vec<i32> = if gather16 {
        left.iter().map(|&l| l as i32).collect()
    } else {
        Vec::new()
    };
    let [o0, o1, o2] = &mut out.planes;
    for (r, top, bottom, tb_frac) in row_walk(sh, dh) {
        let (ftb, finv_tb) = (tb_frac as f32, (1.0 - tb_frac) as f32);
        let src_rows = src
            .planes
            .each_ref()
            .map(|p| (&p[top * sw..][..sw], &p[bottom * sw..][..sw]));
        let mut dst_rows = [
            &mut o0[r * dw..][..dw],
            &mut o1[r * dw..][..dw],
            &mut o2[r * dw..][..dw],
        ];
        #[cfg(target_arch = "x86_64")]
        let done = if gather16 {
            let mut done = 0;
            for ((t, b), o) in src_rows.iter().zip(dst_rows.iter_mut()) {
                // SAFETY: the CPU has AVX-512F (checked above), every index in `left32` and
                // index + 1 lie inside `t` and `b` (both `sw` long; checked above), and the
                // function touches `left32`, `lr`, `inv_lr` and `o` only below `ns`, which is
                // at most each one's length.
                done = unsafe {
                    resize_row_gather16(t, b, &left32[..ns], lr, inv_lr, ftb, finv_tb, o)
                };
            }
            done
        } else {
            0
        };
        #[cfg(not(target_arch = "x86_64"))]
        let done = 0;
        // Four columns at a time (the body's width; ns is a multiple of 4): the four corner
        // weights once per column, then per channel the source pixels and dlib's lane
        // arithmetic on fixed-size arrays. The walk keeps left + 1 inside the row; the clamp (a
        // no-op) lets the compiler drop the bounds checks.
        for c in (done..ns).step_by(4) {
            let mut wts = [[0f32; 4]; 4];
            let mut idx = [0usize; 4];
            for j in 0..4 {
                idx[j] = left[c + j].min(sw - 2);
                let (il, l) = (inv_lr[c + j], lr[c + j]);
                wts[0][j] = finv_tb * il;
                wts[1][j] = finv_tb * l;
                wts[2][j] = ftb * il;
                wts[3][j] = ftb * l;
            }
            for ((t, b), o) in src_rows.iter().zip(dst_rows.iter_mut()) {
                for j in 0..4 {
                    let l = idx[j];
                    let v = wts[0][j] * t[l]
                        + wts[1][j] * t[l + 1]
                        + wts[2][j] * b[l]
                        + wts[3][j] * b[l + 1];
                    o[c + j] = v as i32 as f32;
                }
            }
        }
        for ((t, b), o) in src_rows.iter().zip(dst_rows.iter_mut()) {
            for (c, &(l, rr, f)) in (ns..).zip(&walk.tail) {
                let (tl, tr) = (f64::from(t[l]), f64::from(t[rr]));
                let (bl, br) = (f64::from(b[l]), f64::from(b[rr]));
                let v = (1.0 - tb_frac) * ((1.0 - f) * tl + f * tr)
                    + tb_frac * ((1.0 - f) * bl + f * br);
                o[c] = f32::from(v as u8);
            }
        }
    }
    out
}

/// The vector body of `resize_planar` for one row of one plane, 16 columns at a time with
/// AVX-512 gathers (the compiler does not vectorise the indexed loads by itself). Same operations
/// per column as the portable loop, so the same values. Returns how many columns it wrote (a
/// multiple of 16); the caller does the rest.
///
/// # Safety
/// The CPU must support AVX-512F; every `left[c]` and `left[c] + 1` must be a valid index of `t`
/// and of `b`; `lr`, `inv_lr` and `o` must be at least `left.len()` long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn resize_row_gather16(
    t: &[f32],
    b: &[f32],
    left: &[i32],
    lr: &[f32],
    inv_lr: &[f32],
    ftb: f32,
    finv_tb: f32,
    o: &mut [f32],
) -> usize {
    use std::arch::x86_64::*;
    let n = left.len();
    let (ftb, finv_tb, one) = (
        _mm512_set1_ps(ftb),
        _mm512_set1_ps(finv_tb),
        _mm512_set1_epi32(1),
    );
    let mut c = 0;
    while c + 16 <= n {
        // SAFETY (all loads, gathers and the store): c + 16 <= n and the caller's contract.
        let idx = _mm512_loadu_si512(left.as_ptr().add(c).cast());
        let idx1 = _mm512_add_epi32(idx, one);
        let (tl, tr) = (
            _mm512_i32gather_ps::<4>(idx, t.as_ptr()),
            _mm512_i32gather_ps::<4>(idx1, t.as_ptr()),
        );
        let (bl, br) = (
            _mm512_i32gather_ps::<4>(idx, b.as_ptr()),
            _mm512_i32gather_ps::<4>(idx1, b.as_ptr()),
        );
        let (wl, wr) = (
            _mm512_loadu_ps(inv_lr.as_ptr().add(c)),
            _mm512_loadu_ps(lr.as_ptr().add(c)),
        );
        let (tlf, trf) = (_mm512_mul_ps(finv_tb, wl), _mm512_mul_ps(finv_tb, wr));
        let (blf, brf) = (_mm512_mul_ps(ftb, wl), _mm512_mul_ps(ftb, wr));
        // ((tlf*tl + trf*tr) + blf*bl) + brf*br, rounded step by step as the scalar loop.
        let mut v = _mm512_add_ps(_mm512_mul_ps(tlf, tl), _mm512_mul_ps(trf, tr));
        v = _mm512_add_ps(v, _mm512_mul_ps(blf, bl));
        v = _mm512_add_ps(v, _mm512_mul_ps(brf, br));
        // Truncation to integer (values are in [0, 256), where it equals Rust's `as i32`).
        let v = _mm512_cvtepi32_ps(_mm512_cvttps_epi32(v));
        _mm512_storeu_ps(o.as_mut_ptr().add(c), v);
        c += 16;
    }
    c
}

/// 31 FHOG planes, each `nr × nc` (padded for the filter size as dlib pads them), laid out plane
/// after plane in rows of `stride` floats: 8 spare zero columns let the filters' last, partial
/// group of columns run as a whole vector group.
pub(super) struct Fhog {
    pub(super) data: Vec<f32>,
    pub(super) nr: usize,
    pub(super) nc: usize,
    pub(super) stride: usize,
}

impl Fhog {
    pub(super) fn plane(&self, p: usize) -> &[f32] {
        let n = self.nr * self.stride;
        &self.data[p * n..(p + 1) * n]
    }
}

const DIRECTIONS: [(f32, f32); 9] = [
    (1.0000, 0.0000),
    (0.9397, 0.3420),
    (0.7660, 0.6428),
    (0.500, 0.8660),
    (0.1736, 0.9848),
    (-0.1736, 0.9848),
    (-0.5000, 0.8660),
    (-0.7660, 0.6428),
    (-0.9397, 0.3420),
];

/// Colour gradient at one pixel, as dlib's scalar tail takes it: the channel with the largest
/// squared magnitude, the earlier channel on ties (the SIMD body in `fhog` takes the later one).
fn gradient(planes: &[Vec<f32>; 3], w: usize, y: usize, x: usize) -> (f32, f32, f32) {
    let at = |r: usize, c: usize, ch: usize| planes[ch][r * w + c];
    let mut best = (0.0, 0.0, -1.0);
    for ch in 0..3 {
        let gx = at(y, x + 1, ch) - at(y, x - 1, ch);
        let gy = at(y + 1, x, ch) - at(y - 1, x, ch);
        let len = gx * gx + gy * gy;
        if len > best.2 {
            best = (gx, gy, len);
        }
    }
    best
}

/// The orientation bin (0..18) of a gradient, as dlib's scalar tail picks it.
pub(super) fn orientation(gx: f32, gy: f32) -> usize {
    let mut best_dot = 0.0f32;
    let mut best_o = 0usize;
    for (o, &(dx, dy)) in DIRECTIONS.iter().enumerate() {
        let dot = gx * dx + gy * dy;
        if dot > best_dot {
            best_dot = dot;
            best_o = o;
        } else if -dot > best_dot {
            best_dot = -dot;
            best_o = o + 9;
        }
    }
    best_o
}

/// dlib's `extract_fhog_features` (planar output, filter padding `rows_pad × cols_pad`).
/// None when the image is too small to give any cells.
#[inline(always)]
pub(super) fn fhog_body(
    img: &Planar,
    cell: usize,
    rows_pad: usize,
    cols_pad: usize,
) -> Option<Fhog> {
    let (w, h) = (img.w, img.h);
    let cells_nr = (h as f32 / cell as f32 + 0.5) as usize;
    let cells_nc = (w as f32 / cell as f32 + 0.5) as usize;
    if cells_nr < 3 || cells_nc < 3 {
        return None;
    }
    let hist_nc = cells_nc + 2;
    let mut hist = vec![0.0f32; (cells_nr + 2) * hist_nc * 18];
    let bin = |r: usize, c: usize, o: usize| (r * hist_nc + c) * 18 + o;
    let visible_nr = (cells_nr * cell).min(h) as i64 - 1;
    let visible_nc = (cells_nc * cell).min(w) as i64 - 1;
    let fcell = cell as f32;
    // Columns 1..simd_x take dlib's 8-lane body, the rest its scalar tail.
    let mut simd_x = 1i64;
    while simd_x < visible_nc - 7 {
        simd_x += 8;
    }
    let n = (simd_x - 1).max(0) as usize;
    // What the SIMD body computes per column: the left cell and the horizontal vote weights.
    let mut cidx = Vec::with_capacity(n);
    let (mut vx0, mut vx1) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let xp = ((i + 1) as f32 + 0.5) / fcell + 0.5;
        let ixp = xp as i32;
        cidx.push(ixp as usize);
        vx0.push(xp - ixp as f32);
        vx1.push(1.0f32 - (xp - ixp as f32));
    }
    let planes = &img.planes;
    // Per row, each SIMD column's gradient, orientation bin and votes (|gradient| times the
    // weight of its left and right cell).
    let (mut gx, mut gy, mut len) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    let mut best_o = vec![0u32; n];
    let (mut vote_l, mut vote_r) = (vec![0f32; n], vec![0f32; n]);
    for y in 1..visible_nr.max(1) as usize {
        let yp = ((y as f64 + 0.5) / f64::from(fcell) - 0.5) as f32;
        let iyp = yp.floor() as i64;
        let vy0 = yp - iyp as f32;
        let vy1 = 1.0 - vy0;
        let ry = (iyp + 1) as usize;
        if n > 0 {
            fn row(p: &[f32], w: usize, n: usize, r: usize, from: usize) -> &[f32] {
                &p[r * w + from..][..n]
            }
            let (rl, rr, ru, rd) = (
                row(&planes[0], w, n, y, 0),
                row(&planes[0], w, n, y, 2),
                row(&planes[0], w, n, y - 1, 1),
                row(&planes[0], w, n, y + 1, 1),
            );
            let (gl, gr, gu, gd) = (
                row(&planes[1], w, n, y, 0),
                row(&planes[1], w, n, y, 2),
                row(&planes[1], w, n, y - 1, 1),
                row(&planes[1], w, n, y + 1, 1),
            );
            let (bl, br, bu, bd) = (
                row(&planes[2], w, n, y, 0),
                row(&planes[2], w, n, y, 2),
                row(&planes[2], w, n, y - 1, 1),
                row(&planes[2], w, n, y + 1, 1),
            );
            // Every slice below is exactly n long, so the loops run without bounds checks and
            // vectorise.
            let (gx, gy, len) = (&mut gx[..n], &mut gy[..n], &mut len[..n]);
            let best_o = &mut best_o[..n];
            for i in 0..n {
                // Strongest channel; on ties the SIMD body takes the later channel.
                let (mut dx, mut dy) = (rr[i] - rl[i], rd[i] - ru[i]);
                let mut l = dx * dx + dy * dy;
                let (gdx, gdy) = (gr[i] - gl[i], gd[i] - gu[i]);
                let gl2 = gdx * gdx + gdy * gdy;
                let take = gl2 >= l;
                dx = if take { gdx } else { dx };
                dy = if take { gdy } else { dy };
                l = if take { gl2 } else { l };
                let (bdx, bdy) = (br[i] - bl[i], bd[i] - bu[i]);
                let bl2 = bdx * bdx + bdy * bdy;
                let take = bl2 >= l;
                gx[i] = if take { bdx } else { dx };
                gy[i] = if take { bdy } else { dy };
                len[i] = if take { bl2 } else { l };
            }
            // n is a multiple of 8 (dlib's body runs 8 columns at a time): fixed-size lanes.
            for ((o8, x8), y8) in best_o
                .chunks_exact_mut(8)
                .zip(gx.chunks_exact(8))
                .zip(gy.chunks_exact(8))
            {
                let mut bd = [0f32; 8];
                let mut bo = [0u32; 8];
                for (o, &(ux, uy)) in DIRECTIONS.iter().enumerate() {
                    let o = o as u32;
                    for l in 0..8 {
                        let dot = x8[l] * ux + y8[l] * uy;
                        let c1 = dot > bd[l];
                        let b1 = if c1 { dot } else { bd[l] };
                        let o1 = if c1 { o } else { bo[l] };
                        let c2 = -dot > b1;
                        bd[l] = if c2 { -dot } else { b1 };
                        bo[l] = if c2 { o + 9 } else { o1 };
                    }
                }
                o8.copy_from_slice(&bo);
            }
            let (vx0, vx1, cidx) = (&vx0[..n], &vx1[..n], &cidx[..n]);
            let (vote_l, vote_r) = (&mut vote_l[..n], &mut vote_r[..n]);
            for i in 0..n {
                let v = len[i].sqrt();
                vote_l[i] = vx1[i] * v;
                vote_r[i] = vx0[i] * v;
            }
            for i in 0..n {
                let (a, b) = (vote_l[i], vote_r[i]);
                let (c, o) = (cidx[i], best_o[i] as usize);
                hist[bin(ry, c, o)] += vy1 * a;
                hist[bin(ry + 1, c, o)] += vy0 * a;
                hist[bin(ry, c + 1, o)] += vy1 * b;
                hist[bin(ry + 1, c + 1, o)] += vy0 * b;
            }
        }
        for x in simd_x.max(1)..visible_nc {
            let xi = x as usize;
            let (gx, gy, len) = gradient(planes, w, y, xi);
            let o = orientation(gx, gy);
            let v = len.sqrt();
            let xp = ((xi as f64 + 0.5) / cell as f64 - 0.5) as f32;
            let ixp = xp.floor() as i64;
            let vx0 = xp - ixp as f32;
            let vx1 = 1.0 - vx0;
            let c = (ixp + 1) as usize;
            hist[bin(ry, c, o)] += vy1 * vx1 * v;
            hist[bin(ry + 1, c, o)] += vy0 * vx1 * v;
            hist[bin(ry, c + 1, o)] += vy1 * vx0 * v;
            hist[bin(ry + 1, c + 1, o)] += vy0 * vx0 * v;
        }
    }
    let mut norm = vec![0.0f32; cells_nr * cells_nc];
    for r in 0..cells_nr {
        for c in 0..cells_nc {
            let h = &hist[bin(r + 1, c + 1, 0)..bin(r + 1, c + 1, 0) + 18];
            let mut n = 0.0f32;
            for o in 0..9 {
                let s = h[o] + h[o + 9];
                n += s * s;
            }
            norm[r * cells_nc + c] = n;
        }
    }
    let (hog_nr, hog_nc) = (cells_nr - 2, cells_nc - 2);
    let (nr, nc) = (hog_nr + rows_pad - 1, hog_nc + cols_pad - 1);
    let (off_r, off_c) = ((rows_pad - 1) / 2, (cols_pad - 1) / 2);
    let stride = nc + 8;
    let mut data = vec![0.0f32; PLANES * nr * stride];
    let nm = |r: usize, c: usize| norm[r * cells_nc + c];
    // dlib's sum() of a 4-lane vector (SSE4.1 dot with ones): (l0 + l1) + (l2 + l3).
    let sum4 = |v: [f32; 4]| (v[0] + v[1]) + (v[2] + v[3]);
    let eps = 0.0001f32;
    for y in 0..hog_nr {
        for x in 0..hog_nc {
            let z1 = [nm(y + 1, x + 1), nm(y, x + 1), nm(y + 1, x), nm(y, x)];
            let z2 = [
                nm(y + 1, x + 2),
                nm(y, x + 2),
                nm(y + 1, x + 1),
                nm(y, x + 1),
            ];
            let z3 = [
                nm(y + 2, x + 1),
                nm(y + 1, x + 1),
                nm(y + 2, x),
                nm(y + 1, x),
            ];
            let z4 = [
                nm(y + 2, x + 2),
                nm(y + 1, x + 2),
                nm(y + 2, x + 1),
                nm(y + 1, x + 1),
            ];
            let mut nn = [0.0f32; 4];
            let mut n = [0.0f32; 4];
            for l in 0..4 {
                nn[l] = 0.2f32 * (z1[l] + z2[l] + z3[l] + z4[l] + eps).sqrt();
                n[l] = 0.1f32 / nn[l];
            }
            let h = &hist[bin(y + 2, x + 2, 0)..bin(y + 2, x + 2, 0) + 18];
            let at = |o: usize| ((o * nr) + y + off_r) * stride + x + off_c;
            let clip = |v: f32| -> [f32; 4] {
                let mut out = [0.0f32; 4];
                for l in 0..4 {
                    out[l] = v.min(nn[l]) * n[l];
                }
                out
            };
            let mut t = [0.0f32; 4];
            for o in (0..18).step_by(3) {
                let (h0, h1, h2) = (clip(h[o]), clip(h[o + 1]), clip(h[o + 2]));
                data[at(o)] = sum4(h0);
                data[at(o + 1)] = sum4(h1);
                data[at(o + 2)] = sum4(h2);
                for l in 0..4 {
                    t[l] += h0[l] + h1[l] + h2[l];
                }
            }
            for o in (0..9).step_by(3) {
                let h0 = clip(h[o] + h[o + 9]);
                let h1 = clip(h[o + 1] + h[o + 10]);
                let h2 = clip(h[o + 2] + h[o + 11]);
                data[at(o + 18)] = sum4(h0);
                data[at(o + 19)] = sum4(h1);
                data[at(o + 20)] = sum4(h2);
            }
            let k = (2.0f64 * 0.2357) as f32;
            for l in 0..4 {
                data[at(27 + l)] = t[l] * k;
            }
        }
    }
    Some(Fhog {
        data,
        nr,
        nc,
        stride,
    })
}
