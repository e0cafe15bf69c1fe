//! Gallery commands: `gallery`, `enroll`, `identify`, `delete`, `subject`, `audit`, `keys`.
//! All state lives under the data directory; the master key comes from the environment or a file.

use crate::cmd_faces::pick;
use crate::engine::{load, EngineArgs};
use anyhow::{bail, Context as _, Result};
use app::data::{open_store, rotate_master_key, MasterKey, Notice, Storage};
use clap::{Args, Subcommand};
use gallery::audit::SignedHead;
use gallery::store;
use gallery::{Context, Enrolment, Metric, Policy, Role, Store};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use vision::decode::{decode_file, decode_file_flagged, DecodeLimits};
use vision::pipeline::Pipeline;

#[derive(Args, Clone, Debug)]
pub struct StoreArgs {
    /// Data directory (default: $FACEGATE_HOME/data).
    #[arg(long, global = true, env = "FACEGATE_DATA")]
    pub data_dir: Option<PathBuf>,
    /// Master key file (64 hex characters, mode 0600). Default: `<data-dir>/master.key`, created on
    /// first use. Production: keep it off the data disk, or set FACEGATE_MASTER_KEY.
    #[arg(long, global = true, env = "FACEGATE_MASTER_KEY_FILE")]
    pub master_key: Option<PathBuf>,
    /// Who is acting (recorded in the audit log).
    #[arg(long, global = true, env = "FACEGATE_ACTOR")]
    pub actor: Option<String>,
    /// Role to act in: gate, enroller, operator, auditor, admin.
    #[arg(long, global = true, default_value = "operator", env = "FACEGATE_ROLE")]
    pub role: String,
    /// Keep galleries in PostgreSQL instead of the data directory's SQLite files: a connection
    /// URL, several hosts allowed (postgres://db1,db2/facegate?target_session_attrs=read-write).
    /// The data directory still holds this node's audit.head mirror (and the key file by default).
    #[arg(long = "store", global = true, env = "FACEGATE_STORE_URL")]
    pub store_url: Option<String>,
    /// The PostgreSQL key store, a database of its own (default: the --store database's name with
    /// `_keys` appended, on the same servers).
    #[arg(long = "keys-store", global = true, env = "FACEGATE_KEYS_STORE_URL")]
    pub keys_store_url: Option<String>,
}

impl StoreArgs {
    pub fn data_dir(&self, home: &Path) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| home.join("data"))
    }

    /// Where records and keys are kept: PostgreSQL when `--store` is given, else the data
    /// directory.
    pub fn storage(&self) -> Result<Storage> {
        if self.keys_store_url.is_some() && self.store_url.is_none() {
            bail!("--keys-store needs --store (the embedded store keeps keys.db in the data directory)");
        }
        Ok(match &self.store_url {
            Some(url) => Storage::postgres(url, self.keys_store_url.as_deref())?,
            None => Storage::Embedded,
        })
    }

    /// Where the master key comes from: `FACEGATE_MASTER_KEY`, else the key file.
    fn master_key(&self, data: &Path) -> MasterKey {
        match std::env::var("FACEGATE_MASTER_KEY") {
            Ok(hex) => MasterKey::Hex(hex),
            Err(_) => MasterKey::File(
                self.master_key
                    .clone()
                    .unwrap_or_else(|| data.join("master.key")),
            ),
        }
    }

    pub fn context(&self, purpose: &str) -> Result<Context> {
        let actor = self
            .actor
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "cli".into());
        Ok(Context::new(&actor, Role::parse(&self.role)?, purpose))
    }

    /// Open the store; on a fresh data directory, create it and its master key file.
    pub fn open(&self, home: &Path) -> Result<Store> {
        let data = self.data_dir(home);
        let storage = self.storage()?;
        let (store, notices) = open_store(&data, &storage, &self.master_key(&data)).with_context(
            || match &storage {
                Storage::Embedded => format!("opening data directory {}", data.display()),
                Storage::Postgres { .. } => "opening the PostgreSQL store".to_string(),
            },
        )?;
        for n in notices {
            eprintln!(
                "{}{n}",
                if matches!(n, Notice::CreatedKey(_)) {
                    ""
                } else {
                    "warning: "
                }
            );
        }
        Ok(store)
    }
}

