//! Face alignment: the 5-point similarity alignment and chip extraction of dlib
//! (`get_face_chip_details` + `extract_image_chips`, interpolation.h), reproduced exactly,
//! including the pyramid_down<2> prefilter that dlib applies to faces more than about twice
//! the chip size and the truncation of interpolated values to integers.

use crate::geometry::{affine_from_3, similarity, Affine, Point, Rect};
use crate::rng::SplitMix;
use image::RgbImage;

/// dlib's 5-point face template, in `[0, 1]` chip coordinates, in shape predictor part order.
pub const DLIB_TEMPLATE_5: [[f64; 2]; 5] = [
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
];

/// Where a chip lies in the source image: a rectangle (inclusive corners, fractional) rotated by
/// `angle` about its centre, sampled onto `size`x`size` pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChipDetails {
    pub rect: Rect,
    pub angle: f64,
    pub size: usize,
}

/// dlib's `get_face_chip_details(det, size, padding)` for 5 landmarks.
pub fn face_chip_details(landmarks: &[Point], size: usize, padding: f64) -> ChipDetails {
    let from: Vec<Point> = DLIB_TEMPLATE_5
        .iter()
        .map(|p| Point {
            x: (padding + p[0]) / (2.0 * padding + 1.0) * size as f64,
            y: (padding + p[1]) / (2.0 * padding + 1.0) * size as f64,
        })
        .collect();
    let t = similarity(&from, landmarks);
    let (px, py) = (t.m[0][0], t.m[1][0]);
    let angle = py.atan2(px);
    let scale = px.hypot(py);
    let c = t.apply(Point {
        x: size as f64 / 2.0,
        y: size as f64 / 2.0,
    });
    let w = size as f64 * scale - 1.0;
    ChipDetails {
        rect: Rect {
            left: c.x - w / 2.0,
            top: c.y - w / 2.0,
            right: c.x + w / 2.0,
            bottom: c.y + w / 2.0,
        },
        angle,
        size,
    }
}

fn rotate(center: Point, p: Point, angle: f64) -> Point {
    let (s, c) = angle.sin_cos();
    let (dx, dy) = (p.x - center.x, p.y - center.y);
    Point {
        x: c * dx - s * dy + center.x,
        y: s * dx + c * dy + center.y,
    }
}

fn point_down(p: Point) -> Point {
    Point {
        x: p.x / 2.0 - 1.25,
        y: p.y / 2.0 - 0.75,
    }
}

fn rect_down(r: &Rect) -> Rect {
    let tl = point_down(Point {
        x: r.left,
        y: r.top,
    });
    let br = point_down(Point {
        x: r.right,
        y: r.bottom,
    });
    Rect {
        left: tl.x,
        top: tl.y,
        right: br.x,
        bottom: br.y,
    }
}

fn round_rect(r: &Rect) -> Rect {
    let f = |v: f64| (v + 0.5).floor();
    Rect {
        left: f(r.left),
        top: f(r.top),
        right: f(r.right),
        bottom: f(r.bottom),
    }
}

/// dlib's pyramid_down<2> for RGB images: 5-tap [1 4 6 4 1] separable filter with integer
/// arithmetic, keeping every other row and column.
pub fn pyramid_down2(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w <= 8 || h <= 8 {
        return RgbImage::new(0, 0);
    }
    let tw = (w - 3) / 2;
    let (ow, oh) = (tw, (h - 3) / 2);
    let src = img.as_raw();
    let mut temp = vec![0u16; h * tw * 3];
    for r in 0..h {
        for c in 0..tw {
            let oc = 2 * c;
            for ch in 0..3 {
                let px = |k: usize| src[3 * (r * w + oc + k) + ch] as u16;
                temp[3 * (r * tw + c) + ch] = px(0) + 4 * px(1) + 6 * px(2) + 4 * px(3) + px(4);
            }
        }
    }
    let mut out = RgbImage::new(ow as u32, oh as u32);
    let dst: &mut [u8] = &mut out;
    let mut dr = 0;
    let mut r = 2;
    while r + 2 < h && dr < oh {
        for c in 0..tw {
            for ch in 0..3 {
                let t = |rr: usize| temp[3 * (rr * tw + c) + ch] as u32;
                let v = t(r - 2) + 4 * t(r - 1) + 6 * t(r) + 4 * t(r + 1) + t(r + 2);
                dst[3 * (dr * ow + c) + ch] = (v / 256) as u8;
            }
        }
        dr += 1;
        r += 2;
    }
    out
}

