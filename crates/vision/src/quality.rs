//! Face quality: measurements of a detected face that tell whether it is fit to compare.
//!
//! Two layers. `face_px`, `eye_distance_px` and `sharpness` are facegate's own quick hints.
//! [`OfiqAligned`] holds ISO/IEC 29794-5 style quality components, each a native value and a 0–100
//! score, **aligned with** BSI's OFIQ reference implementation (its definitions and mappings, 1.0.3)
//! **but not conformant**: OFIQ works from 98 landmarks (ADNet), a face-parsing network, a 3-D head
//! pose network and a 616x616 alignment; facegate has the pack's 5 landmarks and its own chip, so
//! the face region is an ellipse on the chip, the chin and mouth are placed from the alignment
//! template (estimates), and yaw/pitch come from the 5 points. Only the measures that need no
//! further model are here.

use crate::chip::{ARCFACE_TEMPLATE_112, DLIB_TEMPLATE_5};
use crate::geometry::{Point, Rect};
use crate::pack::AlignmentSpec;
use image::RgbImage;
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Quality {
    /// Face box side in pixels.
    pub face_px: f64,
    /// Distance between the eye centres in pixels (ICAO asks for >= 90 in passport photos).
    pub eye_distance_px: f64,
    /// Variance of the Laplacian of the aligned grey chip: low values mean blur.
    pub sharpness: f64,
    /// ISO/IEC 29794-5 style components, OFIQ-aligned (not conformant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ofiq: Option<OfiqAligned>,
}

/// One quality component: the native measurement and its 0–100 score (higher is better).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Component {
    pub native: f64,
    pub score: u8,
}

/// The OFIQ-aligned components of one face.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OfiqAligned {
    /// Eye-centre distance in pixels.
    pub inter_eye_distance: Component,
    /// Eye-to-chin distance over the image height (chin estimated from the landmarks).
    pub head_size: Component,
    /// Crop: room left of the face, right of it (in eye distances), above and below (in
    /// eye-to-chin distances), as OFIQ's four crop measures.
    pub leftward_crop: Component,
    pub rightward_crop: Component,
    pub margin_above: Component,
    pub margin_below: Component,
    /// Mean and variance of the face region's luminance (0–1).
    pub luminance_mean: Component,
    pub luminance_variance: Component,
    /// Entropy of the face region's luminance histogram, in bits.
    pub dynamic_range: Component,
    /// Fraction of the face region at luminance 0–25 / 247–255.
    pub under_exposure_prevention: Component,
    pub over_exposure_prevention: Component,
    /// Histogram intersection of the two cheek zones (1: lit alike).
    pub illumination_uniformity: Component,
    /// Head rotation in degrees: roll from the eye line; yaw and pitch estimated from the 5
    /// landmarks (the nose's offset from the eye midpoint against the template's).
    pub head_pose_roll: Component,
    pub head_pose_yaw: Component,
    pub head_pose_pitch: Component,
    /// Second-largest face's area over the largest's (0: one face only); set per image.
    pub single_face_present: Component,
}

impl OfiqAligned {
    /// The components' names, as they appear in JSON and in quality gates.
    pub const NAMES: [&'static str; 16] = [
        "inter_eye_distance",
        "head_size",
        "leftward_crop",
        "rightward_crop",
        "margin_above",
        "margin_below",
        "luminance_mean",
        "luminance_variance",
        "dynamic_range",
        "under_exposure_prevention",
        "over_exposure_prevention",
        "illumination_uniformity",
        "head_pose_roll",
        "head_pose_yaw",
        "head_pose_pitch",
        "single_face_present",
    ];

