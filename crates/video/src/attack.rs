//! Synthetic presentation attacks, for measuring PAD where no real attack data may be used: a
//! face photo rendered as a **print** held to the camera (paper white margin, reduced gamut and
//! contrast, paper grain, slight blur, a tilted plane) or as a **replay** on a screen (bezel,
//! moiré from the pixel grid beating against the camera's, sub-pixel stripes, refresh banding,
//! glare, an emissive colour cast, a tilted plane).
//!
//! These are renderings of the cues a PAD model is meant to see, not attacks: a model's figures
//! on them say how it reacts to those cues, nothing about a real attacker with a good printer or
//! a high-density screen. Every output is labelled synthetic wherever it is reported.

use crate::VideoError;
use image::{Rgb, RgbImage};
use nalgebra::{SMatrix, SVector};
use vision::rng::SplitMix;

/// The attack instruments this module renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttackKind {
    Print,
    Replay,
}

impl AttackKind {
    pub fn name(self) -> &'static str {
        match self {
            AttackKind::Print => "print",
            AttackKind::Replay => "replay",
        }
    }
}

fn uniform(rng: &mut SplitMix, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.next_f64()
}

/// The homography taking `from[i]` to `to[i]` (four point pairs, no three collinear).
pub fn homography(from: &[(f64, f64); 4], to: &[(f64, f64); 4]) -> Option<[f64; 9]> {
    let mut a = SMatrix::<f64, 8, 8>::zeros();
    let mut b = SVector::<f64, 8>::zeros();
    for i in 0..4 {
        let ((x, y), (u, v)) = (from[i], to[i]);
        let r = 2 * i;
        a.row_mut(r)
            .copy_from_slice(&[x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y]);
        a.row_mut(r + 1)
            .copy_from_slice(&[0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y]);
        b[r] = u;
        b[r + 1] = v;
    }
    let h = a.lu().solve(&b)?;
    Some([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], 1.0])
}

pub fn apply(h: &[f64; 9], x: f64, y: f64) -> (f64, f64) {
    let w = h[6] * x + h[7] * y + h[8];
    (
        (h[0] * x + h[1] * y + h[2]) / w,
        (h[3] * x + h[4] * y + h[5]) / w,
    )
}

/// Bilinear sample with a background colour outside the image.
fn sample(img: &RgbImage, x: f64, y: f64) -> Option<[f64; 3]> {
    let (w, h) = (img.width() as f64, img.height() as f64);
    if !(x >= 0.0 && y >= 0.0 && x <= w - 1.0 && y <= h - 1.0) {
        return None;
    }
    let (x0, y0) = (x.floor() as u32, y.floor() as u32);
    let (x1, y1) = (
        (x0 + 1).min(img.width() - 1),
        (y0 + 1).min(img.height() - 1),
    );
    let (fx, fy) = (x - x0 as f64, y - y0 as f64);
    let p = |x, y| img.get_pixel(x, y).0;
    let mut out = [0.0; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let top = p(x0, y0)[c] as f64 * (1.0 - fx) + p(x1, y0)[c] as f64 * fx;
        let bot = p(x0, y1)[c] as f64 * (1.0 - fx) + p(x1, y1)[c] as f64 * fx;
        *o = top * (1.0 - fy) + bot * fy;
    }
    Some(out)
}

/// The artefact an attack presents: the photo with the instrument's own surface effects, and the
/// margin (paper) or bezel (screen) around it, in artefact coordinates.
struct Artefact {
    surface: RgbImage,
    border: [f64; 3],
    /// Photo offset inside the artefact, and the artefact's size.
    margin: (f64, f64),
    size: (f64, f64),
}

/// What the room adds: the wall behind, and light falling unevenly across the plane (a print is
/// lit by the room; a screen has glare).
struct Lighting {
    background: [f64; 3],
    glare: (f64, f64, f64, f64),
}

fn check_photo(face_photo: &RgbImage, scale: f64) -> Result<(u32, u32), VideoError> {
    let (pw, ph) = (face_photo.width(), face_photo.height());
    if pw < 16 || ph < 16 || pw > 4096 || ph > 4096 || !(1.0..=4.0).contains(&scale) {
        return Err(VideoError::Invalid(format!(
            "cannot render an attack from a {pw}x{ph} photo at scale {scale}"
        )));
    }
    Ok(((pw as f64 * scale) as u32, (ph as f64 * scale) as u32))
}

