//! `facegate eval calibrate`: the threshold for a target FMR, measured on the authority's own
//! labelled images, written into the pack's manifest (the default for `verify` and for galleries
//! without their own threshold) or into one gallery's policy. The dataset, date and figures go
//! into the audit log with the change, so an auditor can see where every threshold came from.

use super::dataset::{embed_all, Dataset};
use super::metrics;
use super::report::{dissimilarity, protocol, score_set, DataArgs};
use crate::cmd_gallery::StoreArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use gallery::audit::AuditEvent;
use gallery::Role;
use serde_json::json;
use std::path::Path;

#[derive(Args)]
pub struct CalibrateArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The false-match rate the threshold must not exceed on this data.
    #[arg(
        long,
        required_unless_present = "target_fpir",
        conflicts_with = "target_fpir"
    )]
    pub target_fmr: Option<f64>,
    /// Instead: the false-positive identification rate the gallery's searches must keep as it
    /// grows (needs --gallery). The pack's impostor tail and mated distances are measured on
    /// this data and kept in the policy; the threshold then follows the gallery's size.
    #[arg(long, requires = "gallery")]
    pub target_fpir: Option<f64>,
    /// With --target-fpir: warn at enrolment when the expected FNIR at the gallery's size
    /// exceeds this.
    #[arg(long, requires = "target_fpir")]
    pub max_fnir: Option<f64>,
    /// With --max-fnir: refuse the enrolment instead of warning.
    #[arg(long, requires = "max_fnir")]
    pub refuse_beyond_max_fnir: bool,
    /// With --target-fpir: decide the gallery's searches on the rank-1 distance normalised
    /// against the probe's ranks 2-64 (or --cohort-ranks; a cohort z-threshold, measured on this data at its
    /// size) instead of a size-following threshold. Written only if it misses fewer listed
    /// people than the distance threshold at the same FPIR on this data.
    #[arg(long, requires = "target_fpir", conflicts_with = "max_fnir")]
    pub cohort: bool,
    /// With --cohort: ranks 2..N of a search form its cohort (more ranks: a steadier cohort,
    /// more subjects fetched per search).
    #[arg(long, requires = "cohort", default_value_t = super::improve::COHORT as u16, value_parser = clap::value_parser!(u16).range(17..=1025))]
    pub cohort_ranks: u16,
    /// Write the threshold into this gallery's policy instead of the pack's manifest.
    #[arg(long)]
    pub gallery: Option<String>,
    /// Measure and print; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Bootstrap replicates (by identity) for the 95% intervals at the chosen threshold.
    #[arg(long, default_value_t = 200)]
    pub bootstrap: usize,
}

