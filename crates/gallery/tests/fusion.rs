//! A gallery whose policy averages a subject's enrolment templates keeps one template, the
//! fused one; the default keeps each.
#![allow(clippy::unwrap_used)] // tests stop at the first surprise

use gallery::crypto;
use gallery::policy::TemplateFusion;
use gallery::{Context, Enrolment, GalleryError, Metric, Role};

mod common;
use common::*;

#[test]
fn mean_fusion_keeps_one_averaged_template_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (_clock, c) = TestClock::new();
    let store = open(dir.path(), &crypto::random_key().unwrap(), c);
    let mut averaged = policy(30);
    averaged.template_fusion = TemplateFusion::Mean;
    averaged.threshold = Some(0.05);
    store.create_gallery(&admin(), "avg", &averaged).unwrap();
    store.create_gallery(&admin(), "each", &policy(30)).unwrap();
    let enroller = Context::new("kiosk", Role::Enroller, "registration");
    let people = identities(3, 2, 16);
    let shots = vec![sample(&people[0], 1), sample(&people[0], 2)];
    for g in ["avg", "each"] {
        store
            .enrol(
                &enroller,
                g,
                "A1",
                &shots,
                Metric::Euclidean,
                "test",
                &Enrolment::default(),
            )
            .unwrap();
    }
    assert_eq!(store.gallery("avg").unwrap().templates, 1);
    assert_eq!(store.gallery("each").unwrap().templates, 2);
    // The stored template is the fused one: searching with it finds the subject at ~0 (the
    // search's f32 ranking score leaves up to ~1e-3 of rounding in a distance near zero, more
    // with some keyed transforms than others), while either shot alone is beyond the policy's
    // 0.05 threshold from it.
    let fused = template::fuse(&shots);
    let r = store.identify(&gate(), "avg", &fused, None, 0.6).unwrap();
    assert_eq!(r.candidates.len(), 1, "{r:?}");
    assert!(r.candidates[0].score < 5e-3, "{}", r.candidates[0].score);
    for shot in &shots {
        let far = store.identify(&gate(), "avg", shot, None, 0.6).unwrap();
        assert!(far.candidates.is_empty(), "{far:?}");
    }
    let rec = store
        .audit_records()
        .unwrap()
        .into_iter()
        .find(|x| x.action == "enrol" && x.gallery.as_deref() == Some("avg"))
        .unwrap();
    assert_eq!(rec.details["templates"], 1);
    assert_eq!(rec.details["averaged_from"], 2);
    // Malformed templates are not averaged away: refused by name.
    let bad = vec![sample(&people[1], 1), vec![f32::NAN; 16]];
    let e = store
        .enrol(
            &enroller,
            "avg",
            "B2",
            &bad,
            Metric::Euclidean,
            "test",
            &Enrolment::default(),
        )
        .unwrap_err();
    assert!(matches!(e, GalleryError::Invalid(_)), "{e}");
    let short = vec![sample(&people[1], 1), vec![0.1; 8]];
    assert!(store
        .enrol(
            &enroller,
            "avg",
            "B2",
            &short,
            Metric::Euclidean,
            "test",
            &Enrolment::default()
        )
        .is_err());
}
