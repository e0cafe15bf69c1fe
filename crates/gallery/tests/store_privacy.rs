//! The gallery's privacy promises, each checked against a real data directory: no plaintext
//! biometric bytes on disk, erasure by key destruction (backups included), retention, templates
//! unlinkable across deployments and renewable, key rotation, and a tamper-evident audit log.
#![allow(clippy::unwrap_used)] // tests and benchmarks stop at the first surprise

use gallery::audit::SignedHead;
use gallery::crypto::{self, LocalKeyRing};
use gallery::store;
use gallery::{Context, Enrolment, GalleryError, Metric, Role, Store};
use std::path::Path;

mod common;
use common::*;
#[test]
fn no_plaintext_template_or_reference_bytes_on_disk() {
    // Both index layouts: the compact one reads candidates back from storage at search time.
    for index in [gallery::IndexChoice::Exact, gallery::IndexChoice::Compact] {
        no_plaintext_on_disk_with(index);
    }
}

fn no_plaintext_on_disk_with(index: gallery::IndexChoice) {
    let dir = tempfile::tempdir().unwrap();
    let (_t, clock) = TestClock::new();
    let key = crypto::random_key().unwrap();
    let s = open(dir.path(), &key, clock);
    let ids = identities(4, 30, 128);
    let mut p = policy(30);
    p.index = index;
    s.create_gallery(&admin(), "rt", &p).unwrap();
    for (i, c) in ids.iter().enumerate() {
        let opts = Enrolment {
            consent: Some(format!("consent-form-{i:05}")),
            image: Some(b"JPEG-BYTES-OF-A-FACE-0123456789".to_vec()),
            ..Default::default()
        };
        s.enrol(
            &admin(),
            "rt",
            &format!("PASSPORT{i:06}"),
            &[c.clone(), sample(c, i as u64)],
            Metric::Euclidean,
            "dlib",
            &opts,
        )
        .unwrap();
    }
    // Search once so the index is loaded, then look at every file while the store is open
    // (WAL and journal files included) and again after it is closed.
    let r = s.identify(&gate(), "rt", &ids[0], None, 0.6).unwrap();
    assert_eq!(r.candidates[0].reference, "PASSPORT000000");
    let protected = s.export_templates(&admin(), "rt").unwrap();
    let scan = |when: &str| {
        let files = files_under(dir.path());
        assert!(files.iter().any(|f| f.ends_with("store.db-wal")) || when == "closed");
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            for (i, c) in ids.iter().enumerate() {
                let raw: Vec<u8> = c.iter().flat_map(|x| x.to_le_bytes()).collect();
                for w in raw.windows(16).step_by(4) {
                    assert!(
                        !contains(&bytes, w),
                        "{when}: template {i} bytes in {}",
                        f.display()
                    );
                }
                assert!(
                    !contains(&bytes, format!("PASSPORT{i:06}").as_bytes()),
                    "reference in {}",
                    f.display()
                );
                assert!(!contains(&bytes, format!("consent-form-{i:05}").as_bytes()));
            }
            for (_, t) in &protected {
                let raw: Vec<u8> = t.iter().flat_map(|x| x.to_le_bytes()).collect();
                assert!(
                    !contains(&bytes, &raw[..16]),
                    "{when}: protected template bytes in {}",
                    f.display()
                );
            }
            assert!(
                !contains(&bytes, b"JPEG-BYTES-OF-A-FACE"),
                "image bytes in {}",
                f.display()
            );
        }
    };
    scan("open");
    drop(s);
    scan("closed");
}

