//! The planar-motion liveness cue: a print or a screen held to a camera is a plane, and every
//! point of a plane moves between two views by one homography; a live head is not flat (the nose
//! stands out of the plane of the eyes and cheeks, the jaw and lips move on their own), so once it
//! turns or nods, no single homography explains how its points moved.
//!
//! Between two frames of a track, points on a grid over the face are followed by block matching
//! (zero-mean normalised cross-correlation of small patches, sub-pixel peak), and two models are
//! fitted to the matches: a similarity (shift, scale, in-plane rotation: what any motion of any
//! object towards or across the camera looks like) and a homography (what any motion of a plane
//! looks like). Their residuals, in units of the face's width, are the pair's two numbers:
//! - `gain`: motion the similarity cannot explain — out-of-plane turning, tilting, parallax,
//!   expression. Below [`MotionConfig::min_gain`] the pair says nothing (a person standing still,
//!   a print held still: both are explained by a similarity).
//! - `parallax`: motion the homography cannot explain. A plane leaves only matching noise here,
//!   whatever its motion; a turning head leaves its depth relief.
//!
//! A track's verdict comes from its pairs that moved: the median of `parallax / gain` (which
//! share of the out-of-plane motion is not planar) at or below [`MotionConfig::planar_ratio`] is
//! **planar** (an attack cue), at or above [`MotionConfig::relief_ratio`] is **relief**,
//! in between or with too few moving pairs it is **inconclusive** and the cue abstains.
//!
//! What it cannot see: a video replay whose recorded person turns their head (the content's own
//! relief survives being shown on a flat screen); a print bent into a curve; masks. The cue is for
//! flat artefacts — prints and still photos on screens — and is fused with the passive score.

use image::{imageops, ImageBuffer, Luma, RgbImage};

/// Grey levels as floats, so sub-pixel samples keep their precision.
type GrayF = ImageBuffer<Luma<f32>, Vec<f32>>;
use nalgebra::{DMatrix, Matrix3};
use serde::Serialize;
use vision::geometry::{similarity, Point, Rect};
pub use vision::liveness::{MotionCue, MotionVerdict};

/// How pairs are measured and judged. The defaults were set on the real clip and synthetic
/// prints (docs/liveness.md shows the distributions); they are not tuned on real attacks.
#[derive(Debug, Clone, Copy)]
pub struct MotionConfig {
    /// The face is resampled so its box is at most this wide (px) before matching.
    pub face_px: u32,
    /// Grid points per side over the face box's inner part.
    pub grid: usize,
    /// Patch radius (px, at the resampled size).
    pub patch: i32,
    /// Search radius around the predicted position (px, at the resampled size).
    pub search: i32,
    /// Lowest corner strength (smaller eigenvalue of the structure tensor, per pixel) for a
    /// point to be followed: flat skin and straight edges cannot be located in 2-D.
    pub min_corner: f64,
    /// Lowest correlation for a match to count.
    pub min_correlation: f32,
    /// Fewest matched points for a pair to be fitted.
    pub min_points: usize,
    /// Frames between the two frames of a pair.
    pub lag: u64,
    /// Frames between patches (a pair is measured at each).
    pub step: u64,
    /// `gain` (in face widths) from which a pair counts as having moved out of plane.
    pub min_gain: f64,
    /// Fewest moving pairs for a verdict.
    pub min_pairs: usize,
    /// Median `parallax / gain` at or below which the track is judged planar.
    pub planar_ratio: f64,
    /// Median `parallax / gain` at or above which the track is judged to have relief, when the
    /// median parallax is also at least `min_parallax` (a small ratio of two small numbers is
    /// matching noise, not depth).
    pub relief_ratio: f64,
    /// Median parallax (in face widths) a relief verdict needs.
    pub min_parallax: f64,
    /// Most pairs kept per track (bounds memory on a track that never ends).
    pub max_pairs: usize,
}

impl Default for MotionConfig {
    fn default() -> Self {
        MotionConfig {
            face_px: 112,
            grid: 9,
            patch: 4,
            search: 7,
            min_corner: 4.0,
            min_correlation: 0.8,
            min_points: 16,
            lag: 8,
            step: 4,
            min_gain: 0.004,
            min_pairs: 2,
            planar_ratio: 0.4,
            relief_ratio: 0.55,
            min_parallax: 0.004,
            max_pairs: 64,
        }
    }
}

/// The grey-level neighbourhood of a face in one frame, resampled: all a pair needs of a frame.
/// Zeroised when dropped.
pub struct FacePatch {
    frame: u64,
    face: Rect,
    /// Frame coordinates of the patch's pixel (0, 0) centre, and patch pixels per frame pixel.
    origin: (f64, f64),
    scale: (f64, f64),
    gray: GrayF,
}

impl Drop for FacePatch {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut std::mem::take(&mut self.gray).into_raw());
    }
}

