//! dlib's HOG frontal face detector (`get_frontal_face_detector`): five 80×80 FHOG filters scanned
//! over a 5/6 image pyramid. Its weights exist only as compressed base64 text inside dlib's source
//! (`dlib/image_processing/frontal_face_detector.h`), which the pack fetches from the `dlib` sdist.
//!
//! The port follows dlib 20.0.1 operation by operation (`fhog.h`, `scan_fhog_pyramid.h`,
//! `spatial_filtering.h`, `object_detector.h`), including which float expression each column
//! takes (dlib's 8-lane SIMD body and its scalar tail round differently), so features and scores
//! match dlib's to float rounding of the filter decomposition (see the parity tests).

use base64::Engine;
use image::RgbImage;

use crate::detect::{greedy_nms, rect_down_upsampling, DetectOptions, Detection};
use crate::dlib::resize::{row_walk, ColumnWalk};
use crate::geometry::Rect;
use crate::VisionError;

use super::compress::decompress_kernel_1ea;
use super::serial::Reader;

mod fhog;
use fhog::*;

fn fmt_err(msg: impl Into<String>) -> VisionError {
    VisionError::ModelFormat(msg.into())
}

/// The serialized detector (dlib's `serialize(object_detector)` bytes) from the text of
/// `frontal_face_detector.h`: the string literals streamed into `sout` before the base64 decode.
pub fn serialized_from_header(header: &str) -> Result<Vec<u8>, VisionError> {
    let start = header
        .rfind("get_serialized_frontal_faces()")
        .ok_or_else(|| fmt_err("frontal_face_detector.h: no get_serialized_frontal_faces"))?;
    let mut text = String::new();
    for line in header[start..].lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("sout << \"") {
            let lit = rest
                .strip_suffix("\";")
                .ok_or_else(|| fmt_err("frontal_face_detector.h: unexpected literal"))?;
            text.push_str(lit);
        } else if !text.is_empty() && line.starts_with("base64_coder.decode") {
            break;
        }
    }
    if text.is_empty() {
        return Err(fmt_err("frontal_face_detector.h: no detector data"));
    }
    let compressed = base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map_err(|e| fmt_err(format!("frontal_face_detector.h: base64: {e}")))?;
    decompress_kernel_1ea(&compressed, 16 << 20)
}

const PLANES: usize = 31;

/// One rank-1 term of a plane's filter: `col · rowᵀ`.
struct Separable {
    row: Vec<f32>,
    col: Vec<f32>,
}

/// One of the detector's filters (front, left, right, front rotated left/right).
struct HogFilter {
    /// dlib's `w(num_dimensions)`: the score a window must reach.
    threshold: f64,
    /// Per FHOG plane, the rank-1 terms dlib's `build_fhog_filterbank` keeps.
    planes: Vec<Vec<Separable>>,
}

pub struct HogDetector {
    cell: usize,
    /// FHOG window of the filters, in cells (10 × 10 for 80 × 80 pixels).
    filter_rows: usize,
    filter_cols: usize,
    window: f64,
    min_layer_w: i64,
    min_layer_h: i64,
    max_levels: usize,
    iou: f64,
    covered: f64,
    filters: Vec<HogFilter>,
}

/// dlib's `image_to_fhog` for one point (integer division truncates toward zero, as in C++).
fn image_to_fhog(p: (i64, i64), cell: i64) -> (i64, i64) {
    ((p.0 - 1) / cell - 1, (p.1 - 1) / cell - 1)
}

