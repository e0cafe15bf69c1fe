//! What every storage backend must guarantee (`gallery::store::backend`), checked through the
//! traits alone. Each check is a function over `&dyn Backend`, so another backend runs the same
//! ones; the SQLite backend runs them here, plus the file-level check of key destruction.
#![allow(clippy::unwrap_used)] // tests stop at the first surprise

mod common;
use common::pg::PgCluster;

use gallery::store::backend::postgres::PgBackend;
use gallery::store::backend::sqlite::SqliteBackend;
use gallery::store::backend::{Backend, Mark, MarkOwner, NewSubject};

fn subject<'a>(gallery: &'a str, pseudonym: &'a [u8]) -> NewSubject<'a> {
    NewSubject {
        gallery,
        pseudonym,
        reference: b"sealed reference",
        consent: None,
        enrolled: 1,
        expires: 1_000,
    }
}

/// Nothing of a transaction is visible before it commits, and a dropped one leaves nothing.
fn transactions_are_atomic(b: &dyn Backend) {
    {
        let mut tx = b.write().unwrap();
        tx.set_meta("probe", b"dropped").unwrap();
        assert!(tx.insert_gallery("g", "{}", b"seed", 1).unwrap());
        // Dropped without commit.
    }
    assert_eq!(b.meta("probe").unwrap(), None);
    assert!(b.gallery("g").unwrap().is_none());
    let mut tx = b.write().unwrap();
    tx.set_meta("probe", b"kept").unwrap();
    assert!(tx.insert_gallery("g", "{}", b"seed", 1).unwrap());
    tx.commit().unwrap();
    assert_eq!(b.meta("probe").unwrap().as_deref(), Some(&b"kept"[..]));
    assert_eq!(b.gallery_names().unwrap(), vec!["g".to_string()]);
    let mut tx = b.write().unwrap();
    assert!(
        !tx.insert_gallery("g", "{}", b"other", 2).unwrap(),
        "a gallery name is unique"
    );
    tx.set_meta("probe", b"replaced").unwrap();
    tx.commit().unwrap();
    assert_eq!(b.meta("probe").unwrap().as_deref(), Some(&b"replaced"[..]));
    assert_eq!(b.gallery_seed("g").unwrap().as_deref(), Some(&b"seed"[..]));
}

/// Subjects are unique per gallery; deleting one takes its templates and image with it; row ids
/// name rows until they are deleted.
fn subjects_and_templates(b: &dyn Backend) {
    let ps = [7u8; 32];
    let mut tx = b.write().unwrap();
    tx.insert_gallery("s", "{}", b"seed", 1).unwrap();
    tx.commit().unwrap();
    let g0 = b.generation("s").unwrap().unwrap();
    let mut tx = b.write().unwrap();
    let sid = tx.insert_subject(&subject("s", &ps)).unwrap().unwrap();
    assert_eq!(tx.insert_subject(&subject("s", &ps)).unwrap(), None);
    let t1 = tx.insert_template(sid, b"sealed one").unwrap();
    let t2 = tx.insert_template(sid, b"sealed two").unwrap();
    assert_ne!(t1, t2);
    tx.insert_image(sid, b"sealed image").unwrap();
    tx.bump_generation("s").unwrap();
    tx.commit().unwrap();
    assert_ne!(b.generation("s").unwrap(), Some(g0));
    assert!(b.subject_exists("s", &ps).unwrap());
    let row = b.subject("s", &ps).unwrap().unwrap();
    assert_eq!((row.templates, row.images, row.consent), (2, 1, false));
    assert_eq!(b.subject_templates("s", &ps, 0).unwrap().len(), 2);
    assert!(
        b.subject_templates("s", &ps, 1_000).unwrap().is_empty(),
        "expired subjects' templates are not returned"
    );
    assert_eq!(b.expired("s", 1_000).unwrap(), vec![ps.to_vec()]);
    let by_id = b.templates_by_id("s", &[t2 as u64, 999_999]).unwrap();
    assert_eq!(by_id[0].as_ref().unwrap().sealed, b"sealed two");
    assert!(by_id[1].is_none());
    assert!(
        b.templates_by_id("other", &[t1 as u64]).unwrap()[0].is_none(),
        "a template of another gallery is not returned"
    );
    assert_eq!(b.template_counts("s").unwrap(), (2, Some(2)));
    // Expired subjects count: a followed threshold is sized for every row the gallery holds.
    assert_eq!(b.subject_count("s").unwrap(), 1);
    assert_eq!(b.subject_count("other").unwrap(), 0);
    let mut seen = 0;
    b.scan_subjects("s", &mut |id, p, _| {
        assert_eq!((id, p), (sid, ps));
        seen += 1;
        true
    })
    .unwrap();
    assert_eq!(seen, 1);

    let mut tx = b.write().unwrap();
    assert_eq!(tx.subject_id("s", &ps).unwrap(), Some(sid));
    let mut ids = tx.template_ids(sid).unwrap();
    ids.sort();
    assert_eq!(ids, vec![t1, t2]);
    tx.delete_subject(sid).unwrap();
    tx.commit().unwrap();
    assert!(!b.subject_exists("s", &ps).unwrap());
    assert!(b.gallery_templates("s").unwrap().is_empty());
    assert!(b.subject_image("s", &ps).unwrap().is_none());
}