impl FacePatch {
    /// The face box grown by a quarter, clipped to the frame, in grey, scaled down so the face is
    /// at most `cfg.face_px` wide. `None` for a box that is not inside the frame.
    pub fn new(img: &RgbImage, face: &Rect, frame: u64, cfg: &MotionConfig) -> Option<FacePatch> {
        let (w, h) = (img.width() as f64, img.height() as f64);
        let ok = [face.left, face.top, face.right, face.bottom]
            .iter()
            .all(|v| v.is_finite());
        if !ok || face.width() < 8.0 || face.height() < 8.0 {
            return None;
        }
        let c = face.center();
        let (hw, hh) = (face.width() * 0.625, face.height() * 0.625);
        let x0 = (c.x - hw).floor().clamp(0.0, w - 1.0);
        let y0 = (c.y - hh).floor().clamp(0.0, h - 1.0);
        let x1 = (c.x + hw).ceil().clamp(0.0, w);
        let y1 = (c.y + hh).ceil().clamp(0.0, h);
        if x1 - x0 < 8.0 || y1 - y0 < 8.0 {
            return None;
        }
        let (cw, ch) = ((x1 - x0) as u32, (y1 - y0) as u32);
        let crop = imageops::crop_imm(img, x0 as u32, y0 as u32, cw, ch).to_image();
        let mut grey8 = imageops::grayscale(&crop);
        zeroize::Zeroize::zeroize(&mut crop.into_raw());
        let s = (cfg.face_px as f64 / face.width()).min(1.0);
        if s < 1.0 {
            // Resampled in 8 bits: the image crate takes float pixels to be in 0..1.
            let (nw, nh) = (
                ((cw as f64 * s).round() as u32).max(8),
                ((ch as f64 * s).round() as u32).max(8),
            );
            let small = imageops::resize(&grey8, nw, nh, imageops::FilterType::Triangle);
            zeroize::Zeroize::zeroize(&mut std::mem::replace(&mut grey8, small).into_raw());
        }
        let gray = GrayF::from_fn(grey8.width(), grey8.height(), |x, y| {
            Luma([grey8.get_pixel(x, y)[0] as f32])
        });
        zeroize::Zeroize::zeroize(&mut grey8.into_raw());
        let scale = (
            gray.width() as f64 / cw as f64,
            gray.height() as f64 / ch as f64,
        );
        Some(FacePatch {
            frame,
            face: *face,
            origin: (x0, y0),
            scale,
            gray,
        })
    }

    pub fn frame(&self) -> u64 {
        self.frame
    }

    fn to_patch(&self, p: Point) -> (f64, f64) {
        (
            (p.x - self.origin.0 + 0.5) * self.scale.0 - 0.5,
            (p.y - self.origin.1 + 0.5) * self.scale.1 - 0.5,
        )
    }

    fn to_frame(&self, u: f64, v: f64) -> Point {
        Point {
            x: (u + 0.5) / self.scale.0 - 0.5 + self.origin.0,
            y: (v + 0.5) / self.scale.1 - 0.5 + self.origin.1,
        }
    }

    fn at(&self, u: i32, v: i32) -> f32 {
        self.gray.get_pixel(u as u32, v as u32)[0]
    }

    fn sample(&self, u: f64, v: f64) -> Option<f32> {
        imageops::interpolate_bilinear(&self.gray, u as f32, v as f32).map(|p| p[0])
    }