/// A view of an RGB image restricted to an integer rectangle (dlib's `sub_image`).
struct View<'a> {
    img: &'a RgbImage,
    x0: i64,
    y0: i64,
    w: i64,
    h: i64,
}

fn transform_bilinear(view: &View, size: usize, t: &Affine) -> RgbImage {
    let mut out = RgbImage::new(size as u32, size as u32);
    let iw = view.img.width() as i64;
    let src = view.img.as_raw();
    let dst: &mut [u8] = &mut out;
    for r in 0..size {
        for c in 0..size {
            let p = t.apply(Point {
                x: c as f64,
                y: r as f64,
            });
            let (left, top) = (p.x.floor() as i64, p.y.floor() as i64);
            if !(left >= 0 && top >= 0 && left + 1 < view.w && top + 1 < view.h) {
                continue; // outside: stays black, as dlib's transform_image
            }
            let (fx, fy) = (p.x - left as f64, p.y - top as f64);
            let at = |y: i64, x: i64, ch: usize| {
                src[(3 * ((y + view.y0) * iw + x + view.x0)) as usize + ch] as f64
            };
            for ch in 0..3 {
                let v = (1.0 - fy) * ((1.0 - fx) * at(top, left, ch) + fx * at(top, left + 1, ch))
                    + fy * ((1.0 - fx) * at(top + 1, left, ch) + fx * at(top + 1, left + 1, ch));
                dst[3 * (r * size + c) + ch] = v as u8;
            }
        }
    }
    out
}

/// dlib's `extract_image_chips`: all chips of one call share one pyramid built over the union of
/// their neighbourhoods, so results depend on which chips are extracted together (as in dlib).
pub fn extract_chips(img: &RgbImage, chips: &[ChipDetails]) -> Vec<RgbImage> {
    let img_rect = Rect {
        left: 0.0,
        top: 0.0,
        right: img.width() as f64 - 1.0,
        bottom: img.height() as f64 - 1.0,
    };
    let mut bbox = Rect {
        left: 0.0,
        top: 0.0,
        right: -1.0,
        bottom: -1.0,
    };
    let mut max_depth = 0;
    for ch in chips {
        let area = (ch.size * ch.size) as f64;
        let mut depth = 0;
        let mut grow = 2.0;
        let mut r = rect_down(&ch.rect);
        while r.area() > area {
            r = rect_down(&r);
            depth += 1;
            grow = grow * 2.0 + 2.0;
        }
        let cent = ch.rect.center();
        let corners = [
            Point {
                x: ch.rect.left,
                y: ch.rect.top,
            },
            Point {
                x: ch.rect.right,
                y: ch.rect.top,
            },
            Point {
                x: ch.rect.left,
                y: ch.rect.bottom,
            },
            Point {
                x: ch.rect.right,
                y: ch.rect.bottom,
            },
        ]
        .map(|p| rotate(cent, p, ch.angle));
        let mut rot = Rect {
            left: corners[0].x,
            top: corners[0].y,
            right: corners[0].x,
            bottom: corners[0].y,
        };
        for p in &corners[1..] {
            rot = rot.union(&Rect {
                left: p.x,
                top: p.y,
                right: p.x,
                bottom: p.y,
            });
        }
        let grown = Rect {
            left: rot.left - grow,
            top: rot.top - grow,
            right: rot.right + grow,
            bottom: rot.bottom + grow,
        };
        bbox = bbox.union(&round_rect(&grown.intersect(&img_rect)));
        max_depth = max_depth.max(depth);
    }
    let sub = View {
        img,
        x0: bbox.left as i64,
        y0: bbox.top as i64,
        w: (bbox.width() as i64).max(0),
        h: (bbox.height() as i64).max(0),
    };
    let mut levels: Vec<RgbImage> = Vec::new();
    if max_depth > 0 && sub.w > 0 && sub.h > 0 {
        let crop = image::imageops::crop_imm(
            img,
            sub.x0 as u32,
            sub.y0 as u32,
            sub.w as u32,
            sub.h as u32,
        )
        .to_image();
        let mut cur = pyramid_down2(&crop);
        for _ in 1..max_depth {
            let next = pyramid_down2(&cur);
            levels.push(cur);
            cur = next;
        }
        levels.push(cur);
    }
    chips
        .iter()
        .map(|ch| {
            let area = (ch.size * ch.size) as f64;
            let mut level: i64 = -1;
            let mut r = Rect {
                left: ch.rect.left - bbox.left,
                top: ch.rect.top - bbox.top,
                right: ch.rect.right - bbox.left,
                bottom: ch.rect.bottom - bbox.top,
            };
            while rect_down(&r).area() > area {
                level += 1;
                r = rect_down(&r);
            }
            let c = r.center();
            let s = (ch.size - 1) as f64;
            let from = [
                Point { x: 0.0, y: 0.0 },
                Point { x: s, y: 0.0 },
                Point { x: 0.0, y: s },
            ];
            let to = [
                rotate(
                    c,
                    Point {
                        x: r.left,
                        y: r.top,
                    },
                    ch.angle,
                ),
                rotate(
                    c,
                    Point {
                        x: r.right,
                        y: r.top,
                    },
                    ch.angle,
                ),
                rotate(
                    c,
                    Point {
                        x: r.left,
                        y: r.bottom,
                    },
                    ch.angle,
                ),
            ];
            let Some(t) = affine_from_3(from, to) else {
                return RgbImage::new(ch.size as u32, ch.size as u32);
            };
            if level < 0 {
                transform_bilinear(&sub, ch.size, &t)
            } else {
                let lv = &levels[level as usize];
                let v = View {
                    img: lv,
                    x0: 0,
                    y0: 0,
                    w: lv.width() as i64,
                    h: lv.height() as i64,
                };
                transform_bilinear(&v, ch.size, &t)
            }
        })
        .collect()
}