pub fn run(home: &Path, store_args: &StoreArgs, a: CalibrateArgs) -> Result<i32> {
    if a.data.jitter > 0 {
        bail!("calibrate without --jitter: verify and identify do not jitter-average, so the threshold must be measured on the same scores they compute");
    }
    if a.data.flip {
        // verify and identify embed without flip averaging: a threshold measured on flipped
        // embeddings would be applied to different scores.
        bail!("calibrate without --flip: verify and identify do not flip-average with this pack, so the threshold must be measured on the same scores they compute; to decide on flip-averaged templates, derive a pack (`facegate models derive NAME --flip-average`) and calibrate that with --pack NAME");
    }
    let role = Role::parse(&store_args.role)?;
    if !a.dry_run && role != Role::Admin {
        bail!("changing a threshold needs the admin role (--role admin), or use --dry-run");
    }
    let Some(target_fmr) = a.target_fmr else {
        return super::calibrate_fpir::run(home, store_args, a);
    };
    if !(target_fmr > 0.0 && target_fmr < 1.0) {
        bail!("--target-fmr must lie strictly between 0 and 1");
    }
    let spec = a.data.spec()?;
    let pack_dir = home.join("packs").join(&spec.engine.pack);
    let ds = Dataset::load(&a.data.images, a.data.max_identities)?;
    let proto = protocol(&ds, &a.data)?;
    let files = ds.files();
    let run = embed_all(home, &spec, &files)?;
    let manifest = vision::pack::Manifest::load(&pack_dir)?;
    let metric = manifest.embedder.metric;
    let cosine = metric.is_similarity();
    let to_score = |d: f64| if cosine { 1.0 - d } else { d };
    let (set, ids) = score_set(
        &ds,
        &run.results,
        &proto,
        &|x, y| dissimilarity(cosine, metric, x, y),
        &|_| true,
    );
    let n_imp = set.impostor.len();
    if (n_imp as f64) * target_fmr < 1.0 {
        bail!(
            "FMR {:.0e} cannot be measured with {n_imp} impostor comparisons (at least {:.0} are needed, and ten times that for a stable threshold): use --impostors N, --all-impostors or more people",
            target_fmr,
            (1.0 / target_fmr).ceil()
        );
    }
    if set.genuine.is_empty() {
        bail!("no genuine pairs: every identity has a single image");
    }
    let w = set.unit_weights();
    let (fnmr, t) = metrics::fnmr_at_fmr(&set, &w, target_fmr);
    let (fmr, _) = metrics::rates(&set, &w, t);
    let ci = if a.bootstrap > 0 {
        metrics::bootstrap(&set, ids, a.bootstrap, a.data.seed, |w| {
            let (fm, fnm) = metrics::rates(&set, w, t);
            vec![fm, fnm]
        })
    } else {
        Vec::new()
    };
    let threshold = to_score(t);
    let false_matches = (fmr * n_imp as f64).round() as usize;
    let evidence = evidence(
        "eval calibrate",
        &spec.engine.pack,
        &a.data.images,
        &ds,
        json!({
            "protocol": proto.description,
            "genuine_pairs": set.genuine.len(),
            "impostor_pairs": n_imp,
            "target_fmr": target_fmr,
            "threshold": threshold,
            "score": if cosine { "cosine similarity (match when >= threshold)" } else { "euclidean distance (match when <= threshold)" },
            "measured_fmr": fmr,
            "false_matches": false_matches,
            "fnmr": fnmr,
            "fmr_ci95": ci.first(),
            "fnmr_ci95": ci.get(1),
            "failures_to_detect": run.results.iter().filter(|e| e.embedding.is_some() && !e.detected).count(),
            "failures_to_decode": run.results.iter().filter(|e| e.embedding.is_none()).count(),
        }),
    );
    let method = format!(
        "eval calibrate on {} ({} people, {} images; {} genuine / {} impostor pairs): {} false matches at this threshold (FMR {:.2e}), FNMR {:.2}%",
        a.data.images.display(),
        ds.identities.len(),
        ds.images.len(),
        set.genuine.len(),
        n_imp,
        false_matches,
        fmr,
        fnmr * 100.0
    );
    let target = match &a.gallery {
        Some(g) => format!("gallery {g}"),
        None => format!("pack {}", spec.engine.pack),
    };
    if !a.dry_run {
        let store = store_args.open(home)?;
        let ctx = store_args.context(&format!("calibration for FMR {:.0e}", target_fmr))?;
        match &a.gallery {
            Some(g) => {
                let info = calibration_gallery(&store, g, &spec.engine.pack)?;
                let mut policy = info.policy.clone();
                policy.threshold = Some(threshold);
                policy.target_fmr = Some(target_fmr);
                // A fixed threshold: the size-following rule or cohort, if any, goes with it
                // (one decision rule per gallery).
                policy.fpir_target = None;
                policy.cohort = None;
                store.update_policy(&ctx, g, &policy, Some(evidence.clone()))?;
            }
            None => {
                let mut m = manifest.clone();
                let old = m.calibration.clone();
                m.calibration = Some(vision::pack::Calibration {
                    threshold,
                    fmr: Some(target_fmr),
                    method,
                    evidence: Some(evidence.clone()),
                });
                // Written beside the manifest, recorded, then renamed into place: the audit
                // log never misses a change that took effect.
                let mut tmp = tempfile::NamedTempFile::new_in(&pack_dir)?;
                std::io::Write::write_all(&mut tmp, serde_json::to_string_pretty(&m)?.as_bytes())?;
                tmp.as_file().sync_all()?;
                store.audit_event(
                    &ctx,
                    AuditEvent {
                        action: "pack-calibrate".into(),
                        outcome: "threshold-set".into(),
                        details: json!({"pack": spec.engine.pack, "from": old, "evidence": evidence}),
                        ..Default::default()
                    },
                )?;
                tmp.persist(pack_dir.join("manifest.json"))
                    .context("writing the pack manifest")?;
            }
        }
    }
    let out = json!({"target": target, "written": !a.dry_run, "evidence": evidence});
    println!("{}", serde_json::to_string_pretty(&out)?);
    eprintln!(
        "{target}: threshold {threshold:.4} for FMR {:.0e}: measured FMR {:.2e} ({false_matches} of {n_imp}), FNMR {:.2}%{}",
        target_fmr,
        fmr,
        fnmr * 100.0,
        if a.dry_run { " (dry run: nothing written)" } else { "" }
    );
    Ok(0)
}

/// A calibration's evidence: what ran, when, on which pack and which data (a digest of every
/// image's hash), then the figures of its kind (`rest`, an object).
/// The gallery a calibration writes into, refused when its templates come from another pack
/// than the one measured.
pub(super) fn calibration_gallery(
    store: &gallery::Store,
    g: &str,
    pack: &str,
) -> Result<gallery::GalleryInfo> {
    let info = store.gallery(g)?;
    if let Some(p) = info.pack.as_deref().filter(|p| *p != pack) {
        bail!("gallery {g} holds templates of pack {p}; calibrate with --pack {p}");
    }
    Ok(info)
}

pub(super) fn evidence(
    command: &str,
    pack: &str,
    images: &Path,
    ds: &Dataset,
    rest: serde_json::Value,
) -> serde_json::Value {
    let mut v = json!({
        "command": command,
        "date": now(),
        "facegate_version": env!("CARGO_PKG_VERSION"),
        "pack": pack,
        "dataset": {"images_dir": images, "identities": ds.identities.len(), "images": ds.images.len(),
            "sha256_of_image_hashes": dataset_digest(ds)},
    });
    if let (Some(o), serde_json::Value::Object(r)) = (v.as_object_mut(), rest) {
        o.extend(r);
    }
    v
}

/// A digest of every image's hash: which data a calibration was measured on.
fn dataset_digest(ds: &Dataset) -> String {
    let mut all: Vec<[u8; 32]> = ds.images.iter().map(|i| i.sha256).collect();
    all.sort_unstable();
    vision::pack::sha256_hex(&all.concat())
}

fn now() -> String {
    gallery::audit::now_rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
    )
}
