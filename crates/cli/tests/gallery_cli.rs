//! Drives the real `facegate` binary through the gallery commands: a crash mid-enrolment, the
//! README demo on ../shared/data/people, key rotation, receipts and the audit log.
#![allow(clippy::unwrap_used)] // tests and benchmarks stop at the first surprise

mod common;
use common::{facegate, shared_with};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn create(data: &Path, name: &str) {
    let (code, _, err) = facegate(data, &common::create_gallery_args(name));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn sigkill_during_batch_enrolment_keeps_every_acknowledged_subject() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    create(&data, "rt");
    let input = dir.path().join("emb.jsonl");
    common::embeddings_file(&input, 3000);
    let mut enrol = Command::new(env!("CARGO_BIN_EXE_facegate"));
    enrol
        .arg("--data-dir")
        .arg(&data)
        .args(common::enrol_embeddings_args(&input));
    let acked = common::kill_after_acks(enrol, 40);
    for s in &acked {
        let (code, out, err) = facegate(&data, &["subject", "--gallery", "rt", "--subject", s]);
        assert_eq!(code, 0, "acknowledged subject {s} lost: {err}");
        assert!(out.contains("\"templates\": 1"));
    }
    let (code, out, _) = facegate(&data, &["gallery", "show", "rt"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let n = v["subjects"].as_u64().unwrap();
    assert!((40..3000).contains(&n), "{n} subjects after the kill");
    let (code, out, _) = facegate(&data, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
    let c = rusqlite::Connection::open(data.join("store.db")).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    // Enrolment resumes where it stopped: the rest go in, the ones already there are refused.
    let (code, _, _) = facegate(&data, &common::enrol_embeddings_args(&input));
    assert_eq!(code, 2, "duplicates are reported as failures");
    let (_, out, _) = facegate(&data, &["gallery", "show", "rt"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["subjects"], 3000);
}

#[test]
fn keys_rotate_receipts_and_roles() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    create(&data, "rt");
    let input = dir.path().join("emb.jsonl");
    common::embeddings_file(&input, 5);
    let (code, _, err) = facegate(
        &data,
        &[
            "enrol",
            "--gallery",
            "rt",
            "--embeddings",
            input.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let key_before = std::fs::read_to_string(data.join("master.key")).unwrap();
    let (code, _, err) = facegate(&data, &["keys", "rotate"]);
    assert_ne!(code, 0, "rotation must need the admin role");
    assert!(err.contains("admin"), "{err}");
    let (code, out, err) = facegate(&data, &["--role", "admin", "keys", "rotate"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rewrapped"));
    assert_ne!(
        std::fs::read_to_string(data.join("master.key")).unwrap(),
        key_before
    );
    assert!(!data.join("master.key.new").exists());
    // Everything still opens with the new key.
    let (code, _, err) = facegate(
        &data,
        &["subject", "--gallery", "rt", "--subject", "S000003"],
    );
    assert_eq!(code, 0, "{err}");
    // Deletion gives a receipt that verifies, and the subject is gone.
    let (code, out, err) = facegate(
        &data,
        &[
            "delete",
            "--gallery",
            "rt",
            "--subject",
            "S000003",
            "--reason",
            "subject request",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let receipt = dir.path().join("receipt.json");
    std::fs::write(&receipt, &out).unwrap();
    let (code, _, _) = facegate(&data, &["audit", "receipt", receipt.to_str().unwrap()]);
    assert_eq!(code, 0);
    let forged = out.replace("subject request", "retention period expired");
    std::fs::write(&receipt, forged).unwrap();
    let (code, _, _) = facegate(&data, &["audit", "receipt", receipt.to_str().unwrap()]);
    assert_eq!(code, 1);
    let (code, _, _) = facegate(
        &data,
        &["subject", "--gallery", "rt", "--subject", "S000003"],
    );
    assert_eq!(code, 2);
    // The export is for auditors; it is itself audited. Then an anchor catches a cut-off log.
    let (code, _, _) = facegate(&data, &["audit", "export"]);
    assert_ne!(code, 0);
    let (code, out, _) = facegate(&data, &["--role", "auditor", "audit", "export"]);
    assert_eq!(code, 0);
    let actions: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for a in ["gallery-create", "enrol", "key-rotate", "delete"] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }
    let (_, head, _) = facegate(&data, &["audit", "head"]);
    let anchor = dir.path().join("anchor.json");
    std::fs::write(&anchor, head).unwrap();
    let c = rusqlite::Connection::open(data.join("store.db")).unwrap();
    c.execute_batch("DELETE FROM audit WHERE seq > 3; DELETE FROM audit_heads WHERE seq > 3;")
        .unwrap();
    drop(c);
    std::fs::remove_file(data.join("audit.head")).unwrap();
    let (code, out, err) = facegate(&data, &["audit", "verify"]);
    assert_eq!(
        code, 0,
        "without an anchor a clean cut cannot be proven (documented)"
    );
    assert!(out.contains("audit.head is missing"), "{out}");
    assert!(err.contains("warning: audit.head is missing"), "{err}");
    let (code, _, _) = facegate(&data, &["audit", "verify", "--strict"]);
    assert_eq!(code, 1, "--strict fails on the missing mirror");
    let (code, out, _) = facegate(
        &data,
        &["audit", "verify", "--anchor", anchor.to_str().unwrap()],
    );
    assert_eq!(code, 1);
    assert!(out.contains("truncated"), "{out}");
}

fn shared_ready() -> Option<PathBuf> {
    shared_with("data/people/knn_examples/train")
}

#[test]
fn readme_demo_enrol_people_and_identify() {
    let Some(shared) = shared_ready() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    create(&data, "demo");
    let knn = shared.join("data/people/knn_examples");
    let (code, out, err) = facegate(
        &data,
        &[
            "enrol",
            "--gallery",
            "demo",
            "--batch",
            knn.join("train").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 5);
    let cases = [
        ("alex_lacamoire1.jpg", Some("ALEX_LACAMOIRE")),
        ("obama1.jpg", Some("OBAMA")),
        ("johnsnow_test1.jpg", Some("KIT_HARINGTON")),
    ];
    for (img, want) in cases {
        let (code, out, err) = facegate(
            &data,
            &[
                "identify",
                "--gallery",
                "demo",
                "--purpose",
                "test",
                knn.join("test").join(img).to_str().unwrap(),
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{err}"));
        match want {
            Some(w) => {
                assert_eq!(code, 0);
                assert_eq!(v["candidates"][0]["reference"], w);
            }
            None => assert_eq!(code, 1),
        }
    }
    // Someone not enrolled: no match, exit 1.
    let (code, out, _) = facegate(
        &data,
        &[
            "identify",
            "--gallery",
            "demo",
            "--purpose",
            "test",
            shared
                .join("data/people/lin-manuel-miranda.png")
                .to_str()
                .unwrap(),
        ],
    );
    assert_eq!(code, 1, "{out}");
    // A search without purpose is refused by the CLI itself.
    let (code, _, _) = facegate(
        &data,
        &[
            "identify",
            "--gallery",
            "demo",
            shared.join("data/people/obama.jpg").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2);
    // An unreadable image is a clear error and changes nothing.
    let junk = dir.path().join("junk.jpg");
    std::fs::write(&junk, b"\xff\xd8\xff not really").unwrap();
    let (code, _, err) = facegate(
        &data,
        &[
            "enrol",
            "--gallery",
            "demo",
            "--subject",
            "X",
            junk.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("junk.jpg"), "{err}");
    let (_, out, _) = facegate(&data, &["gallery", "show", "demo"]);
    assert!(out.contains("\"subjects\": 5"));
}

/// A photo cut short: enrolment refuses it, detection and 1:1 flag it and go on.
#[test]
fn truncated_photos_are_refused_for_enrolment_and_flagged_elsewhere() {
    let Some(shared) = shared_ready() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    create(&data, "demo");
    let whole = std::fs::read(shared.join("data/people/obama.jpg")).unwrap();
    let cut = dir.path().join("cut.jpg");
    std::fs::write(&cut, &whole[..whole.len() * 3 / 4]).unwrap();
    let cut = cut.to_str().unwrap();
    let (code, _, err) = facegate(
        &data,
        &["enrol", "--gallery", "demo", "--subject", "P1", cut],
    );
    assert_ne!(code, 0);
    assert!(err.contains("truncated"), "{err}");
    let (code, out, _) = facegate(&data, &["detect", cut]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        v["warnings"][0].as_str().unwrap().contains("truncated"),
        "{out}"
    );
}

/// A batch of images is written as results arrive: the first subject is acknowledged (durable)
/// while the rest are still being embedded, and survives a SIGKILL.
#[test]
fn image_batches_acknowledge_as_they_go() {
    let Some(shared) = shared_ready() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    create(&data, "rt");
    let photo = shared.join("data/people/obama.jpg");
    let csv = dir.path().join("batch.csv");
    let mut f = std::fs::File::create(&csv).unwrap();
    writeln!(f, "subject,image").unwrap();
    // 40 subjects x 3 images: several seconds of detection on two cores.
    for s in 0..40 {
        for _ in 0..3 {
            writeln!(f, "P{s:04},{}", photo.display()).unwrap();
        }
    }
    drop(f);
    let mut child = Command::new(env!("CARGO_BIN_EXE_facegate"))
        .arg("--data-dir")
        .arg(&data)
        .args(["enrol", "--gallery", "rt", "--batch"])
        .arg(&csv)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("an acknowledgement").unwrap();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["status"], "enrolled", "{first}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first subject is acknowledged before the batch ends"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let s = v["subject"].as_str().unwrap();
    let (code, out, err) = facegate(&data, &["subject", "--gallery", "rt", "--subject", s]);
    assert_eq!(code, 0, "acknowledged subject {s} lost: {err}");
    assert!(out.contains("\"templates\": 3"), "{out}");
}

/// A gallery's enrolment quality gate refuses a face below it, naming the components, and admits
/// one above it; a gate naming an unknown component is refused when the gallery is created.
#[test]
fn enrolment_quality_gate() {
    let Some(shared) = shared_with("data/people/obama.jpg") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let photo = shared.join("data/people/obama.jpg");
    let photo = photo.to_str().unwrap();
    let gallery = |name: &str, gate: &str| {
        facegate(
            &data,
            &[
                "gallery",
                "create",
                name,
                "--purpose",
                "test",
                "--legal-basis",
                "test",
                "--retention-days",
                "30",
                "--enrol-min-quality",
                gate,
            ],
        )
    };
    // obama.jpg, as `detect` measures it: head_size 0 (a tight crop), margin_above 55, yaw 100.
    assert_eq!(gallery("strict", "head_size=50").0, 0);
    assert_eq!(gallery("fair", "margin_above=50").0, 0);
    let (code, _, err) = gallery("typo", "head_yaw=50");
    assert_ne!(code, 0);
    assert!(err.contains("unknown quality component"), "{err}");
    let enrol = |g: &str| facegate(&data, &["enrol", "--gallery", g, "--subject", "P1", photo]);
    let (code, out, err) = enrol("strict");
    assert_ne!(code, 0, "{out}");
    assert!(
        format!("{out}{err}").contains("head_size 0 < 50"),
        "{out}{err}"
    );
    let (code, out, err) = enrol("fair");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"enrolled\""), "{out}");
}

/// `bench-search` on a small synthetic gallery: both layouts answer as an exhaustive f32 scan
/// does, and the single queries run in 10 rounds, each after one pass of the bandwidth probe
/// (the probe's figure is the median of those passes, within their range).
#[test]
fn bench_search_pairs_single_queries_with_the_bandwidth_probe() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for index in ["exact", "compact"] {
        let (code, out, err) = facegate(
            &data,
            &[
                "bench-search",
                "--synthetic",
                "20000",
                "--dim",
                "128",
                "--index",
                index,
                "--batch",
                "16",
                "--single",
                "20",
                "--repeat",
                "1",
            ],
        );
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["equals_exhaustive_f32"], true, "{v}");
        let probe = v["stream_read_gbps"].as_f64().unwrap();
        let lo = v["stream_read_gbps_range"][0].as_f64().unwrap();
        let hi = v["stream_read_gbps_range"][1].as_f64().unwrap();
        assert!(0.0 < lo && lo <= probe && probe <= hi, "{v}");
        let method = v["single_scan_fraction_method"].as_str().unwrap();
        assert!(method.contains("over 10 rounds"), "{method}");
        let fraction = v["single_scan_fraction_of_bandwidth"].as_f64().unwrap();
        let bytes = v["single_scan_bytes"].as_f64().unwrap();
        assert!(bytes >= 20000.0 * 128.0, "{v}");
        assert!(fraction.is_finite() && fraction > 0.0, "{v}");
    }
    // Each kernel the CPU has can be asked for by name and answers as exhaustive search does;
    // one it does not have is refused, naming those it has.
    let small = ["bench-search", "--synthetic", "3000", "--dim", "64"];
    let fast = ["--batch", "8", "--single", "3", "--repeat", "1"];
    let (code, _, err) = facegate(
        &data,
        &[&small[..], &["--kernel", "avx3"], &fast[..]].concat(),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("--kernel avx3") && err.contains("portable"),
        "{err}"
    );
    let available = gallery::index::ExactIndex::kernels_available();
    assert_eq!(available.last(), Some(&"portable"));
    for kernel in available {
        let args = [&small[..], &["--kernel", kernel], &fast[..]].concat();
        let (code, out, err) = facegate(&data, &args);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["kernel"], kernel, "{v}");
        assert_eq!(v["equals_exhaustive_f32"], true, "{v}");
        // The batch is set against the peak of that kernel's own multiply-add instruction.
        let peak = v["int8_peak_method"].as_str();
        match kernel {
            "portable" => assert!(peak.is_none(), "{v}"),
            "avx2" => assert!(peak.unwrap().contains("vpmaddwd"), "{v}"),
            "amx-int8" => assert!(peak.unwrap().contains("tdpbsud"), "{v}"),
            _ => assert!(peak.unwrap().contains("vpdpbusd"), "{v}"),
        }
    }
}
