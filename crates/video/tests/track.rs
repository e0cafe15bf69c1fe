//! The tracker on synthetic paths with known identities.
#![allow(clippy::unwrap_used)] // tests stop at the first surprise

use video::track::{Observation, Tracker, TrackerConfig};
use vision::geometry::Rect;

fn face(cx: f64, cy: f64, side: f64, score: f32) -> Observation {
    Observation {
        rect: Rect {
            left: cx - side / 2.0,
            top: cy - side / 2.0,
            right: cx + side / 2.0,
            bottom: cy + side / 2.0,
        },
        score,
    }
}

/// Runs frames of (person, observation) through the tracker; returns, per person, the track ids
/// their detections were assigned to (in order, repeats collapsed), and the ends reported.
fn run(
    frames: &[Vec<(usize, Observation)>],
    looks: Option<&[Vec<f32>]>,
    config: TrackerConfig,
) -> (Vec<Vec<u64>>, Vec<u64>) {
    let mut t = Tracker::new(config);
    let people = frames
        .iter()
        .flatten()
        .map(|(p, _)| p + 1)
        .max()
        .unwrap_or(0);
    let mut ids: Vec<Vec<u64>> = vec![Vec::new(); people];
    let mut ended = Vec::new();
    for f in frames {
        let obs: Vec<Observation> = f.iter().map(|(_, o)| *o).collect();
        let who: Vec<usize> = f.iter().map(|(p, _)| *p).collect();
        let up = t.update(&obs, &mut |i| looks.map(|l| l[who[i]].clone()));
        if let Some(l) = looks {
            for &(d, id) in &up.assigned {
                t.set_appearance(id, l[who[d]].clone());
            }
        }
        for (d, id) in up.assigned {
            let v = &mut ids[who[d]];
            if v.last() != Some(&id) {
                v.push(id);
            }
        }
        ended.extend(up.ended);
    }
    ended.extend(t.finish());
    (ids, ended)
}

#[test]
fn separate_faces_keep_one_id_each() {
    let frames: Vec<Vec<(usize, Observation)>> = (0..60)
        .map(|k| {
            let k = k as f64;
            vec![
                (0, face(100.0 + 3.0 * k, 200.0, 80.0, 1.0)),
                (1, face(500.0 - 2.0 * k, 150.0 + k, 60.0 + 0.5 * k, 0.8)),
            ]
        })
        .collect();
    let (ids, ended) = run(&frames, None, TrackerConfig::default());
    assert_eq!(ids[0].len(), 1, "{ids:?}");
    assert_eq!(ids[1].len(), 1, "{ids:?}");
    assert_ne!(ids[0][0], ids[1][0]);
    assert_eq!(ended.len(), 2);
}

/// Two people walk towards each other on one line and pass: their boxes overlap for several
/// frames. Their faces differ, and the tracker may look at them when the boxes are ambiguous.
fn crossing() -> Vec<Vec<(usize, Observation)>> {
    (0..50)
        .map(|k| {
            let k = k as f64;
            vec![
                (0, face(100.0 + 8.0 * k, 200.0, 80.0, 1.0)),
                (1, face(500.0 - 8.0 * k, 205.0, 80.0, 1.0)),
            ]
        })
        .collect()
}

#[test]
fn people_crossing_keep_their_ids() {
    let looks = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
    let (ids, _) = run(&crossing(), Some(&looks), TrackerConfig::default());
    assert_eq!(ids[0].len(), 1, "person 0 changed track: {ids:?}");
    assert_eq!(ids[1].len(), 1, "person 1 changed track: {ids:?}");
    assert_ne!(ids[0][0], ids[1][0]);
}

#[test]
fn crossing_at_an_angle_keeps_ids_on_motion_alone() {
    // Diagonal paths crossing: the velocity the filter learned carries each box through.
    let frames: Vec<Vec<(usize, Observation)>> = (0..50)
        .map(|k| {
            let k = k as f64;
            vec![
                (0, face(100.0 + 8.0 * k, 100.0 + 6.0 * k, 70.0, 1.0)),
                (1, face(500.0 - 8.0 * k, 100.0 + 6.0 * k, 70.0, 1.0)),
            ]
        })
        .collect();
    let (ids, _) = run(&frames, None, TrackerConfig::default());
    assert_eq!((ids[0].len(), ids[1].len()), (1, 1), "{ids:?}");
}