#[test]
fn erasure_by_key_destruction_reaches_backups() {
    let dir = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let (_t, clock) = TestClock::new();
    let key = crypto::random_key().unwrap();
    let ids = identities(5, 10, 128);
    {
        let s = open(dir.path(), &key, clock.clone());
        enrol_all(&s, &ids);
    }
    // Back up store.db (closed, so fully checkpointed) before the deletion.
    std::fs::copy(dir.path().join("store.db"), backup.path().join("store.db")).unwrap();
    let wrapped_before = {
        let c = rusqlite::Connection::open(dir.path().join("keys.db")).unwrap();
        let ps = open(dir.path(), &key, clock.clone()).pseudonym("rt", "P0000003");
        let w: Vec<u8> = c
            .query_row(
                "SELECT wrapped FROM subject_keys WHERE pseudonym = ?1",
                [&ps[..]],
                |r| r.get(0),
            )
            .unwrap();
        w
    };
    let s = open(dir.path(), &key, clock.clone());
    let receipt = s
        .delete(&admin(), "rt", "P0000003", "subject request")
        .unwrap();
    assert!(store::verify_receipt(&receipt));
    let mut forged = receipt.clone();
    forged.reason = "retention period expired".into();
    assert!(!store::verify_receipt(&forged));
    // The wrapped key is gone from every file of the data directory, even while it is open.
    for f in files_under(dir.path()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !contains(&bytes, &wrapped_before[9..41]),
            "wrapped key bytes left in {}",
            f.display()
        );
    }
    assert!(s
        .identify(&gate(), "rt", &ids[3], None, 0.6)
        .unwrap()
        .candidates
        .iter()
        .all(|c| c.reference != "P0000003"));
    drop(s);
    // Restore the old store.db next to the current keys: the erased subject stays erased, the
    // others are all there.
    std::fs::copy(backup.path().join("store.db"), dir.path().join("store.db")).unwrap();
    for ext in ["store.db-wal", "store.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(ext));
    }
    let s = open(dir.path(), &key, clock);
    let r = s.identify(&gate(), "rt", &ids[3], None, 2.0).unwrap();
    assert!(r.candidates.iter().all(|c| c.reference != "P0000003"));
    let r = s.identify(&gate(), "rt", &ids[4], None, 0.6).unwrap();
    assert_eq!(r.candidates[0].reference, "P0000004");
    // The restored rows of the erased subject are dead weight until the next sweep (purge runs it),
    // which removes them and records that in the audit log.
    assert_eq!(s.gallery("rt").unwrap().subjects, 10);
    s.purge(&admin(), "rt").unwrap();
    assert_eq!(s.gallery("rt").unwrap().subjects, 9);
    assert!(s
        .audit_records()
        .unwrap()
        .iter()
        .any(|r| r.action == "delete" && r.outcome.contains("key already destroyed")));
}

#[test]
fn retention_is_enforced_before_and_by_purge() {
    let dir = tempfile::tempdir().unwrap();
    let (t, clock) = TestClock::new();
    let key = crypto::random_key().unwrap();
    let s = open(dir.path(), &key, clock);
    let ids = identities(6, 4, 128);
    s.create_gallery(&admin(), "short", &policy(2)).unwrap();
    for (i, c) in ids.iter().enumerate() {
        // Subject 0 asks for a shorter stay than the policy.
        let opts = Enrolment {
            expires_ms: (i == 0).then_some(1_800_000_000_000 + DAY / 2),
            ..Default::default()
        };
        s.enrol(
            &admin(),
            "short",
            &format!("R{i}"),
            std::slice::from_ref(c),
            Metric::Euclidean,
            "dlib",
            &opts,
        )
        .unwrap();
    }
    s.identify(&gate(), "short", &ids[1], None, 0.6).unwrap();
    t.advance(DAY);
    // Subject 0 has expired: never returned, even though no purge has run.
    assert!(s
        .identify(&gate(), "short", &ids[0], None, 2.0)
        .unwrap()
        .candidates
        .iter()
        .all(|c| c.reference != "R0"));
    assert_eq!(s.gallery("short").unwrap().expired, 1);
    t.advance(2 * DAY);
    assert!(s
        .identify(&gate(), "short", &ids[1], None, 2.0)
        .unwrap()
        .candidates
        .is_empty());
    let receipts = s
        .purge(&Context::new("ops", Role::Operator, "retention"), "short")
        .unwrap();
    assert_eq!(receipts.len(), 4);
    assert!(receipts
        .iter()
        .all(|r| store::verify_receipt(r) && r.reason == "retention period expired"));
    assert_eq!(s.receipts().unwrap().len(), 4);
    let info = s.gallery("short").unwrap();
    assert_eq!((info.subjects, info.expired), (0, 0));
    assert!(s.audit_verify(None, &[]).unwrap().ok);
}