fn artefact(face_photo: &RgbImage, kind: AttackKind, rng: &mut SplitMix) -> Artefact {
    let (pw, ph) = (face_photo.width() as f64, face_photo.height() as f64);
    let (surface, border) = match kind {
        AttackKind::Print => (print_surface(face_photo, rng), [245.0, 243.0, 236.0]),
        AttackKind::Replay => (screen_surface(face_photo, rng), [18.0, 18.0, 20.0]),
    };
    let margin = match kind {
        AttackKind::Print => 0.06,
        AttackKind::Replay => 0.09,
    };
    Artefact {
        surface,
        border,
        margin: (pw * margin, ph * margin),
        size: (pw * (1.0 + 2.0 * margin), ph * (1.0 + 2.0 * margin)),
    }
}

fn lighting(kind: AttackKind, (ow, oh): (u32, u32), rng: &mut SplitMix) -> Lighting {
    let background = [
        uniform(rng, 60.0, 160.0),
        uniform(rng, 60.0, 160.0),
        uniform(rng, 60.0, 160.0),
    ];
    let glare = (
        uniform(rng, 0.0, ow as f64),
        uniform(rng, 0.0, oh as f64),
        uniform(rng, 0.2, 0.35) * ow as f64,
        match kind {
            AttackKind::Print => uniform(rng, 10.0, 30.0),
            AttackKind::Replay => uniform(rng, 50.0, 110.0),
        },
    );
    Lighting { background, glare }
}

/// The frame in which the artefact's corners land on `quad` (clockwise from top left).
fn compose(
    a: &Artefact,
    light: &Lighting,
    quad: &[(f64, f64); 4],
    (ow, oh): (u32, u32),
) -> Result<RgbImage, VideoError> {
    let (aw, ah) = a.size;
    let corners = [(0.0, 0.0), (aw, 0.0), (aw, ah), (0.0, ah)];
    let to_artefact = homography(quad, &corners)
        .ok_or_else(|| VideoError::Invalid("degenerate attack geometry".into()))?;
    let (gx, gy, gr, ga) = light.glare;
    Ok(RgbImage::from_fn(ow, oh, |x, y| {
        let (xf, yf) = (x as f64 + 0.5, y as f64 + 0.5);
        let (u, v) = apply(&to_artefact, xf, yf);
        let inside = u >= 0.0 && v >= 0.0 && u < aw && v < ah;
        let mut px = if !inside {
            let shade = 1.0 - 0.25 * (yf / oh as f64);
            light.background.map(|c| c * shade)
        } else {
            sample(&a.surface, u - a.margin.0, v - a.margin.1).unwrap_or(a.border)
        };
        if inside {
            let d2 = (xf - gx).powi(2) + (yf - gy).powi(2);
            let g = ga * (-d2 / (2.0 * gr * gr)).exp();
            px = px.map(|c| c + g);
        }
        Rgb(px.map(|c| c.round().clamp(0.0, 255.0) as u8))
    }))
}

/// Renders `face_photo` as the chosen attack, in a frame `scale` times the photo's size. The
/// artefact (sheet or screen) fills most of the frame, tilted by a random perspective.
pub fn render(
    face_photo: &RgbImage,
    kind: AttackKind,
    seed: u64,
    scale: f64,
) -> Result<RgbImage, VideoError> {
    let (ow, oh) = check_photo(face_photo, scale)?;
    let mut rng = SplitMix::new(seed);
    let a = artefact(face_photo, kind, &mut rng);
    // The artefact's corners land on a jittered quad filling ~85% of the frame.
    let fill = uniform(&mut rng, 0.78, 0.92);
    let (cx, cy) = (
        ow as f64 / 2.0 + uniform(&mut rng, -0.04, 0.04) * ow as f64,
        oh as f64 / 2.0 + uniform(&mut rng, -0.04, 0.04) * oh as f64,
    );
    let (hw, hh) = (ow as f64 * fill / 2.0, oh as f64 * fill / 2.0);
    let tilt = |rng: &mut SplitMix| uniform(rng, -0.07, 0.07) * ow as f64;
    let quad = [
        (cx - hw + tilt(&mut rng), cy - hh + tilt(&mut rng)),
        (cx + hw + tilt(&mut rng), cy - hh + tilt(&mut rng)),
        (cx + hw + tilt(&mut rng), cy + hh + tilt(&mut rng)),
        (cx - hw + tilt(&mut rng), cy + hh + tilt(&mut rng)),
    ];
    let light = lighting(kind, (ow, oh), &mut rng);
    compose(&a, &light, &quad, (ow, oh))
}