impl HogDetector {
    /// Parses dlib's serialized `object_detector<scan_fhog_pyramid<pyramid_down<6>>>`.
    pub fn parse(bytes: &[u8]) -> Result<Self, VisionError> {
        let mut r = Reader::new(bytes);
        r.expect_int(2, "object_detector version")?;
        r.expect_int(1, "scan_fhog_pyramid version")?;
        // The scanner's cached feature pyramid: always empty in a saved detector.
        r.expect_int(0, "feature pyramid max size")?;
        r.expect_int(0, "feature pyramid size")?;
        let cell = r.count(64)?;
        let padding = r.count(64)?;
        let ww = r.count(4096)?;
        let wh = r.count(4096)?;
        let max_levels = r.count(1 << 20)?;
        let min_layer_w = r.count(1 << 20)? as i64;
        let min_layer_h = r.count(1 << 20)? as i64;
        let _nuclear_norm = r.float()?;
        let dims = r.count(1 << 24)?;
        if cell < 2 || ww != wh || ww < cell {
            return Err(fmt_err(format!(
                "HOG detector: cell {cell}, window {ww}x{wh}"
            )));
        }
        // compute_fhog_window_size: the window mapped to FHOG cells, grown by the padding.
        let (half_w, half_h) = (ww as i64 / 2, wh as i64 / 2);
        let tl = image_to_fhog((-half_w, -half_h), cell as i64);
        let br = image_to_fhog(
            (ww as i64 - half_w - 1, wh as i64 - half_h - 1),
            cell as i64,
        );
        let filter_cols = (br.0 - tl.0 + 1) as usize + 2 * padding;
        let filter_rows = (br.1 - tl.1 + 1) as usize + 2 * padding;
        if padding != 0 || dims != PLANES * filter_rows * filter_cols {
            return Err(fmt_err(format!(
                "HOG detector: {dims} dimensions, padding {padding} (want {} and 0)",
                PLANES * filter_rows * filter_cols
            )));
        }
        let iou = r.float()?;
        let covered = r.float()?;
        let n = r.count(64)?;
        let mut filters = Vec::with_capacity(n);
        for _ in 0..n {
            let w = r.matrix_f64()?;
            if w.len() != dims + 1 {
                return Err(fmt_err(format!("HOG filter of {} weights", w.len())));
            }
            filters.push(build_filter(&w, filter_rows, filter_cols)?);
        }
        if filters.is_empty() || !r.at_end() {
            return Err(fmt_err("HOG detector: no filters or trailing bytes"));
        }
        Ok(HogDetector {
            cell,
            filter_rows,
            filter_cols,
            window: ww as f64,
            min_layer_w,
            min_layer_h,
            max_levels,
            iou,
            covered,
            filters,
        })
    }

    /// Number of pyramid levels dlib scans for an image of this size.
    fn level_count(&self, w: i64, h: i64) -> usize {
        let (mut l, mut t, mut r, mut b) = (0.0f64, 0.0f64, (w - 1) as f64, (h - 1) as f64);
        let mut levels = 0;
        loop {
            let down = |v: f64| ((v - 0.3) * (5.0 / 6.0)).round();
            (l, t, r, b) = (down(l), down(t), down(r), down(b));
            levels += 1;
            let ok =
                r - l + 1.0 >= self.min_layer_w as f64 && b - t + 1.0 >= self.min_layer_h as f64;
            if !ok || levels >= self.max_levels {
                return levels;
            }
        }
    }

    /// Face boxes in image coordinates, best first, after dlib's non-maximum suppression.
    /// `opts.threshold` is dlib's `adjust_threshold`.
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
        let n = self.level_count(work.width() as i64, work.height() as i64);
        let wanted = opts.pyramid_levels(n, self.window);
        let mut per_filter: Vec<Vec<(f32, Rect)>> = vec![Vec::new(); self.filters.len()];
        let mut lv = Planar::from_rgb(work);
        let mut scratch = Scratch::default();
        for level in 0..=wanted.last().copied().unwrap_or(0) {
            if level > 0 {
                lv = pyramid_down6(&lv, 5 * lv.w / 6, 5 * lv.h / 6);
            }
            if !wanted.contains(&level) {
                continue;
            }
            let lv = &lv;
            let Some(feats) = fhog(lv, self.cell, self.filter_rows, self.filter_cols) else {
                continue;
            };
            for (f, dets) in self.filters.iter().zip(per_filter.iter_mut()) {
                let thresh = f.threshold + f64::from(opts.threshold);
                scan(f, &feats, &mut scratch);
                self.collect(&scratch.saliency, &feats, level, thresh, dets);
            }
        }
        // Each filter's detections sorted by score, then all of them (object_detector.h).
        let mut all: Vec<Detection> = Vec::new();
        for (f, dets) in self.filters.iter().zip(per_filter) {
            let mut dets = dets;
            dets.sort_by(|a, b| b.0.total_cmp(&a.0));
            all.extend(dets.into_iter().map(|(s, rect)| Detection {
                rect,
                score: (f64::from(s) - f.threshold) as f32,
                landmarks: None,
            }));
        }
        if self.filters.len() > 1 {
            all.sort_by(|a, b| b.score.total_cmp(&a.score));
        }
        let mut kept = greedy_nms(all, self.iou, self.covered);
        // Back to the caller's image, rounded once as dlib's drectangle → rectangle (lround).
        for d in kept.iter_mut() {
            d.rect = rect_down_upsampling(d.rect, opts.upsample, f64::round);
        }
        opts.retain_in_range(&mut kept);
        Ok(kept)
    }

    /// Windows whose score reaches `thresh`, as rectangles in the (upsampled) input image.
    fn collect(
        &self,
        saliency: &[f32],
        feats: &Fhog,
        level: usize,
        thresh: f64,
        out: &mut Vec<(f32, Rect)>,
    ) {
        let (fr, fc) = (self.filter_rows as i64, self.filter_cols as i64);
        let (nr, nc) = (feats.nr as i64, feats.nc as i64);
        let (r0, c0) = (fr / 2, fc / 2);
        let (r1, c1) = (nr - (fr - 1) / 2, nc - (fc - 1) / 2);
        let cell = self.cell as i64;
        // fhog_to_image with the filter size as padding, then to the cell's centre.
        let to_image = |v: i64, pad: i64| {
            let p = (v + 1 - (pad - 1) / 2) * cell + 1;
            p + if p >= 0 { cell / 2 } else { -(cell / 2) }
        };
        for r in r0..r1 {
            for c in c0..c1 {
                let s = saliency[r as usize * feats.stride + c as usize];
                if f64::from(s) < thresh {
                    continue;
                }
                // centered_rect(point(c, r), filter_cols, filter_rows)
                let (l, t) = (c - fc / 2, r - fr / 2);
                let corners = [
                    to_image(l, fc) as f64,
                    to_image(t, fr) as f64,
                    to_image(l + fc - 1, fc) as f64,
                    to_image(t + fr - 1, fr) as f64,
                ];
                let up = |mut v: f64| {
                    for _ in 0..level {
                        v = v * (6.0 / 5.0) + 0.3;
                    }
                    v.round()
                };
                out.push((
                    s,
                    Rect {
                        left: up(corners[0]),
                        top: up(corners[1]),
                        right: up(corners[2]),
                        bottom: up(corners[3]),
                    },
                ));
            }
        }
    }
}

