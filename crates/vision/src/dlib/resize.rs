//! dlib's bilinear resampling, shared by its detectors: the row and column walks of
//! `resize_image` (bit for bit, including its SIMD path's f32 lanes), `pyramid_up`, and the RGB
//! resize with truncation.

use image::RgbImage;

/// The row walk of dlib's bilinear `resize_image`: align-corners y positions accumulated in
/// f64, yielding (output row, top source row, bottom source row, fraction towards bottom).
pub(crate) fn row_walk(sh: usize, dh: usize) -> impl Iterator<Item = (usize, usize, usize, f64)> {
    let y_scale = (sh as f64 - 1.0) / ((dh as f64 - 1.0).max(1.0));
    let mut y = -y_scale;
    (0..dh).map(move |r| {
        y += y_scale;
        let top = y.floor() as usize;
        (r, top, (top + 1).min(sh - 1), y - top as f64)
    })
}

/// The column walk of dlib's SIMD bilinear `resize_image`: x positions kept in f32 lanes of four,
/// advanced by 4*x_scale, until a lane's right neighbour would leave the source row. Calls
/// `f(column, left, lr_frac)` for each column of the vector part and returns the first column
/// of the scalar tail. `ColumnWalk` records it once per size pair for both resizers.
fn simd_columns(sw: usize, dw: usize, x_scale: f64, mut f: impl FnMut(usize, usize, f32)) -> usize {
    let x0 = -4.0 * x_scale;
    let fxs = (4.0 * x_scale) as f32;
    let mut lanes = [
        x0 as f32,
        (x0 + x_scale) as f32,
        (x0 + 2.0 * x_scale) as f32,
        (x0 + 3.0 * x_scale) as f32,
    ];
    let mut c = 0usize;
    loop {
        for l in lanes.iter_mut() {
            *l += fxs;
        }
        let left = lanes.map(|v| v as i32);
        // dlib stops when lane 3's right neighbour leaves the row; the column bound only
        // guards degenerate sizes where dlib itself would write past the row.
        if left[3] + 1 >= sw as i32 || c + 3 >= dw {
            break;
        }
        for k in 0..4 {
            f(c + k, left[k] as usize, lanes[k] - left[k] as f32);
        }
        c += 4;
    }
    c
}

/// Where each output column of dlib's bilinear `resize_image` samples (the float pyramid and the
/// RGB `pyramid_up` walk columns alike): the SIMD part's (left
/// column, f32 fraction) and, after it, the scalar tail's (left, right, f64 fraction). The walk
/// does not depend on the row, so it is computed once per level and shared by every row and
/// channel (the values are the ones dlib computes per row, bit for bit).
pub(crate) struct ColumnWalk {
    pub(crate) simd: Vec<(usize, f32)>,
    pub(crate) tail: Vec<(usize, usize, f64)>,
}

impl ColumnWalk {
    pub(crate) fn new(sw: usize, dw: usize) -> Self {
        let x_scale = (sw as f64 - 1.0) / ((dw as f64 - 1.0).max(1.0));
        let mut simd = Vec::with_capacity(dw);
        let c = simd_columns(sw, dw, x_scale, |_, li, lr| simd.push((li, lr)));
        let mut tail = Vec::with_capacity(dw - c);
        let mut x = -x_scale + c as f64 * x_scale;
        for _ in c..dw {
            x += x_scale;
            let left = x.floor() as usize;
            let right = (left + 1).min(sw - 1);
            tail.push((left, right, x - left as f64));
        }
        ColumnWalk { simd, tail }
    }
}

/// dlib's `pyramid_up` (pyramid_down<2>): output size from rect_up of the image rectangle,
/// then the RGB bilinear resize with truncation to integers.
pub fn pyramid_up(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let up = |v: f64, o: f64| (v + o) * 2.0;
    // dlib sizes the output as (right+1, bottom+1) of the up-mapped image rectangle.
    let (r, b) = (
        (up(w - 1.0, 1.25) + 0.5).floor(),
        (up(h - 1.0, 0.75) + 0.5).floor(),
    );
    let (ow, oh) = ((r + 1.0) as usize, (b + 1.0) as usize);
    resize_rgb_truncating(img, ow, oh)
}

/// dlib's RGB bilinear `resize_image` fast path: f32 lanes, results truncated to u8.
#[inline(always)]
pub(crate) fn resize_rgb_truncating(img: &RgbImage, dw: usize, dh: usize) -> RgbImage {
    let (sw, sh) = (img.width() as usize, img.height() as usize);
    let mut out = RgbImage::new(dw as u32, dh as u32);
    if sw == 0 || sh == 0 || dw == 0 || dh == 0 {
        return out;
    }
    let src = img.as_raw();
    let dst: &mut [u8] = &mut out;
    let walk = ColumnWalk::new(sw, dw);
    for (r, top, bottom, tb_frac) in row_walk(sh, dh) {
        let px = |row: usize, col: usize, ch: usize| src[3 * (row * sw + col) + ch];
        let ftb = tb_frac as f32;
        let finv_tb = (1.0 - tb_frac) as f32;
        for (col, &(li, lr)) in walk.simd.iter().enumerate() {
            let inv_lr = 1.0 - lr;
            let (tlf, trf, blf, brf) = (finv_tb * inv_lr, finv_tb * lr, ftb * inv_lr, ftb * lr);
            for ch in 0..3 {
                let v = tlf * px(top, li, ch) as f32
                    + trf * px(top, li + 1, ch) as f32
                    + blf * px(bottom, li, ch) as f32
                    + brf * px(bottom, li + 1, ch) as f32;
                dst[3 * (r * dw + col) + ch] = v as i32 as u8;
            }
        }
        for (c, &(left, right, lr)) in (walk.simd.len()..).zip(&walk.tail) {
            for ch in 0..3 {
                let (tl, tr) = (px(top, left, ch) as f64, px(top, right, ch) as f64);
                let (bl, br) = (px(bottom, left, ch) as f64, px(bottom, right, ch) as f64);
                let v = (1.0 - tb_frac) * ((1.0 - lr) * tl + lr * tr)
                    + tb_frac * ((1.0 - lr) * bl + lr * br);
                dst[3 * (r * dw + c) + ch] = v as u8;
            }
        }
    }
    out
}