    /// Sub-pixel refinement of where the patch of `self` at integer (ua, va) lies in `b`,
    /// starting from (ub, vb): Gauss–Newton on the zero-mean patch difference (brightness may
    /// change between frames) with the mean of both images' gradients (Benhimane and Malis'
    /// ESM, which converges where plain Lucas–Kanade crawls when one image is blurrier than the
    /// other). Block matching's integer peak is good to half a pixel, this to a few hundredths,
    /// which the parallax measure needs.
    fn refine(
        &self,
        ua: i32,
        va: i32,
        b: &FacePatch,
        ub: f64,
        vb: f64,
        r: i32,
    ) -> Option<(f64, f64)> {
        let (w, h) = (self.gray.width() as i32, self.gray.height() as i32);
        if ua - r - 1 < 0 || va - r - 1 < 0 || ua + r + 1 >= w || va + r + 1 >= h {
            return None;
        }
        // Template and window with a one-pixel rim, for central differences.
        let side = (2 * r + 3) as usize;
        let mut t = Vec::with_capacity(side * side);
        for y in va - r - 1..=va + r + 1 {
            for x in ua - r - 1..=ua + r + 1 {
                t.push(self.at(x, y));
            }
        }
        let inner = |k: usize| {
            let (x, y) = (k % side, k / side);
            x >= 1 && y >= 1 && x + 1 < side && y + 1 < side
        };
        let grad = |img: &[f32], k: usize| {
            (
                0.5 * (img[k + 1] - img[k - 1]),
                0.5 * (img[k + side] - img[k - side]),
            )
        };
        let n = ((2 * r + 1) * (2 * r + 1)) as f32;
        let mean = |img: &[f32]| {
            (0..side * side)
                .filter(|&k| inner(k))
                .map(|k| img[k])
                .sum::<f32>()
                / n
        };
        let mean_t = mean(&t);
        let (mut pu, mut pv) = (ub, vb);
        let mut window = vec![0f32; side * side];
        for _ in 0..12 {
            let mut k = 0;
            for dy in -r - 1..=r + 1 {
                for dx in -r - 1..=r + 1 {
                    window[k] = b.sample(pu + dx as f64, pv + dy as f64)?;
                    k += 1;
                }
            }
            let mean_w = mean(&window);
            // The Jacobian of a zero-mean patch is the zero-mean gradient: the part of the
            // motion along the patch's mean slope is absorbed by the brightness offset.
            let g: Vec<(usize, f64, f64)> = (0..side * side)
                .filter(|&k| inner(k))
                .map(|k| {
                    let ((tx, ty), (wx, wy)) = (grad(&t, k), grad(&window, k));
                    (k, 0.5 * (tx + wx) as f64, 0.5 * (ty + wy) as f64)
                })
                .collect();
            let (mx, my) = (
                g.iter().map(|x| x.1).sum::<f64>() / n as f64,
                g.iter().map(|x| x.2).sum::<f64>() / n as f64,
            );
            let (mut hxx, mut hxy, mut hyy, mut bx, mut by) = (0f64, 0f64, 0f64, 0f64, 0f64);
            for &(k, gx, gy) in &g {
                let (gx, gy) = (gx - mx, gy - my);
                let e = ((window[k] - mean_w) - (t[k] - mean_t)) as f64;
                hxx += gx * gx;
                hxy += gx * gy;
                hyy += gy * gy;
                bx += gx * e;
                by += gy * e;
            }
            let det = hxx * hyy - hxy * hxy;
            if det.abs() < 1e-9 {
                return None;
            }
            let du = (hyy * bx - hxy * by) / det;
            let dv = (hxx * by - hxy * bx) / det;
            pu -= du;
            pv -= dv;
            if !(pu.is_finite() && pv.is_finite()) || (pu - ub).abs() > 2.0 || (pv - vb).abs() > 2.0
            {
                return None;
            }
            if du * du + dv * dv < 1e-6 {
                break;
            }
        }
        Some((pu, pv))
    }

    /// Corner strength at (u, v): the smaller eigenvalue of the structure tensor over the patch
    /// of radius `r`, per pixel (Shi and Tomasi's "good features to track").
    fn corner(&self, u: i32, v: i32, r: i32) -> Option<f64> {
        let (w, h) = (self.gray.width() as i32, self.gray.height() as i32);
        if u - r - 1 < 0 || v - r - 1 < 0 || u + r + 1 >= w || v + r + 1 >= h {
            return None;
        }
        let (mut hxx, mut hxy, mut hyy) = (0f64, 0f64, 0f64);
        for y in v - r..=v + r {
            for x in u - r..=u + r {
                let gx = 0.5 * (self.at(x + 1, y) - self.at(x - 1, y)) as f64;
                let gy = 0.5 * (self.at(x, y + 1) - self.at(x, y - 1)) as f64;
                hxx += gx * gx;
                hxy += gx * gy;
                hyy += gy * gy;
            }
        }
        let tr = hxx + hyy;
        let min_eig = 0.5 * (tr - (tr * tr - 4.0 * (hxx * hyy - hxy * hxy)).max(0.0).sqrt());
        Some(min_eig / ((2 * r + 1) * (2 * r + 1)) as f64)
    }

    /// The zero-mean patch of radius `r` at (u, v) and its norm; `None` near the border.
    fn patch(&self, u: i32, v: i32, r: i32) -> Option<(Vec<f32>, f32)> {
        let (w, h) = (self.gray.width() as i32, self.gray.height() as i32);
        if u - r < 0 || v - r < 0 || u + r >= w || v + r >= h {
            return None;
        }
        let mut p = Vec::with_capacity(((2 * r + 1) * (2 * r + 1)) as usize);
        for y in v - r..=v + r {
            for x in u - r..=u + r {
                p.push(self.at(x, y));
            }
        }
        let mean = p.iter().sum::<f32>() / p.len() as f32;
        let mut norm = 0.0;
        for x in &mut p {
            *x -= mean;
            norm += *x * *x;
        }
        Some((p, norm.sqrt()))
    }
}

/// One pair of frames of a track.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct PairMotion {
    pub from_frame: u64,
    pub to_frame: u64,
    /// Points followed and fitted.
    pub points: usize,
    /// RMS residual of the best similarity, in face widths.
    pub gain: f64,
    /// RMS residual of the best homography, in face widths.
    pub parallax: f64,
}

