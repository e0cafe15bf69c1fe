//! `facegate eval calibrate --cohort --target-fpir F --gallery G`: measure, on the authority's own
//! labelled images, the cohort z-threshold that keeps FPIR F in a gallery of that data's size,
//! and the FNIR it gives beside the plain distance threshold at the same FPIR. Written into the
//! gallery's policy (`gallery::policy::CohortNormalisation`) only when it misses fewer listed
//! people than the distance threshold does: on LFW-dev it helps dlib and hurts MobileFaceNet,
//! so the data decides, per pack.

use super::calibrate::{calibration_gallery, evidence, CalibrateArgs};
use super::dataset::{embed_all, Dataset};
use super::improve::{searches, templates, Gallery};
use super::report::split_1n;
use crate::cmd_gallery::StoreArgs;
use anyhow::{bail, Result};
use evaluation::metrics;
use gallery::policy::CohortNormalisation;
use serde_json::json;
use std::path::Path;

/// Fewer expected false positives than this and the threshold is noise.
const MIN_EXPECTED_FALSE_POSITIVES: f64 = 10.0;

pub fn run(home: &Path, store_args: &StoreArgs, a: CalibrateArgs, fpir: f64) -> Result<i32> {
    let ranks = usize::from(a.cohort_ranks);
    let Some(g) = a.gallery.as_deref() else {
        bail!("--cohort needs --gallery: the z-threshold is one gallery's decision rule");
    };
    let spec = a.data.spec()?;
    // Refused before the embedding run, not after it.
    let store = store_args.open(home)?;
    calibration_gallery(&store, g, &spec.engine.pack)?;
    let ds = Dataset::load(&a.data.images, a.data.max_identities)?;
    let run = embed_all(home, &spec, &ds.files())?;
    let emb = &run.results;
    let manifest = vision::pack::Manifest::load(&home.join("packs").join(&spec.engine.pack))?;
    let cosine = manifest.embedder.metric.is_similarity();
    // The report's 1:N protocol: one image per person enrolled, later images search for it,
    // people with one image split between enrolled and non-mated searches.
    let split = split_1n(&ds, emb);
    let templates = |imgs: &[u32]| templates(&ds, emb, imgs, cosine);
    let enrolled = templates(&split.enrolled);
    if enrolled.len() < ranks {
        bail!(
            "{} people enrolled: a cohort of {ranks} ranks needs at least that many people in the data",
            enrolled.len()
        );
    }
    let nonmated = templates(&split.nonmated);
    let needed = (MIN_EXPECTED_FALSE_POSITIVES / fpir).ceil();
    if (nonmated.len() as f64) < needed {
        bail!(
            "FPIR {fpir:.0e} needs at least {needed:.0} non-mated searches (people with a single image, half of them searching), this data has {}",
            nonmated.len()
        );
    }
    let gallery_of = Gallery::new(&enrolled)?;
    let (mp, mz) = searches(&gallery_of, &templates(&split.mated), cosine, ranks);
    let (np, nz) = searches(&gallery_of, &nonmated, cosine, ranks);
    if mp.is_empty() {
        bail!("no mated searches: every identity has a single image");
    }
    let mated_d: Vec<(bool, f64)> = mp.iter().map(|m| (m.0 == m.1, m.2)).collect();
    let mated_z: Vec<(bool, f64)> = mp.iter().zip(&mz).map(|(m, z)| (m.0 == m.1, *z)).collect();
    let nd: Vec<f64> = np.iter().map(|n| n.2).collect();
    let (fnir_d, t_d) = metrics::fnir_at_fpir(&mated_d, &nd, fpir);
    let (fnir_z, t_z) = metrics::fnir_at_fpir(&mated_z, &nz, fpir);
    // Searches strictly below t pass; the gallery passes z <= z_threshold.
    let z_threshold = t_z.next_down();
    let helps = fnir_z < fnir_d;
    let to_score = |d: f64| if cosine { 1.0 - d } else { d };
    let size = enrolled.len() as u64;
    let evidence = evidence(
        "eval calibrate --cohort",
        &spec.engine.pack,
        &a.data.images,
        &ds,
        json!({
            "protocol": "one image per person enrolled; later images search for it; people with one image split between enrolled and non-mated searches",
            "gallery_size": size,
            "mated_searches": mp.len(),
            "nonmated_searches": np.len(),
            "target_fpir": fpir,
            "cohort_ranks": ranks,
            "z_threshold": z_threshold,
            "fpir_measured": metrics::fpir_at(&nz, t_z),
            "fnir_with_cohort": fnir_z,
            "distance_threshold_at_same_fpir": to_score(t_d),
            "fnir_with_distance_threshold": fnir_d,
            "cohort_helps": helps,
        }),
    );
    // Read again now: the policy written below starts from the gallery as it is, not as it
    // was before the measurement.
    let info = calibration_gallery(&store, g, &spec.engine.pack)?;
    let write = helps && !a.dry_run;
    if write {
        let mut policy = info.policy.clone();
        policy.cohort = Some(CohortNormalisation {
            ranks,
            z_threshold,
            fpir,
            calibrated_at: size,
        });
        // One decision rule: a cohort replaces a size-following threshold.
        policy.fpir_target = None;
        let ctx = store_args.context(&format!("cohort calibration for FPIR {fpir:.0e}"))?;
        store.update_policy(&ctx, g, &policy, Some(evidence.clone()))?;
    }
    let out = json!({"target": format!("gallery {g}"), "written": write, "evidence": evidence});
    println!("{}", serde_json::to_string_pretty(&out)?);
    eprintln!(
        "gallery {g}: at FPIR {fpir:.0e} with {size} people enrolled, the cohort z-threshold {z_threshold:.3} misses {:.1}% of listed people, the distance threshold {:.1}%: {}",
        fnir_z * 100.0,
        fnir_d * 100.0,
        match (helps, a.dry_run) {
            (false, _) => "the cohort does not help this pack on this data; policy unchanged",
            (true, true) => "dry run, nothing written",
            (true, false) => "written into the policy",
        }
    );
    let now = info.subjects + info.expired;
    if write && now > size {
        eprintln!(
            "gallery {g} already holds {now} subjects, more than the {size} the threshold was measured at: more impostors pass than FPIR {fpir:.0e}; calibrate on data with at least as many people"
        );
    }
    Ok(0)
}
