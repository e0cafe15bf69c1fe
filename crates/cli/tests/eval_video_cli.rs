//! `facegate eval video` end to end: scenes generated from the LFW development split (../shared),
//! tracked and decided, scored against their ground truth; replayed live, exported as MP4 and
//! read back through H.264.
#![allow(clippy::unwrap_used)] // tests stop at the first surprise

mod common;
use common::{facegate, shared_with};

/// `facegate eval video --json` on the LFW development split (`people` passers-by, `frames`
/// frames, then `extra`), its data directory under `dir`: the first scene's report.
fn eval_video_report(
    dir: &std::path::Path,
    shared: &std::path::Path,
    people: &str,
    frames: &str,
    extra: &[&str],
) -> serde_json::Value {
    let images = shared.join("data/lfw-dev/images");
    let mut args = vec![
        "eval",
        "video",
        "--images",
        images.to_str().unwrap(),
        "--people",
        people,
        "--frames",
        frames,
        "--json",
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = facegate(&dir.join("data"), &args);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["scenes"][0]["report"].clone()
}

#[test]
fn generated_scene_is_tracked_and_decided_once_per_passer_by() {
    let Some(shared) = shared_with("data/lfw-dev/images") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let r = &eval_video_report(dir.path(), &shared, "12", "400", &[]);
    let passers_by = r["passages"].as_u64().unwrap();
    assert!(passers_by >= 8, "{r}");
    // The live-capture targets on this scene: IDF1 >= 0.90, nobody decided twice.
    assert!(r["tracking"]["idf1"].as_f64().unwrap() >= 0.90, "{r}");
    // HOTA is reported with its parts, each a mean over the 19 IoU thresholds.
    let h = &r["tracking"]["hota"];
    let part = |k: &str| h[k].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&part("hota")), "{h}");
    assert!(
        (part("hota") - (part("deta") * part("assa")).sqrt()).abs() < 0.05,
        "{h}"
    );
    assert_eq!(r["passers_by_with_two_or_more_decisions"], 0, "{r}");
    assert_eq!(r["passers_by_without_decision"], 0, "{r}");
    // Counted the earlier way too (a decision for the passer-by its track overlapped most).
    assert_eq!(r["by_overlap"]["two_or_more"], 0, "{r}");
    assert_eq!(r["by_overlap"]["without_decision"], 0, "{r}");
    assert_eq!(r["decisions_without_passer_by"], 0, "{r}");
    // Every decision was judged against the passer-by's own reference and another's.
    let fused = &r["fused"];
    assert_eq!(fused["genuine"], r["decisions"]);
    assert_eq!(fused["false_matches"], 0, "{r}");
    // So was each decision's best single frame, and its track's first frame.
    for single in ["single_frame", "first_frame"] {
        assert_eq!(r[single]["genuine"], r["decisions"], "{single}: {r}");
        assert_eq!(r[single]["impostor"], r["decisions"], "{single}: {r}");
    }
}

