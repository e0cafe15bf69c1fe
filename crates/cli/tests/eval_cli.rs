//! `facegate eval report` and `eval calibrate` end to end on a small LFW-dev subset with the real
//! default pack. Needs the installed pack and ../shared; fails in CI if missing.
#![allow(clippy::unwrap_used)] // tests and benchmarks stop at the first surprise

mod common;
use common::shared_with;
use std::path::{Path, PathBuf};
use std::process::Command;

fn facegate(home: Option<&Path>, args: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_facegate"));
    c.args(args);
    if let Some(h) = home {
        c.env("FACEGATE_HOME", h);
    }
    let out = c.output().expect("run facegate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A private FACEGATE_HOME that shares the installed runtime and model files (symlinks) but has
/// its own copy of the dlib manifest, its own cache and its own data directory: calibration
/// may rewrite the manifest without touching the one other tests use.
fn private_home() -> tempfile::TempDir {
    let real = vision::pack::default_home();
    let t = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(real.join("runtime"), t.path().join("runtime")).unwrap();
    let pack = t.path().join("packs/dlib");
    std::fs::create_dir_all(&pack).unwrap();
    for e in std::fs::read_dir(real.join("packs/dlib")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_owned();
        if name == "manifest.json" {
            std::fs::copy(&p, pack.join(&name)).unwrap();
        } else {
            std::os::unix::fs::symlink(&p, pack.join(&name)).unwrap();
        }
    }
    t
}

fn lfw(shared: &Path) -> String {
    shared
        .join("data/lfw-dev/images")
        .to_string_lossy()
        .into_owned()
}

fn json_file(p: PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn eval_report_writes_every_section_and_reuses_the_sealed_cache() {
    let Some(shared) = shared_with("data/lfw-dev/images") else {
        return;
    };
    let home = private_home();
    let out = tempfile::tempdir().unwrap();
    // Groups per identity: alternate names between two made-up groups.
    let attrs = out.path().join("attrs.csv");
    let mut names: Vec<String> = std::fs::read_dir(shared.join("data/lfw-dev/images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut csv = String::from("identity,capture\n");
    for (i, n) in names.iter().take(40).enumerate() {
        csv.push_str(&format!(
            "{n},{}\n",
            if i % 2 == 0 { "kiosk" } else { "gate" }
        ));
    }
    std::fs::write(&attrs, csv).unwrap();
    let dir = out.path().join("r");
    let args = [
        "eval",
        "report",
        "--images",
        &lfw(&shared),
        "--out",
        dir.to_str().unwrap(),
        "--max-identities",
        "40",
        "--impostors",
        "2000",
        "--bootstrap",
        "50",
        "--attributes",
        attrs.to_str().unwrap(),
    ];
    let (code, stdout, err) = facegate(Some(home.path()), &args);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains("EER") && stdout.contains("rank-1"),
        "{stdout}"
    );
    let r = json_file(dir.join("report.json"));
    let p = &r["packs"][0];
    assert_eq!(p["label"], "dlib");
    assert!(p["embedding"]["computed"].as_u64().unwrap() > 0);
    let o = &p["one_to_one"];
    assert_eq!(o["impostor_pairs"], 2000);
    assert!(o["genuine_pairs"].as_u64().unwrap() > 0);
    // 2000 impostor pairs support FMR down to 1e-3, not 1e-4.
    assert_eq!(o["fnmr_at_fmr"][2]["supported_by_data"], true);
    assert_eq!(o["fnmr_at_fmr"][3]["supported_by_data"], false);
    assert!(o["fnmr_at_fmr"][3]["fnmr"].is_null());
    let eer = o["eer"].as_f64().unwrap();
    assert!((0.0..0.2).contains(&eer), "EER {eer}");
    let ci = o["eer_ci95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() <= eer && eer <= ci[1].as_f64().unwrap());
    // 1:N: CMC never decreases and rank-1 is its first point.
    let n = &p["one_to_n"]["all"];
    let cmc: Vec<f64> = n["cmc"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(cmc.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(n["rank1"].as_f64().unwrap(), cmc[0]);
    assert!(cmc[0] > 0.8, "rank-1 {}", cmc[0]);
    let sizes = p["one_to_n"]["by_gallery_size"].as_array().unwrap();
    assert_eq!(
        sizes.last().unwrap()["gallery_size"],
        p["one_to_n"]["gallery_size"]
    );
    // Gallery-size prediction: every size × FPIR cell, thresholds tightening as the gallery
    // grows (dlib: a distance, so smaller) and FNIR never improving with size.
    let sc = &p["one_to_n"]["scale"];
    let preds = sc["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 21);
    for f in [1e-1, 1e-2, 1e-3] {
        let row: Vec<&serde_json::Value> = preds
            .iter()
            .filter(|x| x["fpir"].as_f64() == Some(f))
            .collect();
        assert_eq!(row.len(), 7);
        for w in row.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            assert!(b["threshold"].as_f64().unwrap() <= a["threshold"].as_f64().unwrap());
            assert!(b["fnir"].as_f64().unwrap() >= a["fnir"].as_f64().unwrap() - 1e-12);
        }
    }
    assert!(sc["tail"]["impostor_pairs"].as_u64().unwrap() >= 2000);
    // More from the same model: each variant beside its baseline, on the same searches.
    let imp = p["one_to_n"]["improvements"].as_array().unwrap();
    let names: Vec<&str> = imp.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "baseline",
            "cohort",
            "cohort, ranks 2-256",
            "one template (3+ images)",
            "two templates, nearest",
            "two templates, mean",
            "two templates, mean + cohort",
            "one probe image",
            "two probe images, mean",
            "two probe images, mean + cohort"
        ]
    );
    assert_eq!(imp[0]["mated_searches"], imp[1]["mated_searches"]);
    assert_eq!(imp[0]["mated_searches"], imp[2]["mated_searches"]);
    assert_eq!(imp[0]["mated_searches"], n["mated_searches"]);
    assert_eq!(imp[3]["mated_searches"], imp[6]["mated_searches"]);
    assert_eq!(imp[7]["nonmated_searches"], imp[9]["nonmated_searches"]);
    // The baseline is the report's own 1:N figure.
    assert_eq!(
        imp[0]["fnir_at_fpir"][0]["fnir"],
        n["fnir_at_fpir"][0]["fnir"]
    );
    assert!(!sc["tail_fit"].as_array().unwrap().is_empty());
    // Both groups, with their own pair counts, and the differential block.
    let g = &p["groups"]["capture"];
    let groups = g["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    let gen: u64 = groups
        .iter()
        .map(|x| x["genuine_pairs"].as_u64().unwrap())
        .sum();
    assert_eq!(gen, o["genuine_pairs"].as_u64().unwrap());
    assert!(g["differential"].get("fnmr").is_some());
    assert!(dir.join(g["figure"].as_str().unwrap()).exists());
    assert_eq!(groups[0]["fnmr_at_fmr"].as_array().unwrap().len(), 6);
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    for needle in [
        "<svg",
        "FNMR @ FMR 1e-3",
        "CMC",
        "By group",
        "capture",
        "Failures",
        "Gallery size: what a threshold gives at N",
        "misses about",
        "More from the same model",
    ] {
        assert!(html.contains(needle), "report.html lacks {needle}");
    }
    for f in [
        "det.svg",
        "roc.svg",
        "cmc.svg",
        "gallery-size.svg",
        "gallery-scale.svg",
        "tail-dlib.svg",
        "hist-dlib.svg",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }

    // Second run: every embedding from the cache, same figures.
    let (code, _, err) = facegate(Some(home.path()), &args);
    assert_eq!(code, 0, "{err}");
    let r2 = json_file(dir.join("report.json"));
    assert_eq!(r2["packs"][0]["embedding"]["computed"], 0);
    assert_eq!(r2["packs"][0]["one_to_one"], r["packs"][0]["one_to_one"]);
    // The cache is sealed: owner-only, no plaintext header, and useless without its key.
    let cache_dir = home.path().join("cache/eval");
    let files: Vec<PathBuf> = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "cache mode {mode:o}");
    let blob = std::fs::read(&files[0]).unwrap();
    assert!(!blob.windows(5).any(|w| w == b"FGEVC"));
    std::fs::remove_file(home.path().join("cache/eval.key")).unwrap();
    let (code, _, err) = facegate(Some(home.path()), &args);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("ignoring embedding cache"), "{err}");
    let r3 = json_file(dir.join("report.json"));
    assert!(r3["packs"][0]["embedding"]["computed"].as_u64().unwrap() > 0);
}

#[test]
fn eval_calibrate_writes_pack_and_gallery_thresholds_with_audit_evidence() {
    let Some(shared) = shared_with("data/lfw-dev/images") else {
        return;
    };
    let home = private_home();
    let h = Some(home.path());
    let images = lfw(&shared);
    let common = [
        "--images",
        images.as_str(),
        "--max-identities",
        "30",
        "--impostors",
        "1500",
        "--bootstrap",
        "20",
    ];
    let cal = |extra: &[&str]| {
        let mut a = vec!["eval", "calibrate"];
        a.extend_from_slice(&common);
        a.extend_from_slice(extra);
        facegate(h, &a)
    };
    let manifest = home.path().join("packs/dlib/manifest.json");
    let before = std::fs::read_to_string(&manifest).unwrap();
    // Not measurable: 1500 impostor pairs cannot show FMR 1e-4.
    let (code, _, err) = cal(&["--target-fmr", "1e-4", "--role", "admin"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot be measured"), "{err}");
    // A dry run and a non-admin change nothing.
    let (code, out, err) = cal(&["--target-fmr", "1e-2", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    let dry: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dry["written"], false);
    let (code, _, err) = cal(&["--target-fmr", "1e-2"]);
    assert_eq!(code, 2);
    assert!(err.contains("admin"), "{err}");
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), before);

    // The pack: threshold and evidence in the manifest, the change in the audit log.
    let (code, out, err) = cal(&["--target-fmr", "1e-2", "--role", "admin"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ev = &v["evidence"];
    let t = ev["threshold"].as_f64().unwrap();
    assert!(ev["measured_fmr"].as_f64().unwrap() <= 1e-2);
    assert_eq!(ev["impostor_pairs"], 1500);
    assert_eq!(dry["evidence"]["threshold"], ev["threshold"]);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert_eq!(m["calibration"]["threshold"].as_f64().unwrap(), t);
    assert_eq!(m["calibration"]["fmr"].as_f64().unwrap(), 1e-2);
    assert_eq!(m["calibration"]["evidence"]["dataset"]["identities"], 30);
    // verify now reports the new threshold.
    let p = |n: &str| {
        shared
            .join("data/people")
            .join(n)
            .to_string_lossy()
            .into_owned()
    };
    let (_, vout, verr) = facegate(h, &["verify", &p("obama.jpg"), &p("obama2.jpg")]);
    let vj: serde_json::Value = serde_json::from_str(&vout).unwrap_or_else(|_| panic!("{verr}"));
    assert_eq!(vj["threshold"].as_f64().unwrap(), t);

    // A gallery: its policy gets the threshold; the policy change carries the evidence.
    let (code, _, err) = facegate(
        h,
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
    let (code, _, err) = cal(&[
        "--target-fmr",
        "1e-2",
        "--role",
        "admin",
        "--gallery",
        "travellers",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = facegate(h, &["gallery", "show", "travellers"]);
    assert_eq!(code, 0, "{err}");
    let g: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(g["policy"]["threshold"].as_f64().unwrap(), t);
    assert_eq!(g["policy"]["target_fmr"].as_f64().unwrap(), 1e-2);
    let (code, out, err) = facegate(h, &["audit", "export", "--role", "auditor"]);
    assert_eq!(code, 0, "{err}");
    let recs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let pack_rec = recs
        .iter()
        .find(|r| r["action"] == "pack-calibrate")
        .expect("pack calibration audited");
    assert_eq!(pack_rec["role"], "admin");
    assert_eq!(
        pack_rec["details"]["evidence"]["threshold"]
            .as_f64()
            .unwrap(),
        t
    );
    let pol = recs
        .iter()
        .find(|r| r["action"] == "policy-change")
        .expect("gallery calibration audited");
    assert_eq!(pol["details"]["evidence"]["command"], "eval calibrate");

    // A target FPIR instead: the pack's model of growth goes into the policy and the threshold
    // is set for the gallery's size; `gallery show` says what it is expected to give.
    let (code, _, err) = cal(&["--target-fpir", "1e-2", "--role", "admin"]);
    assert_eq!(code, 2, "a target FPIR belongs to a gallery: {err}");
    let (code, _, err) = cal(&["--target-fpir", "1e-2", "--gallery", "travellers"]);
    assert_eq!(code, 2);
    assert!(err.contains("admin"), "{err}");
    let (code, out, err) = cal(&[
        "--target-fpir",
        "1e-2",
        "--max-fnir",
        "0.9",
        "--role",
        "admin",
        "--gallery",
        "travellers",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ev = &v["evidence"];
    assert!(ev["impostor_pairs"].as_u64().unwrap() >= 2000);
    let at: Vec<f64> = ev["expected_at"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["threshold"].as_f64().unwrap())
        .collect();
    assert_eq!(at.len(), 5);
    assert!(at.windows(2).all(|w| w[1] < w[0]), "{at:?}");
    let (code, out, err) = facegate(h, &["gallery", "show", "travellers"]);
    assert_eq!(code, 0, "{err}");
    let g: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(g["policy"]["fpir_target"]["fpir"].as_f64(), Some(1e-2));
    assert_eq!(g["policy"]["fpir_target"]["sized_for"], 16);
    assert!(g["policy"]["target_fmr"].is_null());
    assert_eq!(
        g["policy"]["threshold"].as_f64(),
        ev["expected_now"]["threshold"].as_f64()
    );
    assert_eq!(g["expected"]["gallery_size"], 0);
    assert!(g["expected"]["fpir"].as_f64().unwrap() <= 1e-2);
    let first = g["policy"]["threshold"].as_f64().unwrap();

    // Growing past the size it was set for (16) moves the threshold, tighter, audited.
    let dir = tempfile::tempdir().unwrap();
    let embeddings = |name: &str, from: usize, n: usize| -> String {
        let path = dir.path().join(name);
        let lines: Vec<String> = (from..from + n)
            .map(|i| {
                let v: Vec<f32> = (0..128)
                    .map(|k| ((i * 131 + k * 31) % 97) as f32 / 970.0)
                    .collect();
                serde_json::json!({"subject": format!("S{i:03}"), "embedding": v}).to_string()
            })
            .collect();
        std::fs::write(&path, lines.join("\n")).unwrap();
        path.to_string_lossy().into_owned()
    };
    let enrol = |file: &str| {
        facegate(
            h,
            &[
                "--role",
                "enroller",
                "enrol",
                "--gallery",
                "travellers",
                "--embeddings",
                file,
            ],
        )
    };
    let (code, _, err) = enrol(&embeddings("a.jsonl", 0, 20));
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = facegate(h, &["gallery", "show", "travellers"]);
    let g: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(g["policy"]["fpir_target"]["sized_for"], 21);
    assert!(g["policy"]["threshold"].as_f64().unwrap() < first);
    assert_eq!(g["expected"]["gallery_size"], 20);
    let (_, out, _) = facegate(h, &["audit", "export", "--role", "auditor"]);
    assert_eq!(out.matches("\"threshold-follow\"").count(), 1, "{out}");

    // A limit the pack cannot keep: refused, and nothing enrolled; or, without refusal, a
    // warning with the acknowledgement.
    let (code, _, err) = cal(&[
        "--target-fpir",
        "1e-2",
        "--max-fnir",
        "0.001",
        "--refuse-beyond-max-fnir",
        "--role",
        "admin",
        "--gallery",
        "travellers",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = enrol(&embeddings("b.jsonl", 20, 1));
    assert_eq!(code, 2);
    assert!(out.contains("gallery outgrows its pack"), "{out}");
    let (code, _, err) = cal(&[
        "--target-fpir",
        "1e-2",
        "--max-fnir",
        "0.001",
        "--role",
        "admin",
        "--gallery",
        "travellers",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = enrol(&embeddings("c.jsonl", 20, 1));
    assert_eq!(code, 0, "{err}");
    let ack: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        ack["warnings"][0]
            .as_str()
            .unwrap()
            .contains("expected to miss"),
        "{ack}"
    );
    let (_, out, _) = facegate(h, &["gallery", "show", "travellers"]);
    let g: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(g["subjects"], 21);
    let (code, _, err) = facegate(h, &["audit", "verify"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn eval_calibrate_cohort_writes_the_z_threshold_only_where_it_helps() {
    let Some(shared) = shared_with("data/lfw-dev/images") else {
        return;
    };
    let home = private_home();
    let h = Some(home.path());
    let images = lfw(&shared);
    let (code, _, err) = facegate(
        h,
        &[
            "gallery",
            "create",
            "watch",
            "--purpose",
            "test",
            "--legal-basis",
            "test",
            "--retention-days",
            "1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let cal = |extra: &[&str]| {
        let mut a = vec![
            "eval",
            "calibrate",
            "--images",
            images.as_str(),
            "--max-identities",
            "300",
            "--cohort",
            "--gallery",
            "watch",
            "--role",
            "admin",
        ];
        a.extend_from_slice(extra);
        facegate(h, &a)
    };
    let show = || {
        let (code, out, err) = facegate(h, &["gallery", "show", "watch"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["policy"].clone()
    };
    let before = show();
    // Two decision rules at once are not asked for; an FPIR the data cannot show is refused.
    let (code, _, err) = cal(&["--target-fpir", "1e-1", "--max-fnir", "0.5"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = cal(&["--target-fpir", "1e-2"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("needs at least 1000 non-mated searches"),
        "{err}"
    );

    // 300 people: 188 enrolled, 112 non-mated searches. The evidence's figures are consistent
    // with each other, and the policy changes exactly when the cohort misses fewer people.
    let (code, out, err) = cal(&["--target-fpir", "1e-1"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ev = &v["evidence"];
    assert_eq!(ev["gallery_size"], 188);
    assert_eq!(ev["nonmated_searches"], 112);
    assert_eq!(ev["cohort_ranks"], 64);
    assert!(ev["fpir_measured"].as_f64().unwrap() <= 0.1);
    let (fz, fd) = (
        ev["fnir_with_cohort"].as_f64().unwrap(),
        ev["fnir_with_distance_threshold"].as_f64().unwrap(),
    );
    assert!(fz > 0.0 && fd > 0.0 && fz < 1.0 && fd < 1.0, "{ev}");
    let helps = fz < fd;
    assert_eq!(ev["cohort_helps"], helps);
    assert_eq!(v["written"], helps);
    let after = show();
    if helps {
        assert_eq!(after["cohort"]["z_threshold"], ev["z_threshold"]);
        assert_eq!(after["cohort"]["calibrated_at"], 188);
    } else {
        // On these 300 people the cohort does not help dlib (10.0% of listed people missed
        // against 8.6% with the distance threshold): nothing changes.
        assert_eq!(after, before);
        assert!(err.contains("policy unchanged"), "{err}");
    }
    let (code, _, err) = facegate(h, &["audit", "verify"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_derived_flip_pack_makes_the_evaluated_flip_templates_and_keeps_galleries_apart() {
    let Some(shared) = shared_with("data/lfw-dev/images") else {
        return;
    };
    let home = private_home();
    let h = Some(home.path());
    let images = lfw(&shared);
    let (code, _, err) = facegate(h, &["models", "derive", "dlib-flip", "--flip-average"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("no calibrated threshold yet"), "{err}");
    let m = json_file(home.path().join("packs/dlib-flip/manifest.json"));
    assert_eq!(m["name"], "dlib-flip");
    assert_eq!(m["embedder"]["flip_average"], true);
    assert!(m["calibration"].is_null());
    let (code, _, err) = facegate(h, &["models", "derive", "dlib-flip", "--flip-average"]);
    assert_eq!(code, 2);
    assert!(err.contains("already installed"), "{err}");
    let (code, _, err) = facegate(
        h,
        &[
            "models",
            "derive",
            "x",
            "--from",
            "dlib-flip",
            "--flip-average",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("already flip-averages"), "{err}");

    // The product's flip-averaged templates are the ones the evaluation measured as dlib+flip.
    let out = tempfile::tempdir().unwrap();
    let report = |compare: &[&str]| {
        let mut a = vec![
            "eval",
            "report",
            "--images",
            images.as_str(),
            "--max-identities",
            "40",
            "--bootstrap",
            "10",
            "--out",
            out.path().to_str().unwrap(),
        ];
        for c in compare {
            a.extend_from_slice(&["--compare", c]);
        }
        facegate(h, &a)
    };
    let (code, _, err) = report(&["dlib-flip+flip"]);
    assert_eq!(code, 2);
    assert!(err.contains("already flip-averages"), "{err}");
    let (code, _, err) = report(&["dlib+flip", "dlib-flip", "dlib"]);
    assert_eq!(code, 0, "{err}");
    let r = json_file(out.path().join("report.json"));
    let op = |i: usize, k: &str| {
        r["packs"][i]["operating_points"][k]["threshold"]
            .as_f64()
            .unwrap()
    };
    for k in ["one_to_one", "one_to_n"] {
        assert!(
            (op(0, k) - op(1, k)).abs() < 1e-5,
            "{k}: {} vs {}",
            op(0, k),
            op(1, k)
        );
        // …and not the plain pack's.
        assert!((op(0, k) - op(2, k)).abs() > 1e-4, "{k}");
    }

    // A gallery of flip-averaged templates is never searched with plain ones, or the reverse.
    let (code, _, err) = facegate(
        h,
        &[
            "gallery",
            "create",
            "g",
            "--purpose",
            "test",
            "--legal-basis",
            "test",
            "--retention-days",
            "1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let person = shared.join("data/people/obama.jpg");
    let probe = shared.join("data/people/obama2.jpg");
    let (code, _, err) = facegate(
        h,
        &[
            "enrol",
            "--pack",
            "dlib-flip",
            "--gallery",
            "g",
            "--subject",
            "P1",
            person.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let identify = |pack: &str| {
        facegate(
            h,
            &[
                "identify",
                "--pack",
                pack,
                "--gallery",
                "g",
                "--purpose",
                "test",
                probe.to_str().unwrap(),
            ],
        )
    };
    let (code, _, err) = identify("dlib");
    assert_eq!(code, 2);
    assert!(err.contains("model pack 'dlib-flip', not 'dlib'"), "{err}");
    // Uncalibrated: no threshold to decide on until the authority measures one.
    let (code, _, err) = identify("dlib-flip");
    assert_eq!(code, 2);
    assert!(err.contains("no calibrated threshold"), "{err}");
    let (code, _, err) = facegate(
        h,
        &[
            "eval",
            "calibrate",
            "--pack",
            "dlib-flip",
            "--images",
            images.as_str(),
            "--max-identities",
            "30",
            "--impostors",
            "1500",
            "--target-fmr",
            "1e-2",
            "--role",
            "admin",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = identify("dlib-flip");
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["candidates"][0]["reference"], "P1");
}
