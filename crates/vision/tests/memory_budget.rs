//! A frame larger than the detector's memory budget is brought down before detection and its
//! boxes mapped back; a frame within it is searched as it is. Needs the installed pack and
//! ../shared (skips outside CI when missing).
#![allow(clippy::unwrap_used)] // tests and benchmarks stop at the first surprise

mod common;
use common::{load_rgb, pack_and_runtime, shared};
use vision::models::{DetectorChoice, Models};
use vision::pipeline::Pipeline;

#[test]
fn large_frames_are_searched_within_the_budget_and_boxes_map_back() {
    let (Some(photo), Some((pack, _))) = (shared("data/people/obama.jpg"), pack_and_runtime())
    else {
        return;
    };
    let native = load_rgb(&photo);
    // 2.2x: 2002x2501 = 5.0 MP, over MMOD's 3 MP budget, under HOG's 16 MP.
    let big = image::imageops::resize(
        &native,
        native.width() * 22 / 10,
        native.height() * 22 / 10,
        image::imageops::FilterType::Triangle,
    );
    for (choice, over_budget) in [(DetectorChoice::Pack, true), (DetectorChoice::Hog, false)] {
        let p = Pipeline::new(Models::load_with(&pack, 1, choice).unwrap());
        assert_eq!(p.detection_scale(native.width(), native.height()), None);
        assert_eq!(
            p.detection_scale(big.width(), big.height()).is_some(),
            over_budget,
            "{}",
            p.detector_name()
        );
        assert_eq!(
            p.detection_warning(big.width(), big.height()).is_some(),
            over_budget
        );
        let want = p.detect(&native).unwrap();
        let got = p.detect(&big).unwrap();
        assert_eq!(want.len(), 1);
        assert_eq!(got.len(), 1, "{}", p.detector_name());
        let (w, g) = (want[0].rect, got[0].rect);
        // Same face: box centres within 10% of the face width, sizes within 20%.
        let c = |r: vision::geometry::Rect, k: f64| {
            ((r.left + r.right) / 2.0 / k, (r.top + r.bottom) / 2.0 / k)
        };
        let ((wx, wy), (gx, gy)) = (c(w, 1.0), c(g, 2.2));
        assert!(
            (wx - gx).abs() < 0.1 * w.width() && (wy - gy).abs() < 0.1 * w.width(),
            "{}: centre {gx},{gy} vs {wx},{wy}",
            p.detector_name()
        );
        let ratio = g.width() / 2.2 / w.width();
        assert!(
            (0.8..1.25).contains(&ratio),
            "{}: size ratio {ratio}",
            p.detector_name()
        );
    }
}