/// One aligned chip per face, each extracted on its own (as face_recognition and dlib's
/// `compute_face_descriptor(img, shape)` do).
pub fn face_chip(img: &RgbImage, landmarks: &[Point], size: usize, padding: f64) -> RgbImage {
    let d = face_chip_details(landmarks, size, padding);
    extract_chips(img, &[d])
        .pop()
        .unwrap_or_else(|| RgbImage::new(size as u32, size as u32))
}

/// dlib's `jitter_image` (interpolation.h), which `compute_face_descriptor(..., num_jitters)`
/// averages over: the aligned chip re-cropped around a centre moved by up to 2% of its size, at
/// 97–100% scale, rotated by up to ±3°, and mirrored half the time.
/// The draws come from `rng` (seeded: dlib-style jitters, not dlib's own draws).
pub fn jitter_chip(chip: &RgbImage, rng: &mut SplitMix) -> RgbImage {
    let (cols, rows) = (chip.width() as i64, chip.height() as i64);
    // shrink_rect(get_rect(img), 3), inclusive corners.
    let (l, t, r, b) = (3, 3, cols - 4, rows - 4);
    let (w, h) = ((r - l + 1) as f64, (b - t + 1) as f64);
    let tx = (rng.range(-0.02, 0.02) * w).round() as i64;
    let ty = (rng.range(-0.02, 0.02) * h).round() as i64;
    let scale = rng.range(0.97, 0.99999);
    let box_size = (h / scale) as i64;
    let (cx, cy) = ((l + r + 1) / 2 + tx, (t + b + 1) / 2 + ty);
    // centered_rect(point, width, height)
    let left = cx - box_size / 2;
    let top = cy - box_size / 2;
    let angle = rng.range(-3.0, 3.0).to_radians();
    let d = ChipDetails {
        rect: Rect {
            left: left as f64,
            top: top as f64,
            right: (left + box_size - 1) as f64,
            bottom: (top + box_size - 1) as f64,
        },
        angle,
        size: rows.max(1) as usize,
    };
    let out = extract_chips(chip, &[d])
        .pop()
        .unwrap_or_else(|| RgbImage::new(rows as u32, rows as u32));
    if rng.next_f64() > 0.5 {
        image::imageops::flip_horizontal(&out)
    } else {
        out
    }
}

