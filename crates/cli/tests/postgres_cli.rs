//! The `facegate` binary on PostgreSQL (`--store`, #17): two nodes (two data directories, one
//! master key) over one pair of databases; a SIGKILL mid-enrolment loses nothing acknowledged;
//! key rotation and audit verification work on the shared store.
#![allow(clippy::unwrap_used)] // tests stop at the first surprise

mod common;
#[path = "../../gallery/tests/common/pg.rs"]
#[allow(dead_code)] // the gallery tests use the rest
mod pg;

use pg::PgCluster;
use std::path::Path;
use std::process::Command;

/// `facegate --data-dir DATA --master-key KEY --store URL ARGS…`: (exit code, stdout, stderr).
fn node(data: &Path, key: &Path, url: &str, args: &[&str]) -> (i32, String, String) {
    let mut full = vec!["--master-key", key.to_str().unwrap(), "--store", url];
    full.extend_from_slice(args);
    common::facegate(data, &full)
}

/// A cluster with the databases `fg` and `fg_keys`, a gallery `rt` created from node A: (the
/// cluster, its URL, the directory, the master key file, the two nodes' data directories, what
/// the creation printed on stderr). None where PostgreSQL is not installed (outside CI).
#[allow(clippy::type_complexity)]
fn two_nodes_with_a_gallery() -> Option<(
    PgCluster,
    String,
    tempfile::TempDir,
    std::path::PathBuf,
    (std::path::PathBuf, std::path::PathBuf),
    String,
)> {
    let pg = PgCluster::start()?;
    pg.create_db("fg");
    pg.create_db("fg_keys");
    let url = pg.url("fg");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let key = dir.path().join("master.key");
    let (code, _, err) = node(&a, &key, &url, &common::create_gallery_args("rt"));
    assert_eq!(code, 0, "{err}");
    Some((pg, url, dir, key, (a, b), err))
}

