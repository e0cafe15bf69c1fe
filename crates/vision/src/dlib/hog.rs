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

/// An RGB image as three f32 planes holding its 0-255 values (exactly): the form in which the
/// pyramid and the FHOG features run. Gradients and their squared lengths stay exact in f32
/// (|g|² ≤ 130050 < 2²⁴), so features match those computed from bytes.
struct Planar {
    w: usize,
    h: usize,
    planes: [Vec<f32>; 3],
}

impl Planar {
    fn from_rgb(img: &RgbImage) -> Self {
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
fn resize_planar(src: &Planar, dw: usize, dh: usize) -> Planar {
    resize_planar_with(src, dw, dh, true)
}

/// `resize_planar`, with or without the AVX-512 gather body (`gather` lets tests compare both).
#[inline(always)]
fn resize_planar_with(src: &Planar, dw: usize, dh: usize, gather: bool) -> Planar {
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
struct Fhog {
    data: Vec<f32>,
    nr: usize,
    nc: usize,
    stride: usize,
}

impl Fhog {
    fn plane(&self, p: usize) -> &[f32] {
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
fn orientation(gx: f32, gy: f32) -> usize {
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
fn fhog_body(img: &Planar, cell: usize, rows_pad: usize, cols_pad: usize) -> Option<Fhog> {
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
