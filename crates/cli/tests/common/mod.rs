//! Shared by the binary's integration tests: where ../shared is, and skip-or-fail when it (or the
//! installed default pack) is missing: skipped locally, a failure in CI.
#![allow(clippy::unwrap_used)] // tests and benchmarks stop at the first surprise

use std::path::{Path, PathBuf};

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// ../shared if `rel` exists under it and the default pack is installed; else None (local) or a
/// panic (CI).
pub fn shared_with(rel: &str) -> Option<PathBuf> {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    let home = vision::pack::default_home();
    for need in [shared.join(rel), home.join("packs/dlib/manifest.json")] {
        if !need.exists() {
            assert!(!in_ci(), "missing {} (required in CI)", need.display());
            eprintln!("SKIP: missing {}", need.display());
            return None;
        }
    }
    Some(shared)
}

// Not every test binary that includes this module runs the binary this way.
#[allow(dead_code)]
/// Runs the `facegate` binary on data directory `data` with no master key from the environment:
/// (exit code, stdout, stderr).
pub fn facegate(data: &Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_facegate"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("FACEGATE_MASTER_KEY")
        .env_remove("FACEGATE_MASTER_KEY_FILE")
        .env_remove("FACEGATE_DATA")
        .output()
        .expect("run facegate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[allow(dead_code)]
/// A facegate home of its own under `dir` (the installed face pack and runtime linked in), so the
/// PAD pack a test installs never touches the real one.
pub fn own_home(dir: &std::path::Path) -> String {
    let home = dir.join("home");
    std::fs::create_dir(&home).unwrap();
    let real = vision::pack::default_home();
    for d in ["packs", "runtime"] {
        std::os::unix::fs::symlink(real.join(d), home.join(d)).unwrap();
    }
    home.to_str().unwrap().to_string()
}

#[allow(dead_code)]
/// A home of its own under `dir` (see [`own_home`]) with the MiniFASNet PAD pack installed from
/// ../shared; None (local) or a panic (CI) when the weights are missing.
pub fn home_with_pad(dir: &Path) -> Option<String> {
    let models =
        shared_with("models/minifasnet/2.7_80x80_MiniFASNetV2.pth")?.join("models/minifasnet");
    let home = own_home(dir);
    let (code, _, err) = facegate(
        &dir.join("pad-install-data"),
        &[
            "--home",
            &home,
            "models",
            "install-pad",
            "--from",
            models.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    Some(home)
}

#[allow(dead_code)]
/// Deterministic pseudo-random 128-D templates, one JSON line per subject `S000000`… (the
/// `enrol --embeddings` format).
pub fn embeddings_file(path: &Path, n: usize) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for i in 0..n {
        let v: Vec<f32> = (0..128)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 10_000) as f32 / 50_000.0 - 0.1
            })
            .collect();
        writeln!(
            f,
            "{}",
            serde_json::json!({"subject": format!("S{i:06}"), "embedding": v})
        )
        .unwrap();
    }
}

#[allow(dead_code)]
/// Runs a `facegate … enrol --embeddings` command, SIGKILLs it (no destructor, no flush, no
/// chance to finish the transaction in flight) once `acks` subjects were acknowledged, and
/// returns those subjects.
pub fn kill_after_acks(mut enrol: std::process::Command, acks: usize) -> Vec<String> {
    use std::io::BufRead;
    let mut child = enrol
        .env_remove("FACEGATE_MASTER_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    while acked.len() < acks {
        let line = lines.next().expect("enrolment stopped early").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["status"], "enrolled", "{line}");
        acked.push(v["subject"].as_str().unwrap().to_string());
    }
    child.kill().unwrap();
    child.wait().unwrap();
    acked
}

#[allow(dead_code)]
/// The arguments of `gallery create NAME` with a test policy (30 days, admin role).
pub fn create_gallery_args(name: &str) -> Vec<&str> {
    vec![
        "--role",
        "admin",
        "gallery",
        "create",
        name,
        "--purpose",
        "registered travellers",
        "--legal-basis",
        "test",
        "--retention-days",
        "30",
    ]
}

#[allow(dead_code)]
/// `--role enroller enrol --gallery rt --embeddings INPUT` (a JSON Lines file of embeddings).
pub fn enrol_embeddings_args(input: &std::path::Path) -> [&str; 7] {
    [
        "--role",
        "enroller",
        "enrol",
        "--gallery",
        "rt",
        "--embeddings",
        input.to_str().expect("a UTF-8 path"),
    ]
}
