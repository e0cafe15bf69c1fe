//! How a track's frames are ranked for keeping its best ones: how good a face is for comparison
//! ([`frame_rank`]), and how much of it no nearer face hides ([`visible_share`]).

use vision::detect::Detection;
use vision::quality::Quality;

/// How good a frame of a face is for comparison, for choosing a track's best frames: resolution
/// (eye distance, saturating at 60 px) times sharpness (saturating) times frontality (the
/// OFIQ-aligned yaw and pitch scores, when measured). facegate's own ranking, not a standard
/// unified quality score.
pub fn frame_rank(q: &Quality) -> f64 {
    let size = (q.eye_distance_px / 60.0).clamp(0.0, 1.0);
    let sharp = q.sharpness.max(0.0);
    let sharp = sharp / (sharp + 50.0);
    let frontal = q.ofiq.as_ref().map_or(1.0, |o| {
        o.head_pose_yaw.score as f64 / 100.0 * (o.head_pose_pitch.score as f64 / 100.0)
    });
    let r = size * sharp * frontal;
    if r.is_finite() {
        r
    } else {
        0.0
    }
}

/// How much of detection `d`'s face shows in a `frame` (width, height): the share of its box
/// inside the frame, times 1 minus the largest share of its box inside the head of a larger or
/// equal detected face (taken as a nearer one), a head being its face box widened by half its
/// side on every side (hair, ears, the outline of a head in front). A face coming in at the
/// frame's edge, or half behind someone, makes a chip of part of a face and whatever is beside
/// it.
pub fn visible_share(d: usize, dets: &[Detection], frame: (u32, u32)) -> f64 {
    let r = &dets[d].rect;
    let area = r.width() * r.height();
    if area.is_nan() || area <= 0.0 {
        return 0.0;
    }
    // Inclusive pixel bounds, as `Rect::width` counts them.
    let overlap = |lo: f64, hi: f64, lo2: f64, hi2: f64| (hi.min(hi2) - lo.max(lo2) + 1.0).max(0.0);
    let (fw, fh) = (frame.0 as f64, frame.1 as f64);
    let inside =
        overlap(r.left, r.right, 0.0, fw - 1.0) * overlap(r.top, r.bottom, 0.0, fh - 1.0) / area;
    let hidden = dets
        .iter()
        .enumerate()
        // Equal sizes: either may be the nearer one (the detector's boxes come in steps).
        .filter(|&(i, o)| i != d && o.rect.width() >= r.width())
        .map(|(_, o)| {
            let m = 0.5 * o.rect.width();
            let w = overlap(r.left, r.right, o.rect.left - m, o.rect.right + m);
            let h = overlap(r.top, r.bottom, o.rect.top - m, o.rect.bottom + m);
            w * h / area
        })
        .fold(0.0, f64::max);
    (inside.min(1.0) * (1.0 - hidden)).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vision::geometry::Rect;

    #[test]
    fn rank_prefers_larger_sharper_faces_and_survives_nan() {
        let q = |eye: f64, sharp: f64| Quality {
            face_px: eye * 2.5,
            eye_distance_px: eye,
            sharpness: sharp,
            ofiq: None,
        };
        assert!(frame_rank(&q(60.0, 200.0)) > frame_rank(&q(30.0, 200.0)));
        assert!(frame_rank(&q(60.0, 200.0)) > frame_rank(&q(60.0, 20.0)));
        assert_eq!(frame_rank(&q(f64::NAN, 1.0)), 0.0);
    }

    const FRAME: (u32, u32) = (640, 480);

    fn det(left: f64, top: f64, side: f64) -> Detection {
        Detection {
            rect: Rect {
                left,
                top,
                // Inclusive: `width()` is `side`.
                right: left + side - 1.0,
                bottom: top + side - 1.0,
            },
            score: 1.0,
            landmarks: None,
        }
    }

    #[test]
    fn a_face_behind_a_nearer_head_or_out_of_the_frame_is_hidden_one_in_front_or_apart_is_not() {
        // 0: a 100 px face; 1: a larger (nearer) face whose head covers 0's left 60%.
        let dets = [det(200.0, 100.0, 100.0), det(80.0, 80.0, 120.0)];
        let visible = visible_share(0, &dets, FRAME);
        assert!((visible - 0.4).abs() < 1e-9, "{visible}");
        // The larger face is in front: nothing of it is hidden.
        assert_eq!(visible_share(1, &dets, FRAME), 1.0);
        // A larger face beyond the reach of its head hides nothing.
        let apart = [det(100.0, 100.0, 100.0), det(270.0, 100.0, 120.0)];
        assert_eq!(visible_share(0, &apart, FRAME), 1.0);
        // Equal sizes: either may be nearer, so both count as partly hidden.
        let side_by_side = [det(0.0, 0.0, 100.0), det(100.0, 0.0, 100.0)];
        assert!((visible_share(0, &side_by_side, FRAME) - 0.5).abs() < 1e-9);
        assert!((visible_share(1, &side_by_side, FRAME) - 0.5).abs() < 1e-9);
        // Entirely inside a nearer head: nothing visible; a degenerate box is never visible.
        assert_eq!(
            visible_share(0, &[det(40.0, 40.0, 20.0), det(0.0, 0.0, 100.0)], FRAME),
            0.0
        );
        assert_eq!(visible_share(0, &[det(0.0, 0.0, 0.0)], FRAME), 0.0);
        // A face a quarter out of the frame on the left, or on the bottom; half hidden as well.
        assert!((visible_share(0, &[det(-25.0, 10.0, 100.0)], FRAME) - 0.75).abs() < 1e-9);
        assert!((visible_share(0, &[det(300.0, 405.0, 100.0)], FRAME) - 0.75).abs() < 1e-9);
        let both = [det(-25.0, 10.0, 100.0), det(75.0, 10.0, 100.0)];
        assert!((visible_share(0, &both, FRAME) - 0.375).abs() < 1e-9);
        assert_eq!(visible_share(0, &[det(700.0, 10.0, 100.0)], FRAME), 0.0);
    }
}
