//! Face quality: measurements of a detected face that tell whether it is fit to compare (size,
//! eye distance, sharpness). Computed for every face; thresholds and ISO/IEC 29794-5 style
//! scores belong here as they come (live capture picks the best frames by them).

use crate::geometry::{Point, Rect};
use crate::pack::AlignmentSpec;
use image::RgbImage;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Quality {
    /// Face box side in pixels.
    pub face_px: f64,
    /// Distance between the eye centres in pixels (ICAO asks for >= 90 in passport photos).
    pub eye_distance_px: f64,
    /// Variance of the Laplacian of the aligned grey chip: low values mean blur.
    pub sharpness: f64,
}

impl Quality {
    /// The measurements of one face: its box, its landmarks (in the pack's convention) and its
    /// aligned chip.
    pub fn measure(rect: &Rect, lm: &[Point], chip: &RgbImage, alignment: &AlignmentSpec) -> Self {
        let eye = |a: usize, b: usize| Point {
            x: (lm[a].x + lm[b].x) / 2.0,
            y: (lm[a].y + lm[b].y) / 2.0,
        };
        // dlib's 5 points are eye corners (two per eye); ArcFace-style points are eye centres.
        let (r, l) = match alignment {
            AlignmentSpec::Dlib5 { .. } => (eye(0, 1), eye(2, 3)),
            AlignmentSpec::Arcface => (lm[0], lm[1]),
        };
        Quality {
            face_px: rect.width(),
            eye_distance_px: ((r.x - l.x).powi(2) + (r.y - l.y).powi(2)).sqrt(),
            sharpness: sharpness(chip),
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
