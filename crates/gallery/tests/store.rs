//! The gallery's promises, each checked against a real data directory: enrolment, identification and
//! its open set, typed input errors, crash repair, concurrent readers, the index layouts, reloads and
//! file modes (the privacy promises are in store_privacy.rs).
#![allow(clippy::unwrap_used)] // tests and benchmarks stop at the first surprise

use gallery::crypto::{self, LocalKeyRing};
use gallery::store;
use gallery::{Context, Enrolment, GalleryError, Metric, Role, Store};
use std::path::Path;

mod common;
use common::*;

#[test]
fn enrol_identify_open_set_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, clock) = TestClock::new();
    let key = crypto::random_key().unwrap();
    let s = open(dir.path(), &key, clock);
    let ids = identities(1, 40, 128);
    enrol_all(&s, &ids);
    let info = s.gallery("rt").unwrap();
    assert_eq!(
        (info.subjects, info.templates, info.dim),
        (40, 40, Some(128))
    );

    // A genuine probe finds its subject at rank 1 with the distance it really has.
    let probe = sample(&ids[17], 99);
    let r = s.identify(&gate(), "rt", &probe, None, 0.6).unwrap();
    assert_eq!(r.candidates[0].reference, "P0000017");
    assert!((r.candidates[0].score - dist(&probe, &ids[17])).abs() < 1e-5);
    assert!(r.candidates.iter().all(|c| c.score <= 0.6));
    // An unknown face is a normal "no match".
    let stranger = identities(2, 1, 128).pop().unwrap();
    let r = s.identify(&gate(), "rt", &stranger, None, 0.6).unwrap();
    assert!(r.candidates.is_empty());

    // Searches need a purpose and an allowed role.
    let no_purpose = Context::new("gate-07", Role::Gate, " ");
    assert!(matches!(
        s.identify(&no_purpose, "rt", &probe, None, 0.6),
        Err(GalleryError::Invalid(_))
    ));
    let auditor = Context::new("bob", Role::Auditor, "review");
    assert!(matches!(
        s.identify(&auditor, "rt", &probe, None, 0.6),
        Err(GalleryError::Forbidden(_))
    ));

    // Every action is in the log with actor, role and purpose; the log verifies.
    let recs = s.audit_records().unwrap();
    let searches: Vec<_> = recs.iter().filter(|r| r.action == "identify").collect();
    assert_eq!(searches.len(), 2);
    assert_eq!(searches[0].actor, "gate-07");
    assert_eq!(searches[0].role, "gate");
    assert_eq!(searches[0].purpose, "border crossing");
    assert_eq!(searches[0].outcome, "match");
    assert_eq!(searches[1].outcome, "no-match");
    assert_eq!(recs.iter().filter(|r| r.action == "enrol").count(), 40);
    // No clear reference anywhere in the log.
    assert!(!serde_json::to_string(&recs).unwrap().contains("P0000017"));
    let report = s.audit_verify(None, &[]).unwrap();
    assert!(report.ok, "{:?}", report.problems);
}