/// Points of `a`'s face followed into `b`: (position in a, position in b), frame coordinates.
pub fn follow(a: &FacePatch, b: &FacePatch, cfg: &MotionConfig) -> Vec<(Point, Point)> {
    let (ca, cb) = (a.face.center(), b.face.center());
    let zoom = b.face.width() / a.face.width();
    let g = cfg.grid.clamp(2, 32);
    let r = cfg.patch.clamp(1, 16);
    let s = cfg.search.clamp(1, 32);
    // Detector boxes jitter by several pixels from frame to frame: first find where the face's
    // centre block went (a wide, coarse search), then search each point around that.
    let (uca, vca) = a.to_patch(ca);
    let (ucb, vcb) = b.to_patch(cb);
    let block = ((a.face.width() * a.scale.0) * 0.3).round() as i32;
    let Some((ou, ov)) = coarse_offset(
        a,
        b,
        (uca.round() as i32, vca.round() as i32),
        (ucb.round() as i32, vcb.round() as i32),
        block.clamp(4, 64),
        (3 * s).min(48),
    ) else {
        return Vec::new();
    };
    let shift = Point {
        x: ou as f64 / b.scale.0,
        y: ov as f64 / b.scale.1,
    };
    let mut out = Vec::with_capacity(g * g);
    // The inner 70% of the box: the face, not the background at its edges; one point per cell
    // of a g x g grid over it, where the face has the most 2-D structure.
    let (x0, y0) = a.to_patch(Point {
        x: a.face.left + 0.15 * a.face.width(),
        y: a.face.top + 0.15 * a.face.height(),
    });
    let (x1, y1) = a.to_patch(Point {
        x: a.face.left + 0.85 * a.face.width(),
        y: a.face.top + 0.85 * a.face.height(),
    });
    for j in 0..g {
        for i in 0..g {
            let cell = |lo: f64, hi: f64, k: usize| {
                let step = (hi - lo) / g as f64;
                (
                    (lo + step * k as f64).round() as i32,
                    (lo + step * (k + 1) as f64).round() as i32,
                )
            };
            let ((cu0, cu1), (cv0, cv1)) = (cell(x0, x1, i), cell(y0, y1, j));
            let mut strongest = (cfg.min_corner, None);
            for v in cv0..cv1 {
                for u in cu0..cu1 {
                    if let Some(c) = a.corner(u, v, r) {
                        if c > strongest.0 {
                            strongest = (c, Some((u, v)));
                        }
                    }
                }
            }
            let Some((ua, va)) = strongest.1 else {
                continue;
            };
            let Some((ta, na)) = a.patch(ua, va, r) else {
                continue;
            };
            let pa = a.to_frame(ua as f64, va as f64);
            // Where the box's motion puts it in b.
            let predicted = Point {
                x: cb.x + shift.x + (pa.x - ca.x) * zoom,
                y: cb.y + shift.y + (pa.y - ca.y) * zoom,
            };
            let (ub, vb) = b.to_patch(predicted);
            let (ub, vb) = (ub.round() as i32, vb.round() as i32);
            let mut best = (f32::NEG_INFINITY, 0i32, 0i32);
            for dv in -s..=s {
                for du in -s..=s {
                    let Some((tb, nb)) = b.patch(ub + du, vb + dv, r) else {
                        continue;
                    };
                    if nb <= 0.0 {
                        continue;
                    }
                    let dot: f32 = ta.iter().zip(&tb).map(|(x, y)| x * y).sum();
                    let c = dot / (na * nb);
                    if c > best.0 {
                        best = (c, du, dv);
                    }
                }
            }
            let (c, du, dv) = best;
            // A peak on the window's edge may lie outside it: not a match.
            if c < cfg.min_correlation || du.abs() == s || dv.abs() == s {
                continue;
            }
            let Some((u, v)) = a.refine(ua, va, b, (ub + du) as f64, (vb + dv) as f64, r) else {
                continue;
            };
            let pb = b.to_frame(u, v);
            out.push((pa, pb));
        }
    }
    out
}