/// Frames of a video attack: the artefact held up to the camera and waved — turning about its
/// vertical axis (up to ±25°) and nodding (up to ±12°) at hand-held rates, drifting and moving
/// to and from the camera — seen through a pinhole camera, so every frame is an exact
/// perspective view of one plane. At most 900 frames.
pub fn render_motion(
    face_photo: &RgbImage,
    kind: AttackKind,
    seed: u64,
    scale: f64,
    frames: usize,
) -> Result<Vec<RgbImage>, VideoError> {
    let (ow, oh) = check_photo(face_photo, scale)?;
    if frames == 0 || frames > 900 {
        return Err(VideoError::Invalid(format!(
            "{frames} frames asked for (1 to 900)"
        )));
    }
    let mut rng = SplitMix::new(seed);
    let a = artefact(face_photo, kind, &mut rng);
    let light = lighting(kind, (ow, oh), &mut rng);
    let (yaw_amp, pitch_amp) = (
        uniform(&mut rng, 12.0, 25.0).to_radians(),
        uniform(&mut rng, 5.0, 12.0).to_radians(),
    );
    let (yaw_period, pitch_period) = (uniform(&mut rng, 45.0, 90.0), uniform(&mut rng, 35.0, 80.0));
    let (phase, drift) = (
        uniform(&mut rng, 0.0, std::f64::consts::TAU),
        uniform(&mut rng, -0.1, 0.1),
    );
    // The artefact at rest fills 80% of the frame's width; the camera's focal length is 1.5
    // frame widths (a moderate perspective, as a gate camera at arm's length).
    let (aw, ah) = a.size;
    let width = 0.8 * ow as f64;
    let height = width * ah / aw;
    let f = 1.5 * ow as f64;
    let (cx, cy) = (ow as f64 / 2.0, oh as f64 / 2.0);
    (0..frames)
        .map(|t| {
            let t = t as f64;
            let yaw = yaw_amp * (std::f64::consts::TAU * t / yaw_period).sin();
            let pitch = pitch_amp * (std::f64::consts::TAU * t / pitch_period + phase).sin();
            let z0 = f * (1.0 + 0.15 * (std::f64::consts::TAU * t / 120.0).sin());
            let shift = drift * ow as f64 * (std::f64::consts::TAU * t / 150.0).sin();
            let project = |(x, y): (f64, f64)| {
                // Turn about the vertical axis, then nod about the horizontal one.
                let (x1, z1) = (x * yaw.cos(), x * yaw.sin());
                let (y2, z2) = (
                    y * pitch.cos() - z1 * pitch.sin(),
                    y * pitch.sin() + z1 * pitch.cos(),
                );
                let z = z0 + z2;
                (cx + shift + f * x1 / z, cy + f * y2 / z)
            };
            let (hw, hh) = (width / 2.0, height / 2.0);
            let quad = [(-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)].map(project);
            compose(&a, &light, &quad, (ow, oh))
        })
        .collect()
}

/// Ink on paper: compressed dynamic range and gamut, a warm paper white, grain, a slight blur.
fn print_surface(photo: &RgbImage, rng: &mut SplitMix) -> RgbImage {
    let lo = uniform(rng, 18.0, 40.0);
    let span = uniform(rng, 0.68, 0.82);
    let sat = uniform(rng, 0.6, 0.85);
    let tint = [
        uniform(rng, 2.0, 10.0),
        uniform(rng, 0.0, 6.0),
        uniform(rng, -10.0, -2.0),
    ];
    let seed = rng.next_u64();
    let blurred = box_blur(photo);
    RgbImage::from_fn(photo.width(), photo.height(), |x, y| {
        let p = blurred.get_pixel(x, y).0.map(|c| c as f64);
        let grey = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
        let mut g = SplitMix::new(seed ^ ((x as u64) << 32 | y as u64));
        let grain = (g.next_f64() - 0.5) * 14.0;
        let fibre = 3.0 * ((x as f64 * 0.9 + y as f64 * 0.13).sin());
        Rgb([0, 1, 2].map(|c| {
            let v = grey + sat * (p[c] - grey);
            (lo + span * v + tint[c] + grain + fibre)
                .round()
                .clamp(0.0, 255.0) as u8
        }))
    })
}

