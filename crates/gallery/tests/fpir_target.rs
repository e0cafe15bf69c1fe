//! A gallery whose policy keeps a target FPIR: the threshold follows the gallery's size (tighter
//! only, audited), `gallery()` reports what it is expected to give, and enrolment warns or
//! refuses once the pack cannot deliver the policy's FNIR limit.
#![allow(clippy::unwrap_used)] // tests stop at the first surprise

use gallery::crypto;
use gallery::policy::{sized_for, FpirTarget};
use gallery::{Context, Enrolment, GalleryError, Metric, Role};

mod common;
use common::*;

fn enroller() -> Context {
    Context::new("kiosk-3", Role::Enroller, "registration")
}

fn target(mates: Vec<f64>, max_fnir: Option<f64>, refuse: bool) -> gallery::Policy {
    let mut p = policy(365);
    p.fpir_target = Some(FpirTarget {
        fpir: 1e-2,
        model: model(mates),
        sized_for: 0,
        max_fnir,
        refuse_beyond_max_fnir: refuse,
    });
    p
}

#[test]
fn the_threshold_follows_the_gallery_size_tighter_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let (_clock, c) = TestClock::new();
    let store = open(dir.path(), &crypto::random_key().unwrap(), c);
    let policy = target(vec![0.1, 0.2, 0.3], None, false);
    let m = policy.fpir_target.as_ref().unwrap().model.clone();
    store.create_gallery(&admin(), "watch", &policy).unwrap();
    // Created empty: the threshold is set for the first size step (16), whatever was given.
    let info = store.gallery("watch").unwrap();
    let first = info.policy.threshold.unwrap();
    assert_eq!(first, m.threshold_for_fpir(1e-2, 16));
    assert_eq!(info.policy.fpir_target.as_ref().unwrap().sized_for, 16);

    let people = identities(7, 40, 8);
    let mut thresholds = vec![first];
    for (i, centre) in people.iter().enumerate() {
        let r = store
            .enrol(
                &enroller(),
                "watch",
                &format!("P{i}"),
                std::slice::from_ref(centre),
                Metric::Euclidean,
                "test",
                &Enrolment::default(),
            )
            .unwrap();
        assert!(r.warnings.is_empty());
        let info = store.gallery("watch").unwrap();
        let t = info.policy.threshold.unwrap();
        if t != *thresholds.last().unwrap() {
            thresholds.push(t);
        }
        // The promise holds at every size: set for at least as many subjects as enrolled, so
        // the expected FPIR never passes the target.
        let f = info.policy.fpir_target.as_ref().unwrap();
        assert!(
            f.sized_for >= info.subjects,
            "{} < {}",
            f.sized_for,
            info.subjects
        );
        let e = info.expected.unwrap();
        assert_eq!(e.gallery_size, info.subjects);
        assert!(
            e.fpir <= 1e-2 * (1.0 + 1e-9),
            "{} at {}",
            e.fpir,
            info.subjects
        );
    }
    // 16 → 21 (at 17) → 27 (at 22) → 35 (at 28) → 45 (at 36): four moves, each tighter.
    assert_eq!(thresholds.len(), 5, "{thresholds:?}");
    assert!(thresholds.windows(2).all(|w| w[1] < w[0]), "{thresholds:?}");
    assert_eq!(sized_for(36), 45);
    let follows: Vec<_> = store
        .audit_records()
        .unwrap()
        .into_iter()
        .filter(|r| r.action == "threshold-follow")
        .collect();
    assert_eq!(follows.len(), 4);
    let last = &follows[3];
    assert_eq!(last.actor, "kiosk-3");
    assert_eq!(last.details["gallery_size"], 36);
    assert_eq!(last.details["sized_for"], 45);
    assert_eq!(last.details["from_threshold"].as_f64(), Some(thresholds[3]));
    assert_eq!(last.details["to_threshold"].as_f64(), Some(thresholds[4]));
    // Each move recorded before the enrolment that needed it.
    let records = store.audit_records().unwrap();
    let at = records.iter().position(|r| r.seq == last.seq).unwrap();
    assert_eq!(records[at + 1].action, "enrol");
    assert!(store.audit_verify(None, &[]).unwrap().ok);

    // Erasures never loosen it.
    for i in 0..10 {
        store
            .delete(&admin(), "watch", &format!("P{i}"), "test")
            .unwrap();
    }
    let info = store.gallery("watch").unwrap();
    assert_eq!(info.policy.threshold, Some(thresholds[4]));
    // An admin's policy change sizes it again for the gallery as it is (30 → 37).
    store
        .update_policy(&admin(), "watch", &info.policy, None)
        .unwrap();
    let info = store.gallery("watch").unwrap();
    assert_eq!(info.policy.fpir_target.as_ref().unwrap().sized_for, 37);
    assert_eq!(info.policy.threshold, Some(m.threshold_for_fpir(1e-2, 37)));
}

