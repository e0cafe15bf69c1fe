//! More from the same model (issue #19): score normalisation against a cohort, several
//! templates per subject and several probe images, each measured on the report's 1:N protocol
//! against its own baseline (same searches), FNIR at FPIR 1e-1/1e-2/1e-3 with bootstrap
//! intervals by identity.
//!
//! - **Cohort (T-norm with the gallery as cohort):** a search's best distance d₁ is judged
//!   against the distances of the same probe to the rest of the gallery (ranks 2…[`COHORT`]):
//!   z = (d₁ − mean) / sd. A probe that is close to everybody (the probe spread of the scale
//!   model) no longer passes as easily as one that is close to nobody.
//! - **Two templates per subject:** people with three or more images enrol two; searches use
//!   their third and later images, against the same gallery with one template (baseline), the
//!   nearest of the two (max fusion) and their mean (template averaging).
//! - **Two probe images:** a search made from the mean of two images of the face, as live
//!   capture fuses a track's best frames.
//!
//! [`cohort_by_size`] measures the cohort's z-threshold at each gallery size, the evidence for
//! how a gallery's cohort policy behaves when it holds fewer or more people than it was
//! calibrated at.

use super::dataset::{Dataset, Embedded};
use super::report::Split;
use anyhow::{Context, Result};
use evaluation::metrics::{self, redraw, Replicates, SplitMix};
use evaluation::model::{CohortAtSize, Improvement, ImprovementPoint, Interval, FPIR_LEVELS};
use gallery::index::ExactIndex;
use std::collections::{BTreeMap, HashMap, HashSet};
use template::cohort::Cohort;

/// Ranks 2…COHORT of a search form its cohort.
pub(super) const COHORT: usize = 64;

/// One search's outcome: the probe's identity, whether rank 1 is its mate (mated searches), and
/// the score the decision is made on (lower passes).
struct Outcome {
    mated: Vec<(u32, bool, f64)>,
    nonmated: Vec<(u32, f64)>,
}

pub(super) struct Gallery {
    index: ExactIndex,
}

impl Gallery {
    /// `entries`: (identity, template); one identity may have several.
    pub(super) fn new(entries: &[(u32, Vec<f32>)]) -> Result<Gallery> {
        let dim = entries
            .first()
            .map(|e| e.1.len())
            .context("empty gallery")?;
        let mut index = ExactIndex::new(dim);
        for (id, t) in entries {
            index.push(*id as u64, t, i64::MAX);
        }
        Ok(Gallery { index })
    }

    /// The nearest `k` identities (each once, at its nearest template), nearest first, as
    /// dissimilarities (Euclidean, or 1 − cosine on unit templates).
    fn nearest(&self, q: &[f32], k: usize, cosine: bool) -> Vec<(u32, f64)> {
        let q2: f64 = q.iter().map(|v| (*v as f64).powi(2)).sum();
        let hits = self
            .index
            .search(&[q], 4 * k, None, 0)
            .pop()
            .unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        hits.into_iter()
            .filter(|h| seen.insert(h.id))
            .take(k)
            .map(|h| {
                let d2 = (q2 - 2.0 * h.score as f64).max(0.0);
                (h.id as u32, if cosine { d2 / 2.0 } else { d2.sqrt() })
            })
            .collect()
    }
}

/// (identity, template) of each image with an embedding, at unit length for cosine packs (so
/// Euclidean ranking is the cosine ranking, as in a gallery).
pub(super) fn templates(
    ds: &Dataset,
    emb: &[Embedded],
    imgs: &[u32],
    cosine: bool,
) -> Vec<(u32, Vec<f32>)> {
    imgs.iter()
        .filter_map(|&i| {
            let e = emb[i as usize].embedding.as_deref()?;
            let t = if cosine {
                template::unit(e)
            } else {
                e.to_vec()
            };
            Some((ds.images[i as usize].identity, t))
        })
        .collect()
}

/// For each search: (probe identity, rank-1 identity, rank-1 distance), and the rank-1
/// distance normalised against ranks 2…`ranks` as a gallery with a cohort policy computes it
/// (`template::cohort`).
pub(super) fn searches(
    g: &Gallery,
    probes: &[(u32, Vec<f32>)],
    cosine: bool,
    ranks: usize,
) -> (Vec<(u32, u32, f64)>, Vec<f64>) {
    let mut plain = Vec::with_capacity(probes.len());
    let mut z = Vec::with_capacity(probes.len());
    for (id, q) in probes {
        let near = g.nearest(q, ranks, cosine);
        let Some(&(top, d1)) = near.first() else {
            continue;
        };
        let rest: Vec<f64> = near[1..].iter().map(|x| x.1).collect();
        plain.push((*id, top, d1));
        z.push(Cohort::of(&rest).map_or(f64::INFINITY, |c| c.z(d1)));
    }
    (plain, z)
}

