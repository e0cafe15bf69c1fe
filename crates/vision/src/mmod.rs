//! dlib's MMOD CNN face detector: the network runs in ONNX Runtime; the image pyramid, the
//! tiling of pyramid levels into one tensor, the mapping of output cells back to image boxes
//! and the non-maximum suppression are reproduced from dlib (dnn/input.h, image_pyramid.h,
//! dnn/loss.h) so boxes agree with dlib's.
//!
//! Speed comes from searching only the pyramid levels that can hold faces of the requested size
//! range: each such level then runs on its own, zero-padded like dlib's tiles. Boxes near a
//! level's border can differ slightly from the full tiled run (dlib's neighbouring tiles fall
//! inside the receptive field there); without a size range the tiled layout is used and results
//! match dlib's.

use crate::detect::{greedy_nms, rect_down_upsampling, DetectOptions, Detection};
use crate::dlib::resize::{row_walk, ColumnWalk};
use crate::error::VisionError;
use crate::geometry::Rect;
use crate::runtime::{session_with_memory, SessionMemory};
use image::RgbImage;
use std::sync::Mutex;

/// One channel-planar float image (3 planes).
struct Planes {
    w: usize,
    h: usize,
    data: Vec<f32>,
}

/// Integer rectangle with inclusive corners, as dlib's `rectangle`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IRect {
    pub l: i64,
    pub t: i64,
    pub r: i64,
    pub b: i64,
}

impl IRect {
    fn w(&self) -> i64 {
        self.r - self.l + 1
    }
    fn h(&self) -> i64 {
        self.b - self.t + 1
    }
}

/// dlib's `compute_tiled_image_pyramid_details` for pyramid_down<6>: where each level goes in
/// the tiled tensor, and the tensor size (rows, cols).
pub fn tiled_pyramid_layout(nr: i64, nc: i64, padding: i64, outer: i64) -> (Vec<IRect>, i64, i64) {
    if nr * nc == 0 {
        return (Vec::new(), 0, 0);
    }
    let mut rects = vec![IRect {
        l: 0,
        t: 0,
        r: nc - 1,
        b: nr - 1,
    }];
    let (mut r, mut c) = (nr, nc);
    loop {
        r = (5.0 / 6.0 * r as f64).floor() as i64;
        c = (5.0 / 6.0 * c as f64).floor() as i64;
        if r * c == 0 || r < 5 {
            break;
        }
        rects.push(IRect {
            l: 0,
            t: 0,
            r: c - 1,
            b: r - 1,
        });
    }
    let total_height: i64 = rects.iter().map(|x| x.h() + padding).sum::<i64>() - 2 * padding;
    let (mut height, mut prev_width) = (0i64, 0i64);
    let (h0, w0) = (rects[0].h(), rects[0].w());
    for x in &rects {
        if x.w() <= w0 - prev_width - padding && (height - h0) * 2 >= total_height - h0 {
            break;
        }
        height += x.h() + padding;
        prev_width = x.w();
    }
    height -= padding;
    let width = w0;
    let (out_nr, out_nc) = (height + 2 * outer, width + 2 * outer);
    let mut y = outer;
    let mut i = 0;
    while y < height + outer && i < rects.len() {
        let x = rects[i];
        rects[i] = IRect {
            l: x.l + outer,
            t: x.t + y,
            r: x.r + outer,
            b: x.b + y,
        };
        y += rects[i].h() + padding;
        i += 1;
    }
    y -= padding;
    while i < rects.len() {
        let (p1x, p1y) = (outer + width - 1, y - 1);
        let (p2x, p2y) = (p1x - rects[i].r, p1y - rects[i].b);
        let rect = IRect {
            l: p2x.min(p1x),
            t: p2y.min(p1y),
            r: p2x.max(p1x),
            b: p2y.max(p1y),
        };
        let r0 = rects[0];
        let inter = IRect {
            l: r0.l.max(rect.l),
            t: r0.t.max(rect.t),
            r: r0.r.min(rect.r),
            b: r0.b.min(rect.b),
        };
        if inter.l <= inter.r && inter.t <= inter.b {
            break;
        }
        rects[i] = rect;
        y -= rects[i].h() + padding;
        i += 1;
    }
    rects.truncate(i);
    (rects, out_nr, out_nc)
}