#[test]
fn two_nodes_share_a_postgres_store() {
    let Some((_pg, url, dir, key, (a, b), err)) = two_nodes_with_a_gallery() else {
        return;
    };
    assert!(
        err.contains("created master key"),
        "the first node creates the key: {err}"
    );
    assert!(
        !a.join("store.db").exists(),
        "nothing goes to the embedded store"
    );
    let input = dir.path().join("emb.jsonl");
    common::embeddings_file(&input, 3000);
    // SIGKILL node A in the middle of a batch enrolment.
    let mut enrol = Command::new(env!("CARGO_BIN_EXE_facegate"));
    enrol
        .arg("--data-dir")
        .arg(&a)
        .arg("--master-key")
        .arg(&key)
        .args(["--store", &url])
        .args(common::enrol_embeddings_args(&input));
    let acked = common::kill_after_acks(enrol, 40);
    // Node B (its own data directory, the same key) sees every acknowledged subject.
    for s in &acked {
        let (code, out, err) = node(
            &b,
            &key,
            &url,
            &["subject", "--gallery", "rt", "--subject", s],
        );
        assert_eq!(code, 0, "acknowledged subject {s} lost: {err}");
        assert!(out.contains("\"templates\": 1"));
    }
    let (code, out, err) = node(&b, &key, &url, &["gallery", "show", "rt"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let n = v["subjects"].as_u64().unwrap();
    assert!((40..3000).contains(&n), "{n} subjects after the kill");
    // Node B deletes; node A no longer finds the subject.
    let (code, _, err) = node(
        &b,
        &key,
        &url,
        &[
            "delete",
            "--gallery",
            "rt",
            "--subject",
            &acked[3],
            "--reason",
            "subject request",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = node(
        &a,
        &key,
        &url,
        &["subject", "--gallery", "rt", "--subject", &acked[3]],
    );
    assert_eq!(code, 2, "erased on B, still found on A");
    // Key rotation from node A; node B opens with the rotated key file.
    let (code, out, err) = node(&a, &key, &url, &["--role", "admin", "keys", "rotate"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rewrapped"));
    let (code, _, err) = node(
        &b,
        &key,
        &url,
        &["subject", "--gallery", "rt", "--subject", &acked[4]],
    );
    assert_eq!(code, 0, "{err}");
    // One chain, verified from either node (no master key needed).
    for d in [&a, &b] {
        let (code, out, err) = node(d, &key, &url, &["audit", "verify"]);
        assert_eq!(code, 0, "{out}{err}");
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(r["ok"], true);
    }
    // A node with another master key is refused, not silently forked.
    let other = dir.path().join("other.key");
    let (code, _, err) = node(&b, &other, &url, &["gallery", "show", "rt"]);
    assert_ne!(code, 0, "a wrong master key must not open the shared store");
    assert!(err.contains("master key"), "{err}");
}

#[test]
fn keys_store_needs_store_and_one_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let (code, _, err) = common::facegate(
        dir.path(),
        &[
            "--keys-store",
            "postgres://x@127.0.0.1:1/k",
            "gallery",
            "list",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("--keys-store needs --store"), "{err}");
    let url = "postgres://x@127.0.0.1:1/fg";
    let (code, _, err) = node(
        dir.path(),
        &key,
        url,
        &["--keys-store", url, "gallery", "list"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("another PostgreSQL database"), "{err}");
}

#[test]
fn migrate_an_embedded_deployment_to_postgres_and_back() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_db("mig");
    pg.create_db("mig_keys");
    let url = pg.url("mig");
    let dir = tempfile::tempdir().unwrap();
    let embedded = dir.path().join("embedded");
    let key = embedded.join("master.key");
    let run = |data: &Path, args: &[&str]| {
        let mut full = vec!["--master-key", key.to_str().unwrap()];
        full.extend_from_slice(args);
        common::facegate(data, &full)
    };
    let (code, _, err) = run(&embedded, &common::create_gallery_args("rt"));
    assert_eq!(code, 0, "{err}");
    let input = dir.path().join("emb.jsonl");
    common::embeddings_file(&input, 6);
    let (code, _, err) = run(&embedded, &common::enrol_embeddings_args(&input));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(
        &embedded,
        &[
            "delete",
            "--gallery",
            "rt",
            "--subject",
            "S000001",
            "--reason",
            "subject request",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&embedded, &["apikey", "create", "--role", "gate"]);
    assert_eq!(code, 0, "{err}");
    let gate_key: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Migration needs the admin role.
    let (code, _, err) = run(
        &embedded,
        &[
            "migrate",
            "--from",
            embedded.to_str().unwrap(),
            "--to",
            &url,
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("admin"), "{err}");
    let (code, out, err) = run(
        &embedded,
        &[
            "--role",
            "admin",
            "migrate",
            "--from",
            embedded.to_str().unwrap(),
            "--to",
            &url,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["subjects"], 5);
    assert_eq!(report["templates"], 5);
    // The source is untouched, its own audit.head mirror included.
    let (code, out, err) = run(&embedded, &["audit", "verify", "--strict"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(report["keys"], 5);
    assert_eq!(report["receipts"], 1);
    // A node on PostgreSQL serves the migrated gallery; the erased subject stays erased.
    let node_dir = dir.path().join("node");
    let on_pg = |args: &[&str]| {
        let mut full = vec!["--store", url.as_str()];
        full.extend_from_slice(args);
        run(&node_dir, &full)
    };
    let (code, _, err) = on_pg(&["subject", "--gallery", "rt", "--subject", "S000004"]);
    assert_eq!(code, 0, "{err}");
    // API keys came along (the access list is part of the record store).
    let (code, out, err) = on_pg(&["apikey", "list"]);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(listed["id"], gate_key["id"]);
    let (code, _, _) = on_pg(&["subject", "--gallery", "rt", "--subject", "S000001"]);
    assert_eq!(code, 2);
    let (code, out, err) = on_pg(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = on_pg(&["--role", "auditor", "audit", "export"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("\"store-migrate\""),
        "the migration is in the chain"
    );
    assert!(out.contains("\"delete\""), "the chain came with it");
    // Into a store that is not empty: refused.
    let (code, _, err) = run(
        &embedded,
        &[
            "--role",
            "admin",
            "migrate",
            "--from",
            embedded.to_str().unwrap(),
            "--to",
            &url,
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("already holds"), "{err}");
    // And back to a data directory.
    let back = dir.path().join("back");
    let (code, out, err) = on_pg(&[
        "--role",
        "admin",
        "migrate",
        "--from",
        &url,
        "--to",
        back.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["subjects"], 5);
    let (code, _, err) = run(
        &back,
        &["subject", "--gallery", "rt", "--subject", "S000004"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&back, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = run(&back, &["--role", "auditor", "audit", "export"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.matches("\"store-migrate\"").count(),
        2,
        "both migrations recorded"
    );
}

/// A serving node's counters of whole-gallery loads and followed changes (`/metrics`).
fn load_counters(base: &str, api_key: &str) -> (u64, u64) {
    let text = reqwest::blocking::Client::new()
        .get(format!("{base}/metrics"))
        .header("Authorization", format!("Bearer {api_key}"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
            .parse()
            .unwrap()
    };
    (
        value("facegate_gallery_loads_total"),
        value("facegate_gallery_changes_followed_total"),
    )
}

#[test]
fn a_serving_node_follows_other_nodes_changes_without_being_asked() {
    let Some((_pg, url, dir, key, (a, b), _)) = two_nodes_with_a_gallery() else {
        return;
    };
    let input = dir.path().join("emb.jsonl");
    common::embeddings_file(&input, 20);
    let (code, _, err) = node(&a, &key, &url, &common::enrol_embeddings_args(&input));
    assert_eq!(code, 0, "{err}");
    // Node B serves the gallery (loaded at start).
    std::fs::create_dir_all(&b).unwrap();
    let cfg = b.join("server.toml");
    std::fs::write(&cfg, "preload = [\"rt\"]\n").unwrap();
    // The key is made on node A: API keys live in the shared store, so B accepts it.
    let (code, out, err) = node(&a, &key, &url, &["apikey", "create", "--role", "auditor"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let auditor = v["key"].as_str().unwrap().to_string();
    let auditor_id = v["id"].as_str().unwrap().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_facegate"))
        .arg("--data-dir")
        .arg(&b)
        .arg("--master-key")
        .arg(&key)
        .args([
            "--store",
            &url,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&cfg)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _server = Kill(child);
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let settled = |want: (u64, u64)| {
        let t = std::time::Instant::now();
        loop {
            let got = load_counters(&base, &auditor);
            if got == want || t.elapsed() > std::time::Duration::from_secs(10) {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    assert_eq!(settled((1, 0)), (1, 0), "B loads the gallery at start");
    // Node A erases two subjects; B applies both with no request asking it to.
    for s in ["S000003", "S000007"] {
        let (code, _, err) = node(
            &a,
            &key,
            &url,
            &[
                "delete",
                "--gallery",
                "rt",
                "--subject",
                s,
                "--reason",
                "subject request",
            ],
        );
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(
        settled((1, 2)),
        (1, 2),
        "B follows A's erasures through the change feed, without a reload"
    );
    // Revoked on A: B refuses the key once its copy of the list is a second old.
    let (code, _, err) = node(&a, &key, &url, &["apikey", "revoke", &auditor_id]);
    assert_eq!(code, 0, "{err}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let status = reqwest::blocking::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(&auditor)
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 401, "a key revoked on another node is refused");
}