fn outcome(
    mated: &[(u32, u32, f64)],
    nonmated: &[(u32, u32, f64)],
    score: (&[f64], &[f64]),
) -> Outcome {
    Outcome {
        mated: mated
            .iter()
            .zip(score.0)
            .map(|(m, s)| (m.0, m.1 == m.0, *s))
            .collect(),
        nonmated: nonmated
            .iter()
            .zip(score.1)
            .map(|(n, s)| (n.0, *s))
            .collect(),
    }
}

/// FNIR at FPIR with each search weighted by its probe's identity (`metrics`' weighted twin of
/// the report's own `fnir_at_fpir`).
fn fnir_at_fpir(o: &Outcome, w: &dyn Fn(u32) -> f64, fpir: f64) -> f64 {
    let mated: Vec<(bool, f64, f64)> = o.mated.iter().map(|m| (m.1, m.2, w(m.0))).collect();
    let nonmated: Vec<(f64, f64)> = o.nonmated.iter().map(|n| (n.1, w(n.0))).collect();
    metrics::fnir_at_fpir_weighted(&mated, &nonmated, fpir)
}

fn measure(
    name: &str,
    description: &str,
    o: &Outcome,
    identities: usize,
    replicates: usize,
    seed: u64,
) -> Improvement {
    let mut rng = SplitMix::new(seed);
    let mut samples = Replicates::default();
    let mut draws = vec![0.0f64; identities];
    for _ in 0..replicates {
        redraw(&mut rng, &mut draws);
        samples.push(
            FPIR_LEVELS
                .iter()
                .map(|f| fnir_at_fpir(o, &|id| draws[id as usize], *f))
                .collect(),
        );
    }
    let ci = samples.intervals();
    let points = FPIR_LEVELS
        .iter()
        .enumerate()
        .map(|(k, f)| ImprovementPoint {
            fpir: *f,
            fnir: fnir_at_fpir(o, &|_| 1.0, *f),
            fnir_ci95: ci.get(k).map(|&(lo, hi)| Interval(lo, hi)),
            supported_by_data: o.nonmated.len() as f64 * f >= 1.0,
        })
        .collect();
    Improvement {
        name: name.into(),
        description: description.into(),
        mated_searches: o.mated.len(),
        nonmated_searches: o.nonmated.len(),
        fnir_at_fpir: points,
    }
}