#[derive(Subcommand)]
pub enum GalleryCommand {
    /// Create a gallery with its policy.
    Create(CreateArgs),
    /// List galleries with their counts.
    List,
    /// Show one gallery's policy and counts.
    Show { name: String },
    /// Erase every subject past its retention period and print the signed deletion receipts.
    Purge { name: String },
    /// Move a gallery to a new template transform (renewal; needs --role admin).
    Rekey { name: String },
}

#[derive(Args)]
pub struct CreateArgs {
    pub name: String,
    /// What the gallery is for.
    #[arg(long)]
    pub purpose: String,
    /// The legal basis for processing.
    #[arg(long)]
    pub legal_basis: String,
    /// Days a subject stays enrolled.
    #[arg(long)]
    pub retention_days: u32,
    /// Decision threshold in the pack's metric (default: the pack's calibrated threshold).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// The false-match rate the threshold is meant for (recorded in the policy).
    #[arg(long)]
    pub target_fmr: Option<f64>,
    /// Most candidates a search returns.
    #[arg(long, default_value_t = 5)]
    pub max_candidates: usize,
    /// Roles allowed to search, comma-separated.
    #[arg(long, default_value = "gate,operator", value_delimiter = ',')]
    pub search_roles: Vec<String>,
    /// Search structure: exact (default; provably equal to an exhaustive f32 scan), compact (the
    /// same results with 152 instead of 664 bytes of memory per 128-D template: candidates are
    /// re-scored from storage; for galleries up to 10^8) or hnsw (approximate; see README for
    /// measured recall).
    #[arg(long, default_value = "exact", value_parser = ["exact", "compact", "hnsw"])]
    pub index: String,
    /// HNSW efSearch (higher: better recall, slower).
    #[arg(long, default_value_t = 128)]
    pub hnsw_ef_search: usize,
    /// Case rule for subject references: upper (document numbers: `a1234567` and `A1234567`
    /// are one subject) or preserve. References are always trimmed and NFC-normalised, and
    /// control or invisible formatting characters are refused.
    #[arg(long, default_value = "upper", value_parser = ["upper", "preserve"])]
    pub reference_case: String,
    /// Enrolment quality gate: COMPONENT=MIN (repeatable), the minimum OFIQ-aligned score
    /// (0-100) of a quality component (as `detect` reports them, e.g. head_pose_yaw=60,
    /// inter_eye_distance=70) an enrolment image's face must reach.
    #[arg(long, value_name = "COMPONENT=MIN", value_parser = parse_gate)]
    pub enrol_min_quality: Vec<(String, u8)>,
    /// A subject enrolled from several images keeps each template (`each`: a search takes
    /// the nearest) or one, their average (`mean`: fewer listed people missed, see
    /// docs/evaluation.md).
    #[arg(long, value_enum, default_value_t = Fusion::Each)]
    pub template_fusion: Fusion,
}

/// `--template-fusion`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fusion {
    Each,
    Mean,
}

fn parse_gate(s: &str) -> std::result::Result<(String, u8), String> {
    let (name, min) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected COMPONENT=MIN"))?;
    let min: u8 = min
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: the minimum is a score from 0 to 100"))?;
    Ok((name.trim().to_string(), min))
}

