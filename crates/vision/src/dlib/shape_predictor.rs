//! dlib's shape predictor (an ensemble of regression trees, Kazemi & Sullivan 2014), loaded
//! from its `.dat` file and run exactly as dlib does (shape_predictor.h), so the 5 landmarks
//! come out bit-identical to dlib's integer points.

use super::serial::Reader;
use crate::error::VisionError;
use crate::geometry::{similarity, Affine, Point, Rect};
use image::RgbImage;

struct Split {
    idx1: usize,
    idx2: usize,
    thresh: f32,
}

struct Tree {
    splits: Vec<Split>,
    /// Each leaf is a full shape delta (2 * parts values).
    leaves: Vec<Vec<f32>>,
}

pub struct ShapePredictor {
    initial: Vec<f32>,
    forests: Vec<Vec<Tree>>,
    anchors: Vec<Vec<usize>>,
    deltas: Vec<Vec<[f32; 2]>>,
}

impl ShapePredictor {
    pub fn parse(bytes: &[u8]) -> Result<Self, VisionError> {
        let mut r = Reader::new(bytes);
        r.expect_int(1, "shape_predictor version")?;
        let initial = r.matrix()?;
        if initial.is_empty() || initial.len() % 2 != 0 {
            return Err(VisionError::ModelFormat("bad initial shape".into()));
        }
        let parts = initial.len() / 2;
        let nf = r.count(10_000)?;
        let mut forests = Vec::with_capacity(nf);
        for _ in 0..nf {
            let nt = r.count(100_000)?;
            let mut trees = Vec::with_capacity(nt);
            for _ in 0..nt {
                let ns = r.count(1 << 20)?;
                let mut splits = Vec::with_capacity(ns);
                for _ in 0..ns {
                    let idx1 = r.count(1 << 20)?;
                    let idx2 = r.count(1 << 20)?;
                    let thresh = r.float()? as f32;
                    splits.push(Split { idx1, idx2, thresh });
                }
                let nl = r.count(1 << 20)?;
                if nl != ns + 1 {
                    return Err(VisionError::ModelFormat(format!(
                        "tree with {ns} splits has {nl} leaves"
                    )));
                }
                let mut leaves = Vec::with_capacity(nl);
                for _ in 0..nl {
                    let leaf = r.matrix()?;
                    if leaf.len() != 2 * parts {
                        return Err(VisionError::ModelFormat(
                            "leaf size does not match shape".into(),
                        ));
                    }
                    leaves.push(leaf);
                }
                trees.push(Tree { splits, leaves });
            }
            forests.push(trees);
        }
        let na = r.count(10_000)?;
        let mut anchors = Vec::with_capacity(na);
        for _ in 0..na {
            let n = r.count(1 << 20)?;
            let v = (0..n)
                .map(|_| r.count(parts - 1))
                .collect::<Result<Vec<_>, _>>()?;
            anchors.push(v);
        }
        let nd = r.count(10_000)?;
        let mut deltas = Vec::with_capacity(nd);
        for _ in 0..nd {
            let n = r.count(1 << 20)?;
            let v = (0..n)
                .map(|_| Ok([r.float()? as f32, r.float()? as f32]))
                .collect::<Result<Vec<_>, VisionError>>()?;
            deltas.push(v);
        }
        if !r.at_end() || anchors.len() != forests.len() || deltas.len() != forests.len() {
            return Err(VisionError::ModelFormat(
                "inconsistent shape predictor file".into(),
            ));
        }
        for (i, forest) in forests.iter().enumerate() {
            let nfeat = anchors[i].len();
            if deltas[i].len() != nfeat {
                return Err(VisionError::ModelFormat(
                    "anchor/delta count mismatch".into(),
                ));
            }
            for t in forest {
                if t.splits.iter().any(|s| s.idx1 >= nfeat || s.idx2 >= nfeat) {
                    return Err(VisionError::ModelFormat(
                        "split refers to a missing feature".into(),
                    ));
                }
            }
        }
        Ok(ShapePredictor {
            initial,
            forests,
            anchors,
            deltas,
        })
    }

    pub fn num_parts(&self) -> usize {
        self.initial.len() / 2
    }

    /// Landmarks for the face in `rect` (inclusive integer corners), rounded to integer pixel
    /// positions as dlib does before alignment.
    pub fn predict(&self, img: &RgbImage, rect: &Rect) -> Vec<Point> {
        let (w, h) = (img.width() as i64, img.height() as i64);
        // unnormalizing_tform: (0,0)->(l,t), (1,0)->(r,t), (1,1)->(r,b)
        let to_img = Affine {
            m: [[rect.right - rect.left, 0.0], [0.0, rect.bottom - rect.top]],
            t: [rect.left, rect.top],
        };
        let parts = self.num_parts();
        let init_pts: Vec<Point> = (0..parts)
            .map(|i| Point {
                x: self.initial[2 * i] as f64,
                y: self.initial[2 * i + 1] as f64,
            })
            .collect();
        let mut shape = self.initial.clone();
        let raw = img.as_raw();
        let mut features = Vec::new();
        for (it, forest) in self.forests.iter().enumerate() {
            let cur: Vec<Point> = (0..parts)
                .map(|i| Point {
                    x: shape[2 * i] as f64,
                    y: shape[2 * i + 1] as f64,
                })
                .collect();
            let s = similarity(&init_pts, &cur);
            let m = s.m.map(|row| row.map(|v| v as f32));
            features.clear();
            for (d, &a) in self.deltas[it].iter().zip(&self.anchors[it]) {
                let px = m[0][0] * d[0] + m[0][1] * d[1] + shape[2 * a];
                let py = m[1][0] * d[0] + m[1][1] * d[1] + shape[2 * a + 1];
                let p = to_img.apply(Point {
                    x: px as f64,
                    y: py as f64,
                });
                let (x, y) = ((p.x + 0.5).floor() as i64, (p.y + 0.5).floor() as i64);
                let v = if x >= 0 && y >= 0 && x < w && y < h {
                    let o = 3 * (y * w + x) as usize;
                    ((raw[o] as u32 + raw[o + 1] as u32 + raw[o + 2] as u32) / 3) as f32
                } else {
                    0.0
                };
                features.push(v);
            }
            for tree in forest {
                let mut i = 0;
                while i < tree.splits.len() {
                    let sp = &tree.splits[i];
                    i = if features[sp.idx1] - features[sp.idx2] > sp.thresh {
                        2 * i + 1
                    } else {
                        2 * i + 2
                    };
                }
                for (s, d) in shape.iter_mut().zip(&tree.leaves[i - tree.splits.len()]) {
                    *s += d;
                }
            }
        }
        (0..parts)
            .map(|i| {
                let p = to_img.apply(Point {
                    x: shape[2 * i] as f64,
                    y: shape[2 * i + 1] as f64,
                });
                Point {
                    x: (p.x + 0.5).floor(),
                    y: (p.y + 0.5).floor(),
                }
            })
            .collect()
    }
}

impl crate::landmarks::Landmarker for ShapePredictor {
    fn name(&self) -> &'static str {
        "dlib-shape-predictor"
    }

    fn landmarks(&self, img: &RgbImage, rect: &Rect) -> Vec<Point> {
        self.predict(img, rect)
    }
}