/// Where the block of radius `r` at `at_a` in `a` lies in `b`, as an offset from `at_b` within
/// `range` pixels: zero-mean correlation over every other pixel of the block, searched at every
/// other offset and then refined to the pixel. `None` when the block is not inside both or does
/// not correlate.
fn coarse_offset(
    a: &FacePatch,
    b: &FacePatch,
    at_a: (i32, i32),
    at_b: (i32, i32),
    r: i32,
    range: i32,
) -> Option<(i32, i32)> {
    let inside = |p: &FacePatch, u: i32, v: i32| {
        u - r >= 0 && v - r >= 0 && u + r < p.gray.width() as i32 && v + r < p.gray.height() as i32
    };
    if !inside(a, at_a.0, at_a.1) {
        return None;
    }
    let offsets: Vec<(i32, i32)> = (-r..=r)
        .step_by(2)
        .flat_map(|y| (-r..=r).step_by(2).map(move |x| (x, y)))
        .collect();
    let zero_mean = |p: &FacePatch, u: i32, v: i32| {
        let vals: Vec<f32> = offsets.iter().map(|&(x, y)| p.at(u + x, v + y)).collect();
        let mean = vals.iter().sum::<f32>() / vals.len() as f32;
        let vals: Vec<f32> = vals.iter().map(|x| x - mean).collect();
        let norm = vals.iter().map(|x| x * x).sum::<f32>().sqrt();
        (vals, norm)
    };
    let (ta, na) = zero_mean(a, at_a.0, at_a.1);
    if na <= 0.0 {
        return None;
    }
    let score = |du: i32, dv: i32| -> f32 {
        let (u, v) = (at_b.0 + du, at_b.1 + dv);
        if !inside(b, u, v) {
            return f32::NEG_INFINITY;
        }
        let (tb, nb) = zero_mean(b, u, v);
        if nb <= 0.0 {
            return f32::NEG_INFINITY;
        }
        ta.iter().zip(&tb).map(|(x, y)| x * y).sum::<f32>() / (na * nb)
    };
    let mut best = (f32::NEG_INFINITY, 0, 0);
    for dv in (-range..=range).step_by(2) {
        for du in (-range..=range).step_by(2) {
            let c = score(du, dv);
            if c > best.0 {
                best = (c, du, dv);
            }
        }
    }
    let (_, cu, cv) = best;
    for dv in cv - 1..=cv + 1 {
        for du in cu - 1..=cu + 1 {
            let c = score(du, dv);
            if c > best.0 {
                best = (c, du, dv);
            }
        }
    }
    (best.0 >= 0.5).then_some((best.1, best.2))
}

/// A 3x3 homography as row-major coefficients.
pub type Homography = [f64; 9];

/// `h` applied to `p` (the same projection the attack renderer uses).
fn project(h: &Homography, p: Point) -> Point {
    let (x, y) = crate::attack::apply(h, p.x, p.y);
    Point { x, y }
}

/// Hartley's normalisation: centroid to the origin, mean distance sqrt(2).
fn normaliser(pts: &[Point]) -> Matrix3<f64> {
    let n = pts.len().max(1) as f64;
    let (cx, cy) = (
        pts.iter().map(|p| p.x).sum::<f64>() / n,
        pts.iter().map(|p| p.y).sum::<f64>() / n,
    );
    let d = pts
        .iter()
        .map(|p| ((p.x - cx).powi(2) + (p.y - cy).powi(2)).sqrt())
        .sum::<f64>()
        / n;
    let s = if d > 0.0 { 2f64.sqrt() / d } else { 1.0 };
    Matrix3::new(s, 0.0, -s * cx, 0.0, s, -s * cy, 0.0, 0.0, 1.0)
}

/// The least-squares (algebraic, normalised DLT) homography taking `pairs[i].0` to
/// `pairs[i].1`; `None` for fewer than four pairs or a degenerate configuration.
pub fn fit_homography(pairs: &[(Point, Point)]) -> Option<Homography> {
    if pairs.len() < 4 {
        return None;
    }
    let from: Vec<Point> = pairs.iter().map(|p| p.0).collect();
    let to: Vec<Point> = pairs.iter().map(|p| p.1).collect();
    let (tf, tt) = (normaliser(&from), normaliser(&to));
    let mut a = DMatrix::<f64>::zeros(2 * pairs.len(), 9);
    for (k, (f, t)) in from.iter().zip(&to).enumerate() {
        let (x, y) = (tf[(0, 0)] * f.x + tf[(0, 2)], tf[(1, 1)] * f.y + tf[(1, 2)]);
        let (u, v) = (tt[(0, 0)] * t.x + tt[(0, 2)], tt[(1, 1)] * t.y + tt[(1, 2)]);
        let r = 2 * k;
        for (c, val) in [-x, -y, -1.0, 0.0, 0.0, 0.0, u * x, u * y, u]
            .into_iter()
            .enumerate()
        {
            a[(r, c)] = val;
        }
        for (c, val) in [0.0, 0.0, 0.0, -x, -y, -1.0, v * x, v * y, v]
            .into_iter()
            .enumerate()
        {
            a[(r + 1, c)] = val;
        }
    }
    // The null vector of A is the eigenvector of AᵀA with the smallest eigenvalue.
    let ata = a.transpose() * &a;
    let eig = nalgebra::SymmetricEigen::new(ata);
    let (k, _) = eig
        .eigenvalues
        .iter()
        .enumerate()
        .min_by(|x, y| x.1.total_cmp(y.1))?;
    let v = eig.eigenvectors.column(k);
    let hn = Matrix3::new(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]);
    let h = tt.try_inverse()? * hn * tf;
    let scale = h[(2, 2)];
    if !scale.is_finite() || scale.abs() < 1e-12 {
        return None;
    }
    let h = h / scale;
    let out = [
        h[(0, 0)],
        h[(0, 1)],
        h[(0, 2)],
        h[(1, 0)],
        h[(1, 1)],
        h[(1, 2)],
        h[(2, 0)],
        h[(2, 1)],
        h[(2, 2)],
    ];
    out.iter().all(|v| v.is_finite()).then_some(out)
}