/// dlib's bilinear `resize_image` for float grayscale images (its SIMD fast path in f32, then
/// a scalar tail), used by `tt::resize_bilinear` to build the pyramid in tensor space.
fn resize_plane(
    src: &[f32],
    sw: usize,
    sh: usize,
    dst: &mut [f32],
    dw: usize,
    dh: usize,
    walk: &ColumnWalk,
) {
    if sw == 0 || sh == 0 || dw == 0 || dh == 0 {
        return;
    }
    for (r, top, bottom, tb_frac) in row_walk(sh, dh) {
        let srow_t = &src[top * sw..(top + 1) * sw];
        let srow_b = &src[bottom * sw..(bottom + 1) * sw];
        let drow = &mut dst[r * dw..(r + 1) * dw];
        let ftb = tb_frac as f32;
        let finv_tb = (1.0 - tb_frac) as f32;
        let (head, rest) = drow.split_at_mut(walk.simd.len());
        for (d, &(li, lr)) in head.iter_mut().zip(&walk.simd) {
            let inv_lr = 1.0 - lr;
            let (tlf, trf, blf, brf) = (finv_tb * inv_lr, finv_tb * lr, ftb * inv_lr, ftb * lr);
            *d = tlf * srow_t[li] + trf * srow_t[li + 1] + blf * srow_b[li] + brf * srow_b[li + 1];
        }
        for (d, &(left, right, lr)) in rest.iter_mut().zip(&walk.tail) {
            let lr32 = lr as f32;
            let (tl, tr, bl, br) = (srow_t[left], srow_t[right], srow_b[left], srow_b[right]);
            let top_mix = ((1.0 - lr32) * tl + lr32 * tr) as f64;
            let bot_mix = ((1.0 - lr32) * bl + lr32 * br) as f64;
            *d = ((1.0 - tb_frac) * top_mix + tb_frac * bot_mix) as f32;
        }
    }
}

fn resize_planes(src: &Planes, w: usize, h: usize) -> Planes {
    let mut data = vec![0f32; 3 * w * h];
    let walk = ColumnWalk::new(src.w, w);
    for ch in 0..3 {
        let s = &src.data[ch * src.w * src.h..(ch + 1) * src.w * src.h];
        resize_plane(
            s,
            src.w,
            src.h,
            &mut data[ch * w * h..(ch + 1) * w * h],
            w,
            h,
            &walk,
        );
    }
    Planes { w, h, data }
}

/// Largest input tensor (rows x cols) run through the arena session: a 640x480 frame's full
/// tiled pyramid is ~0.5 M; 1.5 M keeps 720p frames on the fast path while bounding what the
/// arena can hold to a few hundred megabytes.
const ARENA_MAX_PIXELS: usize = 1_500_000;

pub struct MmodDetector {
    /// Two sessions of the same network: `session` keeps ONNX Runtime's arena (fastest) and
    /// runs tensors up to `ARENA_MAX_PIXELS`, so what its arena holds between runs is bounded;
    /// `large` keeps no arena and runs bigger tensors (a one-off large frame returns its memory).
    session: Mutex<ort::session::Session>,
    large: Mutex<ort::session::Session>,
    mean: [f32; 3],
    window: f64,
    nms_iou: f64,
    nms_covered: f64,
    padding: i64,
    outer_padding: i64,
}

impl MmodDetector {
    pub fn from_onnx(
        bytes: &[u8],
        mean: [f32; 3],
        window: usize,
        nms: (f64, f64),
        padding: usize,
        outer_padding: usize,
        threads: usize,
    ) -> Result<Self, VisionError> {
        Ok(MmodDetector {
            session: Mutex::new(session_with_memory(bytes, threads, SessionMemory::Arena)?),
            large: Mutex::new(session_with_memory(
                bytes,
                threads,
                SessionMemory::Released,
            )?),
            mean,
            window: window as f64,
            nms_iou: nms.0,
            nms_covered: nms.1,
            padding: padding as i64,
            outer_padding: outer_padding as i64,
        })
    }

    fn level0(&self, img: &RgbImage) -> Planes {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut data = vec![0f32; 3 * w * h];
        let (r, rest) = data.split_at_mut(w * h);
        let (g, b) = rest.split_at_mut(w * h);
        let [mr, mg, mb] = self.mean;
        // × 1/256 is exactly ÷ 256 (a power of two), and vectorises.
        const INV: f32 = 1.0 / 256.0;
        for (((px, r), g), b) in img
            .as_raw()
            .chunks_exact(3)
            .zip(r.iter_mut())
            .zip(g.iter_mut())
            .zip(b.iter_mut())
        {
            *r = (px[0] as f32 - mr) * INV;
            *g = (px[1] as f32 - mg) * INV;
            *b = (px[2] as f32 - mb) * INV;
        }
        Planes { w, h, data }
    }

