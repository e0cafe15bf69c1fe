//! Liveness through the binary: the PAD pack installed from the user's files (and refused when
//! they are wrong), `facegate liveness` on upstream's samples, and a presentation attack
//! blocking a 1:1 decision and a gallery search, with the outcome in the audit log.
#![allow(clippy::unwrap_used)] // tests and benchmarks stop at the first surprise

mod common;
use common::*;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// One test, in order: installing the pack replaces a directory other steps read.
#[test]
fn pad_pack_install_liveness_and_blocking_decisions() {
    let Some(shared) = shared_with("models/minifasnet/samples/image_T1.jpg") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let home_s = own_home(dir.path());
    let facegate = |data: &std::path::Path, args: &[&str]| {
        let mut all = vec!["--home", home_s.as_str()];
        all.extend_from_slice(args);
        facegate(data, &all)
    };
    let models = shared.join("models/minifasnet");
    let sample = |n: &str| {
        models
            .join(format!("samples/image_{n}.jpg"))
            .to_str()
            .unwrap()
            .to_string()
    };

    // A wrong file under a pinned name is refused with the reason.
    let wrong = dir.path().join("wrong");
    std::fs::create_dir(&wrong).unwrap();
    std::fs::write(
        wrong.join("2.7_80x80_MiniFASNetV2.pth"),
        b"not a checkpoint",
    )
    .unwrap();
    let (code, _, err) = facegate(
        &data,
        &["models", "install-pad", "--from", wrong.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sha256"), "{err}");

    let (code, _, err) = facegate(
        &data,
        &["models", "install-pad", "--from", models.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let (_, list, _) = facegate(&data, &["models", "list"]);
    assert!(list.contains("pad      minifasnet"), "{list}");

    // Upstream's samples: print and tablet replay are attacks, the live capture is live.
    let (code, out, err) = facegate(
        &data,
        &["liveness", &sample("F1"), &sample("F2"), &sample("T1")],
    );
    assert_eq!(code, 1, "{err}");
    let decisions: Vec<String> = out
        .lines()
        .map(|l| {
            json(l)["faces"][0]["decision"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(decisions, ["attack", "attack", "live"], "{out}");
    let (code, _, err) = facegate(&data, &["liveness", &sample("T1")]);
    assert_eq!(code, 0, "{err}");

    // 1:1: the print matches its own photo by comparison, but liveness blocks the decision...
    let (code, out, err) = facegate(
        &data,
        &["verify", &sample("F1"), &sample("F1"), "--liveness"],
    );
    assert_eq!(code, 1, "{err}");
    let v = json(&out);
    assert_eq!(v["match"], false);
    assert!(v["decided_by"].as_str().unwrap().starts_with("liveness"));
    assert_eq!(v["liveness"]["blocks"], true);
    // ...unless the policy only reports it; and without --liveness nothing is assessed.
    let (code, out, _) = facegate(
        &data,
        &[
            "verify",
            &sample("F1"),
            &sample("F1"),
            "--liveness",
            "--pad-policy",
            "report",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(json(&out)["liveness"]["outcome"]["live"], false);
    let (code, out, _) = facegate(&data, &["verify", &sample("F1"), &sample("F1")]);
    assert_eq!(code, 0);
    assert!(json(&out)["liveness"].is_null());

    // 1:N: a blocked search compares nothing and is audited with the PAD outcome.
    let (code, _, err) = facegate(
        &data,
        &[
            "gallery",
            "create",
            "travellers",
            "--purpose",
            "test",
            "--legal-basis",
            "test",
            "--retention-days",
            "1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    for (who, n) in [("print-person", "F1"), ("live-person", "T1")] {
        let (code, _, err) = facegate(
            &data,
            &[
                "--role",
                "enroller",
                "enrol",
                "--gallery",
                "travellers",
                "--subject",
                who,
                &sample(n),
            ],
        );
        assert_eq!(code, 0, "{err}");
    }
    let search = |n: &str| {
        facegate(
            &data,
            &[
                "--role",
                "operator",
                "identify",
                "--gallery",
                "travellers",
                "--purpose",
                "gate test",
                "--liveness",
                &sample(n),
            ],
        )
    };
    let (code, out, err) = search("F1");
    assert_eq!(code, 1, "{err}");
    assert_eq!(json(&out)["candidates"].as_array().unwrap().len(), 0);
    let (code, out, err) = search("T1");
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["candidates"][0]["reference"], "LIVE-PERSON");

    let (code, log, err) = facegate(&data, &["--role", "auditor", "audit", "export"]);
    assert_eq!(code, 0, "{err}");
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(json)
        .filter(|r| r["action"] == "identify")
        .collect();
    assert_eq!(records.len(), 2, "{log}");
    assert_eq!(records[0]["outcome"], "presentation-attack");
    assert_eq!(records[0]["details"]["compared"], false);
    assert_eq!(
        records[0]["details"]["capture"]["pad"]["decision"],
        "attack"
    );
    assert_eq!(records[0]["details"]["capture"]["pad"]["policy"], "block");
    assert_eq!(records[1]["outcome"], "match");
    assert_eq!(records[1]["details"]["capture"]["pad"]["decision"], "live");
    // The audit keeps scores, never crops or probabilities per class.
    assert!(!log.contains("probabilities"));
}

/// `eval pad` on a small synthetic set, then on the same images saved to folders (the customer's
/// path): the same attack figures both ways, consistent counts, and PAD never raises the
/// number of attacks a gate accepts.
#[test]
fn eval_pad_synthetic_and_folders_agree() {
    let Some(shared) = shared_with("data/lfw-dev/images") else {
        return;
    };
    let Some(_) = shared_with("models/minifasnet/2.7_80x80_MiniFASNetV2.pth") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let home = own_home(dir.path());
    let h = home.as_str();
    let data = dir.path().join("data");
    let models = shared.join("models/minifasnet");
    let (code, _, err) = facegate(
        &data,
        &[
            "--home",
            h,
            "models",
            "install-pad",
            "--from",
            models.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let saved = dir.path().join("saved");
    let lfw = shared.join("data/lfw-dev/images");
    let (code, out, err) = facegate(
        &data,
        &[
            "--home",
            h,
            "eval",
            "pad",
            "--synthetic",
            lfw.to_str().unwrap(),
            "--people",
            "6",
            "--bootstrap",
            "50",
            "--json",
            "--save-synthetic",
            saved.to_str().unwrap(),
            "--out",
            dir.path().join("report").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert!(r["data"].as_str().unwrap().contains("SYNTHETIC"));
    let f = &r["figures"];
    assert_eq!(f["attack_presentations"], 12);
    assert_eq!(f["bona_fide_presentations"], 6);
    assert_eq!(f["per_type"][0]["attack_type"], "print");
    let s = &r["system"];
    assert!(s["accepted_with_pad"].as_u64() <= s["accepted_without_pad"].as_u64());
    for file in ["report.json", "report.html", "det.svg"] {
        assert!(dir.path().join("report").join(file).is_file(), "{file}");
    }
    // The saved images as a customer's collection: bona-fide/ and attacks/{print,replay}/.
    let attacks = dir.path().join("attacks");
    std::fs::create_dir(&attacks).unwrap();
    for k in ["print", "replay"] {
        std::fs::rename(saved.join(k), attacks.join(k)).unwrap();
    }
    let (code, out, err) = facegate(
        &data,
        &[
            "--home",
            h,
            "eval",
            "pad",
            "--bona-fide",
            saved.join("bona-fide").to_str().unwrap(),
            "--attacks",
            attacks.to_str().unwrap(),
            "--bootstrap",
            "50",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let g = &json(&out)["figures"];
    // PNG round trip is lossless, so every score and figure is the same.
    for k in 0..2 {
        assert_eq!(
            g["per_type"][k]["apcer"]["value"],
            f["per_type"][k]["apcer"]["value"]
        );
    }
    assert_eq!(g["bpcer"]["value"], f["bpcer"]["value"]);
}

/// Liveness on video: `watch --liveness` on the real clip (a live person: passive score over each
/// passer-by's best frames, the planar-motion cue, never judged flat), a policy that blocks every
/// decision (e-gate and watchlist, the refusals audited with the motion cue), and
/// `eval pad-video` on the clip against synthetic prints and replays waved at the camera.
#[test]
fn video_liveness_on_the_real_clip_and_synthetic_waved_attacks() {
    let Some(shared) = shared_with("data/video/short_hamilton_clip.mp4") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(home) = home_with_pad(dir.path()) else {
        return;
    };
    let data = dir.path().join("data");
    let facegate = |args: &[&str]| {
        let mut all = vec!["--home", home.as_str()];
        all.extend_from_slice(args);
        facegate(&data, &all)
    };
    let clip = shared.join("data/video/short_hamilton_clip.mp4");
    let clip = clip.to_str().unwrap();
    let people = shared.join("data/people");
    let singer = people.join("lin-manuel-miranda.png");
    let singer = singer.to_str().unwrap();
    let decisions = |out: &str| -> Vec<serde_json::Value> {
        out.lines()
            .map(json)
            .filter(|e| e["event"] == "decision")
            .collect()
    };

    let (code, out, err) = facegate(&["watch", clip, "--reference", singer, "--liveness"]);
    assert_eq!(code, 0, "{err}");
    let ds = decisions(&out);
    assert!(!ds.is_empty());
    for d in &ds {
        let l = &d["liveness"];
        assert_eq!(l["live"], true, "{d}");
        assert_ne!(l["motion"]["verdict"], "planar", "{d}");
        let frames = l["frames"].as_u64().unwrap();
        assert!((1..=3).contains(&frames), "{d}");
    }
    // The singer is still matched once, as without liveness.
    assert_eq!(ds.iter().filter(|d| d["match"] == true).count(), 1, "{out}");
    let summary: serde_json::Value = json(out.lines().last().unwrap());
    assert!(summary["stage_ms_per_frame"]["liveness"].as_f64().unwrap() > 0.0);

    // A threshold no face reaches: every decision is a refusal, whatever the comparison.
    let (code, out, err) = facegate(&[
        "watch",
        clip,
        "--reference",
        singer,
        "--liveness",
        "--pad-threshold",
        "1.01",
    ]);
    assert_eq!(code, 0, "{err}");
    let ds = decisions(&out);
    assert!(!ds.is_empty());
    for d in &ds {
        assert_eq!(d["match"], false, "{d}");
        assert_eq!(d["decided_by"], "liveness: presentation attack suspected");
        assert!(
            d["score"].is_null(),
            "a blocked decision gives no score: {d}"
        );
    }

    // Watchlist: a blocked passer-by is not searched; the refusal is audited with the cue.
    let (code, _, err) = facegate(&[
        "gallery",
        "create",
        "watchlist",
        "--purpose",
        "test",
        "--legal-basis",
        "test",
        "--retention-days",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = facegate(&[
        "--role",
        "enroller",
        "enrol",
        "--gallery",
        "watchlist",
        "--subject",
        "lin-manuel",
        singer,
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = facegate(&[
        "--role",
        "operator",
        "watch",
        clip,
        "--gallery",
        "watchlist",
        "--purpose",
        "test camera",
        "--liveness",
        "--pad-threshold",
        "1.01",
    ]);
    assert_eq!(code, 0, "{err}");
    let ds = decisions(&out);
    assert!(ds.iter().all(|d| d["match"] == false));
    let (code, log, err) = facegate(&["--role", "auditor", "audit", "export"]);
    assert_eq!(code, 0, "{err}");
    let searches: Vec<serde_json::Value> = log
        .lines()
        .map(json)
        .filter(|r| r["action"] == "identify")
        .collect();
    assert_eq!(searches.len(), ds.len());
    for r in &searches {
        assert_eq!(r["outcome"], "presentation-attack");
        assert_eq!(r["details"]["compared"], false);
        let pad = &r["details"]["capture"]["pad"];
        assert_eq!(pad["decision"], "attack");
        assert!(pad["motion"]["verdict"].is_string(), "{r}");
        assert!(pad["frames"].as_u64().unwrap() >= 1);
    }

    // Synthetic waved prints and replays against the real clip.
    let (code, out, err) = facegate(&[
        "eval",
        "pad-video",
        "--liveness",
        "--bona-fide",
        clip,
        "--synthetic",
        people.to_str().unwrap(),
        "--people",
        "5",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert_eq!(r["synthetic_attacks"], true);
    let tracks = r["tracks"].as_array().unwrap();
    let bona: Vec<_> = tracks
        .iter()
        .filter(|t| t["label"] == "bona-fide")
        .collect();
    let attacks: Vec<_> = tracks
        .iter()
        .filter(|t| t["label"] != "bona-fide")
        .collect();
    assert!(bona.len() >= 3 && attacks.len() >= 8, "{out}");
    // A live person is never judged flat.
    assert!(
        bona.iter().all(|t| t["motion"]["verdict"] != "planar"),
        "{out}"
    );
    // A waved print or screen is flat: most attacks are caught by the motion cue alone...
    let planar = attacks
        .iter()
        .filter(|t| t["motion"]["verdict"] == "planar")
        .count();
    assert!(
        2 * planar >= attacks.len(),
        "{planar} of {}: {out}",
        attacks.len()
    );
    // ...and fusion never accepts an attack the passive score alone rejects.
    for t in &attacks {
        if t["passive_live"] == false {
            assert_eq!(t["fused_live"], false, "{t}");
        }
    }
    let s = &r["summary"];
    for kind in ["print", "replay"] {
        assert!(
            s[kind]["fused"]["error_rate"].as_f64().unwrap()
                <= s[kind]["passive"]["error_rate"].as_f64().unwrap()
        );
    }
}
