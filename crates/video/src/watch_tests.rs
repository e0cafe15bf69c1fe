use super::*;

fn recent(track: u64, ended: u64, left_view: bool, template: Vec<f32>) -> Recent {
    Recent {
        track,
        ended,
        left_view,
        template: Zeroizing::new(template),
    }
}

#[test]
fn decided_templates_are_forgotten_after_three_keepings_and_decided_tracks_finish_first() {
    let mut w = Watcher::new(WatchConfig::default());
    let kept = w.lost_kept_for();
    w.recent.push(recent(1, 100, false, vec![1.0]));
    w.recent.push(recent(2, 100, true, vec![1.0]));
    w.forget_recent(100 + 3 * kept);
    assert_eq!(w.recent.len(), 2);
    w.forget_recent(101 + 3 * kept);
    assert!(w.recent.is_empty());

    // Started in the order 3, 4, 5, 6; 4 and 6 were decided.
    for (id, decided) in [(3, false), (4, true), (5, false), (6, true)] {
        let mut s = TrackState::new(id * 10, id * 10, true, None);
        s.decided = decided;
        w.tracks.insert(id, s);
    }
    assert_eq!(w.finishing_order(vec![6, 5, 4, 3, 9]), vec![4, 6, 3, 5, 9]);
}

#[test]
fn a_lost_track_is_kept_the_same_camera_frames_at_any_detection_interval() {
    let frames = WatchConfig::default().tracker.max_lost_frames;
    assert_eq!(frames, 90);
    for (every, steps) in [(1, 90), (4, 23), (6, 15), (7, 13)] {
        let mut w = Watcher::new(WatchConfig {
            detect_every: every,
            ..WatchConfig::default()
        });
        // The tracker steps once per `every` frames: 90 frames, rounded up to whole steps.
        assert_eq!(w.tracker.config().max_lost_frames, steps, "every {every}");
        assert_eq!(w.lost_kept_for(), 90);
        // Whatever `auto` changes the interval to later.
        w.set_detect_every(6);
        assert_eq!(w.lost_kept_for(), 90);
    }
}

#[test]
fn spans_counted_in_frames_include_the_frames_the_source_lost() {
    let mut w = Watcher::new(WatchConfig::default());
    let kept = w.lost_kept_for();
    assert_eq!(w.on_camera(500), 500);
    // A decision that ended at frame 500, nothing lost so far.
    w.recent.push(recent(1, w.on_camera(500), false, vec![1.0]));
    // A live source numbers what it delivers one by one: 60 frames lost after it put its frame
    // 600 at 660 on the camera's count.
    w.note_lost(40);
    w.note_lost(20);
    assert_eq!(w.on_camera(600), 660);
    // So the decision is forgotten three keepings later in camera frames: 60 delivered frames
    // sooner than without the losses.
    w.forget_recent(w.on_camera(500 + 3 * kept - 60));
    assert_eq!(w.recent.len(), 1);
    w.forget_recent(w.on_camera(501 + 3 * kept - 60));
    assert!(w.recent.is_empty());
    // The next step spans them too.
    assert_eq!(w.lost_since_step, 60);
}

#[test]
fn a_track_kept_only_mostly_hidden_frames_is_only_hidden_one_clear_frame_is_enough() {
    let kept = |visible: f64| Kept {
        chip: None,
        embedding: None,
        pad: None,
        quality: Quality {
            face_px: 100.0,
            eye_distance_px: 40.0,
            sharpness: 100.0,
            ofiq: None,
        },
        rank: visible,
        visible,
        frame: 0,
        rect: Rect {
            left: 0.0,
            top: 0.0,
            right: 99.0,
            bottom: 99.0,
        },
    };
    let mut s = TrackState::new(0, 0, true, None);
    assert!(!only_hidden(&s), "nothing kept: nothing to call hidden");
    s.kept = vec![kept(0.2), kept(0.49)];
    assert!(only_hidden(&s));
    s.kept.push(kept(0.5));
    assert!(!only_hidden(&s));
}

#[test]
fn a_track_is_compared_with_a_recent_one_it_may_continue_and_not_with_one_it_cannot() {
    let cfg = WatchConfig {
        duplicate_distance: 0.4,
        ..WatchConfig::default()
    };
    let kept = cfg.tracker.max_lost_frames as u64;
    let mut w = Watcher::new(cfg);
    let face = vec![1.0, 0.0, 0.0];
    let near = [0.9, 0.1, 0.0];
    // Lost at 1000 (hidden): whoever started up to a lost track's keeping later may be them.
    w.recent.push(recent(7, 1000, false, face.clone()));
    let none = HashSet::new();
    assert_eq!(w.duplicate_of(9, &near, &none, 400, false), Some(7));
    assert_eq!(w.duplicate_of(9, &near, &none, 1000 + kept, false), Some(7));
    assert_eq!(w.duplicate_of(9, &near, &none, 1001 + kept, false), None);
    // Too far apart, or seen together: never the same passer-by.
    assert_eq!(
        w.duplicate_of(9, &[0.0, 1.0, 0.0], &none, 1010, false),
        None
    );
    let together: HashSet<u64> = [7].into();
    assert_eq!(w.duplicate_of(9, &near, &together, 1010, false), None);
    // Walked out at 2000: a track that started before (lost behind someone, deciding late)
    // may be them; one that started after is someone coming back, a new passer-by.
    w.recent.clear();
    w.recent.push(recent(8, 2000, true, face));
    assert_eq!(w.duplicate_of(9, &near, &none, 1990, false), Some(8));
    assert_eq!(w.duplicate_of(9, &near, &none, 2000, false), None);
    assert_eq!(w.duplicate_of(9, &near, &none, 2030, false), None);
}

#[test]
fn an_early_match_is_a_clear_match_in_the_packs_own_geometry() {
    use vision::pack::Metric;
    // A distance pack: within the factor times its threshold of any reference, nothing farther.
    let refs = vec![vec![1.0, 0.0, 0.0], vec![0.0, 2.0, 0.0]];
    let e = EarlyMatch::new(refs, Metric::Euclidean, 0.6, 0.8);
    assert!((e.within - 0.48).abs() < 1e-6);
    assert!(e.settles(&[1.0, 0.47, 0.0]));
    assert!(e.settles(&[0.0, 2.0, 0.3]));
    assert!(!e.settles(&[1.0, 0.49, 0.0]));
    // Inside the decision threshold but not clearly: no early decision.
    assert!(!e.settles(&[1.0, 0.55, 0.0]));
    // A similarity pack compares on the unit sphere, whatever the templates' lengths: cosine
    // 0.5 is the distance sqrt(2 - 2 * 0.5) = 1; with the factor 0.9, 0.9 apart, which is
    // cosine 1 - 0.81 / 2 = 0.595.
    let e = EarlyMatch::new([vec![3.0, 0.0]], Metric::Cosine, 0.5, 0.9);
    assert!((e.within - 0.9).abs() < 1e-6);
    let at = |cos: f32| vec![cos, (1.0 - cos * cos).sqrt()];
    assert!(e.settles(&pack_geometry(true, at(0.60))));
    assert!(!e.settles(&pack_geometry(true, at(0.59))));
    // A match only just above the threshold is not settled early.
    assert!(!e.settles(&pack_geometry(true, at(0.52))));
}