fn rms(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values {
        sum += v * v;
        n += 1;
    }
    if n == 0 {
        f64::NAN
    } else {
        (sum / n as f64).sqrt()
    }
}

fn dist(a: Point, b: Point) -> f64 {
    ((a.x - b.x).powi(2) + (a.y - b.y).powi(2)).sqrt()
}

/// Measures one pair of frames: points followed from `a` to `b`, the worst tenth by homography
/// residual dropped as mismatches, both models fitted to the rest. `None` when too few points
/// could be followed (a face without texture, a blurred frame, a jump the search cannot reach).
pub fn measure_pair(a: &FacePatch, b: &FacePatch, cfg: &MotionConfig) -> Option<PairMotion> {
    let mut pairs = follow(a, b, cfg);
    if pairs.len() < cfg.min_points.max(8) {
        return None;
    }
    let h = fit_homography(&pairs)?;
    let mut by_residual: Vec<(f64, (Point, Point))> = pairs
        .iter()
        .map(|&(p, q)| (dist(project(&h, p), q), (p, q)))
        .collect();
    by_residual.sort_by(|x, y| x.0.total_cmp(&y.0));
    let keep = by_residual.len() - by_residual.len() / 10;
    pairs = by_residual.into_iter().take(keep).map(|x| x.1).collect();
    let h = fit_homography(&pairs)?;
    let from: Vec<Point> = pairs.iter().map(|p| p.0).collect();
    let to: Vec<Point> = pairs.iter().map(|p| p.1).collect();
    let s = similarity(&from, &to);
    let width = a.face.width();
    let gain = rms(pairs.iter().map(|&(p, q)| dist(s.apply(p), q))) / width;
    let parallax = rms(pairs.iter().map(|&(p, q)| dist(project(&h, p), q))) / width;
    (gain.is_finite() && parallax.is_finite()).then_some(PairMotion {
        from_frame: a.frame,
        to_frame: b.frame,
        points: pairs.len(),
        gain,
        parallax,
    })
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The cue over a track's pairs.
pub fn judge(pairs: &[PairMotion], cfg: &MotionConfig) -> MotionCue {
    let moving: Vec<&PairMotion> = pairs.iter().filter(|p| p.gain >= cfg.min_gain).collect();
    let ratio = median(moving.iter().map(|p| p.parallax / p.gain).collect());
    let parallax = median(moving.iter().map(|p| p.parallax).collect());
    let enough = moving.len() >= cfg.min_pairs.max(1);
    let verdict = match (ratio, parallax) {
        (Some(r), _) if enough && r <= cfg.planar_ratio => MotionVerdict::Planar,
        (Some(r), Some(p)) if enough && r >= cfg.relief_ratio && p >= cfg.min_parallax => {
            MotionVerdict::Relief
        }
        _ => MotionVerdict::Inconclusive,
    };
    MotionCue {
        verdict,
        pairs: pairs.len(),
        moving_pairs: moving.len(),
        ratio,
        median_gain: median(moving.iter().map(|p| p.gain).collect()),
        median_parallax: parallax,
    }
}

/// A track's motion evidence as frames arrive: a patch taken every `step` frames, each paired
/// with the newest patch at least `lag` frames older (a longer baseline sees more out-of-plane
/// motion over the same matching noise), at most `max_pairs` pairs and `lag / step + 1`
/// patches kept.
pub struct MotionTrack {
    cfg: MotionConfig,
    patches: std::collections::VecDeque<FacePatch>,
    pairs: Vec<PairMotion>,
}

impl MotionTrack {
    pub fn new(cfg: MotionConfig) -> MotionTrack {
        MotionTrack {
            cfg,
            patches: std::collections::VecDeque::new(),
            pairs: Vec::new(),
        }
    }

    /// Whether frame `index` would be used (callers skip the work of a frame that would not).
    pub fn wants(&self, index: u64) -> bool {
        self.pairs.len() < self.cfg.max_pairs
            && self
                .patches
                .back()
                .is_none_or(|p| index >= p.frame + self.cfg.step.max(1))
    }

    /// Adds the face in `img` at frame `index`.
    pub fn add(&mut self, img: &RgbImage, face: &Rect, index: u64) {
        if !self.wants(index) {
            return;
        }
        let Some(patch) = FacePatch::new(img, face, index, &self.cfg) else {
            return;
        };
        let lag = self.cfg.lag.max(1);
        // Patches older than the newest one at least `lag` back are no longer needed.
        while self.patches.len() >= 2 && self.patches[1].frame + lag <= index {
            self.patches.pop_front();
        }
        if let Some(a) = self.patches.front().filter(|a| a.frame + lag <= index) {
            if let Some(m) = measure_pair(a, &patch, &self.cfg) {
                self.pairs.push(m);
            }
        }
        self.patches.push_back(patch);
        let most = (lag / self.cfg.step.max(1)) as usize + 2;
        while self.patches.len() > most {
            self.patches.pop_front();
        }
    }

    pub fn pairs(&self) -> &[PairMotion] {
        &self.pairs
    }

    pub fn cue(&self) -> MotionCue {
        judge(&self.pairs, &self.cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attack::{apply, homography};
    use image::Rgb;
    use vision::rng::SplitMix;

    /// A textured "face": smooth random blobs, so block matching has something to follow.
    fn texture(w: u32, h: u32, seed: u64) -> RgbImage {
        let mut rng = SplitMix::new(seed);
        let blobs: Vec<(f64, f64, f64, f64)> = (0..160)
            .map(|_| {
                (
                    rng.next_f64() * w as f64,
                    rng.next_f64() * h as f64,
                    3.0 + rng.next_f64() * 8.0,
                    rng.next_f64() * 160.0 - 80.0,
                )
            })
            .collect();
        RgbImage::from_fn(w, h, |x, y| {
            let mut v = 128.0;
            for &(bx, by, r, a) in &blobs {
                let d2 = (x as f64 - bx).powi(2) + (y as f64 - by).powi(2);
                v += a * (-d2 / (2.0 * r * r)).exp();
            }
            let g = v.clamp(0.0, 255.0) as u8;
            Rgb([g, g, g])
        })
    }

    /// `src` seen through `h` (frame point → source point), bilinear.
    fn warp(src: &RgbImage, w: u32, h: u32, map: impl Fn(f64, f64) -> (f64, f64)) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let (u, v) = map(x as f64, y as f64);
            let (u0, v0) = (u.floor(), v.floor());
            if u0 < 0.0
                || v0 < 0.0
                || u0 + 1.0 >= src.width() as f64
                || v0 + 1.0 >= src.height() as f64
            {
                return Rgb([128, 128, 128]);
            }
            let (fu, fv) = (u - u0, v - v0);
            let p = |a: f64, b: f64| src.get_pixel(a as u32, b as u32)[0] as f64;
            let val = p(u0, v0) * (1.0 - fu) * (1.0 - fv)
                + p(u0 + 1.0, v0) * fu * (1.0 - fv)
                + p(u0, v0 + 1.0) * (1.0 - fu) * fv
                + p(u0 + 1.0, v0 + 1.0) * fu * fv;
            let g = val.round() as u8;
            Rgb([g, g, g])
        })
    }

    fn face() -> Rect {
        Rect {
            left: 60.0,
            top: 50.0,
            right: 160.0,
            bottom: 150.0,
        }
    }

    /// Frames of a textured plane turning about its vertical axis by `yaw(t)` degrees (pinhole
    /// camera, plane 4 focal lengths away): exactly a homography between any two frames.
    fn turning_plane(src: &RgbImage, yaw_deg: f64) -> RgbImage {
        let (cx, cy, f, z) = (110.0, 100.0, 300.0, 1200.0);
        let t = yaw_deg.to_radians();
        // Where the plane's corners project.
        let corners = [(0.0, 0.0), (220.0, 0.0), (220.0, 200.0), (0.0, 200.0)];
        let to: [(f64, f64); 4] = corners.map(|(x, y)| {
            let (px, py) = ((x - 110.0) * 4.0, (y - 100.0) * 4.0);
            let (xr, zr) = (px * t.cos(), z + px * t.sin());
            (cx + f * xr / zr, cy + f * py / zr)
        });
        let h = homography(&to, &corners).unwrap();
        warp(src, 220, 200, |x, y| apply(&h, x, y))
    }

    /// A "head": the same texture, but its centre disc stands out of the plane (a nose-like
    /// bump), so turning moves it sideways more than the rest.
    fn turning_relief(src: &RgbImage, yaw_deg: f64) -> RgbImage {
        let t = yaw_deg.to_radians();
        warp(src, 220, 200, |x, y| {
            let (dx, dy) = (x - 110.0, y - 100.0);
            let r2 = (dx * dx + dy * dy) / (45.0f64 * 45.0);
            let depth = 40.0 * (-r2).exp();
            // Orthographic turn: x' = x cos t + depth sin t; invert approximately.
            (110.0 + (dx - depth * t.sin()) / t.cos(), y)
        })
    }

    fn track_of(frames: &[RgbImage], cfg: MotionConfig) -> MotionCue {
        let mut m = MotionTrack::new(MotionConfig {
            lag: 2,
            step: 1,
            ..cfg
        });
        for (i, f) in frames.iter().enumerate() {
            m.add(f, &face(), i as u64);
        }
        m.cue()
    }

    #[test]
    fn homography_fit_recovers_a_known_homography() {
        let h = homography(
            &[(0.0, 0.0), (100.0, 0.0), (100.0, 100.0), (0.0, 100.0)],
            &[(5.0, 3.0), (110.0, -4.0), (96.0, 108.0), (-2.0, 95.0)],
        )
        .unwrap();
        let pairs: Vec<(Point, Point)> = (0..25)
            .map(|k| {
                let (x, y) = ((k % 5) as f64 * 25.0, (k / 5) as f64 * 25.0);
                let (u, v) = apply(&h, x, y);
                (Point { x, y }, Point { x: u, y: v })
            })
            .collect();
        let fit = fit_homography(&pairs).unwrap();
        for (p, q) in &pairs {
            assert!(dist(project(&fit, *p), *q) < 1e-6);
        }
        assert!(fit_homography(&pairs[..3]).is_none());
    }

    #[test]
    fn a_turning_plane_is_planar_and_a_turning_relief_is_not() {
        let src = texture(220, 200, 7);
        let cfg = MotionConfig::default();
        let yaw = [0.0, 4.0, 8.0, 12.0, 16.0, 20.0, 24.0];
        let plane: Vec<RgbImage> = yaw.iter().map(|&a| turning_plane(&src, a)).collect();
        let cue = track_of(&plane, cfg);
        assert_eq!(cue.verdict, MotionVerdict::Planar, "{cue:?}");
        let head: Vec<RgbImage> = yaw.iter().map(|&a| turning_relief(&src, a)).collect();
        let cue = track_of(&head, cfg);
        assert_eq!(cue.verdict, MotionVerdict::Relief, "{cue:?}");
    }

    #[test]
    fn a_still_or_sliding_face_is_inconclusive() {
        let src = texture(220, 200, 9);
        let cfg = MotionConfig::default();
        let still: Vec<RgbImage> = (0..5).map(|_| src.clone()).collect();
        assert_eq!(track_of(&still, cfg).verdict, MotionVerdict::Inconclusive);
        // A sideways slide is a similarity: no out-of-plane motion, no evidence either way.
        let slide: Vec<RgbImage> = (0..5)
            .map(|k| warp(&src, 220, 200, |x, y| (x - k as f64 * 1.5, y)))
            .collect();
        let cue = track_of(&slide, cfg);
        assert_eq!(cue.verdict, MotionVerdict::Inconclusive, "{cue:?}");
    }

    #[test]
    fn judging_needs_motion_enough_pairs_and_real_parallax() {
        let cfg = MotionConfig::default();
        let pair = |gain: f64, parallax: f64| PairMotion {
            from_frame: 0,
            to_frame: 8,
            points: 40,
            gain,
            parallax,
        };
        let planar = [pair(0.01, 0.002), pair(0.008, 0.002), pair(0.001, 0.001)];
        let cue = judge(&planar, &cfg);
        assert_eq!(cue.verdict, MotionVerdict::Planar);
        assert_eq!((cue.pairs, cue.moving_pairs), (3, 2));
        let relief = [pair(0.01, 0.008), pair(0.012, 0.009)];
        assert_eq!(judge(&relief, &cfg).verdict, MotionVerdict::Relief);
        // A high ratio of two small numbers is noise, not depth.
        let faint = [pair(0.005, 0.003), pair(0.005, 0.003)];
        assert_eq!(judge(&faint, &cfg).verdict, MotionVerdict::Inconclusive);
        // One moving pair is not enough; still pairs say nothing.
        assert_eq!(
            judge(&planar[..1], &cfg).verdict,
            MotionVerdict::Inconclusive
        );
        let still = [pair(0.0005, 0.0004); 6];
        assert_eq!(judge(&still, &cfg).verdict, MotionVerdict::Inconclusive);
        // In between the two ratios: abstain.
        let between = [pair(0.01, 0.005), pair(0.01, 0.005)];
        assert_eq!(judge(&between, &cfg).verdict, MotionVerdict::Inconclusive);
    }

    #[test]
    fn textureless_or_tiny_faces_give_no_pairs() {
        let flat = RgbImage::from_pixel(220, 200, Rgb([90, 90, 90]));
        let mut m = MotionTrack::new(MotionConfig {
            lag: 1,
            step: 1,
            ..Default::default()
        });
        m.add(&flat, &face(), 0);
        m.add(&flat, &face(), 1);
        assert!(m.pairs().is_empty());
        let tiny = Rect {
            left: 1.0,
            top: 1.0,
            right: 4.0,
            bottom: 4.0,
        };
        assert!(FacePatch::new(&flat, &tiny, 0, &MotionConfig::default()).is_none());
        let outside = Rect {
            left: 1e9,
            top: 1e9,
            right: 1e9 + 50.0,
            bottom: 1e9 + 50.0,
        };
        assert!(FacePatch::new(&flat, &outside, 0, &MotionConfig::default()).is_none());
        assert_eq!(
            judge(&[], &MotionConfig::default()).verdict,
            MotionVerdict::Inconclusive
        );
    }
}