/// The audit tail read in a transaction is what the transaction appends after; records and heads
/// read back in order, byte for byte.
fn audit_log_round_trip(b: &dyn Backend) {
    let mut tx = b.write().unwrap();
    let tail = tx.audit_tail().unwrap();
    let next = tail.map_or(1, |(s, _)| s + 1);
    tx.append_audit(next, "{\"r\":1}", &[1; 32], &[2; 64])
        .unwrap();
    assert_eq!(tx.audit_tail().unwrap(), Some((next, vec![1; 32])));
    tx.append_audit(next + 1, "{\"r\":2}", &[3; 32], &[4; 64])
        .unwrap();
    tx.commit().unwrap();
    let mut records = Vec::new();
    b.scan_records(next, 10, &mut |seq, text, hash| {
        records.push((seq, text, hash));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        records,
        vec![
            (next, "{\"r\":1}".to_string(), vec![1; 32]),
            (next + 1, "{\"r\":2}".to_string(), vec![3; 32])
        ]
    );
    assert_eq!(
        b.last_head().unwrap(),
        Some((next + 1, vec![3; 32], vec![4; 64]))
    );
    let mut limited = 0;
    b.scan_records(next, 1, &mut |_, _, _| {
        limited += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(limited, 1, "the limit bounds a page");
    // A transaction that appended and was dropped leaves the tail where it was.
    {
        let mut tx = b.write().unwrap();
        tx.append_audit(next + 2, "{}", &[5; 32], &[6; 64]).unwrap();
    }
    assert_eq!(b.last_head().unwrap().map(|h| h.0), Some(next + 1));
}

/// Keys: one per subject, conditional deletion, pending marks.
fn key_store(b: &dyn Backend) {
    let keys = b.keys();
    let ps = [9u8; 32];
    let mut tx = keys.write().unwrap();
    assert!(tx.insert_key("k", &ps, b"wrapped-1", 10).unwrap());
    assert!(!tx.insert_key("k", &ps, b"wrapped-2", 11).unwrap());
    tx.mark(&Mark {
        gallery: "k".into(),
        pseudonym: ps.to_vec(),
        op: "enrol".into(),
        created: 10,
        pid: 4242,
        here: true,
    })
    .unwrap();
    tx.commit().unwrap();
    assert_eq!(
        keys.wrapped("k", &ps).unwrap().as_deref(),
        Some(&b"wrapped-1"[..])
    );
    let marks = keys.marks().unwrap();
    assert_eq!(marks.len(), 1);
    assert!(
        marks[0].here,
        "a mark written through this backend is this host's"
    );
    let mut tx = keys.write().unwrap();
    assert_eq!(
        tx.mark_owner("k", &ps, "enrol").unwrap(),
        Some(MarkOwner {
            pid: 4242,
            here: true
        })
    );
    assert_eq!(tx.key_created("k", &ps).unwrap(), Some(10));
    tx.delete_key("k", &ps, Some(11)).unwrap();
    assert!(
        tx.key_created("k", &ps).unwrap().is_some(),
        "a key created at another time is not deleted"
    );
    tx.unmark("k", &ps, "enrol").unwrap();
    tx.commit().unwrap();
    assert!(keys.marks().unwrap().is_empty());
    let mut scanned = Vec::new();
    keys.scan_wrapped("k", &mut |p, w| scanned.push((p, w)))
        .unwrap();
    assert_eq!(scanned, vec![(ps, b"wrapped-1".to_vec())]);
    let mut tx = keys.write().unwrap();
    tx.delete_key("k", &ps, None).unwrap();
    tx.commit().unwrap();
    keys.scrub().unwrap();
    assert!(keys.wrapped("k", &ps).unwrap().is_none());
}

/// The batch writes mean what the same rows written one by one mean: a subject already there
/// (or given twice) gets no row, templates get ascending row ids in the order given, a key
/// already there is left alone and reported, a mark given twice keeps its last values.
fn batch_writes_match_one_by_one(b: &dyn Backend) {
    let mut tx = b.write().unwrap();
    tx.insert_gallery("bw", "{}", b"seed", 1).unwrap();
    let old = tx.insert_subject(&subject("bw", &[1u8; 32])).unwrap();
    assert!(old.is_some());
    let ps: Vec<[u8; 32]> = (2u8..6).map(|i| [i; 32]).collect();
    let rows = vec![
        subject("bw", &ps[0]),
        subject("bw", &[1u8; 32]), // already there
        subject("bw", &ps[1]),
        subject("bw", &ps[1]), // twice in the batch
        NewSubject {
            consent: Some(b"sealed consent"),
            ..subject("bw", &ps[2])
        },
    ];
    let ids = tx.insert_subjects(&rows).unwrap();
    assert_eq!(ids.len(), 5);
    assert!(ids[0].is_some() && ids[2].is_some() && ids[4].is_some());
    assert_eq!((ids[1], ids[3]), (None, None));
    let (a, c, e) = (ids[0].unwrap(), ids[2].unwrap(), ids[4].unwrap());
    assert!(a < c && c < e, "row ids follow the order given: {ids:?}");
    assert_eq!(tx.subject_id("bw", &ps[1]).unwrap(), Some(c));
    let sealed: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 40 + i as usize]).collect();
    let t_rows = vec![
        (a, &sealed[0][..]),
        (a, &sealed[1][..]),
        (c, &sealed[2][..]),
        (e, &sealed[3][..]),
        (a, &sealed[4][..]),
    ];
    let t_ids = tx.insert_templates(&t_rows).unwrap();
    assert!(t_ids.windows(2).all(|w| w[0] < w[1]), "{t_ids:?}");
    assert_eq!(
        tx.template_ids(a).unwrap(),
        vec![t_ids[0], t_ids[1], t_ids[4]]
    );
    tx.commit().unwrap();
    let got = b.subject_by_id("bw", a).unwrap().unwrap();
    assert_eq!(
        got.templates,
        vec![
            (t_ids[0], sealed[0].clone()),
            (t_ids[1], sealed[1].clone()),
            (t_ids[4], sealed[4].clone())
        ],
        "each row id names the template given with it"
    );
    assert_eq!(
        b.subject_record(e).unwrap().unwrap().consent.as_deref(),
        Some(&b"sealed consent"[..])
    );
    assert_eq!(b.subject_count("bw").unwrap(), 4);
    // Keys and marks.
    let keys = b.keys();
    let mut tx = keys.write().unwrap();
    assert!(tx.insert_key("bw", &ps[0], b"there before", 5).unwrap());
    let k_rows: Vec<(&[u8], &[u8], i64)> = vec![
        (&ps[0], b"w0", 7),
        (&ps[1], b"w1", 7),
        (&ps[2], b"w2", 8),
        (&ps[1], b"w1 again", 9),
    ];
    assert_eq!(
        tx.insert_keys("bw", &k_rows).unwrap(),
        vec![false, true, true, false]
    );
    let mark = |p: &[u8; 32], created: i64| Mark {
        gallery: "bw".into(),
        pseudonym: p.to_vec(),
        op: "enrol".into(),
        created,
        pid: 77,
        here: true,
    };
    tx.mark_all(&[mark(&ps[1], 7), mark(&ps[2], 7), mark(&ps[1], 9)])
        .unwrap();
    tx.commit().unwrap();
    assert_eq!(
        keys.wrapped("bw", &ps[0]).unwrap().as_deref(),
        Some(&b"there before"[..])
    );
    assert_eq!(
        keys.wrapped("bw", &ps[1]).unwrap().as_deref(),
        Some(&b"w1"[..])
    );
    let mut tx = keys.write().unwrap();
    assert_eq!(tx.key_created("bw", &ps[2]).unwrap(), Some(8));
    drop(tx);
    let mut marks: Vec<(Vec<u8>, i64)> = keys
        .marks()
        .unwrap()
        .into_iter()
        .filter(|m| m.gallery == "bw")
        .map(|m| (m.pseudonym, m.created))
        .collect();
    marks.sort();
    assert_eq!(marks, vec![(ps[1].to_vec(), 9), (ps[2].to_vec(), 7)]);
}

#[test]
fn sqlite_backend_keeps_the_backend_guarantees() {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBackend::open(dir.path()).unwrap();
    transactions_are_atomic(&b);
    subjects_and_templates(&b);
    audit_log_round_trip(&b);
    key_store(&b);
    batch_writes_match_one_by_one(&b);
}

#[test]
fn a_destroyed_key_is_in_no_file_of_the_sqlite_key_store() {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBackend::open(dir.path()).unwrap();
    let marker = b"WRAPPED-KEY-MARKER-0123456789abcdef";
    let mut tx = b.keys().write().unwrap();
    tx.insert_key("g", &[1; 32], marker, 1).unwrap();
    tx.commit().unwrap();
    let files_hold = |needle: &[u8]| {
        std::fs::read_dir(dir.path()).unwrap().any(|e| {
            let bytes = std::fs::read(e.unwrap().path()).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle)
        })
    };
    assert!(files_hold(marker), "the check must see a stored key");
    let mut tx = b.keys().write().unwrap();
    tx.delete_key("g", &[1; 32], None).unwrap();
    tx.commit().unwrap();
    b.keys().scrub().unwrap();
    assert!(!files_hold(marker), "a destroyed key must be in no file");
}

