//! Face detection, whatever the detector: the [`Detection`] every detector returns, the
//! [`DetectOptions`] every detector takes (upsampling, face-size range, score threshold), dlib's
//! greedy non-maximum suppression, and the [`Detector`] trait that MMOD (`mmod`), dlib's HOG
//! (`dlib::hog`) and YuNet (`yunet`) implement.

use crate::dlib::resize::pyramid_up;
use crate::error::VisionError;
use crate::geometry::Rect;
use image::RgbImage;
use serde::Serialize;

/// A face detector: image in, boxes (and landmarks when it gives them) out, best first.
pub trait Detector: Send + Sync {
    /// "mmod", "hog", "yunet": for outputs and audit trails.
    fn name(&self) -> &'static str;

    fn detect(&self, img: &RgbImage, opts: &DetectOptions) -> Result<Vec<Detection>, VisionError>;

    /// Most pixels this detector may be given at once within the memory budget of one image
    /// (see `Pipeline::faces`): a larger frame is brought down to this before detection.
    fn max_working_pixels(&self) -> u64;

    /// The smallest face side it finds without upsampling, in pixels of the image it is given.
    fn smallest_face_px(&self) -> f64;
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Detection {
    pub rect: Rect,
    pub score: f32,
    /// Five landmarks when the detector gives them (YuNet); dlib packs predict them separately.
    pub landmarks: Option<[crate::geometry::Point; 5]>,
}

#[derive(Debug, Clone, Copy)]
pub struct DetectOptions {
    /// Double the image this many times before detecting (finds faces below 80 px).
    pub upsample: u32,
    /// Smallest and largest face side to search for, in pixels of the original image.
    pub min_face: Option<f64>,
    pub max_face: Option<f64>,
    /// Keep detections with score above this (dlib's adjust_threshold, default 0).
    pub threshold: f32,
}

impl Default for DetectOptions {
    fn default() -> Self {
        DetectOptions {
            upsample: 0,
            min_face: None,
            max_face: None,
            threshold: 0.0,
        }
    }
}

impl DetectOptions {
    /// dlib's `pyramid_up` applied `upsample` times (None when not upsampling).
    pub(crate) fn upsampled(&self, img: &RgbImage) -> Option<RgbImage> {
        let mut up: Option<RgbImage> = None;
        for _ in 0..self.upsample {
            up = Some(pyramid_up(up.as_ref().unwrap_or(img)));
        }
        up
    }

    /// Levels of a 5/6 pyramid of `n` levels whose `window`-pixel detection window covers faces
    /// in [min_face, max_face] (one level of slack each side); all levels when no range is given.
    pub(crate) fn pyramid_levels(&self, n: usize, window: f64) -> Vec<usize> {
        if self.min_face.is_none() && self.max_face.is_none() {
            return (0..n).collect();
        }
        let scale = 2f64.powi(self.upsample as i32);
        let lo = self.min_face.unwrap_or(0.0) * scale / 1.2;
        let hi = self.max_face.unwrap_or(f64::INFINITY) * scale * 1.2;
        (0..n)
            .filter(|&i| {
                let face = window * 1.2f64.powi(i as i32);
                face >= lo && face <= hi
            })
            .collect()
    }

    /// Drops boxes outside the face-size range (with 25% slack for box sizes off the grid).
    pub(crate) fn retain_in_range(&self, dets: &mut Vec<Detection>) {
        if let Some(max) = self.max_face {
            dets.retain(|d| d.rect.width() <= max * 1.25);
        }
        if let Some(min) = self.min_face {
            dets.retain(|d| d.rect.width() >= min / 1.25);
        }
    }
}

/// dlib's `test_box_overlap` on drectangles (inclusive areas; the "union" is the bounding box).
pub fn overlaps(a: &Rect, b: &Rect, iou: f64, covered: f64) -> bool {
    let inner = a.intersect(b).area();
    if inner == 0.0 {
        return false;
    }
    let outer = a.union(b).area();
    inner / outer > iou || inner / a.area() > covered || inner / b.area() > covered
}

/// dlib's greedy non-maximum suppression: best first, a box is kept unless it overlaps
/// (`test_box_overlap`) one already kept. `dets` must be sorted best first.
pub fn greedy_nms(dets: Vec<Detection>, iou: f64, covered: f64) -> Vec<Detection> {
    let mut kept: Vec<Detection> = Vec::new();
    for d in dets {
        if !kept
            .iter()
            .any(|k| overlaps(&d.rect, &k.rect, iou, covered))
        {
            kept.push(d);
        }
    }
    kept
}

/// A box found on an image upsampled `times` times by `pyramid_up`, mapped back with
/// `pyramid_down<2>::rect_down` (p/2 − (1.25, 0.75) per step) and rounded once by `round`.
pub fn rect_down_upsampling(r: Rect, times: u32, round: impl Fn(f64) -> f64) -> Rect {
    let down = |mut v: f64, o: f64| {
        for _ in 0..times {
            v = v / 2.0 - o;
        }
        round(v)
    };
    Rect {
        left: down(r.left, 1.25),
        top: down(r.top, 0.75),
        right: down(r.right, 1.25),
        bottom: down(r.bottom, 0.75),
    }
}