#[test]
fn enrolment_warns_or_refuses_when_the_pack_cannot_keep_the_fnir_limit() {
    // Half the mated searches sit at 0.45 from their mate, far beyond any threshold that keeps
    // FPIR 1e-2 here (~0.3): expected FNIR ≥ 50%, over a 40% limit.
    let mates = vec![0.05, 0.1, 0.45, 0.5];
    for refuse in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (_clock, c) = TestClock::new();
        let store = open(dir.path(), &crypto::random_key().unwrap(), c);
        let policy = target(mates.clone(), Some(0.4), refuse);
        store.create_gallery(&admin(), "watch", &policy).unwrap();
        let people = identities(9, 3, 8);
        let r = store.enrol(
            &enroller(),
            "watch",
            "P0",
            std::slice::from_ref(&people[0]),
            Metric::Euclidean,
            "test",
            &Enrolment::default(),
        );
        if refuse {
            let e = r.unwrap_err();
            assert!(matches!(e, GalleryError::Outgrown(_)), "{e}");
            assert!(e.to_string().contains("limit is 40.0%"), "{e}");
            assert_eq!(store.gallery("watch").unwrap().subjects, 0);
        } else {
            let r = r.unwrap();
            assert_eq!(r.warnings.len(), 1);
            assert!(
                r.warnings[0].contains("expected to miss 5"),
                "{}",
                r.warnings[0]
            );
            let enrol = store
                .audit_records()
                .unwrap()
                .into_iter()
                .find(|x| x.action == "enrol")
                .unwrap();
            assert_eq!(enrol.details["warnings"][0].as_str(), Some(&*r.warnings[0]));
        }
    }
    // Within the limit: no warning.
    let dir = tempfile::tempdir().unwrap();
    let (_clock, c) = TestClock::new();
    let store = open(dir.path(), &crypto::random_key().unwrap(), c);
    store
        .create_gallery(&admin(), "watch", &target(vec![0.05, 0.1], Some(0.4), true))
        .unwrap();
    let people = identities(9, 1, 8);
    let r = store
        .enrol(
            &enroller(),
            "watch",
            "P0",
            &people,
            Metric::Euclidean,
            "test",
            &Enrolment::default(),
        )
        .unwrap();
    assert!(r.warnings.is_empty());
}

#[test]
fn a_malformed_target_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_clock, c) = TestClock::new();
    let store = open(dir.path(), &crypto::random_key().unwrap(), c);
    let mut p = target(vec![0.1], None, false);
    p.fpir_target.as_mut().unwrap().fpir = 0.0;
    assert!(store.create_gallery(&admin(), "a", &p).is_err());
    let mut p = target(vec![0.1], Some(1.5), false);
    assert!(store.create_gallery(&admin(), "b", &p).is_err());
    p = target(vec![0.3, 0.1], None, false);
    assert!(store.create_gallery(&admin(), "c", &p).is_err());
}
