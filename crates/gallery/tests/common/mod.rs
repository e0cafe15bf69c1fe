//! Helpers the gallery's integration tests share: contexts, a policy, a test clock, synthetic
//! identities, file scans, and a throwaway PostgreSQL cluster ([`pg`]).
#![allow(dead_code)] // each test file uses its own subset

pub mod pg;

use gallery::crypto::{self, LocalKeyRing};
use gallery::store::Clock;
use gallery::{Context, Enrolment, Metric, Policy, Role, Store};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

pub const DAY: i64 = 86_400_000;

pub fn admin() -> Context {
    Context::new("alice", Role::Admin, "test administration")
}
pub fn gate() -> Context {
    Context::new("gate-07", Role::Gate, "border crossing")
}

pub fn policy(retention_days: u32) -> Policy {
    Policy {
        purpose: "registered travellers".into(),
        legal_basis: "test statute s.1".into(),
        retention_days,
        threshold: Some(0.6),
        target_fmr: None,
        max_candidates: 5,
        search_roles: vec![Role::Gate, Role::Operator],
        index: gallery::IndexChoice::Exact,
        reference_case: gallery::ReferenceCase::Upper,
        enrol_min_quality: Default::default(),
        fpir_target: None,
        template_fusion: Default::default(),
        cohort: None,
    }
}

pub struct TestClock(Arc<AtomicI64>);
impl TestClock {
    pub fn new() -> (Self, Clock) {
        let t = Arc::new(AtomicI64::new(1_800_000_000_000));
        let c = t.clone();
        (TestClock(t), Arc::new(move || c.load(Ordering::SeqCst)))
    }
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

pub fn open(dir: &Path, key: &crypto::SecretKey, clock: Clock) -> Store {
    Store::open(dir, Box::new(LocalKeyRing::new(key.clone())), clock).unwrap()
}

/// Two stores on one data directory, one key, one clock: two processes (or two nodes of a
/// shared database) writing the same galleries.
pub fn two_stores(dir: &Path) -> (Store, Store) {
    let (_t, clock) = TestClock::new();
    let key = crypto::random_key().unwrap();
    (open(dir, &key, clock.clone()), open(dir, &key, clock))
}

/// Identities as random centres of norm ~1; samples of one identity lie ~0.3 from the centre
/// (roughly dlib's geometry: genuine distances ~0.4, impostor ~0.9+).
pub fn identities(seed: u8, n: usize, dim: usize) -> Vec<Vec<f32>> {
    let mut rng = ChaCha20Rng::from_seed([seed; 32]);
    (0..n)
        .map(|_| {
            let v: Vec<f32> = (0..dim)
                .map(|_| rng.next_u32() as f32 / u32::MAX as f32 - 0.5)
                .collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect()
        })
        .collect()
}

pub fn sample(centre: &[f32], seed: u64) -> Vec<f32> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let noise: Vec<f32> = (0..centre.len())
        .map(|_| rng.next_u32() as f32 / u32::MAX as f32 - 0.5)
        .collect();
    let n = noise.iter().map(|x| x * x).sum::<f32>().sqrt();
    centre
        .iter()
        .zip(noise)
        .map(|(c, e)| c + 0.25 * e / n)
        .collect()
}

pub fn dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Impostor distances with an exponential lower tail below 0.5 (F(0.5) = 1e-2, scale 0.05);
/// mated searches at `mates` from their mate.
pub fn model(mates: Vec<f64>) -> template::tail::PackScale {
    template::tail::PackScale {
        metric: gallery::Metric::Euclidean,
        impostor: template::tail::ImpostorTail {
            body: vec![(0.5, 1e-2), (0.9, 0.5), (1.4, 1.0)],
            tail_start: 0.5,
            tail_mass: 1e-2,
            shape: 0.0,
            scale: 0.05,
            impostor_pairs: 1_000_000,
            probe_spread: Vec::new(),
        },
        mated: mates,
    }
}

/// Enrols one subject per identity (`P0000000`, …) in a new gallery `rt` (Euclidean, dlib).
pub fn enrol_all(s: &Store, ids: &[Vec<f32>]) {
    s.create_gallery(&admin(), "rt", &policy(30)).unwrap();
    enrol_each(s, "rt", ids);
}

/// Enrols one subject per identity (`P0000000`, …) in `gallery` (Euclidean, dlib).
pub fn enrol_each(s: &Store, gallery: &str, ids: &[Vec<f32>]) {
    for (i, c) in ids.iter().enumerate() {
        s.enrol(
            &admin(),
            gallery,
            &format!("P{i:07}"),
            std::slice::from_ref(c),
            Metric::Euclidean,
            "dlib",
            &Enrolment::default(),
        )
        .unwrap();
    }
}
