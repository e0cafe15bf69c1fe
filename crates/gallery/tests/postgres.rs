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
use gallery::{Enrolment, GalleryError, Metric, Store};
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
    assert_eq!(
        b.load_stats(),
        (1, 1),
        "node B follows node A's erasure, it does not reload the gallery"
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

/// What one node's writers had acknowledged, and when the store failed them.
#[derive(Default)]
struct Acks {
    enrolled: Vec<String>,
    deleted: Vec<String>,
    /// Instants of the failed attempts (each retried until it was settled).
    failures: Vec<std::time::Instant>,
    /// Instants of the acknowledged writes.
    successes: Vec<std::time::Instant>,
}

/// Retry a write until the store settles it. `landed` recognises the refusal a retry gets when
/// the earlier, failed attempt had landed after all (a duplicate enrolment, an unknown subject).
fn settle<T>(
    acks: &std::sync::Mutex<Acks>,
    landed: impl Fn(&GalleryError) -> bool,
    mut write: impl FnMut() -> Result<T, GalleryError>,
) {
    let mut failed_before = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "a write never settled"
        );
        match write() {
            Ok(_) => break,
            Err(e) if failed_before && landed(&e) => break,
            Err(GalleryError::Unavailable(_)) => {
                failed_before = true;
                acks.lock()
                    .unwrap()
                    .failures
                    .push(std::time::Instant::now());
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("unexpected refusal: {e}"),
        }
    }
    acks.lock()
        .unwrap()
        .successes
        .push(std::time::Instant::now());
}

#[test]
fn failover_to_a_synchronous_standby_loses_nothing_acknowledged() {
    let Some(primary) = PgCluster::start() else {
        return;
    };
    primary.create_db("ha");
    primary.create_db("ha_keys");
    let standby = primary.standby();
    primary.require_sync_standby();
    // Both hosts in every connection string; only the read-write one is used.
    let url = |db: &str| {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{db}?target_session_attrs=read-write&connect_timeout=2",
            primary.port, standby.port
        )
    };
    let urls = (url("ha"), url("ha_keys"));
    let key = crypto::random_key().unwrap();
    let (_t, clock) = TestClock::new();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let nodes: Vec<Store> = dirs
        .iter()
        .map(|d| node(d.path(), &urls, &key, clock.clone()))
        .collect();
    nodes[0]
        .create_gallery(&admin(), "rt", &policy(30))
        .unwrap();
    let ids = identities(9, 2000, 128);
    let acks: Vec<std::sync::Mutex<Acks>> = (0..2).map(|_| Default::default()).collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let acked = || -> usize { acks.iter().map(|a| a.lock().unwrap().enrolled.len()).sum() };
    let mut killed_at = None;
    std::thread::scope(|sc| {
        for (n, s) in nodes.iter().enumerate() {
            let (ids, acks, stop) = (&ids, &acks[n], &stop);
            sc.spawn(move || {
                // Steady load: enrolments, and every fourth step a deletion of an earlier one.
                for (step, (i, c)) in ids
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % 2 == n)
                    .enumerate()
                {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let reference = format!("P{i:07}");
                    settle(
                        acks,
                        |e| matches!(e, GalleryError::DuplicateSubject(_)),
                        || {
                            s.enrol(
                                &admin(),
                                "rt",
                                &reference,
                                std::slice::from_ref(c),
                                Metric::Euclidean,
                                "dlib",
                                &Enrolment::default(),
                            )
                        },
                    );
                    acks.lock().unwrap().enrolled.push(reference);
                    if step % 4 == 3 {
                        let victim = acks.lock().unwrap().enrolled[step / 4].clone();
                        settle(
                            acks,
                            |e| matches!(e, GalleryError::UnknownSubject(_)),
                            || s.delete(&admin(), "rt", &victim, "subject's request"),
                        );
                        acks.lock().unwrap().deleted.push(victim);
                    }
                }
            });
        }
        // Mid-load: the primary's host is lost; the standby is promoted half a second later.
        while acked() < 60 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let before = acked();
        primary.kill9();
        killed_at = Some(std::time::Instant::now());
        std::thread::sleep(std::time::Duration::from_millis(500));
        standby.promote();
        while acked() < before + 60 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let killed_at = killed_at.unwrap();
    // The unavailability window each node saw: the longest pause between two of its
    // acknowledged writes around the kill (a write may still be acknowledged just after the
    // signal, before the postmaster is gone).
    for (n, a) in acks.iter().enumerate() {
        let a = a.lock().unwrap();
        let mut times = a.successes.clone();
        times.sort();
        let window = times
            .windows(2)
            .filter(|w| w[1] > killed_at)
            .map(|w| w[1].duration_since(w[0]))
            .max()
            .unwrap();
        eprintln!(
            "node {n}: {} enrolments and {} deletions acknowledged, {} failed attempts retried; writes stopped for {:.2} s (kill -9 of the primary, promotion 0.5 s later)",
            a.enrolled.len(),
            a.deleted.len(),
            a.failures.len(),
            window.as_secs_f64()
        );
        // (Failed attempts are few or none: a request that finds its pooled connection dead
        // waits for a new one, up to the pool's timeout, and the promotion is quicker.)
    }
    // Every node, and a node started afterwards, agrees: each acknowledged enrolment present,
    // each acknowledged deletion absent, nothing else, one chain that verifies.
    let late = tempfile::tempdir().unwrap();
    let late = node(late.path(), &urls, &key, clock.clone());
    let enrolled: Vec<String> = acks
        .iter()
        .flat_map(|a| a.lock().unwrap().enrolled.clone())
        .collect();
    let deleted: std::collections::HashSet<String> = acks
        .iter()
        .flat_map(|a| a.lock().unwrap().deleted.clone())
        .collect();
    for s in nodes.iter().chain([&late]) {
        for r in &enrolled {
            match s.subject("rt", r) {
                Ok(_) => assert!(!deleted.contains(r), "{r} was deleted, and is back"),
                Err(GalleryError::UnknownSubject(_)) => {
                    assert!(deleted.contains(r), "acknowledged enrolment {r} lost")
                }
                Err(e) => panic!("{e}"),
            }
        }
        let info = s.gallery("rt").unwrap();
        assert_eq!(info.subjects as usize, enrolled.len() - deleted.len());
        let report = s.audit_verify(None, &[]).unwrap();
        assert!(report.ok, "{:?}", report.problems);
    }
}