/// Two writers appending to the audit chain at once: each transaction's tail is the other's
/// last append, so the sequence numbers come out dense and unique.
fn two_writers_are_serialised(a: std::sync::Arc<dyn Backend>, b: std::sync::Arc<dyn Backend>) {
    let threads: Vec<_> = [a.clone(), b]
        .into_iter()
        .map(|b| {
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let mut tx = b.write().unwrap();
                    let next = tx.audit_tail().unwrap().map_or(1, |(s, _)| s + 1);
                    tx.append_audit(next, "{}", &[0; 32], &[0; 64]).unwrap();
                    tx.commit().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut seqs = Vec::new();
    a.scan_records(1, usize::MAX, &mut |s, _, _| {
        seqs.push(s);
        Ok(())
    })
    .unwrap();
    assert_eq!(seqs, (1..=100).collect::<Vec<u64>>());
}

#[test]
fn two_sqlite_writers_are_serialised() {
    // Two threads through the same backend.
    let dir = tempfile::tempdir().unwrap();
    let b = std::sync::Arc::new(SqliteBackend::open(dir.path()).unwrap());
    two_writers_are_serialised(b.clone(), b);
}

#[test]
fn postgres_backend_keeps_the_backend_guarantees() {
    let Some(pg) = PgCluster::start() else { return };
    let (store, keys) = pg.store_urls("conformance");
    let b = PgBackend::open(&store, &keys).unwrap();
    transactions_are_atomic(&b);
    subjects_and_templates(&b);
    audit_log_round_trip(&b);
    key_store(&b);
    batch_writes_match_one_by_one(&b);
    // Two nodes (two backends, two pools) on one database make one chain.
    let (store, keys) = pg.store_urls("two_nodes");
    let a = std::sync::Arc::new(PgBackend::open(&store, &keys).unwrap());
    let b = std::sync::Arc::new(PgBackend::open(&store, &keys).unwrap());
    two_writers_are_serialised(a, b);
}

#[test]
fn postgres_backend_refuses_one_database_for_records_and_keys() {
    // Checked before any connection is made: no server needed.
    let url = "postgres://facegate@127.0.0.1:1/facegate";
    let Err(e) = PgBackend::open(url, url) else {
        panic!("one database for both stores must be refused")
    };
    assert!(e.to_string().contains("another PostgreSQL database"), "{e}");
    assert_eq!(
        PgBackend::default_keys_url(
            "postgres://u@db1,db2/facegate?target_session_attrs=read-write"
        )
        .unwrap(),
        "postgres://u@db1,db2/facegate_keys?target_session_attrs=read-write"
    );
}

#[test]
fn an_unreachable_postgres_is_unavailable_not_a_storage_error() {
    // A port nobody listens on: the open fails as "unavailable, retry", which the server turns
    // into 503 with retry advice.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = |db: &str| format!("postgres://postgres@127.0.0.1:{port}/{db}?connect_timeout=1");
    let Err(e) = PgBackend::open(&url("a"), &url("a_keys")) else {
        panic!("nothing listens there")
    };
    assert!(matches!(e, gallery::GalleryError::Unavailable(_)), "{e:?}");
}

/// A CA and a server certificate for 127.0.0.1 signed by it: (CA PEM, server cert PEM, key PEM).
fn test_pki() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    (ca.pem(), server.pem(), key.serialize_pem())
}

#[test]
fn postgres_over_tls_verifies_the_server_and_refuses_what_it_cannot_verify() {
    let Some(pg) = PgCluster::start() else { return };
    pg.create_db("tls");
    pg.create_db("tls_keys");
    let (ca, cert, key) = test_pki();
    pg.require_tls(&cert, &key);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let url = |db: &str, tail: &str| format!("{}{tail}", pg.url(db));
    let tls = format!("?sslmode=require&sslrootcert={}", ca_file.display());
    // Verified TLS: the backend works (the server accepts TCP clients over TLS only).
    let b = PgBackend::open(&url("tls", &tls), &url("tls_keys", &tls)).unwrap();
    transactions_are_atomic(&b);
    // Plain text is not accepted by this server, and is not what facegate falls back to.
    assert!(PgBackend::open(&url("tls", ""), &url("tls_keys", "")).is_err());
    // A server whose certificate the given roots do not vouch for is refused.
    let (other_ca, _, _) = test_pki();
    let other = dir.path().join("other.pem");
    std::fs::write(&other, other_ca).unwrap();
    let wrong = format!("?sslmode=require&sslrootcert={}", other.display());
    assert!(PgBackend::open(&url("tls", &wrong), &url("tls_keys", &wrong)).is_err());
    // TLS without a way to verify it is refused before connecting.
    let Err(e) = PgBackend::open(
        &url("tls", "?sslmode=require"),
        &url("tls_keys", "?sslmode=require"),
    ) else {
        panic!("unverified TLS must be refused")
    };
    assert!(e.to_string().contains("sslrootcert"), "{e}");
    // The key-value form of a connection string takes the same parameter.
    let kv = |db: &str| {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db} sslmode=require sslrootcert={}",
            pg.port,
            ca_file.display()
        )
    };
    PgBackend::open(&kv("tls"), &kv("tls_keys")).unwrap();
}
