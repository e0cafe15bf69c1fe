//! A gallery whose policy decides on cohort-normalised distances: a search judges its nearest
//! subject against the same probe's distances to the rest of the gallery, says so in its result
//! and its audit record, falls back to the distance threshold while the gallery is too small for
//! a full cohort, and enrolment warns once the gallery outgrows the calibrated size.
#![allow(clippy::unwrap_used)] // tests stop at the first surprise

use gallery::crypto;
use gallery::policy::{CohortNormalisation, FpirTarget};
use gallery::{Context, Enrolment, GalleryError, Metric, Role, Store};
use template::cohort::Cohort;

mod common;
use common::*;

const DIM: usize = 16;
const RANKS: usize = 17;

fn cohort_policy(z_threshold: f64, calibrated_at: u64) -> gallery::Policy {
    let mut p = policy(365);
    // Far too loose on its own: every enrolled subject passes it.
    p.threshold = Some(10.0);
    p.max_candidates = 5;
    p.cohort = Some(CohortNormalisation {
        ranks: RANKS,
        z_threshold,
        fpir: 1e-2,
        calibrated_at,
    });
    p
}

fn enrol(store: &Store, g: &str, reference: &str, t: Vec<f32>) -> Vec<String> {
    let enroller = Context::new("kiosk", Role::Enroller, "registration");
    store
        .enrol(
            &enroller,
            g,
            reference,
            &[t],
            Metric::Euclidean,
            "test",
            &Enrolment::default(),
        )
        .unwrap()
        .warnings
}

#[test]
fn searches_decide_on_the_probe_s_cohort_once_the_gallery_has_one() {
    let dir = tempfile::tempdir().unwrap();
    let (_clock, c) = TestClock::new();
    let store = open(dir.path(), &crypto::random_key().unwrap(), c);
    store
        .create_gallery(&admin(), "watch", &cohort_policy(-6.0, 1000))
        .unwrap();
    let people = identities(7, 40, DIM);
    let templates: Vec<Vec<f32>> = people.iter().map(|p| sample(p, 1)).collect();

    // Too small for a full cohort: decided on the (loose) distance threshold, no z anywhere.
    for (i, t) in templates.iter().take(RANKS - 1).enumerate() {
        assert!(enrol(&store, "watch", &format!("P{i}"), t.clone()).is_empty());
    }
    let probe = sample(&people[0], 2);
    let r = store.identify(&gate(), "watch", &probe, None, 0.6).unwrap();
    assert_eq!(r.cohort_z_threshold, None);
    assert_eq!(r.candidates.len(), 5, "{r:?}");
    assert!(r.candidates.iter().all(|c| c.z.is_none()));

    // A full cohort: the mate stands out from the probe's other distances; nobody else does,
    // although every subject is within the distance threshold.
    for (i, t) in templates.iter().enumerate().skip(RANKS - 1) {
        enrol(&store, "watch", &format!("P{i}"), t.clone());
    }
    let r = store.identify(&gate(), "watch", &probe, None, 0.6).unwrap();
    assert_eq!(r.cohort_z_threshold, Some(-6.0));
    assert_eq!(r.candidates.len(), 1, "{r:?}");
    assert_eq!(r.candidates[0].reference, "P0");
    // z as the definition gives it, from the probe's distances to everybody enrolled (ranks
    // 2..=17 of them); f32 search scores leave ~1e-3 of rounding in each distance.
    let mut d: Vec<f64> = templates.iter().map(|t| dist(&probe, t)).collect();
    d.sort_by(f64::total_cmp);
    let want = Cohort::of(&d[1..RANKS]).unwrap();
    let z = r.candidates[0].z.unwrap();
    assert!((z - want.z(d[0])).abs() < 0.05, "{z} vs {}", want.z(d[0]));
    assert!(z <= -6.0);
    assert!((r.candidates[0].score - d[0]).abs() < 2e-3);

    // A stranger: close to nobody in particular, so nobody passes.
    let stranger = identities(99, 1, DIM).pop().unwrap();
    let none = store
        .identify(&gate(), "watch", &stranger, None, 0.6)
        .unwrap();
    assert!(none.candidates.is_empty(), "{none:?}");
    assert_eq!(none.cohort_z_threshold, Some(-6.0));

    // The audit record says what the search was decided on.
    let rec = store
        .audit_records()
        .unwrap()
        .into_iter()
        .filter(|x| x.action == "identify")
        .nth(1)
        .unwrap();
    assert_eq!(rec.outcome, "match");
    assert_eq!(rec.details["cohort"]["z_threshold"], -6.0);
    assert_eq!(rec.details["cohort"]["size"], (RANKS - 1) as u64);
    let mean = rec.details["cohort"]["mean"].as_f64().unwrap();
    assert!((mean - want.mean).abs() < 2e-3, "{mean} vs {}", want.mean);
    assert!(rec.details["candidates"][0]["z"].as_f64().unwrap() <= -6.0);
}

#[test]
fn enrolment_warns_past_the_calibrated_size() {
    let dir = tempfile::tempdir().unwrap();
    let (_clock, c) = TestClock::new();
    let store = open(dir.path(), &crypto::random_key().unwrap(), c);
    store
        .create_gallery(&admin(), "watch", &cohort_policy(-3.0, 20))
        .unwrap();
    let people = identities(8, 22, DIM);
    for (i, p) in people.iter().enumerate() {
        let w = enrol(&store, "watch", &format!("P{i}"), sample(p, 1));
        if i < 20 {
            assert!(w.is_empty(), "{i}: {w:?}");
        } else {
            assert_eq!(w.len(), 1, "{i}");
            assert!(w[0].contains("calibrated at"), "{}", w[0]);
            assert!(w[0].contains(&format!("at {} subjects", i + 1)), "{}", w[0]);
        }
    }
}

#[test]
fn a_policy_asks_for_a_usable_cohort_and_not_two_decision_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (_clock, c) = TestClock::new();
    let store = open(dir.path(), &crypto::random_key().unwrap(), c);
    for (ranks, z, fpir) in [
        (16, -3.0, 1e-2),
        (2000, -3.0, 1e-2),
        (64, f64::NAN, 1e-2),
        (64, -3.0, 0.0),
    ] {
        let mut p = cohort_policy(z, 100);
        let c = p.cohort.as_mut().unwrap();
        c.ranks = ranks;
        c.fpir = fpir;
        let e = store.create_gallery(&admin(), "bad", &p).unwrap_err();
        assert!(matches!(e, GalleryError::Invalid(_)), "{e}");
    }
    let mut both = cohort_policy(-3.0, 100);
    both.fpir_target = Some(FpirTarget {
        fpir: 1e-2,
        model: model(vec![0.3]),
        sized_for: 16,
        max_fnir: None,
        refuse_beyond_max_fnir: false,
    });
    let e = store.create_gallery(&admin(), "bad", &both).unwrap_err();
    assert!(e.to_string().contains("not both"), "{e}");
    assert!(store.gallery("bad").is_err());
}