#[test]
fn a_short_occlusion_keeps_the_id_a_long_absence_does_not() {
    let path = |k: usize| face(100.0 + 4.0 * k as f64, 200.0, 80.0, 1.0);
    // Unseen for frames 20..32 (12 frames), then back on its path.
    let frames: Vec<Vec<(usize, Observation)>> = (0..60)
        .map(|k| {
            if (20..32).contains(&k) {
                vec![]
            } else {
                vec![(0, path(k))]
            }
        })
        .collect();
    let (ids, ended) = run(&frames, None, TrackerConfig::default());
    assert_eq!(ids[0].len(), 1, "{ids:?}");
    assert_eq!(ended.len(), 1);
    // Gone for longer than max_lost_frames: a new passer-by as far as the tracker knows.
    let cfg = TrackerConfig {
        max_lost_frames: 10,
        ..Default::default()
    };
    let frames: Vec<Vec<(usize, Observation)>> = (0..60)
        .map(|k| {
            if (20..40).contains(&k) {
                vec![]
            } else {
                vec![(0, face(300.0, 200.0, 80.0, 1.0))]
            }
        })
        .collect();
    let (ids, ended) = run(&frames, None, cfg);
    assert_eq!(ids[0].len(), 2, "{ids:?}");
    assert_eq!(ended.len(), 2);
}

/// A lost track is kept for a time, not a number of updates: updates that each span 4 motion
/// steps (detection on every 4th frame of a tracker stepping in frames) end it after a quarter
/// of the updates.
#[test]
fn a_lost_track_is_kept_as_long_in_time_however_far_apart_the_updates_are() {
    let cfg = TrackerConfig {
        max_lost_frames: 10,
        ..Default::default()
    };
    // Seen on 10 updates, then gone: the update on which its end is reported, per spacing.
    let ended_after = |steps: f32| {
        let mut t = Tracker::new(cfg);
        let seen = face(300.0, 200.0, 80.0, 1.0);
        for _ in 0..10 {
            let up = t.update_over(steps, &[seen], &mut |_| None);
            assert!(up.ended.is_empty());
        }
        (1..=40)
            .find(|_| !t.update_over(steps, &[], &mut |_| None).ended.is_empty())
            .unwrap()
    };
    // Kept 10 steps: ended on the 11th step unseen.
    assert_eq!(ended_after(1.0), 11);
    assert_eq!(ended_after(4.0), 3, "12 steps unseen > 10");
    assert_eq!(
        ended_after(5.0),
        3,
        "10 steps are not more than 10: the 3rd update ends it"
    );
    assert_eq!(ended_after(0.5), 21);
}

#[test]
fn weak_detections_continue_a_track_but_never_start_one() {
    let cfg = TrackerConfig::default();
    // Confident for 10 frames, then weak (turned away) for 10, then confident again.
    let frames: Vec<Vec<(usize, Observation)>> = (0..30)
        .map(|k| {
            let s = if (10..20).contains(&k) { -0.3 } else { 1.0 };
            let mut f = vec![(0, face(200.0 + 2.0 * k as f64, 200.0, 80.0, s))];
            // A weak detection far from everything: noise, must not become a track.
            f.push((1, face(600.0, 50.0, 40.0, -0.3)));
            f
        })
        .collect();
    let (ids, _) = run(&frames, None, cfg);
    assert_eq!(ids[0].len(), 1, "{ids:?}");
    assert!(ids[1].is_empty(), "a weak detection started a track");
}

#[test]
fn one_frame_false_detections_are_not_reported() {
    let frames: Vec<Vec<(usize, Observation)>> = (0..20)
        .map(|k| {
            let mut f = vec![(0, face(200.0, 200.0, 80.0, 1.0))];
            if k % 5 == 0 {
                f.push((1, face(50.0 + 30.0 * k as f64, 400.0, 40.0, 0.5)));
            }
            f
        })
        .collect();
    let (ids, ended) = run(&frames, None, TrackerConfig::default());
    assert!(ids[1].is_empty(), "{ids:?}");
    assert_eq!(ended.len(), 1);
}