    /// The named component.
    pub fn component(&self, name: &str) -> Option<Component> {
        Some(match name {
            "inter_eye_distance" => self.inter_eye_distance,
            "head_size" => self.head_size,
            "leftward_crop" => self.leftward_crop,
            "rightward_crop" => self.rightward_crop,
            "margin_above" => self.margin_above,
            "margin_below" => self.margin_below,
            "luminance_mean" => self.luminance_mean,
            "luminance_variance" => self.luminance_variance,
            "dynamic_range" => self.dynamic_range,
            "under_exposure_prevention" => self.under_exposure_prevention,
            "over_exposure_prevention" => self.over_exposure_prevention,
            "illumination_uniformity" => self.illumination_uniformity,
            "head_pose_roll" => self.head_pose_roll,
            "head_pose_yaw" => self.head_pose_yaw,
            "head_pose_pitch" => self.head_pose_pitch,
            "single_face_present" => self.single_face_present,
            _ => return None,
        })
    }
}

/// OFIQ's logistic: 1 / (1 + exp((x0 − x) / w)).
fn sigmoid(x: f64, x0: f64, w: f64) -> f64 {
    1.0 / (1.0 + ((x0 - x) / w).exp())
}

/// OFIQ's scalar conversion h·(a + s·sigmoid(x; x0, w)), rounded, clamped to 0–100.
fn convert(native: f64, h: f64, a: f64, s: f64, x0: f64, w: f64) -> Component {
    score(native, h * (a + s * sigmoid(native, x0, w)))
}

fn score(native: f64, v: f64) -> Component {
    let v = if v.is_finite() { v.round() } else { 0.0 };
    Component {
        native,
        score: v.clamp(0.0, 100.0) as u8,
    }
}