    /// Runs the network on a (3, rows, cols) tensor; returns the score map and its width.
    fn scores(
        &self,
        tensor: Vec<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<(Vec<f32>, usize, usize), VisionError> {
        let t = ort::value::Tensor::from_array(([1usize, 3, rows, cols], tensor))?;
        let session = if rows * cols <= ARENA_MAX_PIXELS {
            &self.session
        } else {
            &self.large
        };
        let mut s = session
            .lock()
            .map_err(|_| VisionError::Runtime("session lock poisoned".into()))?;
        let out = s.run(ort::inputs![t])?;
        let (shape, v) = out[0].try_extract_tensor::<f32>()?;
        if shape.len() != 4 || shape[1] != 1 {
            return Err(VisionError::Runtime(format!(
                "detector output shape {shape:?}"
            )));
        }
        Ok((v.to_vec(), shape[3] as usize, shape[2] as usize))
    }

    /// Face boxes in image coordinates, best first, after dlib's non-maximum suppression.
    pub fn detect(
        &self,
        img: &RgbImage,
        opts: &DetectOptions,
    ) -> Result<Vec<Detection>, VisionError> {
        if img.width() == 0 || img.height() == 0 {
            return Err(VisionError::Empty);
        }
        let upsampled = opts.upsampled(img);
        let work = upsampled.as_ref().unwrap_or(img);
        let (nr, nc) = (work.height() as i64, work.width() as i64);
        let (rects, tnr, tnc) = tiled_pyramid_layout(nr, nc, self.padding, self.outer_padding);
        if rects.is_empty() {
            return Ok(Vec::new());
        }
        let wanted = opts.pyramid_levels(rects.len(), self.window);
        // Pyramid levels, each made from the previous one in tensor space as dlib does, down to
        // the coarsest level searched.
        let deepest = wanted.last().copied().unwrap_or(0);
        let mut levels = vec![self.level0(work)];
        for r in &rects[1..=deepest.min(rects.len() - 1)] {
            let prev = levels
                .last()
                .map(|p| resize_planes(p, r.w() as usize, r.h() as usize));
            levels.extend(prev);
        }
        let mut candidates = Vec::new();
        let full = wanted.len() == rects.len();
        if full {
            let (tnr, tnc) = (tnr as usize, tnc as usize);
            let mut tensor = vec![0f32; 3 * tnr * tnc];
            for (lv, r) in levels.iter().zip(&rects) {
                blit(&mut tensor, tnr, tnc, lv, r.l as usize, r.t as usize);
            }
            let (s, ow, oh) = self.scores(tensor, tnr, tnc)?;
            self.collect(&s, ow, oh, &rects, None, opts.threshold, &mut candidates);
        } else {
            let pad = self.outer_padding as usize;
            for &i in &wanted {
                let lv = &levels[i];
                let (rows, cols) = (lv.h + 2 * pad, lv.w + 2 * pad);
                let mut tensor = vec![0f32; 3 * rows * cols];
                blit(&mut tensor, rows, cols, lv, pad, pad);
                let (s, ow, oh) = self.scores(tensor, rows, cols)?;
                let origin = IRect {
                    l: pad as i64,
                    t: pad as i64,
                    r: (pad + lv.w) as i64 - 1,
                    b: (pad + lv.h) as i64 - 1,
                };
                self.collect(
                    &s,
                    ow,
                    oh,
                    &[origin],
                    Some(i),
                    opts.threshold,
                    &mut candidates,
                );
            }
        }
        candidates.sort_by(|a: &Detection, b: &Detection| b.score.total_cmp(&a.score));
        let mut kept = greedy_nms(candidates, self.nms_iou, self.nms_covered);
        // Back to the caller's image: undo upsampling, then round to integer corners like
        // dlib's drectangle → rectangle conversion.
        for d in kept.iter_mut() {
            d.rect = rect_down_upsampling(d.rect, opts.upsample, |v| (v + 0.5).floor());
        }
        opts.retain_in_range(&mut kept);
        Ok(kept)
    }

    #[allow(clippy::too_many_arguments)]
    fn collect(
        &self,
        scores: &[f32],
        ow: usize,
        oh: usize,
        rects: &[IRect],
        fixed_level: Option<usize>,
        threshold: f32,
        out: &mut Vec<Detection>,
    ) {
        let half = (self.window - 1.0) / 2.0;
        for r in 0..oh {
            for c in 0..ow {
                let s = scores[r * ow + c];
                if s <= threshold {
                    continue;
                }
                // Output cell → input tensor point through the three stride-2 5x5 convolutions.
                let (px, py) = ((8 * c + 14) as i64, (8 * r + 14) as i64);
                let (idx, level) = match fixed_level {
                    Some(l) => (0, l),
                    None => {
                        let i = nearest_rect(rects, px, py);
                        (i, i)
                    }
                };
                let o = rects[idx];
                let mut rect = Rect {
                    left: px as f64 - half - o.l as f64,
                    top: py as f64 - half - o.t as f64,
                    right: px as f64 + half - o.l as f64,
                    bottom: py as f64 + half - o.t as f64,
                };
                for _ in 0..level {
                    let up = |v: f64| v * (6.0 / 5.0) + 0.3;
                    rect = Rect {
                        left: up(rect.left),
                        top: up(rect.top),
                        right: up(rect.right),
                        bottom: up(rect.bottom),
                    };
                }
                out.push(Detection {
                    rect,
                    score: s,
                    landmarks: None,
                });
            }
        }
    }
}

fn blit(tensor: &mut [f32], rows: usize, cols: usize, lv: &Planes, x0: usize, y0: usize) {
    for ch in 0..3 {
        for y in 0..lv.h {
            let src = &lv.data[ch * lv.w * lv.h + y * lv.w..ch * lv.w * lv.h + (y + 1) * lv.w];
            let o = ch * rows * cols + (y0 + y) * cols + x0;
            tensor[o..o + lv.w].copy_from_slice(src);
        }
    }
}

/// dlib's `nearest_rect`: the first rectangle containing the point, else the closest one.
fn nearest_rect(rects: &[IRect], x: i64, y: i64) -> usize {
    let mut best = (0, f64::INFINITY);
    for (i, r) in rects.iter().enumerate() {
        if x >= r.l && x <= r.r && y >= r.t && y <= r.b {
            return i;
        }
        let nx = x.clamp(r.l, r.r);
        let ny = y.clamp(r.t, r.b);
        let d = (((nx - x).pow(2) + (ny - y).pow(2)) as f64).sqrt();
        if d < best.1 {
            best = (i, d);
        }
    }
    best.0
}

impl crate::detect::Detector for MmodDetector {
    fn name(&self) -> &'static str {
        "mmod"
    }