/// The variants, each beside the baseline it is measured against.
pub fn improvements(
    ds: &Dataset,
    emb: &[Embedded],
    split: &Split,
    cosine: bool,
    replicates: usize,
    seed: u64,
) -> Result<Vec<Improvement>> {
    let identity = |img: u32| ds.images[img as usize].identity;
    let prep = |img: u32| templates(ds, emb, &[img], cosine).pop().map(|t| t.1);
    let probes = |imgs: &[u32]| templates(ds, emb, imgs, cosine);
    let identities = ds.identities.len();
    let mut out = Vec::new();

    // Cohort normalisation on the report's own protocol.
    let one: Vec<(u32, Vec<f32>)> = probes(&split.enrolled);
    let g1 = Gallery::new(&one)?;
    let (mp, mz) = searches(&g1, &probes(&split.mated), cosine, COHORT);
    let (np, nz) = searches(&g1, &probes(&split.nonmated), cosine, COHORT);
    let d = |v: &[(u32, u32, f64)]| v.iter().map(|x| x.2).collect::<Vec<_>>();
    out.push(measure(
        "baseline",
        "rank-1 distance, one template per person (the report's 1:N protocol)",
        &outcome(&mp, &np, (&d(&mp), &d(&np))),
        identities,
        replicates,
        seed,
    ));
    out.push(measure(
        "cohort",
        "rank-1 distance normalised against the same probe's ranks 2-64 in the gallery (T-norm, the gallery as cohort)",
        &outcome(&mp, &np, (&mz, &nz)),
        identities,
        replicates,
        seed,
    ));
    // A larger cohort: more of the gallery's spread around the probe, more to fetch per search.
    let (_, mz) = searches(&g1, &probes(&split.mated), cosine, 4 * COHORT);
    let (_, nz) = searches(&g1, &probes(&split.nonmated), cosine, 4 * COHORT);
    out.push(measure(
        "cohort, ranks 2-256",
        "as the row above with ranks 2-256 as the cohort (eval calibrate --cohort-ranks 256)",
        &outcome(&mp, &np, (&mz, &nz)),
        identities,
        replicates,
        seed,
    ));

    // Two templates per subject for people with three or more images.
    let mut by_id: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &m in &split.mated {
        by_id.entry(identity(m)).or_default().push(m);
    }
    let enrolled_image: HashMap<u32, u32> =
        split.enrolled.iter().map(|&g| (identity(g), g)).collect();
    let second: HashMap<u32, u32> = by_id
        .iter()
        .filter(|(_, v)| v.len() >= 2)
        .map(|(id, v)| (*id, v[0]))
        .collect();
    let later: Vec<u32> = by_id
        .iter()
        .filter(|(_, v)| v.len() >= 2)
        .flat_map(|(_, v)| v[1..].to_vec())
        .collect();
    let later_probes = probes(&later);
    let nonmated = probes(&split.nonmated);
    let mut two = one.clone();
    for (id, img) in &second {
        if let Some(t) = prep(*img) {
            two.push((*id, t));
        }
    }
    // Averaged as a gallery with `template_fusion: mean` does it.
    let mean: Vec<(u32, Vec<f32>)> = one
        .iter()
        .map(|(id, t)| match second.get(id).and_then(|i| prep(*i)) {
            Some(t2) => (*id, template::fuse(&[t.clone(), t2])),
            None => (*id, t.clone()),
        })
        .collect();
    for (name, description, entries) in [
        (
            "one template (3+ images)",
            "baseline for the two rows below: people with 3+ images searched with their third and later images, one template each",
            &one,
        ),
        (
            "two templates, nearest",
            "people with 3+ images enrol their first two images; the nearest of a subject's templates counts (max fusion)",
            &two,
        ),
        (
            "two templates, mean",
            "people with 3+ images enrol the average of their first two templates (template averaging as a gallery with template_fusion mean does it: unit mean at the mean norm)",
            &mean,
        ),
    ] {
        let g = Gallery::new(entries)?;
        let (mp, mz) = searches(&g, &later_probes, cosine, COHORT);
        let (np, nz) = searches(&g, &nonmated, cosine, COHORT);
        out.push(measure(
            name,
            description,
            &outcome(&mp, &np, (&d(&mp), &d(&np))),
            identities,
            replicates,
            seed,
        ));
        if std::ptr::eq(entries, &mean) {
            out.push(measure(
                "two templates, mean + cohort",
                "template averaging as above, rank-1 distance normalised against the probe's ranks 2-64 (both changes together)",
                &outcome(&mp, &np, (&mz, &nz)),
                identities,
                replicates,
                seed,
            ));
        }
    }

    // Probe fusion: a search made from two images of the probe's face (as live capture fuses a
    // track's best frames). Non-mated searches need two images of someone not enrolled, so
    // people with 3+ images are split: every other one stays enrolled and searches with two
    // later images (mated); the rest leave the gallery and search with two of theirs
    // (non-mated). The same searches with one image each are the baseline.
    let (mut mated_pairs, mut away_pairs, mut away) = (Vec::new(), Vec::new(), HashSet::new());
    for (k, (id, later)) in by_id.iter().filter(|(_, v)| v.len() >= 2).enumerate() {
        if k % 2 == 0 {
            mated_pairs.push((*id, later[0], later[1]));
        } else if let Some(&first) = enrolled_image.get(id) {
            away.insert(*id);
            away_pairs.push((*id, first, later[0]));
        }
    }
    let kept: Vec<(u32, Vec<f32>)> = one
        .iter()
        .filter(|(id, _)| !away.contains(id))
        .cloned()
        .collect();
    let g = Gallery::new(&kept)?;
    let single = |pairs: &[(u32, u32, u32)]| -> Vec<(u32, Vec<f32>)> {
        pairs
            .iter()
            .filter_map(|&(id, a, _)| Some((id, prep(a)?)))
            .collect()
    };
    let fused = |pairs: &[(u32, u32, u32)]| -> Vec<(u32, Vec<f32>)> {
        pairs
            .iter()
            .filter_map(|&(id, a, b)| Some((id, template::fuse(&[prep(a)?, prep(b)?]))))
            .collect()
    };
    for (name, description, probe_of, fusing) in [
        (
            "one probe image",
            "baseline for the row below: half the people with 3+ images enrolled and searching with one later image, the other half not enrolled and searching with one image (non-mated)",
            &single as &dyn Fn(&[(u32, u32, u32)]) -> Vec<(u32, Vec<f32>)>,
            false,
        ),
        (
            "two probe images, mean",
            "the same searches made from the mean of two images of the probe's face (template::fuse, as live capture fuses a track's best frames)",
            &fused,
            true,
        ),
    ] {
        let (mp, mz) = searches(&g, &probe_of(&mated_pairs), cosine, COHORT);
        let (np, nz) = searches(&g, &probe_of(&away_pairs), cosine, COHORT);
        out.push(measure(
            name,
            description,
            &outcome(&mp, &np, (&d(&mp), &d(&np))),
            identities,
            replicates,
            seed,
        ));
        if fusing {
            out.push(measure(
                "two probe images, mean + cohort",
                "probe fusion as above, rank-1 distance normalised against the probe's ranks 2-64 (both changes together)",
                &outcome(&mp, &np, (&mz, &nz)),
                identities,
                replicates,
                seed,
            ));
        }
    }
    Ok(out)
}