/// sRGB-encoded value (0–1) to linear light.
fn linear(c: f64) -> f64 {
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

/// Relative luminance (Rec. 709 weights on linear light), quantised to 0–255 as OFIQ does.
fn luminance(p: &image::Rgb<u8>) -> u8 {
    let [r, g, b] = p.0.map(|c| linear(c as f64 / 255.0));
    let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    (y * 255.0 + 0.5).floor().clamp(0.0, 255.0) as u8
}

/// Landmark positions in template units (dlib convention: x right, y down, about 0–1 across the
/// face): eye centres, nose base, and the estimates facegate uses for the mouth centre and chin.
struct Template {
    right_eye: Point,
    left_eye: Point,
    nose: Point,
    mouth: Point,
    chin: Point,
    /// Template units → chip pixels.
    scale: f64,
    offset: f64,
}

impl Template {
    fn for_chip(alignment: &AlignmentSpec, chip_size: u32) -> Template {
        let p = |v: [f64; 2]| Point { x: v[0], y: v[1] };
        let mid = |a: [f64; 2], b: [f64; 2]| Point {
            x: (a[0] + b[0]) / 2.0,
            y: (a[1] + b[1]) / 2.0,
        };
        match alignment {
            AlignmentSpec::Dlib5 { padding } => {
                let t = DLIB_TEMPLATE_5;
                Template {
                    right_eye: mid(t[2], t[3]),
                    left_eye: mid(t[0], t[1]),
                    nose: p(t[4]),
                    // dlib's mean face (68 points, the same normalisation): mouth centre near
                    // 0.82, chin at the bottom of the unit square.
                    mouth: Point { x: 0.49, y: 0.82 },
                    chin: Point { x: 0.49, y: 1.0 },
                    scale: chip_size as f64 / (2.0 * padding + 1.0),
                    offset: padding * chip_size as f64 / (2.0 * padding + 1.0),
                }
            }
            AlignmentSpec::Arcface => {
                let t = ARCFACE_TEMPLATE_112;
                let u = |v: [f64; 2]| Point {
                    x: v[0] / 112.0,
                    y: v[1] / 112.0,
                };
                let mouth = mid(t[3], t[4]);
                Template {
                    right_eye: u(t[0]),
                    left_eye: u(t[1]),
                    nose: u(t[2]),
                    mouth: Point {
                        x: mouth.x / 112.0,
                        y: mouth.y / 112.0,
                    },
                    // Eye-to-chin is about 1.9 eye-to-mouth in adult faces.
                    chin: Point {
                        x: mouth.x / 112.0,
                        y: (51.6 + 1.9 * (92.3 - 51.6)) / 112.0,
                    },
                    scale: chip_size as f64,
                    offset: 0.0,
                }
            }
        }
    }

    fn px(&self, p: Point) -> Point {
        Point {
            x: self.offset + p.x * self.scale,
            y: self.offset + p.y * self.scale,
        }
    }
}

fn dist(a: Point, b: Point) -> f64 {
    (a.x - b.x).hypot(a.y - b.y)
}

fn midpoint(a: Point, b: Point) -> Point {
    Point {
        x: (a.x + b.x) / 2.0,
        y: (a.y + b.y) / 2.0,
    }
}

/// Head rotation score: 100·max(0, cos θ)².
fn pose(degrees: f64) -> Component {
    let c = degrees.to_radians().cos().max(0.0);
    score(degrees, 100.0 * c * c)
}

impl Quality {
    /// The measurements of one face: its box, its landmarks (in the pack's convention), its
    /// aligned chip, and the size of the image it was found in.
    pub fn measure(
        rect: &Rect,
        lm: &[Point],
        chip: &RgbImage,
        alignment: &AlignmentSpec,
        image: (u32, u32),
    ) -> Self {
        let Some((right_eye, left_eye, nose)) = eyes_and_nose(lm, alignment) else {
            return Quality {
                face_px: rect.width(),
                ..Default::default()
            };
        };
        let ied = dist(right_eye, left_eye);
        Quality {
            face_px: rect.width(),
            eye_distance_px: ied,
            sharpness: sharpness(chip),
            ofiq: Some(ofiq(right_eye, left_eye, nose, chip, alignment, image)),
        }
    }

    /// Record OFIQ's single-face measure for this face's image: the second-largest face's area
    /// over the largest's (0 when there is one face), the same for every face of the image.
    pub fn set_single_face(&mut self, areas: &[f64]) {
        let mut sorted: Vec<f64> = areas.iter().copied().filter(|a| a.is_finite()).collect();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let f = match sorted.as_slice() {
            [a1, a2, ..] if *a1 > 0.0 => a2 / a1,
            _ => 0.0,
        };
        if let Some(o) = &mut self.ofiq {
            o.single_face_present = score(f, 100.0 * (1.0 - f));
        }
    }
}

/// The eye centres and the nose point from a pack's landmarks: dlib's 5 points are eye corners
/// (two per eye) and the nose base; ArcFace-style points are eye centres, nose tip and mouth
/// corners.
fn eyes_and_nose(lm: &[Point], alignment: &AlignmentSpec) -> Option<(Point, Point, Point)> {
    let eye = |a: usize, b: usize| midpoint(lm[a], lm[b]);
    match (alignment, lm.len()) {
        (AlignmentSpec::Dlib5 { .. }, 5) => Some((eye(2, 3), eye(0, 1), lm[4])),
        (_, n) if n >= 3 => Some((lm[0], lm[1], lm[2])),
        _ => None,
    }
}

/// Head yaw in degrees from landmarks alone (the estimate `Quality::measure` reports as
/// `head_pose_yaw`): the nose's sideways offset from the eye midpoint, after removing roll,
/// against half the eye distance, as the sine of the angle. Positive: the nose is to the image's
/// right of the eyes — the person turned to their own left (camera image, not mirrored).
pub fn head_yaw(lm: &[Point], alignment: &AlignmentSpec) -> Option<f64> {
    let (right_eye, left_eye, nose) = eyes_and_nose(lm, alignment)?;
    let yaw = yaw_degrees(right_eye, left_eye, nose);
    yaw.is_finite().then_some(yaw)
}

fn yaw_degrees(right_eye: Point, left_eye: Point, nose: Point) -> f64 {
    let ied = dist(right_eye, left_eye);
    let eye_mid = midpoint(right_eye, left_eye);
    let (dx, dy) = (left_eye.x - right_eye.x, left_eye.y - right_eye.y);
    let roll = dy.atan2(dx);
    let (s, c) = (-roll).sin_cos();
    let (x, y) = (nose.x - eye_mid.x, nose.y - eye_mid.y);
    let nx = x * c - y * s;
    let half = (ied / 2.0).max(1e-9);
    (nx / half).clamp(-1.0, 1.0).asin().to_degrees()
}

fn ofiq(
    right_eye: Point,
    left_eye: Point,
    nose: Point,
    chip: &RgbImage,
    alignment: &AlignmentSpec,
    (width, height): (u32, u32),
) -> OfiqAligned {
    let t = Template::for_chip(alignment, chip.width());
    let ied = dist(right_eye, left_eye);
    let eye_mid = midpoint(right_eye, left_eye);
    // Image-space estimates scaled from the template by the eye-to-nose distance.
    let tpl_eye_mid = midpoint(t.right_eye, t.left_eye);
    let unit = dist(eye_mid, nose) / dist(tpl_eye_mid, t.nose).max(1e-9);
    let eye_to_chin = unit * dist(tpl_eye_mid, t.chin);
    let (w, h) = (width as f64, height as f64);
    // Roll: the eye line's angle. Yaw: the nose's sideways offset from the eye midpoint, against
    // half the eye distance, as the sine of the angle. Pitch: the eye-to-nose drop against the
    // template's, as the cosine of the tilt. Rough: faces differ in proportions by ~10-15°.
    let (dx, dy) = (left_eye.x - right_eye.x, left_eye.y - right_eye.y);
    let roll = dy.atan2(dx).to_degrees();
    let (s, c) = (-roll.to_radians()).sin_cos();
    let rel = |p: Point| {
        let (x, y) = (p.x - eye_mid.x, p.y - eye_mid.y);
        (x * c - y * s, x * s + y * c)
    };
    let (_, ny) = rel(nose);
    let yaw = yaw_degrees(right_eye, left_eye, nose);
    let tpl_drop = (t.nose.y - tpl_eye_mid.y) / dist(t.right_eye, t.left_eye).max(1e-9);
    let drop = ny / ied.max(1e-9);
    // Magnitude only: the drop shrinks alike when the head tilts up or down.
    let pitch = (drop / tpl_drop).clamp(0.0, 1.0).acos().to_degrees();

    // Photometric measures on the chip's face region: an ellipse around the template face.
    let lum = FaceRegion::new(chip, &t);
    let hist = lum.histogram;
    let n = hist.iter().sum::<u64>().max(1) as f64;
    let p: Vec<f64> = hist.iter().map(|c| *c as f64 / n).collect();
    let mean: f64 = p
        .iter()
        .enumerate()
        .map(|(i, q)| q * i as f64 / 255.0)
        .sum();
    let variance: f64 = p
        .iter()
        .enumerate()
        .map(|(i, q)| q * (i as f64 / 255.0 - mean).powi(2))
        .sum();
    let entropy: f64 = -p
        .iter()
        .filter(|q| **q > 0.0)
        .map(|q| q * q.log2())
        .sum::<f64>();
    let dark: f64 = p[..=25].iter().sum();
    let bright: f64 = p[247..].iter().sum();
    OfiqAligned {
        inter_eye_distance: convert(ied, 100.0, 0.0, 1.0, 70.0, 20.0),
        head_size: {
            let raw = eye_to_chin / h.max(1.0);
            let mut c = convert((raw - 0.45).abs(), 200.0, 1.0, -1.0, 0.0, 0.05);
            c.native = raw;
            c
        },
        leftward_crop: convert(right_eye.x / ied.max(1e-9), 100.0, 0.0, 1.0, 0.9, 0.1),
        rightward_crop: convert((w - left_eye.x) / ied.max(1e-9), 100.0, 0.0, 1.0, 0.9, 0.1),
        margin_above: convert(eye_mid.y / eye_to_chin.max(1e-9), 100.0, 0.0, 1.0, 1.4, 0.1),
        margin_below: convert(
            (h - eye_mid.y) / eye_to_chin.max(1e-9),
            100.0,
            0.0,
            1.0,
            1.8,
            0.1,
        ),
        luminance_mean: score(
            mean,
            100.0 * sigmoid(mean, 0.2, 0.05) * (1.0 - sigmoid(mean, 0.8, 0.05)),
        ),
        luminance_variance: score(
            variance,
            100.0 * ((60.0 * variance) / (60.0 * variance + 1.0) * std::f64::consts::PI).sin(),
        ),
        dynamic_range: score(entropy, 12.5 * entropy),
        under_exposure_prevention: convert(dark, 120.0, 0.832, -1.0, 0.92, 0.05),
        over_exposure_prevention: score(bright, 1.0 / (bright + 0.01)),
        illumination_uniformity: {
            let u = lum.cheek_uniformity(&t);
            score(u, 100.0 * u.powf(0.3))
        },
        head_pose_roll: pose(roll),
        head_pose_yaw: pose(yaw),
        head_pose_pitch: pose(pitch),
        single_face_present: score(0.0, 100.0),
    }
}

/// The luminance of the chip's face region.
struct FaceRegion<'a> {
    chip: &'a RgbImage,
    histogram: [u64; 256],
}