    fn detect(
        &self,
        img: &RgbImage,
        opts: &crate::detect::DetectOptions,
    ) -> Result<Vec<crate::detect::Detection>, VisionError> {
        MmodDetector::detect(self, img, opts)
    }

    /// The MMOD network's activations take ~181 MB per megapixel of frame (measured: 535 MB at
    /// 2 MP, 1985 MB at 10 MP, one thread): 3 MP keeps one image near 720 MB.
    fn max_working_pixels(&self) -> u64 {
        3_000_000
    }

    fn smallest_face_px(&self) -> f64 {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiled_layout_matches_dlib_for_640x480() {
        // From dlib's own dump (golden/extra/dlib_params_and_layers.txt).
        let (rects, nr, nc) = tiled_pyramid_layout(480, 640, 10, 11);
        assert_eq!((nc, nr), (662, 1782));
        let want = [
            [11, 11, 650, 490],
            [11, 501, 543, 900],
            [11, 911, 454, 1243],
            [395, 1580, 650, 1770],
            [643, 512, 650, 516],
        ];
        assert_eq!(rects.len(), 24);
        for w in want {
            assert!(
                rects.contains(&IRect {
                    l: w[0],
                    t: w[1],
                    r: w[2],
                    b: w[3]
                }),
                "{w:?}"
            );
        }
    }

    #[test]
    fn resize_plane_keeps_constant_images_constant() {
        let src = vec![0.25f32; 37 * 23];
        let mut dst = vec![0f32; 30 * 19];
        resize_plane(&src, 37, 23, &mut dst, 30, 19, &ColumnWalk::new(37, 30));
        assert!(dst.iter().all(|&v| (v - 0.25).abs() < 1e-6));
    }
}