#[test]
fn input_errors_are_typed_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, clock) = TestClock::new();
    let key = crypto::random_key().unwrap();
    let s = open(dir.path(), &key, clock.clone());
    let ids = identities(3, 3, 128);
    enrol_all(&s, &ids);
    let e = Enrolment::default();
    assert!(matches!(
        s.enrol(
            &admin(),
            "rt",
            "P0000001",
            &[ids[0].clone()],
            Metric::Euclidean,
            "dlib",
            &e
        ),
        Err(GalleryError::DuplicateSubject(_))
    ));
    assert!(matches!(
        s.enrol(
            &admin(),
            "nope",
            "X",
            &[ids[0].clone()],
            Metric::Euclidean,
            "dlib",
            &e
        ),
        Err(GalleryError::UnknownGallery(_))
    ));
    assert!(matches!(
        s.enrol(
            &admin(),
            "rt",
            "X",
            &[vec![0.1; 64]],
            Metric::Euclidean,
            "dlib",
            &e
        ),
        Err(GalleryError::Dimension {
            expected: 128,
            got: 64,
            ..
        })
    ));
    assert!(matches!(
        s.enrol(
            &admin(),
            "rt",
            "X",
            &[vec![f32::NAN; 128]],
            Metric::Euclidean,
            "dlib",
            &e
        ),
        Err(GalleryError::Invalid(_))
    ));
    assert!(matches!(
        s.enrol(
            &admin(),
            "rt",
            "X",
            &[ids[0].clone()],
            Metric::Euclidean,
            "other-pack",
            &e
        ),
        Err(GalleryError::Invalid(_))
    ));
    assert!(matches!(
        s.delete(&admin(), "rt", "P9999999", "test"),
        Err(GalleryError::UnknownSubject(_))
    ));
    assert!(matches!(
        s.identify(&gate(), "rt", &[0.0; 3], None, 0.6),
        Err(GalleryError::Dimension { .. })
    ));
    assert!(matches!(
        s.create_gallery(&admin(), "rt", &policy(1)),
        Err(GalleryError::GalleryExists(_))
    ));
    assert!(s.create_gallery(&admin(), "bad name!", &policy(1)).is_err());
    assert!(matches!(
        s.enrol(
            &gate(),
            "rt",
            "Y",
            &[ids[0].clone()],
            Metric::Euclidean,
            "dlib",
            &e
        ),
        Err(GalleryError::Forbidden(_))
    ));
    // Nothing above changed the gallery.
    assert_eq!(s.gallery("rt").unwrap().subjects, 3);
    drop(s);
    // The wrong master key is reported as such, not as corruption.
    let other = crypto::random_key().unwrap();
    match Store::open(dir.path(), Box::new(LocalKeyRing::new(other)), clock) {
        Err(GalleryError::WrongKey { .. }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened with the wrong key"),
    }
}

#[test]
fn concurrent_reader_while_writing() {
    let dir = tempfile::tempdir().unwrap();
    let key = crypto::random_key().unwrap();
    let ids = identities(11, 200, 128);
    let writer = open(dir.path(), &key, store::system_clock());
    writer.create_gallery(&admin(), "rt", &policy(30)).unwrap();
    writer
        .enrol(
            &admin(),
            "rt",
            "P0000000",
            &[ids[0].clone()],
            Metric::Euclidean,
            "dlib",
            &Enrolment::default(),
        )
        .unwrap();
    let reader = open(dir.path(), &key, store::system_clock());
    std::thread::scope(|sc| {
        let w = sc.spawn(|| {
            for (i, c) in ids.iter().enumerate().skip(1) {
                writer
                    .enrol(
                        &admin(),
                        "rt",
                        &format!("P{i:07}"),
                        std::slice::from_ref(c),
                        Metric::Euclidean,
                        "dlib",
                        &Enrolment::default(),
                    )
                    .unwrap();
            }
        });
        let mut searched = 0;
        while !w.is_finished() {
            let r = reader.identify(&gate(), "rt", &ids[0], None, 0.6).unwrap();
            assert_eq!(r.candidates[0].reference, "P0000000");
            searched += 1;
        }
        assert!(searched > 0);
    });
    // The reader sees every enrolment once the writer is done.
    assert_eq!(
        reader
            .identify(&gate(), "rt", &ids[199], None, 0.6)
            .unwrap()
            .candidates[0]
            .reference,
        "P0000199"
    );
    let report = reader.audit_verify(None, &[]).unwrap();
    assert!(report.ok, "{:?}", report.problems);
}