#[test]
fn degenerate_boxes_do_not_panic() {
    let mut t = Tracker::new(TrackerConfig::default());
    let bad = [
        face(f64::NAN, 10.0, 10.0, 1.0),
        face(10.0, 10.0, 0.0, 1.0),
        face(1e300, -1e300, 1e300, 1.0),
        face(10.0, 10.0, 10.0, f32::NAN),
    ];
    for _ in 0..5 {
        t.update(&bad, &mut |_| None);
    }
    t.finish();
}

/// Two people meet, overlap and walk back the way they came: motion alone carries each track
/// on through the other (a swap); their faces keep them apart.
#[test]
fn appearance_prevents_the_swap_that_motion_makes() {
    let frames: Vec<Vec<(usize, Observation)>> = (0..60)
        .map(|k| {
            let x = if k < 30 {
                8.0 * k as f64
            } else {
                8.0 * (60 - k) as f64
            };
            vec![
                (0, face(100.0 + x, 200.0, 80.0, 1.0)),
                (1, face(580.0 - x, 205.0, 80.0, 1.0)),
            ]
        })
        .collect();
    let (blind, _) = run(&frames, None, TrackerConfig::default());
    assert!(
        blind[0].len() > 1,
        "the scenario must fool a motion-only tracker: {blind:?}"
    );
    let looks = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
    let (ids, _) = run(&frames, Some(&looks), TrackerConfig::default());
    assert_eq!((ids[0].len(), ids[1].len()), (1, 1), "{ids:?}");
}

/// A face hidden behind another comes out half hidden (its first frames look unlike it) and away
/// from where its lost track coasted: it starts a new track, and once its whole face is seen the
/// lost track takes that young track over (reported as merged), so the passer-by stays one track.
#[test]
fn a_face_found_again_half_hidden_is_taken_over_once_it_is_whole() {
    let whole = vec![1.0, 0.0, 0.0];
    let half_hidden = vec![0.6, 0.8, 0.0];
    let mut t = Tracker::new(TrackerConfig::default());
    let mut ids = Vec::new();
    let mut merged = Vec::new();
    let mut ended = Vec::new();
    for k in 0..80usize {
        // Walks right for 20 frames, hidden for 30 (standing still behind someone), then on.
        let (obs, look) = match k {
            0..20 => (Some(face(100.0 + 4.0 * k as f64, 200.0, 80.0, 1.0)), &whole),
            20..50 => (None, &whole),
            50..53 => (
                Some(face(180.0 + 4.0 * (k - 50) as f64, 200.0, 80.0, 1.0)),
                &half_hidden,
            ),
            _ => (
                Some(face(180.0 + 4.0 * (k - 50) as f64, 200.0, 80.0, 1.0)),
                &whole,
            ),
        };
        let dets: Vec<Observation> = obs.into_iter().collect();
        let up = t.update(&dets, &mut |_| Some(look.clone()));
        if k == 0 {
            t.set_appearance(1, whole.clone());
        }
        for (_, id) in &up.assigned {
            if ids.last() != Some(id) {
                ids.push(*id);
            }
        }
        merged.extend(up.merged);
        ended.extend(up.ended);
    }
    ended.extend(t.finish());
    assert_eq!(ids, vec![1, 2, 1], "{ids:?}");
    assert_eq!(merged, vec![(2, 1)]);
    assert_eq!(
        ended,
        vec![1],
        "the young track ends as merged, not as a passer-by"
    );

    // A different face coming out there is not taken for the lost one.
    let mut t = Tracker::new(TrackerConfig::default());
    let other = vec![0.0, 0.0, 1.0];
    let mut merged = Vec::new();
    for k in 0..80usize {
        let (obs, look) = match k {
            0..20 => (Some(face(100.0 + 4.0 * k as f64, 200.0, 80.0, 1.0)), &whole),
            20..50 => (None, &whole),
            _ => (
                Some(face(180.0 + 4.0 * (k - 50) as f64, 200.0, 80.0, 1.0)),
                &other,
            ),
        };
        let dets: Vec<Observation> = obs.into_iter().collect();
        let up = t.update(&dets, &mut |_| Some(look.clone()));
        if k == 0 {
            t.set_appearance(1, whole.clone());
        }
        merged.extend(up.merged);
    }
    assert!(merged.is_empty(), "{merged:?}");
}