/// Cohort normalisation at each measured gallery size: the z-threshold for each FPIR the
/// non-mated searches can show at that size and what it misses, beside the distance threshold;
/// and the z-threshold measured at the largest size applied at each smaller one (what a gallery
/// calibrated at one size does when it holds fewer).
pub fn cohort_by_size(
    ds: &Dataset,
    emb: &[Embedded],
    split: &Split,
    cosine: bool,
    subsets: &[Vec<u32>],
) -> Result<Vec<CohortAtSize>> {
    let identity = |img: u32| ds.images[img as usize].identity;
    let probes = |imgs: &[u32]| templates(ds, emb, imgs, cosine);
    let nonmated = probes(&split.nonmated);
    struct Run {
        n: usize,
        mated_d: Vec<(bool, f64)>,
        mated_z: Vec<(bool, f64)>,
        nonmated_d: Vec<f64>,
        nonmated_z: Vec<f64>,
    }
    let mut runs = Vec::new();
    for g in subsets {
        let ids: HashSet<u32> = g.iter().map(|i| identity(*i)).collect();
        let mated: Vec<u32> = split
            .mated
            .iter()
            .copied()
            .filter(|m| ids.contains(&identity(*m)))
            .collect();
        let gallery = Gallery::new(&probes(g))?;
        let (mp, mz) = searches(&gallery, &probes(&mated), cosine, COHORT);
        let (np, nz) = searches(&gallery, &nonmated, cosine, COHORT);
        runs.push(Run {
            n: g.len(),
            mated_d: mp.iter().map(|m| (m.0 == m.1, m.2)).collect(),
            mated_z: mp.iter().zip(&mz).map(|(m, z)| (m.0 == m.1, *z)).collect(),
            nonmated_d: np.iter().map(|x| x.2).collect(),
            nonmated_z: nz,
        });
    }
    let Some(largest) = runs.iter().max_by_key(|r| r.n) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for &fpir in &FPIR_LEVELS {
        if (nonmated.len() as f64) * fpir < 10.0 {
            continue;
        }
        let (_, t_largest) = metrics::fnir_at_fpir(&largest.mated_z, &largest.nonmated_z, fpir);
        for r in &runs {
            let (fnir, t) = metrics::fnir_at_fpir(&r.mated_z, &r.nonmated_z, fpir);
            let (fnir_distance, _) = metrics::fnir_at_fpir(&r.mated_d, &r.nonmated_d, fpir);
            out.push(CohortAtSize {
                gallery_size: r.n,
                fpir,
                z_threshold: t,
                fnir,
                fnir_distance,
                largest_threshold_fpir: metrics::fpir_at(&r.nonmated_z, t_largest),
                largest_threshold_fnir: metrics::fnir_at(&r.mated_z, t_largest),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use evaluation::metrics;
    use vision::rng::SplitMix;

    fn sample() -> Outcome {
        Outcome {
            mated: vec![
                (0, true, 0.05),
                (1, true, 0.5),
                (2, false, 0.02),
                (3, true, 0.3),
                (4, true, 0.12),
            ],
            nonmated: (0..100)
                .map(|i| (10 + i, (i as f64 + 0.5) / 100.0))
                .collect(),
        }
    }

    /// 400 people in 16-D: the first 150 with three images (centre + noise), the rest with one.
    fn synthetic() -> (Dataset, Vec<Embedded>) {
        let mut rng = SplitMix::new(7);
        let mut gauss = move || {
            // Box-Muller from two uniforms.
            let (u, v) = (rng.next_f64().max(1e-12), rng.next_f64());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        };
        let mut images = Vec::new();
        let mut emb = Vec::new();
        for id in 0..400u32 {
            let centre = template::unit(&(0..16).map(|_| gauss()).collect::<Vec<_>>());
            for k in 0..if id < 150 { 3 } else { 1 } {
                images.push(super::super::dataset::Image {
                    identity: id,
                    rel: format!("{id}/{k}"),
                    path: std::path::PathBuf::new(),
                    sha256: [0; 32],
                });
                let e: Vec<f32> = centre.iter().map(|c| c + 0.12 * gauss()).collect();
                emb.push(Embedded {
                    embedding: Some(e),
                    detected: true,
                    error: None,
                });
            }
        }
        let ds = Dataset {
            root: std::path::PathBuf::new(),
            identities: (0..400).map(|i| i.to_string()).collect(),
            images,
            duplicates: Vec::new(),
        };
        (ds, emb)
    }

    #[test]
    fn probe_fusion_splits_people_and_averaging_two_noisy_images_helps() {
        let (ds, emb) = synthetic();
        let split = super::super::report::split_1n(&ds, &emb);
        let imp = improvements(&ds, &emb, &split, false, 20, 1).unwrap();
        let row = |name: &str| imp.iter().find(|v| v.name == name).unwrap();
        let (one, two) = (row("one probe image"), row("two probe images, mean"));
        // 150 people with 3+ images: every other one searches (mated), the rest leave the
        // gallery and search for nobody (non-mated).
        assert_eq!((one.mated_searches, one.nonmated_searches), (75, 75));
        assert_eq!((two.mated_searches, two.nonmated_searches), (75, 75));
        assert!(row("two probe images, mean + cohort").mated_searches == 75);
        // Averaging two images halves the noise's variance: fewer listed people missed.
        let (f1, f2) = (one.fnir_at_fpir[0].fnir, two.fnir_at_fpir[0].fnir);
        assert!(f2 < f1, "{f2} vs {f1}");
    }

    #[test]
    fn cohort_by_size_reports_each_size_and_the_largest_threshold_at_its_own_size() {
        let (ds, emb) = synthetic();
        let split = super::super::report::split_1n(&ds, &emb);
        let subsets = vec![split.enrolled[..100].to_vec(), split.enrolled.clone()];
        let rows = cohort_by_size(&ds, &emb, &split, false, &subsets).unwrap();
        // 125 non-mated searches show FPIR 1e-1 (12.5 expected), not 1e-2.
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.fpir == 0.1));
        assert_eq!(rows[0].gallery_size, 100);
        let largest = &rows[1];
        assert_eq!(largest.gallery_size, split.enrolled.len());
        // At its own size the largest size's threshold is the row's own threshold.
        assert_eq!(largest.largest_threshold_fnir, largest.fnir);
        assert!(largest.largest_threshold_fpir <= 0.1);
        assert!(rows.iter().all(|r| r.z_threshold < 0.0 && r.fnir < 1.0));
    }

    #[test]
    fn unit_weights_give_the_report_s_own_fnir_at_fpir() {
        let o = sample();
        let mated: Vec<(bool, f64)> = o.mated.iter().map(|m| (m.1, m.2)).collect();
        let nm: Vec<f64> = o.nonmated.iter().map(|n| n.1).collect();
        for f in [0.1, 0.05, 0.01, 0.003] {
            let (want, _) = metrics::fnir_at_fpir(&mated, &nm, f);
            assert_eq!(fnir_at_fpir(&o, &|_| 1.0, f), want, "FPIR {f}");
        }
    }

    #[test]
    fn weights_count_searches_as_often_as_their_person_was_drawn() {
        let o = sample();
        // FPIR 0.1 lets 10 of 100 non-mated searches through: t = 0.105, so the mates at 0.05
        // and 0.12 split (one hit, one miss) and FNIR is 4/5.
        assert!((fnir_at_fpir(&o, &|_| 1.0, 0.1) - 0.8).abs() < 1e-12);
        // Drawing person 0 three times: 3 hits of 7 weighted searches.
        let w = |id: u32| if id == 0 { 3.0 } else { 1.0 };
        assert!((fnir_at_fpir(&o, &w, 0.1) - 4.0 / 7.0).abs() < 1e-12);
        // Person 10 (the nearest non-mated search) drawn twice: the same threshold lets one
        // fewer search through, t = 0.095.
        let w = |id: u32| if id == 10 { 2.0 } else { 1.0 };
        let o2 = Outcome {
            mated: vec![(0, true, 0.1)],
            nonmated: o.nonmated.clone(),
        };
        assert_eq!(fnir_at_fpir(&o2, &w, 0.1), 1.0);
        assert_eq!(fnir_at_fpir(&o2, &|_| 1.0, 0.1), 0.0);
    }
}
