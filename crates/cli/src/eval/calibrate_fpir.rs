//! `facegate eval calibrate --target-fpir F --gallery G`: measure what the pack does as a gallery
//! grows (impostor tail, mated distances) on the authority's own labelled images, keep that model
//! in the gallery's policy with the target, and let the threshold follow the gallery's size
//! (`gallery::policy::FpirTarget`). The evidence goes into the audit record of the change.

use super::calibrate::{calibration_gallery, evidence, CalibrateArgs};
use super::dataset::{embed_all, Dataset};
use super::report::dissimilarity;
use crate::cmd_gallery::StoreArgs;
use anyhow::{bail, Result};
use gallery::policy::{sized_for, FpirTarget};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use template::tail::PackScale;

/// Mated distances kept in the policy: quantiles, not the calibration's own comparisons.
const MATED_QUANTILES: usize = 200;

pub fn run(home: &Path, store_args: &StoreArgs, a: CalibrateArgs) -> Result<i32> {
    let (Some(fpir), Some(g)) = (a.target_fpir, a.gallery.as_deref()) else {
        bail!("--target-fpir needs --gallery: the threshold follows one gallery's size");
    };
    if !(fpir > 0.0 && fpir < 1.0) {
        bail!("--target-fpir must lie strictly between 0 and 1");
    }
    if a.cohort {
        return super::calibrate_cohort::run(home, store_args, a, fpir);
    }
    if a.max_fnir.is_some_and(|m| !(m > 0.0 && m <= 1.0)) {
        bail!("--max-fnir must lie in (0, 1]");
    }
    let spec = a.data.spec()?;
    // Refused before the embedding run, not after it.
    let store = store_args.open(home)?;
    calibration_gallery(&store, g, &spec.engine.pack)?;
    let ds = Dataset::load(&a.data.images, a.data.max_identities)?;
    let files = ds.files();
    let run = embed_all(home, &spec, &files)?;
    let emb = &run.results;
    let manifest = vision::pack::Manifest::load(&home.join("packs").join(&spec.engine.pack))?;
    let metric = manifest.embedder.metric;
    let cosine = metric.is_similarity();
    let score = |x: &[f32], y: &[f32]| dissimilarity(cosine, metric, x, y);
    let Some(fitted) = super::scale::fit_tail(&ds, emb, &HashSet::new(), &score) else {
        bail!(
            "too few impostor comparisons to fit a tail (at least 2,000 pairs of different people's images are needed)"
        );
    };
    // Mated searches as a gallery sees them: each person's first image enrolled, the others
    // searching for it.
    let mut by_id: BTreeMap<u32, Vec<&[f32]>> = BTreeMap::new();
    for (im, e) in ds.images.iter().zip(emb) {
        if let Some(x) = e.embedding.as_deref() {
            by_id.entry(im.identity).or_default().push(x);
        }
    }
    let mut mates: Vec<f64> = by_id
        .values()
        .filter(|v| v.len() >= 2)
        .flat_map(|v| v[1..].iter().map(|x| score(x, v[0])).collect::<Vec<_>>())
        .collect();
    if mates.is_empty() {
        bail!("no mated searches: every identity has a single image");
    }
    mates.sort_by(f64::total_cmp);
    let mated_searches = mates.len();
    let mated: Vec<f64> = (0..MATED_QUANTILES.min(mates.len()))
        .map(|k| {
            let q = (k as f64 + 0.5) / MATED_QUANTILES.min(mates.len()) as f64;
            evaluation::metrics::percentile(&mates, q)
        })
        .collect();
    let model = PackScale {
        metric,
        impostor: fitted.tail,
        mated,
    };
    // Read again now: the policy written below starts from the gallery as it is, not as it
    // was before the measurement.
    let info = calibration_gallery(&store, g, &spec.engine.pack)?;
    let size = info.subjects + info.expired;
    let mut policy = info.policy.clone();
    policy.target_fmr = None;
    // One decision rule: a size-following threshold replaces a cohort.
    policy.cohort = None;
    policy.fpir_target = Some(FpirTarget {
        fpir,
        model: model.clone(),
        sized_for: sized_for(size),
        max_fnir: a.max_fnir,
        refuse_beyond_max_fnir: a.refuse_beyond_max_fnir,
    });
    policy.size_threshold(size);
    let expected = policy.expected(size);
    let beyond: Vec<_> = [1e4, 1e5, 1e6, 1e7, 1e8]
        .iter()
        .map(|&n| {
            let t = model.threshold_for_fpir(fpir, n as u64);
            model.expected(t, n as u64)
        })
        .collect();
    let evidence = evidence(
        "eval calibrate --target-fpir",
        &spec.engine.pack,
        &a.data.images,
        &ds,
        json!({
            "impostor_pairs": fitted.d.len(),
            "mated_searches": mated_searches,
            "tail": {"start": model.impostor.tail_start, "mass": model.impostor.tail_mass,
                "shape": model.impostor.shape, "scale": model.impostor.scale},
            "target_fpir": fpir,
            "gallery_size": size,
            "expected_now": expected,
            "expected_at": beyond,
        }),
    );
    if !a.dry_run {
        let ctx = store_args.context(&format!("calibration for FPIR {fpir:.0e}"))?;
        store.update_policy(&ctx, g, &policy, Some(evidence.clone()))?;
    }
    let out =
        json!({"target": format!("gallery {g}"), "written": !a.dry_run, "evidence": evidence});
    println!("{}", serde_json::to_string_pretty(&out)?);
    if let Some(e) = expected {
        eprintln!(
            "gallery {g}: threshold {:.4} for FPIR {fpir:.0e} at {} subjects (set for {}): expected FNIR {:.1}%{}",
            e.threshold,
            size,
            sized_for(size),
            e.fnir * 100.0,
            if a.dry_run { " (dry run: nothing written)" } else { "" }
        );
    }
    Ok(0)
}
