//! Generated sequences with exact ground truth, for measuring tracking and once-per-passer-by
//! decisions: people (face images) cross a scene, approach a gate growing as they come, cross
//! and occlude each other, leave and come back. Deterministic for a seed.
//!
//! Each passer-by is a face image (the central part of, e.g., an LFW photo) pasted onto a
//! background along a path; nearer (larger) faces are drawn over farther ones. The ground truth
//! of a frame is every passer-by whose face is at least half visible, with the face box mapped
//! from the box the detector finds on the source image alone, so ground truth and detections
//! agree in convention. A person who leaves and comes back is a new passage (a new ground-truth
//! id) of the same identity.

use image::imageops::{resize, FilterType};
use image::RgbImage;
use vision::geometry::Rect;
use vision::rng::SplitMix;

/// A face image to walk through the scene, with its face box in that image.
#[derive(Clone)]
pub struct Actor {
    pub identity: usize,
    pub image: RgbImage,
    pub face: Rect,
}

impl Actor {
    /// An actor cut from a photo: a square 1.6 face widths wide around the face (outside the
    /// photo is filled grey), so that the face, not the photo's background, walks.
    pub fn from_photo(identity: usize, photo: &RgbImage, face: Rect) -> Actor {
        let side = (face.width().max(face.height()) * 1.6).round().max(8.0);
        let (cx, cy) = (
            (face.left + face.right) / 2.0,
            (face.top + face.bottom) / 2.0,
        );
        let (x0, y0) = (cx - side / 2.0, cy - side / 2.0);
        let n = side as u32;
        let image = RgbImage::from_fn(n, n, |x, y| {
            let (sx, sy) = (x0 + x as f64, y0 + y as f64);
            if sx >= 0.0 && sy >= 0.0 && (sx as u32) < photo.width() && (sy as u32) < photo.height()
            {
                *photo.get_pixel(sx as u32, sy as u32)
            } else {
                image::Rgb([128, 128, 128])
            }
        });
        Actor {
            identity,
            image,
            face: Rect {
                left: face.left - x0,
                top: face.top - y0,
                right: face.right - x0,
                bottom: face.bottom - y0,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Across the frame, left to right or back, at a constant size.
    Cross,
    /// From far (small, upper half) towards the camera (large, lower), as at a gate.
    Approach,
    /// Across, out of view, and back the same way after a pause (two passages).
    Return,
}

/// One passage: who, along which path, from which frame.
#[derive(Debug, Clone)]
pub struct Passage {
    /// Ground-truth id (unique per passage).
    pub id: u64,
    pub identity: usize,
    pub kind: PathKind,
    pub start: u64,
    pub end: u64,
}

/// A ground-truth face in a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Truth {
    pub passage: u64,
    pub identity: usize,
    pub rect: Rect,
}

/// Scene settings.
#[derive(Debug, Clone, Copy)]
pub struct SceneConfig {
    pub width: u32,
    pub height: u32,
    pub frames: u64,
    /// New passers-by start about this many frames apart.
    pub spacing: u64,
    pub seed: u64,
}

impl Default for SceneConfig {
    fn default() -> Self {
        SceneConfig {
            width: 640,
            height: 480,
            frames: 600,
            spacing: 45,
            seed: 1,
        }
    }
}

/// Where a walker's image is at a frame: top-left corner and side in pixels.
#[derive(Debug, Clone, Copy)]
struct Placement {
    x: f64,
    y: f64,
    side: f64,
}

#[derive(Clone)]
struct Walker {
    actor: usize,
    kind: PathKind,
    start: u64,
    /// Frames the path lasts (for Return: out, pause, back).
    length: u64,
    from_left: bool,
    lane: f64,
    side: f64,
    ids: [u64; 2],
}

const RETURN_PAUSE: u64 = 60;

impl Walker {
    /// The placement at frame `f` and which passage it belongs to, if the walker is in view.
    fn at(&self, f: u64, w: f64, h: f64) -> Option<(Placement, u64)> {
        if f < self.start || f >= self.start + self.length {
            return None;
        }
        let t = (f - self.start) as f64;
        match self.kind {
            PathKind::Cross | PathKind::Return => {
                let leg = if self.kind == PathKind::Return {
                    (self.length - RETURN_PAUSE) / 2
                } else {
                    self.length
                } as f64;
                let (t, back, id) = if t < leg {
                    (t, false, self.ids[0])
                } else if t < leg + RETURN_PAUSE as f64 {
                    return None;
                } else {
                    (t - leg - RETURN_PAUSE as f64, true, self.ids[1])
                };
                let span = w + self.side;
                let u = t / leg;
                let x = if self.from_left != back {
                    -self.side + u * span
                } else {
                    w - u * span
                };
                Some((
                    Placement {
                        x,
                        y: self.lane * (h - self.side),
                        side: self.side,
                    },
                    id,
                ))
            }
            PathKind::Approach => {
                let u = t / self.length as f64;
                let side = 130.0 + u * 220.0;
                let cx = self.lane * w;
                let y = h * 0.05 + u * (h * 0.9);
                Some((
                    Placement {
                        x: cx - side / 2.0,
                        y: y - side / 2.0,
                        side,
                    },
                    self.ids[0],
                ))
            }
        }
    }
}

/// A generated sequence: frames on demand, with their ground truth.
pub struct Scene {
    cfg: SceneConfig,
    actors: Vec<Actor>,
    walkers: Vec<Walker>,
    background: RgbImage,
    pub passages: Vec<Passage>,
}

impl Scene {
    /// A scene walking `actors` in turn (each once), paths drawn from the seed.
    pub fn new(cfg: SceneConfig, actors: Vec<Actor>) -> Scene {
        let mut rng = SplitMix::new(cfg.seed);
        let (w, h) = (cfg.width as f64, cfg.height as f64);
        let mut walkers = Vec::new();
        let mut passages = Vec::new();
        let mut next_id = 1;
        let mut start = 5;
        for (i, a) in actors.iter().enumerate() {
            if start + 40 >= cfg.frames {
                break;
            }
            let kind = match rng.below(5) {
                0 | 1 => PathKind::Cross,
                2 | 3 => PathKind::Approach,
                _ => PathKind::Return,
            };
            // Faces of 80-130 px: what a gate or corridor camera sees of a passer-by, and above
            // the smallest face the default detector finds without upsampling.
            let side = 130.0 + rng.below(80) as f64;
            let speed = 3.0 + rng.below(5) as f64;
            let leg = ((w + side) / speed).ceil() as u64;
            let length = match kind {
                PathKind::Cross => leg,
                PathKind::Return => 2 * leg + RETURN_PAUSE,
                PathKind::Approach => 90 + rng.below(60) as u64,
            };
            let lane = 0.15 + rng.below(70) as f64 / 100.0;
            let from_left = rng.below(2) == 0;
            let ids = [next_id, next_id + 1];
            next_id += if kind == PathKind::Return { 2 } else { 1 };
            let walker = Walker {
                actor: i,
                kind,
                start,
                length,
                from_left,
                lane,
                side,
                ids,
            };
            let end = (start + length).min(cfg.frames);
            match kind {
                PathKind::Return => {
                    let l = (length - RETURN_PAUSE) / 2;
                    passages.push(Passage {
                        id: ids[0],
                        identity: a.identity,
                        kind,
                        start,
                        end: (start + l).min(end),
                    });
                    if start + l + RETURN_PAUSE < cfg.frames {
                        passages.push(Passage {
                            id: ids[1],
                            identity: a.identity,
                            kind,
                            start: start + l + RETURN_PAUSE,
                            end,
                        });
                    }
                }
                _ => passages.push(Passage {
                    id: ids[0],
                    identity: a.identity,
                    kind,
                    start,
                    end,
                }),
            }
            walkers.push(walker);
            start += cfg.spacing / 2 + rng.below(cfg.spacing as usize) as u64;
        }
        // A smooth background with some texture (no faces in it).
        let background = RgbImage::from_fn(cfg.width, cfg.height, |x, y| {
            let (u, v) = (x as f64 / w, y as f64 / h);
            let n = ((x * 31 + y * 17) % 23) as f64;
            image::Rgb([
                (60.0 + 90.0 * u + n) as u8,
                (80.0 + 60.0 * v + n) as u8,
                (100.0 + 40.0 * (1.0 - u) + n) as u8,
            ])
        });
        Scene {
            cfg,
            actors,
            walkers,
            background,
            passages,
        }
    }

    pub fn frames(&self) -> u64 {
        self.cfg.frames
    }

    /// Frame `f` and its ground truth.
    pub fn frame(&self, f: u64) -> (RgbImage, Vec<Truth>) {
        let (w, h) = (self.cfg.width as f64, self.cfg.height as f64);
        let mut img = self.background.clone();
        let mut placed: Vec<(Placement, u64, &Walker)> = self
            .walkers
            .iter()
            .filter_map(|wk| wk.at(f, w, h).map(|(p, id)| (p, id, wk)))
            .collect();
        // Far (small) first, so nearer faces are drawn over them.
        placed.sort_by(|a, b| a.0.side.total_cmp(&b.0.side));
        // Which pixels each walker owns after drawing: for visibility.
        let mut owner = vec![u16::MAX; (self.cfg.width * self.cfg.height) as usize];
        for (k, (p, _, wk)) in placed.iter().enumerate() {
            let a = &self.actors[wk.actor];
            let side = p.side.round().max(1.0) as u32;
            let scaled = resize(&a.image, side, side, FilterType::Triangle);
            let (x0, y0) = (p.x.round() as i64, p.y.round() as i64);
            for (sx, sy, px) in scaled.enumerate_pixels() {
                let (x, y) = (x0 + sx as i64, y0 + sy as i64);
                if x >= 0 && y >= 0 && x < w as i64 && y < h as i64 {
                    img.put_pixel(x as u32, y as u32, *px);
                    owner[(y as u32 * self.cfg.width + x as u32) as usize] = k as u16;
                }
            }
        }
        let mut truth = Vec::new();
        for (k, (p, id, wk)) in placed.iter().enumerate() {
            let a = &self.actors[wk.actor];
            let s = p.side / a.image.width().max(1) as f64;
            let r = Rect {
                left: p.x + a.face.left * s,
                top: p.y + a.face.top * s,
                right: p.x + a.face.right * s,
                bottom: p.y + a.face.bottom * s,
            };
            // Visible: inside the frame and not drawn over, at least half the face box.
            let (mut seen, mut total) = (0u64, 0u64);
            let step = ((r.width() / 12.0).max(1.0)) as usize;
            let mut y = r.top;
            while y < r.bottom {
                let mut x = r.left;
                while x < r.right {
                    total += 1;
                    if x >= 0.0 && y >= 0.0 && x < w && y < h {
                        let o = owner[(y as u32 * self.cfg.width + x as u32) as usize];
                        if o as usize == k {
                            seen += 1;
                        }
                    }
                    x += step as f64;
                }
                y += step as f64;
            }
            if total > 0 && seen * 2 >= total {
                truth.push(Truth {
                    passage: *id,
                    identity: a.identity,
                    rect: r,
                });
            }
        }
        truth.sort_by_key(|t| t.passage);
        (img, truth)
    }
}