#[test]
fn crash_between_the_two_databases_is_repaired_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (t, clock) = TestClock::new();
    let key = crypto::random_key().unwrap();
    let ids = identities(12, 3, 128);
    {
        let s = open(dir.path(), &key, clock.clone());
        enrol_all(&s, &ids);
    }
    let keys = rusqlite::Connection::open(dir.path().join("keys.db")).unwrap();
    let store = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    let count = |c: &rusqlite::Connection, sql: &str| -> i64 {
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    };
    assert_eq!(count(&keys, "SELECT COUNT(*) FROM pending"), 0);
    // 1. An enrolment that wrote its key and mark, then died before store.db committed.
    let now = 1_800_000_000_000i64;
    keys.execute(
        "INSERT INTO subject_keys (gallery, pseudonym, wrapped, created) VALUES ('rt', x'01', x'02', ?1)",
        [now],
    )
    .unwrap();
    // Marked by a live process: it may still commit, so its key is kept within the hour.
    let mut live = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    keys.execute(
        "INSERT INTO pending (gallery, pseudonym, op, created, pid) VALUES ('rt', x'01', 'enrol', ?1, ?2)",
        rusqlite::params![now, live.id() as i64],
    )
    .unwrap();
    // 1b. The same, but the process that marked it is gone: its key goes at the next start.
    let dead = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id() as i64;
        c.wait().unwrap();
        pid
    };
    keys.execute(
        "INSERT INTO subject_keys (gallery, pseudonym, wrapped, created) VALUES ('rt', x'03', x'04', ?1)",
        [now],
    )
    .unwrap();
    keys.execute(
        "INSERT INTO pending (gallery, pseudonym, op, created, pid) VALUES ('rt', x'03', 'enrol', ?1, ?2)",
        rusqlite::params![now, dead],
    )
    .unwrap();
    // 2. A deletion that committed in store.db, then died before destroying the key.
    let ps: Vec<u8> = store
        .query_row(
            "SELECT pseudonym FROM subjects ORDER BY id LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    keys.execute(
        "INSERT INTO pending (gallery, pseudonym, op, created) VALUES ('rt', ?1, 'delete', ?2)",
        rusqlite::params![ps, now],
    )
    .unwrap();
    store
        .execute("DELETE FROM subjects WHERE pseudonym = ?1", [&ps])
        .unwrap();
    assert_eq!(count(&keys, "SELECT COUNT(*) FROM subject_keys"), 5);
    // Within the hour the half-made enrolment might still be in flight in another process: kept.
    drop(open(dir.path(), &key, clock.clone()));
    assert_eq!(
        count(&keys, "SELECT COUNT(*) FROM subject_keys"),
        3,
        "the deleted subject's key must go at once"
    );
    // Past the orphan age the key goes whether or not its process lives.
    t.advance(2 * 3_600_000);
    live.kill().unwrap();
    live.wait().unwrap();
    let s = open(dir.path(), &key, clock);
    assert_eq!(count(&keys, "SELECT COUNT(*) FROM subject_keys"), 2);
    assert_eq!(count(&keys, "SELECT COUNT(*) FROM pending"), 0);
    assert_eq!(s.gallery("rt").unwrap().subjects, 2);
    assert_eq!(
        s.identify(&gate(), "rt", &ids[1], None, 0.6)
            .unwrap()
            .candidates[0]
            .reference,
        "P0000001"
    );
}

#[test]
fn hnsw_gallery_answers_like_the_exact_one_on_clear_cases() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, clock) = TestClock::new();
    let s = open(dir.path(), &crypto::random_key().unwrap(), clock);
    let ids = identities(13, 300, 128);
    let mut p = policy(30);
    p.index = gallery::IndexChoice::Hnsw(gallery::approx::HnswParams::default());
    s.create_gallery(&admin(), "big", &p).unwrap();
    enrol_each(&s, "big", &ids);
    for i in [0, 17, 150, 299] {
        let probe = sample(&ids[i], 7 + i as u64);
        let r = s.identify(&gate(), "big", &probe, Some(1), 0.6).unwrap();
        assert_eq!(r.candidates[0].reference, format!("P{i:07}"));
        assert!((r.candidates[0].score - dist(&probe, &ids[i])).abs() < 1e-5);
    }
    s.delete(&admin(), "big", "P0000017", "test").unwrap();
    let r = s.identify(&gate(), "big", &ids[17], None, 0.6).unwrap();
    assert!(r.candidates.iter().all(|c| c.reference != "P0000017"));
}