/// `build_fhog_filterbank`: each plane's 10×10 filter split into rank-1 terms `σ uvᵀ` (SVD),
/// keeping singular values ≥ max(1e-4, 0.001 · largest), largest first, each term as
/// (`u√σ`, `v√σ`).
///
/// The SVD comes from the symmetric eigen-decomposition of FᵀF (v = eigenvector, σ = √λ,
/// u = Fv/σ): nalgebra 0.34's `svd` returned factors that do not reproduce some of these
/// exactly-rank-2 filters (errors up to 1.4e-2), so every split is checked against its filter.
fn build_filter(w: &[f64], rows: usize, cols: usize) -> Result<HogFilter, VisionError> {
    let size = rows * cols;
    let mut planes = Vec::with_capacity(PLANES);
    for p in 0..PLANES {
        let f = &w[p * size..(p + 1) * size];
        let m = nalgebra::DMatrix::from_row_slice(rows, cols, f);
        let eig = (m.transpose() * &m).symmetric_eigen();
        let sv: Vec<f64> = eig.eigenvalues.iter().map(|&l| l.max(0.0).sqrt()).collect();
        let mut order: Vec<usize> = (0..sv.len()).collect();
        order.sort_by(|&a, &b| sv[b].total_cmp(&sv[a]));
        let largest = sv.iter().copied().fold(0.0f64, f64::max);
        let thresh = f64::max(1e-4, largest * 0.001);
        let mut terms = Vec::new();
        let mut approx = nalgebra::DMatrix::<f64>::zeros(rows, cols);
        for j in order {
            if sv[j] < thresh {
                continue;
            }
            let v = eig.eigenvectors.column(j).into_owned();
            let u = (&m * &v) / sv[j];
            approx += &u * v.transpose() * sv[j];
            let s = sv[j].sqrt();
            terms.push(Separable {
                col: u.iter().map(|&x| (x * s) as f32).collect(),
                row: v.iter().map(|&x| (x * s) as f32).collect(),
            });
        }
        // What the split leaves out is at most the dropped singular values (each < thresh).
        let err = (approx - &m).abs().max();
        if !err.is_finite() || err > thresh * cols as f64 {
            return Err(fmt_err(format!(
                "HOG filter plane {p}: separable split off by {err:e}"
            )));
        }
        planes.push(terms);
    }
    Ok(HogFilter {
        threshold: w[PLANES * size],
        planes,
    })
}

/// `apply_filters_to_fhog`: the filter's response summed over the 31 planes, into `s.saliency`.
#[inline(always)]
fn scan_body(f: &HogFilter, feats: &Fhog, s: &mut Scratch) {
    let (nr, nc, stride) = (feats.nr, feats.nc, feats.stride);
    s.saliency.clear();
    s.saliency.resize(nr * stride, 0.0);
    // dlib switches to the full 10x10 filters when they are cheaper than the separable terms
    // (more than 103 terms); its frontal detector never does (54-66 terms), so only the
    // separable path, whose float order is matched and tested, exists here.
    for (p, terms) in f.planes.iter().enumerate() {
        for t in terms {
            let plane = feats.plane(p);
            filter_separable(plane, nr, nc, stride, t, &mut s.rows, &mut s.saliency);
        }
    }
}