/// The ArcFace five-point template for a 112×112 chip: eye centres, nose tip, mouth corners
/// (image-left first), as used by InsightFace-style embedders.
pub const ARCFACE_TEMPLATE_112: [[f64; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// ArcFace-style chip: the least-squares similarity transform taking the 5 landmarks onto the
/// template (scaled to `size`), then bilinear resampling; outside the image is black.
pub fn arcface_chip(img: &RgbImage, landmarks: &[Point], size: usize) -> RgbImage {
    let s = size as f64 / 112.0;
    let to: Vec<Point> = ARCFACE_TEMPLATE_112
        .iter()
        .map(|p| Point {
            x: p[0] * s,
            y: p[1] * s,
        })
        .collect();
    let a = crate::geometry::similarity(landmarks, &to);
    warp_similarity(img, &a, size)
}

/// Resample `img` through the similarity `a` (source → chip) into a `size`×`size` chip.
pub fn warp_similarity(img: &RgbImage, a: &crate::geometry::Affine, size: usize) -> RgbImage {
    // Invert [[p, -q], [q, p]]: a similarity's inverse is a similarity.
    let (p, q) = (a.m[0][0], a.m[1][0]);
    let det = p * p + q * q;
    let mut out = RgbImage::new(size as u32, size as u32);
    if det == 0.0 {
        return out;
    }
    let (ip, iq) = (p / det, -q / det);
    let (w, h) = (img.width() as i64, img.height() as i64);
    for v in 0..size {
        for u in 0..size {
            let (du, dv) = (u as f64 - a.t[0], v as f64 - a.t[1]);
            let x = ip * du - iq * dv;
            let y = iq * du + ip * dv;
            let (x0, y0) = (x.floor() as i64, y.floor() as i64);
            let (fx, fy) = (x - x0 as f64, y - y0 as f64);
            let px = |xx: i64, yy: i64| -> [f64; 3] {
                if xx < 0 || yy < 0 || xx >= w || yy >= h {
                    [0.0; 3]
                } else {
                    let p = img.get_pixel(xx as u32, yy as u32);
                    [p[0] as f64, p[1] as f64, p[2] as f64]
                }
            };
            let (a00, a10, a01, a11) = (
                px(x0, y0),
                px(x0 + 1, y0),
                px(x0, y0 + 1),
                px(x0 + 1, y0 + 1),
            );
            let mut o = [0u8; 3];
            for c in 0..3 {
                let top = a00[c] * (1.0 - fx) + a10[c] * fx;
                let bot = a01[c] * (1.0 - fx) + a11[c] * fx;
                o[c] = (top * (1.0 - fy) + bot * fy).round().clamp(0.0, 255.0) as u8;
            }
            out.put_pixel(u as u32, v as u32, image::Rgb(o));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_moves_the_chip_a_little_and_reproducibly() {
        // A chip with a bright square in the middle: every jitter keeps it near the middle.
        let mut chip = RgbImage::new(150, 150);
        for y in 60..90 {
            for x in 60..90 {
                chip.put_pixel(x, y, image::Rgb([255, 255, 255]));
            }
        }
        let centroid = |c: &RgbImage| {
            let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
            for (x, y, p) in c.enumerate_pixels() {
                let v = p[0] as f64;
                sx += x as f64 * v;
                sy += y as f64 * v;
                n += v;
            }
            (sx / n, sy / n, n)
        };
        let (_, _, n0) = centroid(&chip);
        let mut rng = SplitMix::new(7);
        let mut differs = 0;
        for _ in 0..10 {
            let j = jitter_chip(&chip, &mut rng);
            assert_eq!(j.dimensions(), (150, 150));
            let (x, y, n) = centroid(&j);
            assert!((x - 74.5).abs() < 5.0 && (y - 74.5).abs() < 5.0, "{x} {y}");
            // Scale 0.97-1.0 keeps the square's mass within ~7%.
            assert!((n / n0 - 1.0).abs() < 0.1, "{}", n / n0);
            differs += (j != chip) as usize;
        }
        assert!(differs >= 9);
        let (a, b) = (
            jitter_chip(&chip, &mut SplitMix::new(3)),
            jitter_chip(&chip, &mut SplitMix::new(3)),
        );
        assert_eq!(a, b);
    }
}