/// Enrols the same subjects (some with two templates, some by batch) into an exact and a compact
/// gallery of one store.
fn enrol_exact_and_compact(s: &Store, ids: &[Vec<f32>]) {
    for (name, index) in [
        ("exact", gallery::IndexChoice::Exact),
        ("compact", gallery::IndexChoice::Compact),
    ] {
        let mut p = policy(30);
        p.index = index;
        p.max_candidates = 10;
        // The caller's threshold applies (a loose one returns ten candidates).
        p.threshold = None;
        s.create_gallery(&admin(), name, &p).unwrap();
        for (i, c) in ids.iter().enumerate().take(ids.len() - 20) {
            let templates = if i % 3 == 0 {
                vec![c.clone(), sample(c, 1000 + i as u64)]
            } else {
                vec![c.clone()]
            };
            s.enrol(
                &admin(),
                name,
                &format!("P{i:07}"),
                &templates,
                Metric::Euclidean,
                "dlib",
                &Enrolment::default(),
            )
            .unwrap();
        }
        let batch: Vec<(String, Vec<Vec<f32>>)> = (ids.len() - 20..ids.len())
            .map(|i| (format!("P{i:07}"), vec![ids[i].clone()]))
            .collect();
        s.enrol_batch(&admin(), name, &batch, Metric::Euclidean, "dlib")
            .unwrap();
    }
}