#[derive(Default)]
struct Scratch {
    saliency: Vec<f32>,
    rows: Vec<f32>,
}

/// Defines `$name` to run `$body` (an `#[inline(always)]` function) as code compiled for AVX2
/// when the CPU has it, else as it is. The HOG loops are plain lane-parallel Rust; with AVX2 the
/// compiler vectorises the orientation, filter and resize loops 8 wide. Results are the same bits
/// either way: Rust never fuses a multiply and an add, and each IEEE operation rounds the same at
/// any vector width (`simd_twins_match_portable_code` checks it).
macro_rules! simd_twin {
    ($(#[$m:meta])* fn $name:ident / $at:ident($($a:ident: $t:ty),*) -> $r:ty = $body:path;) => {
        $(#[$m])*
        fn $name($($a: $t),*) -> $r {
            $at(SimdLevel::Avx512, $($a),*)
        }

        /// The same, compiled for at most `level` (less when the CPU lacks it).
        fn $at(level: SimdLevel, $($a: $t),*) -> $r {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
                unsafe fn avx512($($a: $t),*) -> $r {
                    $body($($a),*)
                }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($a: $t),*) -> $r {
                    $body($($a),*)
                }
                let level = level.min(SimdLevel::detect());
                if level == SimdLevel::Avx512 {
                    // SAFETY: `avx512` needs nothing beyond AVX-512 F/BW/VL and AVX2, which
                    // `SimdLevel::detect` found on this CPU; it only calls the safe `$body`.
                    return unsafe { avx512($($a),*) };
                }
                if level == SimdLevel::Avx2 {
                    // SAFETY: `avx2` needs nothing beyond AVX2, which `SimdLevel::detect` found
                    // on this CPU; it only calls the safe `$body`.
                    return unsafe { avx2($($a),*) };
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = level;
            $body($($a),*)
        }
    };
}

/// How wide the HOG loops may be compiled: an upper bound chosen by the caller (tests run each),
/// cut down to what the CPU has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum SimdLevel {
    Portable,
    Avx2,
    Avx512,
}

impl SimdLevel {
    /// The widest level this CPU runs (std caches the feature checks).
    fn detect() -> SimdLevel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx2")
            {
                return SimdLevel::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") {
                return SimdLevel::Avx2;
            }
        }
        SimdLevel::Portable
    }
}

simd_twin! {
    /// dlib's `extract_fhog_features`; see [`fhog_body`].
    fn fhog / fhog_at(img: &Planar, cell: usize, rows_pad: usize, cols_pad: usize) -> Option<Fhog> = fhog_body;
}

simd_twin! {
    /// One filter's response over a level; see [`scan_body`].
    fn scan / scan_at(f: &HogFilter, feats: &Fhog, s: &mut Scratch) -> () = scan_body;
}

simd_twin! {
    /// dlib's `pyramid_down<6>` step on an RGB image.
    fn pyramid_down6 / pyramid_down6_at(img: &Planar, w: usize, h: usize) -> Planar = resize_planar;
}

/// The end of dlib's 8-column SIMD body for columns `first..last`.
fn simd_end(first: usize, last: usize) -> usize {
    let mut c = first;
    while c + 7 < last {
        c += 8;
    }
    c
}

/// Columns at once, the way dlib's 8-lane SIMD body forms each one's filter sum: three
/// interleaved partial sums (taps 0,3,6,… / 1,4,7,… / 2,5,8,…), leftover taps added to the
/// first, then first + (second + third); `out[i]` gets (or gets added) the sum whose tap `n`
/// reads `src(n)[i]`. The same operations per column as dlib, so the same bits; written lane-
/// parallel so that the compiler vectorises it.
#[inline(always)]
fn taps_simd_order<'a>(src: impl Fn(usize) -> &'a [f32], f: &[f32], out: &mut [f32], add: bool) {
    // Groups of 16 columns, then of 8, as fixed-size lanes that the compiler vectorises. The
    // body's width is a multiple of 8 (`simd_end`), so nothing is left over.
    let i = taps_group::<16>(&src, f, out, add, 0);
    let i = taps_group::<8>(&src, f, out, add, i);
    debug_assert_eq!(
        i,
        out.len(),
        "dlib's SIMD body spans whole groups of 8 columns"
    );
}