pub fn gallery(home: &Path, s: &StoreArgs, cmd: GalleryCommand) -> Result<i32> {
    let store = s.open(home)?;
    match cmd {
        GalleryCommand::Create(a) => {
            let policy = Policy {
                purpose: a.purpose,
                legal_basis: a.legal_basis,
                retention_days: a.retention_days,
                threshold: a.threshold,
                target_fmr: a.target_fmr,
                max_candidates: a.max_candidates,
                search_roles: a
                    .search_roles
                    .iter()
                    .map(|r| Role::parse(r.trim()))
                    .collect::<gallery::Result<_>>()?,
                index: match a.index.as_str() {
                    "hnsw" => gallery::IndexChoice::Hnsw(gallery::approx::HnswParams {
                        ef_search: a.hnsw_ef_search,
                        ..Default::default()
                    }),
                    "compact" => gallery::IndexChoice::Compact,
                    _ => gallery::IndexChoice::Exact,
                },
                reference_case: if a.reference_case == "preserve" {
                    gallery::ReferenceCase::Preserve
                } else {
                    gallery::ReferenceCase::Upper
                },
                enrol_min_quality: a.enrol_min_quality.into_iter().collect(),
                fpir_target: None,
                template_fusion: if a.template_fusion == Fusion::Mean {
                    gallery::policy::TemplateFusion::Mean
                } else {
                    gallery::policy::TemplateFusion::Each
                },
                cohort: None,
            };
            app::faces::check_quality_gate(&policy.enrol_min_quality)?;
            store.create_gallery(&s.context("gallery administration")?, &a.name, &policy)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&store.gallery(&a.name)?)?
            );
        }
        GalleryCommand::List => {
            for g in store.galleries()? {
                println!("{}", serde_json::to_string(&g)?);
            }
        }
        GalleryCommand::Show { name } => {
            println!("{}", serde_json::to_string_pretty(&store.gallery(&name)?)?);
        }
        GalleryCommand::Purge { name } => {
            let receipts = store.purge(&s.context("retention enforcement")?, &name)?;
            eprintln!("purged {} expired subject(s) from {name}", receipts.len());
            for r in receipts {
                println!("{}", serde_json::to_string(&r)?);
            }
        }
        GalleryCommand::Rekey { name } => {
            let n = store.rekey_gallery(&s.context("template renewal")?, &name)?;
            println!("{}", json!({"gallery": name, "templates_moved": n}));
        }
    }
    Ok(0)
}

#[derive(Args)]
pub struct EnrolArgs {
    #[arg(long)]
    pub gallery: String,
    /// External reference of the subject (stored only as a keyed pseudonym and sealed).
    #[arg(long, required_unless_present_any = ["batch", "embeddings"])]
    pub subject: Option<String>,
    /// Images of the subject (one template per image, largest face).
    pub images: Vec<PathBuf>,
    /// Batch: a directory of SUBJECT/IMAGE folders, or a CSV of `subject,image` lines.
    #[arg(long, conflicts_with_all = ["subject", "embeddings"])]
    pub batch: Option<PathBuf>,
    /// Enrol precomputed templates: JSON lines {"subject": REF, "embedding": [...]}.
    #[arg(long, conflicts_with_all = ["subject", "batch"])]
    pub embeddings: Option<PathBuf>,
    /// With --embeddings: enrol in transactions of 10,000 (all or nothing per transaction, no
    /// per-subject acknowledgement): for migrations and benchmarks.
    #[arg(long, requires = "embeddings")]
    pub bulk: bool,
    /// Metric of --embeddings templates.
    #[arg(long, default_value = "euclidean")]
    pub metric: String,
    /// Consent or case reference to record (sealed).
    #[arg(long)]
    pub consent: Option<String>,
    /// Keep the enrolment image, encrypted (off by default: no images are stored).
    #[arg(long)]
    pub keep_image: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

struct Job {
    subject: String,
    images: Vec<PathBuf>,
}

fn batch_jobs(path: &Path) -> Result<Vec<Job>> {
    let mut jobs: Vec<Job> = Vec::new();
    if path.is_dir() {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for d in dirs {
            let mut images: Vec<PathBuf> = std::fs::read_dir(&d)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            images.sort();
            let subject = d
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            jobs.push(Job { subject, images });
        }
    } else {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || (n == 0 && line.starts_with("subject,"))
            {
                continue;
            }
            let (subject, image) = line.split_once(',').with_context(|| {
                format!("{}:{}: expected `subject,image`", path.display(), n + 1)
            })?;
            let image = base.join(image.trim());
            match jobs.iter_mut().find(|j| j.subject == subject.trim()) {
                Some(j) => j.images.push(image),
                None => jobs.push(Job {
                    subject: subject.trim().into(),
                    images: vec![image],
                }),
            }
        }
    }
    Ok(jobs)
}

