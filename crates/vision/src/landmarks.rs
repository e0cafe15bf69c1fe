//! Facial landmarks: the points alignment needs. A pack either has a landmark model (dlib's
//! 5-point shape predictor) or its detector gives the points itself (YuNet).

use crate::geometry::{Point, Rect};
use image::RgbImage;

/// A landmark model: an image and a face box in, points out (the pack's alignment says which).
pub trait Landmarker: Send + Sync {
    fn name(&self) -> &'static str;
    fn landmarks(&self, img: &RgbImage, rect: &Rect) -> Vec<Point>;
}