#[test]
fn unlinkable_across_deployments_and_renewable() {
    let (_t, clock) = TestClock::new();
    let ids = identities(7, 60, 128);
    let probes: Vec<Vec<f32>> = ids
        .iter()
        .enumerate()
        .map(|(i, c)| sample(c, 1000 + i as u64))
        .collect();
    let mut exported = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), &crypto::random_key().unwrap(), clock.clone());
        enrol_all(&s, &ids);
        // Same-deployment scores are the plain scores (the transform is orthogonal).
        for (i, p) in probes.iter().enumerate().take(10) {
            let r = s.identify(&gate(), "rt", p, Some(1), 2.0).unwrap();
            assert_eq!(r.candidates[0].reference, format!("P{i:07}"));
            assert!((r.candidates[0].score - dist(p, &ids[i])).abs() < 1e-5);
        }
        let mut t = s.export_templates(&admin(), "rt").unwrap();
        t.sort_by(|a, b| a.0.cmp(&b.0));
        exported.push(t);
        dirs.push(dir);
    }
    // The same faces in two deployments: pseudonyms differ and protected templates are no closer to
    // each other than to anyone else.
    let (a, b) = (&exported[0], &exported[1]);
    assert!(a.iter().all(|(p, _)| b.iter().all(|(q, _)| p != q)));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let plain_genuine: Vec<f64> = ids.iter().zip(&probes).map(|(c, p)| dist(c, p)).collect();
    let plain_impostor: Vec<f64> = ids
        .iter()
        .zip(probes.iter().skip(1))
        .map(|(c, p)| dist(c, p))
        .collect();
    // Cross-deployment "genuine" pairs are unknown to an attacker; we know them because both
    // deployments enrolled the same list — match them up by the plain template each came from.
    let find = |set: &[(String, Vec<f32>)], x: &[f32]| -> Vec<f32> {
        // Exported templates are transformed; identify each by its norm (orthogonal maps keep it).
        let n = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        set.iter()
            .min_by(|p, q| {
                let np = p.1.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
                let nq = q.1.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
                (np - n).abs().total_cmp(&(nq - n).abs())
            })
            .map(|p| p.1.clone())
            .unwrap()
    };
    let cross_genuine: Vec<f64> = ids.iter().map(|c| dist(&find(a, c), &find(b, c))).collect();
    let cross_impostor: Vec<f64> = ids
        .windows(2)
        .map(|w| dist(&find(a, &w[0]), &find(b, &w[1])))
        .collect();
    let (g, i, cg, ci) = (
        mean(&plain_genuine),
        mean(&plain_impostor),
        mean(&cross_genuine),
        mean(&cross_impostor),
    );
    assert!(g < 0.3 && i > 1.2, "plain genuine {g}, impostor {i}");
    assert!(
        (cg - ci).abs() < 0.05,
        "cross genuine {cg} vs cross impostor {ci}"
    );
    assert!(
        cross_genuine.iter().all(|d| *d > 1.0),
        "a cross-deployment genuine pair is close"
    );
}

#[test]
fn rekey_keeps_scores_and_changes_templates() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, clock) = TestClock::new();
    let key = crypto::random_key().unwrap();
    let s = open(dir.path(), &key, clock);
    let ids = identities(8, 20, 128);
    enrol_all(&s, &ids);
    let before = s.export_templates(&admin(), "rt").unwrap();
    let probe = sample(&ids[5], 5);
    let r0 = s.identify(&gate(), "rt", &probe, None, 2.0).unwrap();
    assert!(matches!(
        s.rekey_gallery(&gate(), "rt"),
        Err(GalleryError::Forbidden(_))
    ));
    assert_eq!(s.rekey_gallery(&admin(), "rt").unwrap(), 20);
    let after = s.export_templates(&admin(), "rt").unwrap();
    let r1 = s.identify(&gate(), "rt", &probe, None, 2.0).unwrap();
    assert_eq!(r0.candidates.len(), r1.candidates.len());
    for (a, b) in r0.candidates.iter().zip(&r1.candidates) {
        assert_eq!(a.reference, b.reference);
        assert!((a.score - b.score).abs() < 1e-5);
    }
    for ((pa, ta), (pb, tb)) in before.iter().zip(&after) {
        assert_eq!(pa, pb);
        assert!(dist(ta, tb) > 0.5, "template unchanged by rekey");
    }
    assert!(s
        .audit_records()
        .unwrap()
        .iter()
        .any(|r| r.action == "gallery-rekey"));
}

#[test]
fn master_key_rotation_rewraps_without_touching_templates() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, clock) = TestClock::new();
    let old = crypto::random_key().unwrap();
    let ids = identities(9, 10, 128);
    let templates_before = {
        let s = open(dir.path(), &old, clock.clone());
        enrol_all(&s, &ids);
        drop(s);
        let c = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
        let mut st = c
            .prepare("SELECT sealed FROM templates ORDER BY id")
            .unwrap();
        st.query_map([], |r| r.get::<_, Vec<u8>>(0))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    };
    let new = crypto::random_key().unwrap();
    {
        let mut s = open(dir.path(), &old, clock.clone());
        let ring = LocalKeyRing::new(new.clone()).with_previous(old.clone());
        assert!(s.rotate_master(&admin(), Box::new(ring)).unwrap() >= 10);
        assert_eq!(s.master_key_id(), hex::encode(crypto::key_id(&new)));
    }
    let c = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    let mut st = c
        .prepare("SELECT sealed FROM templates ORDER BY id")
        .unwrap();
    let after: Vec<Vec<u8>> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(templates_before, after);
    assert!(matches!(
        Store::open(dir.path(), Box::new(LocalKeyRing::new(old)), clock.clone()),
        Err(GalleryError::WrongKey { .. })
    ));
    let s = open(dir.path(), &new, clock);
    assert_eq!(
        s.identify(&gate(), "rt", &ids[2], None, 0.6)
            .unwrap()
            .candidates[0]
            .reference,
        "P0000002"
    );
    let report = s.audit_verify(None, &[]).unwrap();
    assert!(report.ok, "{:?}", report.problems);
}