/// The template of the largest face in an image, once it passes the gallery's quality gate.
pub fn template(p: &Pipeline, path: &Path, gate: &BTreeMap<String, u8>) -> Result<Vec<f32>> {
    // Enrolment never learns from a cut file.
    let img = decode_file(path, &DecodeLimits::default().strict())
        .with_context(|| format!("{}", path.display()))?;
    let (face, _, _, _) = pick(p.faces(&img)?, None, "enrolment")?;
    app::faces::pass_quality_gate(&face.quality, gate, &path.display().to_string())?;
    Ok(face.embedding)
}

fn ack(line: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    // Acknowledgements are flushed one by one: a caller may stop reading at any point.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// An enrolment's acknowledgement with what the store told the enroller, if anything (e.g. that
/// the gallery has outgrown what its pack delivers at the policy's target FPIR).
fn with_warnings(mut ack: serde_json::Value, warnings: &[String]) -> serde_json::Value {
    if !warnings.is_empty() {
        ack["warnings"] = json!(warnings);
    }
    ack
}

pub fn enrol(home: &Path, s: &StoreArgs, a: EnrolArgs) -> Result<i32> {
    let store = s.open(home)?;
    let ctx = s.context("enrolment")?;
    if let Some(path) = &a.embeddings {
        let metric = Metric::parse(&a.metric)?;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let (mut ok, mut failed) = (0, 0);
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}", path.display(), n + 1))?;
            let subject = v["subject"]
                .as_str()
                .with_context(|| format!("line {}: no subject", n + 1))?;
            let emb: Vec<f32> = serde_json::from_value(v["embedding"].clone())
                .with_context(|| format!("line {}: no embedding", n + 1))?;
            match store.enrol(
                &ctx,
                &a.gallery,
                subject,
                &[emb],
                metric,
                &a.engine.pack,
                &Enrolment::default(),
            ) {
                Ok(r) => {
                    ok += 1;
                    ack(with_warnings(
                        json!({"subject": subject, "status": "enrolled", "pseudonym": r.pseudonym, "audit_seq": r.audit_seq}),
                        &r.warnings,
                    ));
                }
                Err(e) => {
                    failed += 1;
                    ack(json!({"subject": subject, "status": "error", "error": e.to_string()}));
                }
            }
        }
        eprintln!("enrolled {ok}, failed {failed}");
        return Ok(if failed > 0 { 2 } else { 0 });
    }
    let jobs = match (&a.batch, &a.subject) {
        (Some(b), _) => batch_jobs(b)?,
        (None, Some(subject)) => vec![Job {
            subject: subject.clone(),
            images: a.images.clone(),
        }],
        (None, None) => bail!("give --subject with images, --batch, or --embeddings"),
    };
    if jobs.iter().any(|j| j.images.is_empty()) {
        bail!("every subject needs at least one image");
    }
    let gate = store.gallery(&a.gallery)?.policy.enrol_min_quality;
    let p = load(home, &a.engine)?;
    let metric = p.metric();
    let pack = p.models.manifest.name.clone();
    let total: usize = jobs.iter().map(|j| j.images.len()).sum();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} enrolling [{bar:30}] {pos}/{len} images {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if jobs.len() == 1 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    // Faces are found in parallel; each subject is written as soon as its templates are ready,
    // one at a time, durable before it is acknowledged: a crash loses at most the subjects in
    // flight, never one that was acknowledged, and the first acknowledgement comes after the
    // first subject, not after the whole batch.
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<Vec<Vec<f32>>>)>();
    let (mut ok, mut failures) = (0, Vec::new());
    std::thread::scope(|scope| -> Result<()> {
        let (jobs, p, bar, gate) = (&jobs, &p, &bar, &gate);
        scope.spawn(move || {
            jobs.par_iter().enumerate().for_each_with(tx, |tx, (i, j)| {
                let t = j
                    .images
                    .iter()
                    .map(|img| {
                        let r = template(p, img, gate);
                        bar.inc(1);
                        r
                    })
                    .collect::<Result<Vec<_>>>();
                // The receiver lives until every job is done.
                let _ = tx.send((i, t));
            });
        });
        for (i, r) in rx {
            let job = &jobs[i];
            let outcome = r.and_then(|templates| {
                let image = if a.keep_image {
                    Some(
                        std::fs::read(&job.images[0])
                            .with_context(|| format!("{}", job.images[0].display()))?,
                    )
                } else {
                    None
                };
                let opts = Enrolment {
                    consent: a.consent.clone(),
                    image,
                    expires_ms: None,
                };
                Ok(store.enrol(
                    &ctx,
                    &a.gallery,
                    &job.subject,
                    &templates,
                    metric,
                    &pack,
                    &opts,
                )?)
            });
            bar.suspend(|| match outcome {
                Ok(r) => {
                    ok += 1;
                    ack(with_warnings(
                        json!({"subject": job.subject, "status": "enrolled", "templates": r.templates, "pseudonym": r.pseudonym, "expires": r.expires, "audit_seq": r.audit_seq}),
                        &r.warnings,
                    ));
                }
                Err(e) => {
                    failures.push(json!({"subject": job.subject, "error": format!("{e:#}")}));
                    ack(json!({"subject": job.subject, "status": "error", "error": format!("{e:#}")}));
                }
            });
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    eprintln!("enrolled {ok} subject(s); {} failed", failures.len());
    for f in &failures {
        eprintln!(
            "  {}: {}",
            f["subject"].as_str().unwrap_or(""),
            f["error"].as_str().unwrap_or("")
        );
    }
    Ok(if failures.is_empty() { 0 } else { 2 })
}

#[derive(Args)]
pub struct IdentifyArgs {
    #[arg(long)]
    pub gallery: String,
    /// Why this search is made (required; recorded in the audit log).
    #[arg(long)]
    pub purpose: String,
    pub image: PathBuf,
    /// Most candidates to return (capped by the gallery policy).
    #[arg(long)]
    pub k: Option<usize>,
    /// Which face of the image to use (default: the largest).
    #[arg(long)]
    pub face: Option<usize>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub fn identify(home: &Path, s: &StoreArgs, a: IdentifyArgs) -> Result<i32> {
    let store = s.open(home)?;
    let ctx = s.context(&a.purpose)?;
    let p = load(home, &a.engine)?;
    store.check_pack(&a.gallery, &p.models.manifest.name)?;
    let (img, cut) = decode_file_flagged(&a.image, &DecodeLimits::default())
        .with_context(|| format!("{}", a.image.display()))?;
    let warnings: Vec<String> = cut
        .map(str::to_string)
        .into_iter()
        .chain(p.detection_warning(img.width(), img.height()))
        .map(|w| format!("probe: {w}"))
        .collect();
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let (mut face, used, rule, found) = pick(p.faces(&img)?, a.face, "probe")?;
    let pad = crate::cmd_faces::liveness_verdict(&p, &img, &mut face, &a.engine)?;
    let ctx = match &pad {
        Some(v) => ctx.with_capture(v.audit_record()),
        None => ctx,
    };
    if let Some(v) = pad.as_ref().filter(|v| v.blocks) {
        let seq = store.refuse_comparison(&ctx, &a.gallery, "identify", "presentation-attack")?;
        let out = json!({
            "match": false,
            "decided_by": app::liveness::DECIDED_BY_PAD,
            "liveness": v,
            "gallery": a.gallery,
            "candidates": [],
            "audit_seq": seq,
            "probe": {"image": a.image, "faces_found": found, "face_used": used, "selection": rule},
            "warnings": warnings,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(1);
    }
    let default_threshold = p
        .models
        .manifest
        .calibration
        .as_ref()
        .map(|c| c.threshold)
        .context("the pack has no calibrated threshold and the gallery sets none")?;
    let r = store.identify(&ctx, &a.gallery, &face.embedding, a.k, default_threshold)?;
    let matched = !r.candidates.is_empty();
    let out = json!({
        "match": matched,
        "gallery": r.gallery,
        "candidates": r.candidates,
        "score_kind": r.metric.describe(),
        "threshold": r.threshold,
        "cohort_z_threshold": r.cohort_z_threshold,
        "searched_templates": r.searched_templates,
        "audit_seq": r.audit_seq,
        "liveness": pad,
        "probe": {"image": a.image, "faces_found": found, "face_used": used, "selection": rule},
        "warnings": warnings,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(if matched { 0 } else { 1 })
}

#[derive(Args)]
pub struct DeleteArgs {
    #[arg(long)]
    pub gallery: String,
    #[arg(long)]
    pub subject: String,
    /// Why the subject is erased (recorded, and written into the receipt).
    #[arg(long)]
    pub reason: String,
}

pub fn delete(home: &Path, s: &StoreArgs, a: DeleteArgs) -> Result<i32> {
    let store = s.open(home)?;
    let r = store.delete(&s.context("erasure")?, &a.gallery, &a.subject, &a.reason)?;
    println!("{}", serde_json::to_string_pretty(&r)?);
    Ok(0)
}

#[derive(Args)]
pub struct SubjectArgs {
    #[arg(long)]
    pub gallery: String,
    #[arg(long)]
    pub subject: String,
}

pub fn subject(home: &Path, s: &StoreArgs, a: SubjectArgs) -> Result<i32> {
    let store = s.open(home)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&store.subject(&a.gallery, &a.subject)?)?
    );
    Ok(0)
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain and signatures (needs no master key). Exit 0 intact, 1 tampered
    /// (or, with --strict, anything that could not be checked, such as a missing audit.head).
    Verify {
        /// Trust this public key (hex) instead of the one stored in the data directory.
        #[arg(long)]
        public_key: Option<String>,
        /// Signed heads kept elsewhere (JSON files written by `audit head`).
        #[arg(long)]
        anchor: Vec<PathBuf>,
        /// Fail on warnings too (e.g. the audit.head mirror is missing).
        #[arg(long)]
        strict: bool,
    },
    /// Print every record as JSON Lines.
    Export,
    /// Print the current signed head, to keep off this machine as an anchor.
    Head,
    /// Verify a deletion receipt (JSON file).
    Receipt { file: PathBuf },
}

pub fn audit(home: &Path, s: &StoreArgs, cmd: AuditCommand) -> Result<i32> {
    let data = s.data_dir(home);
    match cmd {
        AuditCommand::Verify {
            public_key,
            anchor,
            strict,
        } => {
            let mut anchors = Vec::new();
            for a in anchor {
                let text = std::fs::read_to_string(&a)
                    .with_context(|| format!("reading {}", a.display()))?;
                let head: SignedHead =
                    serde_json::from_str(&text).with_context(|| format!("{}", a.display()))?;
                anchors.push((a.display().to_string(), head));
            }
            // No master key needed: the log and its public key are all an auditor reads.
            let report = match s.storage()? {
                Storage::Embedded => store::verify_dir(&data, public_key.as_deref(), &anchors)?,
                postgres => store::verify_log(
                    &*postgres.backend(&data)?,
                    &data,
                    public_key.as_deref(),
                    &anchors,
                )?,
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            let failed = !report.ok || (strict && !report.warnings.is_empty());
            Ok(if failed { 1 } else { 0 })
        }
        AuditCommand::Export => {
            let store = s.open(home)?;
            let ctx = s.context("audit export")?;
            if !matches!(ctx.role, Role::Auditor | Role::Admin) {
                bail!("exporting the audit log needs the auditor or admin role");
            }
            let records = store.audit_records()?;
            store.audit_event(
                &ctx,
                gallery::audit::AuditEvent {
                    action: "audit-export".into(),
                    outcome: "exported".into(),
                    details: json!({"records": records.len()}),
                    ..Default::default()
                },
            )?;
            let mut out = std::io::stdout().lock();
            for r in records {
                writeln!(out, "{}", serde_json::to_string(&r)?)?;
            }
            Ok(0)
        }
        AuditCommand::Head => {
            let store = s.open(home)?;
            match store.audit_head()? {
                Some(h) => println!("{}", serde_json::to_string_pretty(&h)?),
                None => bail!("the audit log is empty"),
            }
            Ok(0)
        }
        AuditCommand::Receipt { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let r: gallery::DeletionReceipt = serde_json::from_str(&text)?;
            let ok = store::verify_receipt(&r);
            println!("{}", json!({"valid": ok, "signed_by": r.public_key}));
            Ok(if ok { 0 } else { 1 })
        }
    }
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Replace the master key: rewraps every data key and seed; templates are not touched.
    Rotate,
}

pub fn keys(home: &Path, s: &StoreArgs, cmd: KeysCommand) -> Result<i32> {
    let KeysCommand::Rotate = cmd;
    let data = s.data_dir(home);
    let key = s.master_key(&data);
    let (n, id) = rotate_master_key(
        &data,
        &s.storage()?,
        &key,
        &s.context("master key rotation")?,
    )?;
    let key_file = match key {
        MasterKey::File(p) => Some(p),
        MasterKey::Hex(_) => None,
    };
    println!(
        "{}",
        json!({"rewrapped": n, "master_key_id": id, "key_file": key_file})
    );
    Ok(0)
}

#[derive(Args)]
pub struct MigrateArgs {
    /// The store to copy: a data directory, or a PostgreSQL URL.
    #[arg(long)]
    pub from: String,
    /// The empty store to copy into: a data directory, or a PostgreSQL URL.
    #[arg(long)]
    pub to: String,
    /// The source's PostgreSQL key store (default: its database name with `_keys`).
    #[arg(long)]
    pub from_keys: Option<String>,
    /// The target's PostgreSQL key store (default: its database name with `_keys`).
    #[arg(long)]
    pub to_keys: Option<String>,
}

/// A `--from`/`--to` value: a PostgreSQL URL or connection string, else a directory.
fn store_location(
    home: &Path,
    s: &StoreArgs,
    spec: &str,
    keys: Option<&str>,
) -> Result<(PathBuf, Storage)> {
    let is_url = spec.starts_with("postgres://")
        || spec.starts_with("postgresql://")
        || spec.contains("host=");
    if is_url {
        return Ok((s.data_dir(home), Storage::postgres(spec, keys)?));
    }
    if keys.is_some() {
        bail!("a key store URL goes with a PostgreSQL store, not with directory {spec}");
    }
    Ok((PathBuf::from(spec), Storage::Embedded))
}

pub fn migrate(home: &Path, s: &StoreArgs, a: MigrateArgs) -> Result<i32> {
    let ctx = s.context("store migration")?;
    if ctx.role != Role::Admin {
        bail!("migrating a store needs --role admin");
    }
    let from = store_location(home, s, &a.from, a.from_keys.as_deref())?;
    let to = store_location(home, s, &a.to, a.to_keys.as_deref())?;
    // The master key: as given, else the key file of whichever side is a data directory.
    let key_dir = [&from, &to]
        .into_iter()
        .find(|(_, st)| *st == Storage::Embedded)
        .map(|(d, _)| d.clone())
        .unwrap_or_else(|| s.data_dir(home));
    let key = s.master_key(&key_dir);
    // The target's audit.head mirror: its own directory when embedded, else this node's data
    // directory — unless that holds an embedded store (the source, typically), whose own mirror
    // must not be overwritten by another chain's head: then none is kept, and each node writes
    // its mirror at its next write.
    let scratch = tempfile::tempdir()?;
    let mirror = if to.1 == Storage::Embedded {
        to.0.clone()
    } else if Store::exists(&s.data_dir(home)) {
        scratch.path().to_path_buf()
    } else {
        s.data_dir(home)
    };
    let report = app::data::migrate(&mirror, (&from.0, &from.1), (&to.0, &to.1), &key, &ctx)
        .context("migration failed (retrying into the same target is safe: keys already copied are kept, the record store is copied in one transaction)")?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(0)
}