/// `eval video --decide-early`: decisions made early are counted, each passer-by's wait from
/// first sight to decision is reported, and deciding clear matches early shortens it without a
/// passer-by decided twice or left out.
#[test]
fn eval_video_reports_early_decisions_and_how_long_each_passer_by_waited() {
    let Some(shared) = shared_with("data/lfw-dev/images") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| eval_video_report(dir.path(), &shared, "12", "400", extra);
    let usual = run(&[]);
    let early = run(&["--decide-early", "0.9"]);
    let delays = |r: &serde_json::Value| -> Vec<u64> {
        let d: Vec<u64> = r["decision_delay_frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        // One per passer-by decided, sorted.
        let decided =
            r["passages"].as_u64().unwrap() - r["passers_by_without_decision"].as_u64().unwrap();
        assert_eq!(d.len() as u64, decided, "{r}");
        assert!(d.windows(2).all(|w| w[0] <= w[1]), "{d:?}");
        d
    };
    let (u, e) = (delays(&usual), delays(&early));
    assert_eq!(usual["decided_early"], 0, "{usual}");
    let n_early = early["decided_early"].as_u64().unwrap();
    assert!(
        n_early >= 1 && n_early <= early["decisions"].as_u64().unwrap(),
        "{early}"
    );
    assert!(e[e.len() / 2] < u[u.len() / 2], "{e:?} against {u:?}");
    for r in [&usual, &early] {
        assert_eq!(r["passers_by_with_two_or_more_decisions"], 0, "{r}");
        assert_eq!(r["passers_by_without_decision"], 0, "{r}");
    }
}

/// `eval video --live`: the scene replayed as a camera on its own clock. A camera slower than the
/// reader (1 fps) changes nothing; one far faster than it (1,000 fps, a queue of 2) loses frames,
/// and the passers-by in view then count as missed; `--every auto` on that clock goes to its
/// largest interval. The passers-by counted are the same in every run: who was in view, not
/// what the watcher looked at.
#[test]
fn a_scene_replayed_live_loses_the_frames_a_slow_reader_cannot_take_and_counts_them_missed() {
    let Some(shared) = shared_with("data/lfw-dev/images") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| eval_video_report(dir.path(), &shared, "6", "200", extra);
    let offline = run(&[]);
    assert!(offline.get("live").is_none(), "{offline}");
    let slow_camera = run(&["--live", "--live-fps", "1"]);
    let l = &slow_camera["live"];
    assert_eq!(l["frames_read"], 200, "{l}");
    assert_eq!(l["frames_lost"], 0, "{l}");
    for key in [
        "tracking",
        "decisions",
        "passages",
        "fused",
        "decision_delay_frames",
    ] {
        assert_eq!(slow_camera[key], offline[key], "{key}");
    }
    // The first frame's template (one more embedding a passer-by) is not made live.
    assert_eq!(offline["first_frame"]["genuine"], offline["decisions"]);
    assert_eq!(slow_camera["first_frame"]["genuine"], 0);
    // On the camera's clock a decision waits at least the frames it waited for, a second each.
    let ms: Vec<f64> = l["decision_delay_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let frames = offline["decision_delay_frames"].as_array().unwrap();
    assert_eq!(ms.len(), frames.len(), "{l}");
    for (ms, f) in ms.iter().zip(frames) {
        assert!(
            *ms >= 1000.0 * f.as_f64().unwrap(),
            "{ms} ms for {f} frames"
        );
    }

    let fast_camera = run(&["--live", "--live-fps", "1000", "--live-queue", "2"]);
    let l = &fast_camera["live"];
    let (read, lost) = (
        l["frames_read"].as_u64().unwrap(),
        l["frames_lost"].as_u64().unwrap(),
    );
    assert_eq!(read + lost, 200, "{l}");
    assert!(lost > 100, "{l}");
    assert_eq!(fast_camera["detection_frames"].as_u64(), Some(read));
    // Lost frames a detection was due on (every frame, here) are scored, with nothing tracked.
    let scored = l["lost_frames_scored"].as_u64().unwrap();
    assert!(scored >= 1 && scored <= lost, "{l}");
    let t = (&offline["tracking"], &fast_camera["tracking"]);
    assert!(
        t.1["mota"].as_f64().unwrap() < t.0["mota"].as_f64().unwrap() - 0.2,
        "{t:?}"
    );
    assert_eq!(fast_camera["passages"], offline["passages"]);

    let auto = run(&[
        "--live",
        "--live-fps",
        "1000",
        "--every",
        "auto",
        "--max-every",
        "5",
    ]);
    let e = &auto["detect_every"];
    assert_eq!(e["adaptive"], true, "{e}");
    assert_eq!(e["largest_used"], 5, "{e}");
    // A 1000 fps camera allows 0.85 ms a frame: even every 5th frame costs more (a detection
    // alone tens of ms), so the report counts every frame read as behind; a fixed interval is
    // never behind (it does not know the rate).
    let read = auto["live"]["frames_read"].as_u64().unwrap();
    assert_eq!(e["frames_behind"].as_u64(), Some(read), "{e}");
    assert_eq!(offline["detect_every"]["frames_behind"], 0);
    assert!(
        auto["detection_frames"].as_u64().unwrap() < auto["live"]["frames_read"].as_u64().unwrap()
    );
    assert_eq!(auto["passages"], offline["passages"]);
    assert_eq!(offline["detect_every"]["adaptive"], false);
}

#[test]
fn generated_scenes_export_as_mp4_with_ground_truth_and_scene_n_is_always_the_same() {
    use video::FrameSource;
    let Some(shared) = shared_with("data/lfw-dev/images") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let images = shared.join("data/lfw-dev/images");
    let export = |first: &str, scenes: &str, out: &std::path::Path| {
        let (code, _, err) = facegate(
            &dir.path().join("data"),
            &[
                "eval",
                "video",
                "--images",
                images.to_str().unwrap(),
                "--people",
                "4",
                "--frames",
                "90",
                "--size",
                "480x270",
                "--first-scene",
                first,
                "--scenes",
                scenes,
                "--export-mp4",
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{err}");
    };
    let (both, alone) = (dir.path().join("both"), dir.path().join("alone"));
    export("0", "2", &both);
    export("1", "1", &alone);
    assert!(both.join("scene0.mp4").is_file() && !alone.join("scene0.mp4").exists());
    let gt = std::fs::read_to_string(alone.join("scene1_gt.txt")).unwrap();
    assert_eq!(
        gt,
        std::fs::read_to_string(both.join("scene1_gt.txt")).unwrap()
    );
    // MOTChallenge lines: frame (1-based), passer-by, box; faces in view in most frames.
    let frames_with_faces: std::collections::HashSet<u64> = gt
        .lines()
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(frames_with_faces.len() > 45, "{}", frames_with_faces.len());
    assert!(frames_with_faces.iter().all(|f| (1..=90).contains(f)));
    let mut video =
        video::source::Mp4Source::open(&alone.join("scene1.mp4"), &Default::default()).unwrap();
    let mut n = 0;
    while let Some(frame) = video.next_frame() {
        let frame = frame.unwrap();
        assert_eq!(frame.image.dimensions(), (480, 270));
        assert_eq!(frame.time_ms, n * 1000 / 30);
        n += 1;
    }
    assert_eq!(n, 90);
}

/// The same kind of scene through an H.264 encoder and back: the pipeline sees a compressed
/// stream, and the report says what the stream delivered.
#[test]
fn a_generated_scene_through_h264_reports_its_stream_and_still_tracks() {
    let Some(shared) = shared_with("data/lfw-dev/images") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| eval_video_report(dir.path(), &shared, "6", "200", extra);
    let plain = run(&[]);
    assert!(plain.get("h264").is_none(), "{plain}");
    let r = run(&["--h264-bitrate", "500000"]);
    let h = &r["h264"];
    assert_eq!(h["target_bits_per_second"], 500000);
    let delivered = h["delivered_bits_per_second"].as_f64().unwrap();
    assert!((100_000.0..1_500_000.0).contains(&delivered), "{h}");
    assert_eq!(r["frames"], plain["frames"]);
    // Compression changes pixels, not where the faces are: the tracker still follows them.
    assert!(r["tracking"]["mota"].as_f64().unwrap() > 0.5, "{r}");
}