fn tamper(dir: &Path, sql: &str) {
    let c = rusqlite::Connection::open(dir.join("store.db")).unwrap();
    c.execute_batch(sql).unwrap();
}

#[test]
fn audit_log_detects_edits_reordering_removal_and_truncation() {
    let (_t, clock) = TestClock::new();
    let key = crypto::random_key().unwrap();
    let fresh = || {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), &key, clock.clone());
        enrol_all(&s, &identities(10, 6, 128));
        let head = s.audit_head().unwrap().unwrap();
        let public = s.audit_public_key().to_string();
        drop(s);
        (dir, head, public)
    };
    let problems = |dir: &Path, anchors: &[(String, SignedHead)]| {
        let r = store::verify_dir(dir, None, anchors).unwrap();
        assert_eq!(r.ok, r.problems.is_empty());
        r.problems
    };
    let (dir, _, _) = fresh();
    assert!(problems(dir.path(), &[]).is_empty());

    // Edited: change an outcome.
    let (dir, _, _) = fresh();
    tamper(
        dir.path(),
        "UPDATE audit SET record = replace(record, '\"enrolled\"', '\"refused\"') WHERE seq = 3",
    );
    assert!(problems(dir.path(), &[])
        .iter()
        .any(|p| p.contains("record 3") && p.contains("edited")));

    // Reordered: swap two records' content.
    let (dir, _, _) = fresh();
    tamper(
        dir.path(),
        "UPDATE audit SET seq = -1 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = 4; UPDATE audit SET seq = 4 WHERE seq = -1;",
    );
    assert!(!problems(dir.path(), &[]).is_empty());

    // Removed from the middle.
    let (dir, _, _) = fresh();
    tamper(dir.path(), "DELETE FROM audit WHERE seq = 4");
    assert!(problems(dir.path(), &[])
        .iter()
        .any(|p| p.contains("removed")));

    // Truncated, with the matching signed heads removed too: the mirror file catches it.
    let (dir, head, _) = fresh();
    tamper(
        dir.path(),
        "DELETE FROM audit WHERE seq > 4; DELETE FROM audit_heads WHERE seq > 4;",
    );
    assert!(problems(dir.path(), &[])
        .iter()
        .any(|p| p.contains("truncated")));
    // ...and with the mirror file rolled back too, an anchor the auditor kept catches it.
    std::fs::remove_file(dir.path().join("audit.head")).unwrap();
    assert!(
        problems(dir.path(), &[]).is_empty(),
        "undetectable without an anchor (documented)"
    );
    assert!(problems(dir.path(), &[("anchor".into(), head)])
        .iter()
        .any(|p| p.contains("truncated")));

    // Records appended by someone without the signing key.
    let (dir, _, _) = fresh();
    {
        let c = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
        let (rec, hash): (String, Vec<u8>) = c
            .query_row(
                "SELECT record, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let mut r: gallery::audit::AuditRecord = serde_json::from_str(&rec).unwrap();
        r.seq += 1;
        r.prev = hex::encode(&hash);
        r.action = "delete".into();
        let (text, h) = gallery::audit::encode_record(&r).unwrap();
        c.execute(
            "INSERT INTO audit (seq, record, hash) VALUES (?1, ?2, ?3)",
            rusqlite::params![r.seq as i64, text, &h[..]],
        )
        .unwrap();
    }
    assert!(problems(dir.path(), &[])
        .iter()
        .any(|p| p.contains("not covered")));

    // A pinned public key that differs from the directory's is reported.
    let (dir, _, _) = fresh();
    let other = hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&[9; 32])
            .verifying_key()
            .as_bytes(),
    );
    let r = store::verify_dir(dir.path(), Some(&other), &[]).unwrap();
    assert!(!r.ok);
}