/// Light from a screen: a cool cast and lifted blacks, sub-pixel stripes, moiré between the
/// screen's pixel grid and the camera's, refresh banding.
fn screen_surface(photo: &RgbImage, rng: &mut SplitMix) -> RgbImage {
    let (f1, f2) = (uniform(rng, 0.28, 0.46), uniform(rng, 0.05, 0.2));
    let angle = uniform(rng, -0.6, 0.6);
    let moire = uniform(rng, 0.06, 0.14);
    let band_period = uniform(rng, 14.0, 40.0);
    let band = uniform(rng, 0.03, 0.08);
    let lift = uniform(rng, 12.0, 30.0);
    let cast = [
        uniform(rng, -8.0, 0.0),
        uniform(rng, -2.0, 4.0),
        uniform(rng, 4.0, 14.0),
    ];
    RgbImage::from_fn(photo.width(), photo.height(), |x, y| {
        let p = photo.get_pixel(x, y).0.map(|c| c as f64);
        let (xf, yf) = (x as f64, y as f64);
        let (xr, yr) = (
            xf * angle.cos() - yf * angle.sin(),
            xf * angle.sin() + yf * angle.cos(),
        );
        let m = 1.0
            + moire
                * (std::f64::consts::TAU * f1 * xr).sin()
                * (std::f64::consts::TAU * f2 * yr).cos();
        let b = 1.0 + band * (std::f64::consts::TAU * yf / band_period).sin();
        Rgb([0, 1, 2].map(|c| {
            // Each column lights one sub-pixel colour more than the others.
            let stripe = if x as usize % 3 == c { 1.06 } else { 0.97 };
            let v = lift + (255.0 - lift) / 255.0 * p[c];
            (v * m * b * stripe + cast[c]).round().clamp(0.0, 255.0) as u8
        }))
    })
}

fn box_blur(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width() as i64, img.height() as i64);
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let mut acc = [0u32; 3];
        let mut n = 0;
        for dy in -1..=1 {
            for dx in -1..=1 {
                let (xx, yy) = (x as i64 + dx, y as i64 + dy);
                if xx >= 0 && yy >= 0 && xx < w && yy < h {
                    let p = img.get_pixel(xx as u32, yy as u32).0;
                    for c in 0..3 {
                        acc[c] += p[c] as u32;
                    }
                    n += 1;
                }
            }
        }
        Rgb(acc.map(|a| ((a + n / 2) / n) as u8))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homography_maps_the_four_corners() {
        let from = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)];
        let to = [(1.0, 2.0), (12.0, 1.0), (11.0, 13.0), (0.0, 9.0)];
        let h = homography(&from, &to).unwrap();
        for (f, t) in from.iter().zip(&to) {
            let (u, v) = apply(&h, f.0, f.1);
            assert!((u - t.0).abs() < 1e-9 && (v - t.1).abs() < 1e-9);
        }
        assert!(
            homography(&from, &[(0.0, 0.0); 4]).is_none() || {
                // A degenerate target maps everything to one point, never to NaN.
                let h = homography(&from, &[(0.0, 0.0); 4]).unwrap();
                apply(&h, 5.0, 5.0).0.is_finite()
            }
        );
    }

    #[test]
    fn renders_are_deterministic_sized_and_different() {
        let photo = RgbImage::from_fn(64, 64, |x, y| Rgb([(x * 4) as u8, (y * 4) as u8, 128]));
        let a = render(&photo, AttackKind::Print, 1, 1.5).unwrap();
        assert_eq!(a.dimensions(), (96, 96));
        assert_eq!(a, render(&photo, AttackKind::Print, 1, 1.5).unwrap());
        assert_ne!(a, render(&photo, AttackKind::Print, 2, 1.5).unwrap());
        let r = render(&photo, AttackKind::Replay, 1, 1.5).unwrap();
        assert_ne!(a, r);
        assert!(render(&photo, AttackKind::Print, 1, 9.0).is_err());
        assert!(render(&RgbImage::new(4, 4), AttackKind::Print, 1, 1.5).is_err());
    }

    #[test]
    fn motion_frames_move_and_are_bounded() {
        let photo = RgbImage::from_fn(64, 64, |x, y| Rgb([(x * 4) as u8, (y * 4) as u8, 128]));
        let frames = render_motion(&photo, AttackKind::Print, 3, 2.0, 12).unwrap();
        assert_eq!(frames.len(), 12);
        assert!(frames.iter().all(|f| f.dimensions() == (128, 128)));
        assert_ne!(frames[0], frames[6]);
        assert_eq!(
            frames,
            render_motion(&photo, AttackKind::Print, 3, 2.0, 12).unwrap()
        );
        assert!(render_motion(&photo, AttackKind::Print, 3, 2.0, 0).is_err());
        assert!(render_motion(&photo, AttackKind::Print, 3, 2.0, 100_000).is_err());
    }
}