/// A face that walks out of the picture: once its predicted centre has left the frame its track
/// ends, instead of coasting for `max_lost_frames` (and being there to claim whoever comes in).
#[test]
fn a_track_ends_when_its_face_has_left_the_frame() {
    let end_frame = |frame_size: Option<(u32, u32)>| {
        let mut t = Tracker::new(TrackerConfig::default());
        for k in 0..200u32 {
            if let Some((w, h)) = frame_size {
                t.set_frame_size(w, h);
            }
            // Walks right at 8 px a frame; the detector stops finding it at the right edge.
            let x = 100.0 + 8.0 * k as f64;
            let dets: Vec<Observation> = if x < 610.0 {
                vec![face(x, 200.0, 80.0, 1.0)]
            } else {
                vec![]
            };
            let up = t.update(&dets, &mut |_| None);
            if !up.ended.is_empty() {
                // Reported as gone out of view only when that is why it ended.
                return (k, up.left_view == up.ended);
            }
        }
        (u32::MAX, false)
    };
    // Last seen at frame 63 (x = 604): its centre passes 640 five frames later.
    let (with_size, left) = end_frame(Some((640, 480)));
    assert!((64..=70).contains(&with_size), "ended at {with_size}");
    assert!(left);
    let (without, left) = end_frame(None);
    assert_eq!(without, 63 + TrackerConfig::default().max_lost_frames + 1);
    assert!(!left);
}

/// The watcher's duplicate check asks the tracker which other live track has a face within its
/// duplicate distance: never the asking track itself, only eligible ones, the closest.
#[test]
fn same_face_finds_the_closest_other_eligible_track_within_the_distance() {
    let mut t = Tracker::new(TrackerConfig::default());
    let dets = [face(100.0, 100.0, 80.0, 1.0), face(400.0, 100.0, 80.0, 1.0)];
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids = t.update(&dets, &mut |_| None).assigned;
    }
    let (a, b) = (ids[0].1, ids[1].1);
    t.set_appearance(a, vec![0.0, 0.0]);
    t.set_appearance(b, vec![0.3, 0.0]);
    let within = 0.51;
    // A face at 0.1 from a and 0.2 from b: a is the closest.
    let same = |asking, face: &[f32], within| t.same_face(asking, face, within, |_| true);
    assert_eq!(same(99, &[0.1, 0.0], within).map(|x| x.0), Some(a));
    // Asked by a itself: b.
    assert_eq!(same(a, &[0.1, 0.0], within).map(|x| x.0), Some(b));
    // a not eligible: b.
    assert_eq!(
        t.same_face(99, &[0.1, 0.0], within, |id| id != a)
            .map(|x| x.0),
        Some(b)
    );
    // Beyond the distance from both: none; within a wider one: a.
    assert_eq!(same(99, &[0.0, 0.6], within), None);
    assert_eq!(same(99, &[0.0, 0.6], 0.61).map(|x| x.0), Some(a));
}

/// A face walking 12 px a frame, updated on every frame for a second, then again after a gap of
/// 8 frames (a detection interval that grew, or frames a live camera lost). Told how long the
/// gap was, the tracker predicts the face where it now is and keeps it; counting the gap as one
/// step, it predicts 84 px short — further than the 80 px face is wide — and loses it.
#[test]
fn a_gap_of_several_frames_is_bridged_when_the_tracker_is_told_its_length() {
    let at = |k: f64| face(100.0 + 12.0 * k, 200.0, 80.0, 1.0);
    let after_gap = |gap_steps: f32| {
        let mut t = Tracker::new(TrackerConfig::default());
        for k in 0..30 {
            let up = t.update(&[at(k as f64)], &mut |_| None);
            if k >= 2 {
                assert_eq!(up.assigned, [(0, 1)], "frame {k}");
            }
        }
        t.update_over(gap_steps, &[at(37.0)], &mut |_| None)
            .assigned
    };
    assert_eq!(after_gap(8.0), [(0, 1)]);
    assert_eq!(after_gap(1.0), []);
    // One step is what `update` takes: the same as before it had a length to take.
    let mut a = Tracker::new(TrackerConfig::default());
    let mut b = Tracker::new(TrackerConfig::default());
    for k in 0..20 {
        let o = [at(k as f64)];
        assert_eq!(
            a.update(&o, &mut |_| None),
            b.update_over(1.0, &o, &mut |_| None)
        );
        assert_eq!(a.rect(1), b.rect(1));
    }
}