impl<'a> FaceRegion<'a> {
    fn new(chip: &'a RgbImage, t: &Template) -> Self {
        // An ellipse from the brows to the chin, cheek to cheek (template units).
        let c = t.px(Point { x: 0.49, y: 0.55 });
        let (rx, ry) = (0.45 * t.scale, 0.5 * t.scale);
        let mut histogram = [0u64; 256];
        for (x, y, p) in chip.enumerate_pixels() {
            let (u, v) = ((x as f64 - c.x) / rx, (y as f64 - c.y) / ry);
            if u * u + v * v <= 1.0 {
                histogram[luminance(p) as usize] += 1;
            }
        }
        FaceRegion { chip, histogram }
    }

    /// OFIQ's illumination uniformity: the normalised histograms of two square zones below the
    /// eyes (side 0.3 eye distances, half the eye-to-mouth distance down), intersected.
    fn cheek_uniformity(&self, t: &Template) -> f64 {
        let (re, le) = (t.px(t.right_eye), t.px(t.left_eye));
        let ied = dist(re, le);
        let emd = dist(midpoint(re, le), t.px(t.mouth));
        let side = (0.3 * ied).floor().max(1.0) as i64;
        let zone = |x0: f64, y0: f64| -> Option<[f64; 256]> {
            let (x0, y0) = (x0.floor() as i64, y0.floor() as i64);
            let mut h = [0f64; 256];
            let mut n = 0.0;
            for y in y0..y0 + side {
                for x in x0..x0 + side {
                    if x < 0
                        || y < 0
                        || x >= self.chip.width() as i64
                        || y >= self.chip.height() as i64
                    {
                        continue;
                    }
                    h[luminance(self.chip.get_pixel(x as u32, y as u32)) as usize] += 1.0;
                    n += 1.0;
                }
            }
            (n > 0.0).then(|| h.map(|c| c / n))
        };
        // The image-left zone ends at the right eye; the image-right zone starts at the left eye.
        match (
            zone(re.x - side as f64, re.y + emd / 2.0),
            zone(le.x, le.y + emd / 2.0),
        ) {
            (Some(a), Some(b)) => a.iter().zip(&b).map(|(x, y)| x.min(*y)).sum(),
            _ => 0.0,
        }
    }
}

/// Variance of the Laplacian of the grey chip: low values mean blur.
fn sharpness(chip: &RgbImage) -> f64 {
    let (w, h) = (chip.width() as usize, chip.height() as usize);
    if w < 3 || h < 3 {
        return 0.0;
    }
    let g: Vec<f64> = chip
        .pixels()
        .map(|p| (p[0] as f64 + p[1] as f64 + p[2] as f64) / 3.0)
        .collect();
    let mut vals = Vec::with_capacity((w - 2) * (h - 2));
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let c = g[y * w + x];
            vals.push(
                g[y * w + x - 1] + g[y * w + x + 1] + g[(y - 1) * w + x] + g[(y + 1) * w + x]
                    - 4.0 * c,
            );
        }
    }
    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
    vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64
}

#[cfg(test)]
#[path = "quality_tests.rs"]
mod tests;