/// `taps_simd_order` on whole groups of `L` columns from `start`; returns where it stopped.
#[inline(always)]
fn taps_group<'a, const L: usize>(
    src: &impl Fn(usize) -> &'a [f32],
    f: &[f32],
    out: &mut [f32],
    add: bool,
    start: usize,
) -> usize {
    let mut i = start;
    while i + L <= out.len() {
        let (mut t1, mut t2, mut t3) = ([0f32; L], [0f32; L], [0f32; L]);
        let mut n = 0;
        while n + 2 < f.len() {
            let (a, b, c) = (
                &src(n)[i..i + L],
                &src(n + 1)[i..i + L],
                &src(n + 2)[i..i + L],
            );
            let (fa, fb, fc) = (f[n], f[n + 1], f[n + 2]);
            for l in 0..L {
                t1[l] += a[l] * fa;
                t2[l] += b[l] * fb;
                t3[l] += c[l] * fc;
            }
            n += 3;
        }
        while n < f.len() {
            let (a, fa) = (&src(n)[i..i + L], f[n]);
            for l in 0..L {
                t1[l] += a[l] * fa;
            }
            n += 1;
        }
        let o = &mut out[i..i + L];
        for l in 0..L {
            let v = t1[l] + (t2[l] + t3[l]);
            o[l] = if add { v + o[l] } else { v };
        }
        i += L;
    }
    i
}

/// dlib's scalar tail (fewer than 8 columns): each column's taps summed in order. The planes
/// carry 8 spare columns, so a whole 8-lane group can be computed (and vectorised); only the
/// columns of the tail are stored.
#[inline(always)]
fn taps_sequential<'a>(src: impl Fn(usize) -> &'a [f32], f: &[f32], out: &mut [f32], add: bool) {
    let mut t = [0f32; 8];
    for (n, &fv) in f.iter().enumerate() {
        let x = &src(n)[..8];
        for l in 0..8 {
            t[l] += x[l] * fv;
        }
    }
    for (o, &v) in out.iter_mut().zip(&t) {
        *o = if add { v + *o } else { v };
    }
}

/// `float_spatially_filter_image_separable(..., add_to = true)` into `out` (which starts zeroed).
/// Images are `nr × nc` in rows of `stride ≥ nc + 8` floats.
#[inline(always)]
fn filter_separable(
    img: &[f32],
    nr: usize,
    nc: usize,
    stride: usize,
    term: &Separable,
    scratch: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (row, col) = (&term.row[..], &term.col[..]);
    let (first_row, first_col) = (col.len() / 2, row.len() / 2);
    if nr < col.len() || nc < row.len() || stride < nc + 8 {
        return;
    }
    let (last_row, last_col) = (nr - (col.len() - 1) / 2, nc - (row.len() - 1) / 2);
    let split = simd_end(first_col, last_col);
    scratch.resize(nr * stride, 0.0);
    for r in 0..nr {
        let src = &img[r * stride..(r + 1) * stride];
        let dst = &mut scratch[r * stride..(r + 1) * stride];
        taps_simd_order(|n| &src[n..], row, &mut dst[first_col..split], false);
        let tail = split - first_col;
        taps_sequential(|n| &src[tail + n..], row, &mut dst[split..last_col], false);
    }
    let scratch = &scratch[..];
    for r in first_row..last_row {
        let base = r - first_row;
        let o = &mut out[r * stride..(r + 1) * stride];
        taps_simd_order(
            |m| &scratch[(base + m) * stride + first_col..],
            col,
            &mut o[first_col..split],
            true,
        );
        taps_sequential(
            |m| &scratch[(base + m) * stride + split..],
            col,
            &mut o[split..last_col],
            true,
        );
    }
}

impl crate::detect::Detector for HogDetector {
    fn name(&self) -> &'static str {
        "hog"
    }

    fn detect(
        &self,
        img: &RgbImage,
        opts: &crate::detect::DetectOptions,
    ) -> Result<Vec<crate::detect::Detection>, VisionError> {
        HogDetector::detect(self, img, opts)
    }

    /// FHOG planes and the pyramid take ~25 MB per megapixel (measured: 151 MB at 2 MP, 351 MB
    /// at 10 MP): 16 MP keeps one image near 550 MB.
    fn max_working_pixels(&self) -> u64 {
        16_000_000
    }

    /// dlib's frontal detector scans an 80x80 window.
    fn smallest_face_px(&self) -> f64 {
        80.0
    }
}

#[cfg(test)]
#[path = "hog_tests.rs"]
mod tests;
