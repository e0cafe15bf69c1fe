//! The gallery service on the PostgreSQL backend (#17): the same promises as on the embedded
//! store, and what only a shared database adds — several nodes writing one audit chain, an
//! erasure acknowledged on one node honoured by the next search on another, and no plaintext
//! biometric byte in any database file or dump.
#![allow(clippy::unwrap_used)] // tests stop at the first surprise

mod common;
use common::pg::PgCluster;
use common::*;

use gallery::crypto::{self, LocalKeyRing};
use gallery::store::backend::postgres::PgBackend;
use gallery::store::{self, Clock};
use gallery::{Enrolment, Metric, Store};
use std::path::Path;

/// A facegate node: its own local directory (the `audit.head` mirror) over the shared databases.
fn node(dir: &Path, urls: &(String, String), key: &crypto::SecretKey, clock: Clock) -> Store {
    let backend = PgBackend::open(&urls.0, &urls.1).unwrap();
    Store::with_backend(
        dir,
        Box::new(backend),
        Box::new(LocalKeyRing::new(key.clone())),
        clock,
    )
    .unwrap()
}

fn enrol(s: &Store, reference: &str, t: &[f32], opts: &Enrolment) {
    s.enrol(
        &admin(),
        "rt",
        reference,
        &[t.to_vec()],
        Metric::Euclidean,
        "dlib",
        opts,
    )
    .unwrap();
}

#[test]
fn a_store_on_postgres_enrols_identifies_erases_and_audits() {
    let Some(pg) = PgCluster::start() else { return };
    let urls = pg.store_urls("single");
    let dir = tempfile::tempdir().unwrap();
    let (_t, clock) = TestClock::new();
    let key = crypto::random_key().unwrap();
    let ids = identities(1, 30, 128);
    {
        let s = node(dir.path(), &urls, &key, clock.clone());
        s.create_gallery(&admin(), "rt", &policy(30)).unwrap();
        for (i, c) in ids.iter().enumerate() {
            enrol(&s, &format!("P{i:07}"), c, &Enrolment::default());
        }
    }
    // Reopened (a restarted node): everything is read back from PostgreSQL.
    let s = node(dir.path(), &urls, &key, clock);
    let info = s.gallery("rt").unwrap();
    assert_eq!((info.subjects, info.templates), (30, 30));
    let probe = sample(&ids[17], 99);
    let r = s.identify(&gate(), "rt", &probe, None, 0.6).unwrap();
    assert_eq!(r.candidates[0].reference, "P0000017");
    assert!((r.candidates[0].score - dist(&probe, &ids[17])).abs() < 1e-5);
    let receipt = s
        .delete(&admin(), "rt", "P0000017", "subject's request")
        .unwrap();
    assert!(store::verify_receipt(&receipt));
    assert!(s
        .identify(&gate(), "rt", &probe, None, 0.6)
        .unwrap()
        .candidates
        .iter()
        .all(|c| c.reference != "P0000017"));
    assert_eq!(s.receipts().unwrap(), vec![receipt]);
    let report = s.audit_verify(None, &[]).unwrap();
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.records, 30 + 1 + 2 + 1);
    // The audit chain in the database is what is verified: an edit there is found.
    pg.sql(
        "single",
        "UPDATE audit SET record = replace(record, 'subject''s request', 'routine') WHERE record LIKE '%subject''s request%'",
    );
    let report = s.audit_verify(None, &[]).unwrap();
    assert!(!report.ok, "an edited record must fail verification");
}

#[test]
fn two_nodes_write_one_audit_chain_and_honour_each_others_erasures() {
    let Some(pg) = PgCluster::start() else { return };
    let urls = pg.store_urls("shared");
    let key = crypto::random_key().unwrap();
    let (_t, clock) = TestClock::new();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(dir_a.path(), &urls, &key, clock.clone());
    let b = node(dir_b.path(), &urls, &key, clock);
    a.create_gallery(&admin(), "rt", &policy(30)).unwrap();
    let ids = identities(2, 60, 128);
    // Both nodes enrol at the same time.
    std::thread::scope(|sc| {
        for (n, s) in [&a, &b].into_iter().enumerate() {
            let ids = &ids;
            sc.spawn(move || {
                for (i, c) in ids.iter().enumerate().filter(|(i, _)| i % 2 == n) {
                    enrol(s, &format!("P{i:07}"), c, &Enrolment::default());
                }
            });
        }
    });
    for s in [&a, &b] {
        assert_eq!(s.gallery("rt").unwrap().subjects, 60);
        let report = s.audit_verify(None, &[]).unwrap();
        assert!(report.ok, "{:?}", report.problems);
        assert_eq!(report.records, 1 + 60);
    }
    // Node B has the gallery loaded; node A erases a subject; B's next search does not return
    // it (every search checks the gallery's generation, so it reloads after any change).
    let probe = sample(&ids[5], 7);
    let r = b.identify(&gate(), "rt", &probe, None, 0.6).unwrap();
    assert_eq!(r.candidates[0].reference, "P0000005");
    a.delete(&admin(), "rt", "P0000005", "subject's request")
        .unwrap();
    let r = b.identify(&gate(), "rt", &probe, None, 0.6).unwrap();
    assert!(
        r.candidates.iter().all(|c| c.reference != "P0000005"),
        "node B returned a subject node A erased"
    );
    // And an enrolment on B is found by A.
    let newcomer = identities(3, 1, 128).pop().unwrap();
    enrol(&b, "NEWCOMER", &newcomer, &Enrolment::default());
    let r = a.identify(&gate(), "rt", &newcomer, None, 0.6).unwrap();
    assert_eq!(r.candidates[0].reference, "NEWCOMER");
    for s in [&a, &b] {
        assert!(s.audit_verify(None, &[]).unwrap().ok);
    }
}