#[test]
fn compact_gallery_answers_exactly_like_the_exact_one() {
    let dir = tempfile::tempdir().unwrap();
    let (t, clock) = TestClock::new();
    let key = crypto::random_key().unwrap();
    let s = open(dir.path(), &key, clock.clone());
    let ids = identities(21, 200, 128);
    enrol_exact_and_compact(&s, &ids);
    let same = |s: &Store, probes: &[Vec<f32>], threshold: f64| {
        for probe in probes {
            let a = s
                .identify(&gate(), "exact", probe, None, threshold)
                .unwrap();
            let b = s
                .identify(&gate(), "compact", probe, None, threshold)
                .unwrap();
            // Two galleries: own transforms and pseudonyms, so scores agree to f32 rounding.
            let view = |r: &gallery::Identification| {
                r.candidates
                    .iter()
                    .map(|c| (c.rank, c.reference.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(view(&a), view(&b));
            for (x, y) in a.candidates.iter().zip(&b.candidates) {
                assert!((x.score - y.score).abs() < 1e-5);
            }
            assert_eq!(a.searched_templates, b.searched_templates);
        }
    };
    // Genuine probes, strangers, and a threshold loose enough to return ten candidates each.
    let mut probes: Vec<Vec<f32>> = [0, 3, 17, 150, 185, 199]
        .iter()
        .map(|&i| sample(&ids[i], 50 + i as u64))
        .collect();
    probes.extend(identities(22, 4, 128));
    same(&s, &probes, 0.6);
    same(&s, &probes, 1.6);
    let r = s
        .identify(&gate(), "compact", &probes[1], None, 0.6)
        .unwrap();
    assert_eq!(r.candidates[0].reference, "P0000003");
    assert!((r.candidates[0].score - dist(&probes[1], &ids[3])).abs() < 1e-5);
    // The compact index holds a quarter of the memory.
    let (n_exact, mem_exact, _) = s.preload("exact").unwrap();
    let (n_compact, mem_compact, _) = s.preload("compact").unwrap();
    assert_eq!(n_exact, n_compact);
    assert!(
        mem_compact * 4 < mem_exact,
        "compact {mem_compact} B, exact {mem_exact} B"
    );
    // Deletion, enrolment while loaded, and expiry keep the two in step.
    for g in ["exact", "compact"] {
        s.delete(&admin(), g, "P0000003", "test").unwrap();
        s.enrol(
            &admin(),
            g,
            "LATE",
            &[ids[3].clone(), sample(&ids[3], 9)],
            Metric::Euclidean,
            "dlib",
            &Enrolment::default(),
        )
        .unwrap();
    }
    same(&s, &probes, 1.6);
    let r = s
        .identify(&gate(), "compact", &probes[1], None, 0.6)
        .unwrap();
    assert_eq!(r.candidates[0].reference, "LATE");
    assert!(r.candidates.iter().all(|c| c.reference != "P0000003"));
    // Export reads storage (the compact index has no f32 copy): same templates both ways.
    let ea = s.export_templates(&admin(), "exact").unwrap();
    let eb = s.export_templates(&admin(), "compact").unwrap();
    // Each gallery has its own transform, which keeps norms: compare the sorted norms.
    let norms = |e: &[(String, Vec<f32>)]| {
        let mut n: Vec<f64> = e
            .iter()
            .map(|(_, v)| v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>())
            .collect();
        n.sort_by(f64::total_cmp);
        n
    };
    // 200 subjects, 60 of them with a second template; P0000003's two replaced by LATE's two.
    assert_eq!(ea.len(), 200 + 60);
    for (x, y) in norms(&ea).iter().zip(norms(&eb)) {
        assert!((x - y).abs() < 1e-4);
    }
    // Reopened from disk, rekeyed, switched back and forth: still the same answers.
    drop(s);
    let s = open(dir.path(), &key, clock.clone());
    same(&s, &probes, 1.6);
    s.rekey_gallery(&admin(), "compact").unwrap();
    same(&s, &probes, 1.6);
    // One gallery switched between the two layouts: bit-identical answers.
    let answers = |s: &Store| {
        probes
            .iter()
            .map(|p| {
                let r = s.identify(&gate(), "compact", p, None, 1.6).unwrap();
                r.candidates
                    .iter()
                    .map(|c| (c.rank, c.reference.clone(), c.pseudonym.clone(), c.score))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let compact = answers(&s);
    assert!(compact.iter().all(|a| a.len() == 10));
    let mut p = s.gallery("compact").unwrap().policy;
    p.index = gallery::IndexChoice::Exact;
    s.update_policy(&admin(), "compact", &p, None).unwrap();
    assert_eq!(answers(&s), compact);
    p.index = gallery::IndexChoice::Compact;
    s.update_policy(&admin(), "compact", &p, None).unwrap();
    assert_eq!(answers(&s), compact);
    // Past the retention period nobody comes back, before any purge.
    t.advance(31 * DAY);
    let r = s
        .identify(&gate(), "compact", &probes[0], None, 1.6)
        .unwrap();
    assert!(r.candidates.is_empty());
    assert!(s.audit_verify(None, &[]).unwrap().ok);
}

#[test]
fn a_duplicate_never_replaces_the_enrolled_subjects_key() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, clock) = TestClock::new();
    let s = open(dir.path(), &crypto::random_key().unwrap(), clock);
    let ids = identities(14, 4, 128);
    enrol_all(&s, &ids[..2]);
    // A bulk batch holding an already enrolled reference fails as a whole...
    let batch: Vec<(String, Vec<Vec<f32>>)> = vec![
        ("P0000009".into(), vec![ids[2].clone()]),
        ("P0000001".into(), vec![ids[3].clone()]),
    ];
    assert!(matches!(
        s.enrol_batch(&admin(), "rt", &batch, Metric::Euclidean, "dlib"),
        Err(GalleryError::DuplicateSubject(_))
    ));
    // ...the enrolled subject still opens and matches, and nothing of the batch went in.
    let r = s.identify(&gate(), "rt", &ids[1], None, 0.6).unwrap();
    assert_eq!(r.candidates[0].reference, "P0000001");
    assert!(matches!(
        s.subject("rt", "P0000009"),
        Err(GalleryError::UnknownSubject(_))
    ));
    // The single-subject path refuses too, and leaves the subject intact.
    assert!(matches!(
        s.enrol(
            &admin(),
            "rt",
            "P0000001",
            std::slice::from_ref(&ids[3]),
            Metric::Euclidean,
            "dlib",
            &Enrolment::default()
        ),
        Err(GalleryError::DuplicateSubject(_))
    ));
    drop(s);
}

#[test]
fn a_data_directory_from_before_pending_pids_opens_and_keeps_its_subjects() {
    let dir = tempfile::tempdir().unwrap();
    let key = crypto::random_key().unwrap();
    let ids = identities(9, 3, 16);
    {
        let s = open(dir.path(), &key, gallery::store::system_clock());
        enrol_all(&s, &ids);
    }
    // keys.db as the previous release wrote it: `pending` without the pid column.
    let keys = rusqlite::Connection::open(dir.path().join("keys.db")).unwrap();
    keys.execute_batch(
        "DROP TABLE pending;
         CREATE TABLE pending (gallery TEXT NOT NULL, pseudonym BLOB NOT NULL, op TEXT NOT NULL,
           created INTEGER NOT NULL, PRIMARY KEY (gallery, pseudonym, op));",
    )
    .unwrap();
    drop(keys);
    let s = open(dir.path(), &key, gallery::store::system_clock());
    let r = s.identify(&gate(), "rt", &ids[1], None, 0.6).unwrap();
    assert_eq!(r.candidates.len(), 1);
    let keys = rusqlite::Connection::open(dir.path().join("keys.db")).unwrap();
    let cols: Vec<String> = keys
        .prepare("SELECT name FROM pragma_table_info('pending')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    assert!(cols.contains(&"pid".to_string()), "{cols:?}");
}

/// However a reference is typed (padding, case, composed or decomposed accents), enrolment,
/// lookup, 1:1 and erasure reach the one subject; controls and bidi overrides are refused.
#[test]
fn every_path_normalises_references_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let key = crypto::random_key().unwrap();
    let (_clock, c) = TestClock::new();
    let s = open(dir.path(), &key, c);
    s.create_gallery(&admin(), "rt", &policy(30)).unwrap();
    let ids = identities(7, 2, 128);
    let e = Enrolment::default();
    s.enrol(
        &admin(),
        "rt",
        " a1234567 ",
        &[ids[0].clone()],
        Metric::Euclidean,
        "dlib",
        &e,
    )
    .unwrap();
    assert!(matches!(
        s.enrol(
            &admin(),
            "rt",
            "A1234567",
            &[ids[1].clone()],
            Metric::Euclidean,
            "dlib",
            &e
        ),
        Err(GalleryError::DuplicateSubject(_))
    ));
    assert!(s.subject("rt", "A1234567\n").is_ok());
    let v = s
        .verify_subject(&gate(), "rt", "a1234567", &ids[0], 0.6)
        .unwrap();
    assert!(v.matched);
    // The candidate names the stored (normalised) reference.
    let found = s.identify(&gate(), "rt", &ids[0], None, 0.6).unwrap();
    assert_eq!(found.candidates[0].reference, "A1234567");
    for bad in ["A12\u{202E}34567", "A1234\u{0}567", "\u{200B}A1234567", ""] {
        assert!(matches!(
            s.enrol(
                &admin(),
                "rt",
                bad,
                &[ids[1].clone()],
                Metric::Euclidean,
                "dlib",
                &e
            ),
            Err(GalleryError::Invalid(_))
        ));
        assert!(matches!(
            s.delete(&admin(), "rt", bad, "test"),
            Err(GalleryError::Invalid(_))
        ));
    }
    // Decomposed and precomposed accents are one subject.
    s.enrol(
        &admin(),
        "rt",
        "jose\u{301}",
        &[ids[1].clone()],
        Metric::Euclidean,
        "dlib",
        &e,
    )
    .unwrap();
    assert!(s.subject("rt", "JOS\u{C9}").is_ok());
    s.delete(&admin(), "rt", "a1234567 ", "subject asked")
        .unwrap();
    assert!(matches!(
        s.subject("rt", "A1234567"),
        Err(GalleryError::UnknownSubject(_))
    ));
}

/// Every file facegate writes in the data directory is its user's alone, and the directory too.
#[cfg(unix)]
#[test]
fn data_directory_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = crypto::random_key().unwrap();
    let (_clock, c) = TestClock::new();
    let s = open(&data, &key, c);
    enrol_all(&s, &identities(3, 3, 128));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    let files = files_under(&data);
    assert!(files.iter().any(|f| f.ends_with("audit.head")));
    for f in files {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    drop(s);
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o775)).unwrap();
    let (_clock, c) = TestClock::new();
    assert!(matches!(
        Store::open(&data, Box::new(LocalKeyRing::new(key.clone())), c),
        Err(GalleryError::Invalid(_))
    ));
}

/// A deletion that fails on a full disk leaves its pending mark; the data directory still opens,
/// reads, searches and audit verification work, and the deletion completes at the first write
/// once the disk allows. (The full disk is a trigger on keys.db that fails deletes as SQLite
/// does when the disk is full.)
#[test]
fn a_full_disk_never_locks_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let key = crypto::random_key().unwrap();
    let (_clock, c) = TestClock::new();
    let ids = identities(11, 3, 128);
    let e = Enrolment::default();
    {
        let s = open(dir.path(), &key, c.clone());
        s.create_gallery(&admin(), "rt", &policy(30)).unwrap();
        for (i, t) in ids.iter().enumerate() {
            s.enrol(
                &admin(),
                "rt",
                &format!("P{i}"),
                std::slice::from_ref(t),
                Metric::Euclidean,
                "dlib",
                &e,
            )
            .unwrap();
        }
    }
    let full = |on: bool| {
        let k = rusqlite::Connection::open(dir.path().join("keys.db")).unwrap();
        k.execute_batch(if on {
            "CREATE TRIGGER disk_full BEFORE DELETE ON subject_keys BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END;"
        } else {
            "DROP TRIGGER disk_full;"
        })
        .unwrap();
    };
    full(true);
    {
        let s = open(dir.path(), &key, c.clone());
        assert!(s.delete(&admin(), "rt", "P0", "subject asked").is_err());
    }
    // Reopening runs recovery, which cannot write: the directory opens all the same.
    let s = open(dir.path(), &key, c.clone());
    assert!(
        s.recovery_pending().is_some(),
        "recovery reports it could not finish"
    );
    assert_eq!(s.galleries().unwrap().len(), 1);
    assert!(s.subject("rt", "P1").is_ok());
    assert!(matches!(
        s.subject("rt", "P0"),
        Err(GalleryError::UnknownSubject(_))
    ));
    let found = s.identify(&gate(), "rt", &ids[1], None, 0.6).unwrap();
    assert_eq!(found.candidates[0].reference, "P1");
    assert!(s.audit_verify(None, &[]).unwrap().ok);
    // Space comes back: the next write finishes the deletion first.
    full(false);
    s.enrol(
        &admin(),
        "rt",
        "P9",
        &[ids[2].clone()],
        Metric::Euclidean,
        "dlib",
        &e,
    )
    .unwrap();
    assert_eq!(s.recovery_pending(), None);
    let ps = s.pseudonym("rt", "P0");
    let k = rusqlite::Connection::open(dir.path().join("keys.db")).unwrap();
    let (keys, marks): (i64, i64) = k
        .query_row(
            "SELECT (SELECT COUNT(*) FROM subject_keys WHERE pseudonym = ?1),
                    (SELECT COUNT(*) FROM pending WHERE pseudonym = ?1)",
            [&ps[..]],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (keys, marks),
        (0, 0),
        "the erased subject's key is destroyed"
    );
}

#[test]
fn a_loaded_index_follows_other_writers_changes_without_reloading() {
    // Two stores on one data directory stand for two processes (or two nodes of a shared
    // database): each change the other makes is applied to the loaded index, not reloaded.
    for index in [gallery::IndexChoice::Exact, gallery::IndexChoice::Compact] {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_stores(dir.path());
        let mut p = policy(30);
        p.index = index;
        a.create_gallery(&admin(), "rt", &p).unwrap();
        let ids = identities(21, 12, 128);
        let enrol = |s: &Store, i: usize| {
            s.enrol(
                &admin(),
                "rt",
                &format!("P{i:07}"),
                &[ids[i].clone(), sample(&ids[i], 50 + i as u64)],
                Metric::Euclidean,
                "dlib",
                &Enrolment::default(),
            )
            .unwrap();
        };
        for i in 0..8 {
            enrol(&a, i);
        }
        let found = |s: &Store, i: usize| -> bool {
            s.identify(
                &gate(),
                "rt",
                &sample(&ids[i], 900 + i as u64),
                Some(3),
                0.6,
            )
            .unwrap()
            .candidates
            .iter()
            .any(|c| c.reference == format!("P{i:07}"))
        };
        assert!(found(&a, 3));
        assert_eq!(a.load_stats(), (1, 0), "loaded once");
        // B enrols three and erases one; A's own enrolment lands between them.
        enrol(&b, 8);
        enrol(&b, 9);
        enrol(&a, 10);
        b.delete(&admin(), "rt", "P0000003", "subject's request")
            .unwrap();
        enrol(&b, 11);
        for i in [0, 8, 9, 10, 11] {
            assert!(found(&a, i), "{index:?}: A misses P{i:07}");
        }
        assert!(
            !found(&a, 3),
            "{index:?}: A still returns an erased subject"
        );
        let (reloads, followed) = a.load_stats();
        assert_eq!(reloads, 1, "{index:?}: A reloaded instead of following");
        assert_eq!(
            followed, 5,
            "{index:?}: four changes of B and A's own, in order"
        );
        assert_eq!(
            a.identify(&gate(), "rt", &ids[5], Some(50), 2.0)
                .unwrap()
                .searched_templates,
            2 * 11,
            "{index:?}: every live template once, none twice"
        );
        // A change that is not a row change (another index layout) makes A reload.
        let mut q = p.clone();
        q.index = match index {
            gallery::IndexChoice::Exact => gallery::IndexChoice::Compact,
            _ => gallery::IndexChoice::Exact,
        };
        b.update_policy(&admin(), "rt", &q, None).unwrap();
        assert!(found(&a, 8));
        assert_eq!(
            a.load_stats().0,
            2,
            "{index:?}: a policy change is reloaded"
        );
    }
}

#[test]
fn a_gallery_loaded_while_empty_takes_its_first_templates() {
    // A server preloads a gallery with nothing enrolled yet (its template length is not known
    // then); the first enrolments, its own and another writer's, must reach its searches.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_stores(dir.path());
    a.create_gallery(&admin(), "rt", &policy(30)).unwrap();
    a.preload("rt").unwrap();
    b.preload("rt").unwrap();
    let ids = identities(31, 2, 128);
    for (i, s) in [&a, &b].into_iter().enumerate() {
        s.enrol(
            &admin(),
            "rt",
            &format!("P{i:07}"),
            std::slice::from_ref(&ids[i]),
            Metric::Euclidean,
            "dlib",
            &Enrolment::default(),
        )
        .unwrap();
    }
    for s in [&a, &b] {
        for (i, c) in ids.iter().enumerate() {
            let r = s.identify(&gate(), "rt", c, Some(1), 0.6).unwrap();
            assert_eq!(r.candidates[0].reference, format!("P{i:07}"));
        }
    }
}
