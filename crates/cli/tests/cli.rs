//! Drives the real `facegate` binary: exit codes and JSON of verify/embed/detect.
//! Needs the installed pack (`facegate models fetch`) and ../shared; fails in CI if missing.
#![allow(clippy::unwrap_used)] // tests and benchmarks stop at the first surprise

mod common;
use common::shared_with;
use std::path::PathBuf;
use std::process::Command;

fn ready() -> Option<PathBuf> {
    shared_with("data/people/obama.jpg")
}

fn facegate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_facegate"))
        .args(args)
        .output()
        .expect("run facegate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn verify_exit_codes_and_json() {
    let Some(shared) = ready() else { return };
    let p = |n: &str| {
        shared
            .join("data/people")
            .join(n)
            .to_string_lossy()
            .into_owned()
    };
    let (code, out, err) = facegate(&["verify", &p("obama.jpg"), &p("obama2.jpg")]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["match"], true);
    assert!(v["score"].as_f64().unwrap() < v["threshold"].as_f64().unwrap());
    assert_eq!(v["probe"]["selection"], "largest");

    let (code, out, _) = facegate(&["verify", &p("obama.jpg"), &p("biden.jpg")]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["match"], false);

    let (code, _, err) = facegate(&["verify", &p("obama.jpg"), "/nonexistent/ref.jpg"]);
    assert_eq!(code, 2);
    assert!(err.contains("nonexistent"), "{err}");

    // two_people.jpg holds two faces: asking for a third is an error, not a guess.
    let (code, _, err) = facegate(&[
        "verify",
        &p("two_people.jpg"),
        &p("obama.jpg"),
        "--probe-face",
        "5",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("probe-face"), "{err}");
}

#[test]
fn embed_aligned_chip_matches_dlib_and_detect_lists_faces() {
    let Some(shared) = ready() else { return };
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shared.join("golden/golden.json")).unwrap()).unwrap();
    let face = &golden["images"][1]["faces"][0];
    let chip = shared.join("golden").join(face["chip"].as_str().unwrap());
    let (code, out, err) = facegate(&["embed", "--aligned", &chip.to_string_lossy()]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let got: Vec<f64> = v["faces"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let want: Vec<f64> = face["descriptor_from_chip"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let l2 = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(l2 < 1e-3, "L2 {l2}");

    let two = shared.join("data/people/two_people.jpg");
    let (code, out, _) = facegate(&["detect", &two.to_string_lossy()]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["faces"].as_array().unwrap().len(), 2);

    let (code, out, _) = facegate(&["detect", "/nonexistent.png"]);
    assert_eq!(code, 2);
    assert!(out.contains("error"));
}
