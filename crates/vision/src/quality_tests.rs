//! The OFIQ-aligned components on synthetic chips whose answers are known.
use super::*;

const DLIB: AlignmentSpec = AlignmentSpec::Dlib5 { padding: 0.25 };

/// Landmarks of a frontal face with the eyes `ied` apart, centred at (cx, cy), in dlib's order
/// (left-eye corners, right-eye corners, nose base), placed by the template.
fn frontal(cx: f64, cy: f64, ied: f64) -> Vec<Point> {
    let t = DLIB_TEMPLATE_5;
    let tpl_ied = ((t[0][0] + t[1][0]) - (t[2][0] + t[3][0])) / 2.0;
    let k = ied / tpl_ied;
    t.iter()
        .map(|p| Point {
            x: cx + (p[0] - 0.49) * k,
            y: cy + (p[1] - 0.22) * k,
        })
        .collect()
}

fn chip(f: impl Fn(u32, u32) -> [u8; 3]) -> RgbImage {
    RgbImage::from_fn(150, 150, |x, y| image::Rgb(f(x, y)))
}

fn rect() -> Rect {
    Rect {
        left: 200.0,
        top: 150.0,
        right: 400.0,
        bottom: 350.0,
    }
}

#[test]
fn mappings_follow_ofiqs_definitions() {
    // OFIQ: inter-eye distance 100·sigmoid(x; 70, 20): 50 at 70 px, ~88 at 110 px.
    assert_eq!(convert(70.0, 100.0, 0.0, 1.0, 70.0, 20.0).score, 50);
    assert_eq!(convert(110.0, 100.0, 0.0, 1.0, 70.0, 20.0).score, 88);
    // Head pose: 100·cos²: 75 at 30°, 0 beyond 90°.
    assert_eq!(pose(30.0).score, 75);
    assert_eq!(pose(120.0).score, 0);
    // Luminance of pure black, mid grey and white (linear light).
    assert_eq!(luminance(&image::Rgb([0, 0, 0])), 0);
    assert_eq!(luminance(&image::Rgb([255, 255, 255])), 255);
    assert_eq!(luminance(&image::Rgb([128, 128, 128])), 55);
}

#[test]
fn exposure_and_uniformity_see_what_the_chip_shows() {
    let lm = frontal(300.0, 220.0, 90.0);
    let m = |c: &RgbImage| {
        Quality::measure(&rect(), &lm, c, &DLIB, (640, 480))
            .ofiq
            .unwrap()
    };
    // A natural mid-tone face with texture: good everywhere photometric.
    let good = m(&chip(|x, y| {
        let v = (140 + ((x * 7 + y * 13) % 60)) as u8;
        [v, v - 20, v - 40]
    }));
    assert!(good.luminance_mean.score > 80, "{:?}", good.luminance_mean);
    assert!(good.under_exposure_prevention.score > 90);
    assert!(good.over_exposure_prevention.score >= 90);
    assert!(good.dynamic_range.score > 50, "{:?}", good.dynamic_range);
    // Nearly black: under-exposed, dark mean.
    let dark = m(&chip(|_, _| [8, 8, 8]));
    assert!(
        dark.under_exposure_prevention.score < 10,
        "{:?}",
        dark.under_exposure_prevention
    );
    assert!(dark.luminance_mean.score < 10);
    assert_eq!(dark.dynamic_range.score, 0, "one grey level has no entropy");
    // Blown out: over-exposed.
    let white = m(&chip(|_, _| [255, 255, 255]));
    assert!(white.over_exposure_prevention.score <= 1);
    // Lit from one side: the cheeks differ.
    let half = m(&chip(|x, _| {
        if x < 75 {
            [40, 40, 40]
        } else {
            [220, 220, 220]
        }
    }));
    assert!(
        half.illumination_uniformity.score < 10,
        "{:?}",
        half.illumination_uniformity
    );
    let even = m(&chip(|_, _| [150, 150, 150]));
    assert_eq!(even.illumination_uniformity.score, 100);
}

#[test]
fn geometry_pose_and_crop() {
    let c = chip(|_, _| [128, 128, 128]);
    let q = |lm: &[Point], size: (u32, u32)| {
        Quality::measure(&rect(), lm, &c, &DLIB, size).ofiq.unwrap()
    };
    let f = q(&frontal(320.0, 200.0, 90.0), (640, 480));
    assert!(f.head_pose_roll.native.abs() < 1.0 && f.head_pose_roll.score == 100);
    assert!(f.head_pose_yaw.native.abs() < 1.0, "{:?}", f.head_pose_yaw);
    assert!(f.head_pose_pitch.native < 5.0, "{:?}", f.head_pose_pitch);
    assert!(f.inter_eye_distance.score > 60);
    assert!(f.leftward_crop.score > 90 && f.rightward_crop.score > 90);
    // The same face tilted 30° in the image plane: roll 30, score 75.
    let (s, co) = 30f64.to_radians().sin_cos();
    let tilted: Vec<Point> = frontal(320.0, 200.0, 90.0)
        .iter()
        .map(|p| {
            let (x, y) = (p.x - 320.0, p.y - 200.0);
            Point {
                x: 320.0 + x * co - y * s,
                y: 200.0 + x * s + y * co,
            }
        })
        .collect();
    let t = q(&tilted, (640, 480));
    assert!(
        (t.head_pose_roll.native.abs() - 30.0).abs() < 0.5,
        "{:?}",
        t.head_pose_roll
    );
    assert!(
        t.head_pose_yaw.native.abs() < 1.0,
        "roll must not read as yaw"
    );
    // Nose moved sideways by a quarter of the eye distance: turned head.
    let mut turned = frontal(320.0, 200.0, 90.0);
    turned[4].x += 22.5;
    assert!(q(&turned, (640, 480)).head_pose_yaw.native.abs() > 20.0);
    // A face at the image's left edge is cropped on that side.
    let edge = q(&frontal(40.0, 200.0, 90.0), (640, 480));
    assert!(edge.leftward_crop.score < 10, "{:?}", edge.leftward_crop);
    // Head size: eye-to-chin near 0.45 of the image height scores high, a small face low.
    let big = q(&frontal(320.0, 200.0, 90.0), (640, 280));
    let small = q(&frontal(320.0, 200.0, 30.0), (640, 1000));
    assert!(big.head_size.score > small.head_size.score);
}

#[test]
fn single_face_measure_and_degenerate_input() {
    let c = chip(|_, _| [128, 128, 128]);
    let mut q = Quality::measure(&rect(), &frontal(320.0, 200.0, 90.0), &c, &DLIB, (640, 480));
    q.set_single_face(&[100.0]);
    assert_eq!(q.ofiq.as_ref().unwrap().single_face_present.score, 100);
    q.set_single_face(&[100.0, 50.0, 10.0]);
    assert_eq!(q.ofiq.as_ref().unwrap().single_face_present.score, 50);
    // Too few landmarks, NaN landmarks, an empty chip: answers, no panic.
    let none = Quality::measure(&rect(), &[], &c, &DLIB, (640, 480));
    assert!(none.ofiq.is_none());
    let nan = vec![
        Point {
            x: f64::NAN,
            y: 0.0
        };
        5
    ];
    let _ = Quality::measure(&rect(), &nan, &c, &DLIB, (640, 480));
    let _ = Quality::measure(
        &rect(),
        &frontal(0.0, 0.0, 0.0),
        &RgbImage::new(0, 0),
        &DLIB,
        (0, 0),
    );
}