/// Two nodes on databases `name` with a gallery "rt": node A connects directly, node B through
/// a link the test can cut.
struct LinkedNodes {
    link: common::pg::Link,
    a: Store,
    b: Store,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn linked_nodes(pg: &PgCluster, name: &str) -> LinkedNodes {
    let urls = pg.store_urls(name);
    let link = common::pg::Link::to(pg.port);
    let via_link = |u: &str| u.replace(&format!(":{}/", pg.port), &format!(":{}/", link.port));
    let urls_b = (via_link(&urls.0), via_link(&urls.1));
    assert_ne!(urls_b.0, urls.0);
    let key = crypto::random_key().unwrap();
    let (_t, clock) = TestClock::new();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(dirs.0.path(), &urls, &key, clock.clone());
    let b = node(dirs.1.path(), &urls_b, &key, clock);
    a.create_gallery(&admin(), "rt", &policy(30)).unwrap();
    LinkedNodes {
        link,
        a,
        b,
        _dirs: dirs,
    }
}

#[test]
fn a_node_cut_off_during_an_erasure_refuses_to_search_rather_than_return_the_erased() {
    let Some(pg) = PgCluster::start() else { return };
    // Node B reaches the database through a link the test can cut.
    let LinkedNodes { link, a, b, _dirs } = linked_nodes(&pg, "cut");
    let ids = identities(5, 20, 128);
    for (i, c) in ids.iter().enumerate() {
        enrol(&a, &format!("P{i:07}"), c, &Enrolment::default());
    }
    let probe = sample(&ids[7], 3);
    let r = b.identify(&gate(), "rt", &probe, None, 0.6).unwrap();
    assert_eq!(
        r.candidates[0].reference, "P0000007",
        "B has the gallery loaded"
    );
    // B loses its link; A erases the subject meanwhile.
    link.cut();
    a.delete(&admin(), "rt", "P0000007", "subject's request")
        .unwrap();
    // B cannot tell whether its index is current, so it answers nothing rather than a stale
    // candidate list.
    match b.identify(&gate(), "rt", &probe, None, 0.6) {
        Err(GalleryError::Unavailable(_)) => {}
        Ok(r) => panic!(
            "a cut-off node searched its stale index: {:?}",
            r.candidates
                .iter()
                .map(|c| &c.reference)
                .collect::<Vec<_>>()
        ),
        Err(e) => panic!("{e}"),
    }
    // Back online, its first search already follows the erasure.
    link.restore();
    let r = b.identify(&gate(), "rt", &probe, None, 0.6).unwrap();
    assert!(r.candidates.iter().all(|c| c.reference != "P0000007"));
    assert!(b.audit_verify(None, &[]).unwrap().ok);
}

/// Waits (at most 10 s) until `node`'s index of "rt" is at `generation`; how long that took.
fn caught_up(node: &Store, generation: i64) -> Option<std::time::Duration> {
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(10) {
        if node.loaded_generation("rt") == Some(generation) {
            return Some(t.elapsed());
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    None
}

#[test]
fn a_node_follows_changes_when_notified_and_catches_up_after_losing_its_feed() {
    let Some(pg) = PgCluster::start() else { return };
    let LinkedNodes { link, a, b, _dirs } = linked_nodes(&pg, "feed");
    let ids = identities(7, 12, 128);
    for (i, c) in ids.iter().take(10).enumerate() {
        enrol(&a, &format!("P{i:07}"), c, &Enrolment::default());
    }
    a.preload("rt").unwrap();
    b.preload("rt").unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let problems = std::sync::Mutex::new(Vec::new());
    /// Stops the follower however the scope ends (a failed assertion included).
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    std::thread::scope(|sc| {
        let _stop = StopOnDrop(&stop);
        let follower = sc.spawn(|| {
            b.follow_notices(&stop, std::time::Duration::from_millis(100), &mut |e| {
                problems.lock().unwrap().push(e.to_string())
            })
        });
        // Give the feed time to open (a notice sent before it listens is caught up from
        // the generations anyway, but this test wants to see notices).
        std::thread::sleep(std::time::Duration::from_millis(300));
        // No search runs on B: only the notices move its index.
        enrol(&a, "P0000010", &ids[10], &Enrolment::default());
        let g = a.loaded_generation("rt").unwrap();
        assert!(
            caught_up(&b, g).is_some(),
            "B did not follow an enrolment it was notified of (at {:?}, A at {g})",
            b.loaded_generation("rt")
        );
        a.delete(&admin(), "rt", "P0000003", "subject's request")
            .unwrap();
        let g = a.loaded_generation("rt").unwrap();
        assert!(caught_up(&b, g).is_some(), "B did not follow an erasure");
        assert_eq!(b.load_stats(), (1, 2), "followed, not reloaded");
        // B's feed is cut; A changes the gallery meanwhile (those notices are lost to B).
        link.cut();
        std::thread::sleep(std::time::Duration::from_millis(300));
        a.delete(&admin(), "rt", "P0000004", "subject's request")
            .unwrap();
        enrol(&a, "P0000011", &ids[11], &Enrolment::default());
        let g = a.loaded_generation("rt").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_ne!(b.loaded_generation("rt"), Some(g), "the link was cut");
        link.restore();
        assert!(
            caught_up(&b, g).is_some(),
            "B did not catch up after its feed came back"
        );
        assert_eq!(
            b.load_stats(),
            (1, 4),
            "caught up from the recorded changes"
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(follower.join().unwrap(), "PostgreSQL has a change feed");
    });
    assert!(
        !problems.lock().unwrap().is_empty(),
        "the cut feed was reported"
    );
    // What B's index holds is what A's does: searches find the same, with nothing to follow.
    for (i, c) in ids.iter().enumerate() {
        let probe = sample(c, 40 + i as u64);
        let (ra, rb) = (
            a.identify(&gate(), "rt", &probe, None, 0.6).unwrap(),
            b.identify(&gate(), "rt", &probe, None, 0.6).unwrap(),
        );
        let refs = |r: &gallery::Identification| {
            r.candidates
                .iter()
                .map(|c| c.reference.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(refs(&ra), refs(&rb));
        let erased = i == 3 || i == 4;
        assert_eq!(
            refs(&rb).first().map(String::as_str) == Some(&format!("P{i:07}")),
            !erased
        );
    }
    assert_eq!(b.load_stats(), (1, 4));
}

#[test]
fn only_errors_reaching_the_server_are_unavailable_the_clients_own_are_not() {
    // 503 "retry" is for a server that cannot be reached now (failover, restart); an error on
    // this side — a value that does not convert — fails the same on every retry, so it is a
    // storage error. Both have no SQLSTATE; the classification must still tell them apart.
    let Some(pg) = PgCluster::start() else { return };
    let mut c = postgres::Client::connect(&pg.url("postgres"), postgres::NoTls).unwrap();
    let kinds = |e: postgres::Error| match GalleryError::from(e) {
        GalleryError::Unavailable(m) => ("unavailable", m),
        GalleryError::Storage(m) => ("storage", m),
        other => ("other", other.to_string()),
    };
    let wrong_type = c.query("SELECT $1::int4", &[&"seven"]).unwrap_err();
    assert_eq!(kinds(wrong_type).0, "storage");
    let wrong_count = c.query("SELECT $1::int4", &[]).unwrap_err();
    assert_eq!(kinds(wrong_count).0, "storage");
    let row = c.query_one("SELECT 'seven'::text", &[]).unwrap();
    let wrong_column = row.try_get::<_, i32>(0).unwrap_err();
    assert_eq!(kinds(wrong_column).0, "storage");
    let no_row = c.query_one("SELECT 1 WHERE false", &[]).unwrap_err();
    assert_eq!(kinds(no_row).0, "storage");
    // A database error with its SQLSTATE stays a storage error.
    let syntax = c.query("SELEKT 1", &[]).unwrap_err();
    assert_eq!(kinds(syntax).0, "storage");
    // The server going away is unavailable: a closed connection, and no server to connect to.
    let port = pg.url("postgres");
    pg.stop();
    let gone = c.query("SELECT 1", &[]).unwrap_err();
    let (kind, message) = kinds(gone);
    assert_eq!(kind, "unavailable", "{message}");
    let Err(refused) = postgres::Client::connect(&port, postgres::NoTls) else {
        panic!("connected to a stopped server");
    };
    let (kind, message) = kinds(refused);
    assert_eq!(kind, "unavailable", "{message}");
}