#[test]
fn no_plaintext_biometric_byte_reaches_postgres() {
    let Some(pg) = PgCluster::start() else { return };
    let urls = pg.store_urls("sealed");
    let dir = tempfile::tempdir().unwrap();
    let (_t, clock) = TestClock::new();
    let key = crypto::random_key().unwrap();
    let s = node(dir.path(), &urls, &key, clock);
    let ids = identities(4, 20, 128);
    s.create_gallery(&admin(), "rt", &policy(30)).unwrap();
    for (i, c) in ids.iter().enumerate() {
        let opts = Enrolment {
            consent: Some(format!("consent-form-{i:05}")),
            image: Some(b"JPEG-BYTES-OF-A-FACE-0123456789".to_vec()),
            ..Default::default()
        };
        enrol(&s, &format!("PASSPORT{i:06}"), c, &opts);
    }
    let r = s.identify(&gate(), "rt", &ids[0], None, 0.6).unwrap();
    assert_eq!(r.candidates[0].reference, "PASSPORT000000");
    let protected = s.export_templates(&admin(), "rt").unwrap();
    // Every secret as a 14-byte needle (with what it is), found in one pass over each file: a
    // hash set of the file's 14-byte windows would be the same check, slower.
    let mut needles: std::collections::HashMap<[u8; 14], String> = Default::default();
    let mut add = |bytes: &[u8], what: String| {
        needles.insert(bytes[..14].try_into().unwrap(), what);
    };
    for (i, c) in ids.iter().enumerate() {
        let raw: Vec<u8> = c.iter().flat_map(|x| x.to_le_bytes()).collect();
        for (w, window) in raw.windows(16).step_by(4).enumerate() {
            add(window, format!("template {i} bytes at {}", 4 * w));
        }
        // PostgreSQL's dumps write bytea as hex text.
        add(
            hex::encode(&raw[..16]).as_bytes(),
            format!("template {i} as hex"),
        );
        add(
            format!("PASSPORT{i:06}").as_bytes(),
            format!("reference {i}"),
        );
        add(
            format!("consent-form-{i:05}").as_bytes(),
            format!("consent {i}"),
        );
    }
    for (n, (_, t)) in protected.iter().enumerate() {
        let raw: Vec<u8> = t.iter().flat_map(|x| x.to_le_bytes()).collect();
        add(&raw, format!("protected template {n}"));
        add(
            hex::encode(&raw[..16]).as_bytes(),
            format!("protected template {n} as hex"),
        );
    }
    add(b"JPEG-BYTES-OF-A-FACE", "image".into());
    add(
        hex::encode(b"JPEG-BYTES-OF-A-FACE").as_bytes(),
        "image as hex".into(),
    );
    let check = |what: &str, bytes: &[u8]| {
        for w in bytes.windows(14) {
            if let Some(secret) = needles.get(w) {
                panic!("{secret} found in {what}");
            }
        }
    };
    // The check sees what it looks for.
    let planted = format!("xxPASSPORT{:06}yy", 3);
    assert!(std::panic::catch_unwind(|| check("a planted buffer", planted.as_bytes())).is_err());
    // What a backup of either database holds.
    for db in ["sealed", "sealed_keys"] {
        let dump = pg.dump(db);
        assert!(dump.len() > 1000, "the dump of {db} must hold the data");
        check(&format!("pg_dump {db}"), &dump);
    }
    // Every file of the cluster, WAL included, once everything reached the data files.
    pg.sql("postgres", "CHECKPOINT");
    let files = files_under(pg.data_dir());
    assert!(files.iter().any(|f| f.to_string_lossy().contains("pg_wal")));
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        check(&f.display().to_string(), &bytes);
    }
}
