//! Small geometry shared by landmarks, alignment and detection.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

/// A 2x3 affine transform: p' = m * p + t.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    pub m: [[f64; 2]; 2],
    pub t: [f64; 2],
}

impl Affine {
    pub fn apply(&self, p: Point) -> Point {
        Point {
            x: self.m[0][0] * p.x + self.m[0][1] * p.y + self.t[0],
            y: self.m[1][0] * p.x + self.m[1][1] * p.y + self.t[1],
        }
    }
}

/// Least-squares similarity transform (rotation, uniform scale, translation; no reflection)
/// mapping `from` onto `to`. In 2-D this closed form equals Umeyama's SVD solution, which is
/// what dlib's `find_similarity_transform` computes.
pub fn similarity(from: &[Point], to: &[Point]) -> Affine {
    let n = from.len().min(to.len()).max(1) as f64;
    let (mut fx, mut fy, mut tx, mut ty) = (0.0, 0.0, 0.0, 0.0);
    for (f, t) in from.iter().zip(to) {
        fx += f.x;
        fy += f.y;
        tx += t.x;
        ty += t.y;
    }
    let (fx, fy, tx, ty) = (fx / n, fy / n, tx / n, ty / n);
    let (mut dot, mut cross, mut var) = (0.0, 0.0, 0.0);
    for (f, t) in from.iter().zip(to) {
        let (sx, sy, dx, dy) = (f.x - fx, f.y - fy, t.x - tx, t.y - ty);
        dot += sx * dx + sy * dy;
        cross += sx * dy - sy * dx;
        var += sx * sx + sy * sy;
    }
    let (a, b) = if var > 0.0 {
        (dot / var, cross / var)
    } else {
        (1.0, 0.0)
    };
    let m = [[a, -b], [b, a]];
    Affine {
        m,
        t: [tx - (a * fx - b * fy), ty - (b * fx + a * fy)],
    }
}

/// The affine transform that maps three points exactly onto three others.
pub fn affine_from_3(from: [Point; 3], to: [Point; 3]) -> Option<Affine> {
    // Solve [x y 1] * P = [x' y'] for the 3x2 matrix P.
    let [a, b, c] = from;
    let det = a.x * (b.y - c.y) - a.y * (b.x - c.x) + (b.x * c.y - b.y * c.x);
    if det.abs() < 1e-12 {
        return None;
    }
    let inv = [
        [(b.y - c.y) / det, (c.y - a.y) / det, (a.y - b.y) / det],
        [(c.x - b.x) / det, (a.x - c.x) / det, (b.x - a.x) / det],
        [
            (b.x * c.y - c.x * b.y) / det,
            (c.x * a.y - a.x * c.y) / det,
            (a.x * b.y - b.x * a.y) / det,
        ],
    ];
    let solve = |v: [f64; 3]| {
        [
            inv[0][0] * v[0] + inv[0][1] * v[1] + inv[0][2] * v[2],
            inv[1][0] * v[0] + inv[1][1] * v[1] + inv[1][2] * v[2],
            inv[2][0] * v[0] + inv[2][1] * v[1] + inv[2][2] * v[2],
        ]
    };
    let px = solve([to[0].x, to[1].x, to[2].x]);
    let py = solve([to[0].y, to[1].y, to[2].y]);
    Some(Affine {
        m: [[px[0], px[1]], [py[0], py[1]]],
        t: [px[2], py[2]],
    })
}

/// An axis-aligned box with inclusive integer-style corners, as dlib's rectangles.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rect {
    pub left: f64,
    pub top: f64,
    pub right: f64,
    pub bottom: f64,
}

impl Rect {
    pub fn width(&self) -> f64 {
        self.right - self.left + 1.0
    }
    pub fn height(&self) -> f64 {
        self.bottom - self.top + 1.0
    }
    pub fn area(&self) -> f64 {
        if self.right < self.left || self.bottom < self.top {
            0.0
        } else {
            self.width() * self.height()
        }
    }
    pub fn center(&self) -> Point {
        Point {
            x: (self.left + self.right) / 2.0,
            y: (self.top + self.bottom) / 2.0,
        }
    }
    pub fn intersect(&self, o: &Rect) -> Rect {
        Rect {
            left: self.left.max(o.left),
            top: self.top.max(o.top),
            right: self.right.min(o.right),
            bottom: self.bottom.min(o.bottom),
        }
    }
    /// dlib's `rectangle + rectangle`: the bounding box of both (an empty one is ignored).
    pub fn union(&self, o: &Rect) -> Rect {
        if self.area() == 0.0 {
            return *o;
        }
        if o.area() == 0.0 {
            return *self;
        }
        Rect {
            left: self.left.min(o.left),
            top: self.top.min(o.top),
            right: self.right.max(o.right),
            bottom: self.bottom.max(o.bottom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_recovers_a_known_transform() {
        let (s, th) = (1.7f64, 0.3f64);
        let truth = Affine {
            m: [[s * th.cos(), -s * th.sin()], [s * th.sin(), s * th.cos()]],
            t: [5.0, -2.0],
        };
        let from: Vec<Point> = [(0.0, 0.0), (10.0, 1.0), (3.0, 7.0), (-4.0, 2.0)]
            .iter()
            .map(|&(x, y)| Point { x, y })
            .collect();
        let to: Vec<Point> = from.iter().map(|&p| truth.apply(p)).collect();
        let est = similarity(&from, &to);
        for i in 0..2 {
            assert!((est.t[i] - truth.t[i]).abs() < 1e-9);
            for j in 0..2 {
                assert!((est.m[i][j] - truth.m[i][j]).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn affine_from_three_points_is_exact() {
        let from = [
            Point { x: 0.0, y: 0.0 },
            Point { x: 149.0, y: 0.0 },
            Point { x: 0.0, y: 149.0 },
        ];
        let to = [
            Point { x: 10.0, y: 20.0 },
            Point { x: 100.0, y: 30.0 },
            Point { x: 5.0, y: 110.0 },
        ];
        let a = affine_from_3(from, to).unwrap();
        for (f, t) in from.iter().zip(to) {
            let p = a.apply(*f);
            assert!((p.x - t.x).abs() < 1e-9 && (p.y - t.y).abs() < 1e-9);
        }
        assert!(affine_from_3([from[0]; 3], to).is_none());
    }
}
