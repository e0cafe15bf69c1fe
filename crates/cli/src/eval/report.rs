//! `facegate eval report`: what an authority needs before switching a system on, from one labelled
//! image set: 1:1 error rates with bootstrap intervals, DET/ROC curves and score histograms; 1:N
//! rank and open-set figures, CMC and growth with gallery size; every figure per group of each
//! attribute column with NIST-style differentials; several packs or settings side by side.
//! Writes report.json (every number), the SVG figures and a self-contained report.html, and
//! prints a short summary.
//!
//! Scores are dissimilarities (distance, or 1 − cosine), so one rule serves every pack: a pair
//! matches when d ≤ t. Thresholds are reported back in the pack's own score.

use super::dataset::{embed_all, pack_metric, Attributes, Dataset, EmbedSpec, Embedded};
use crate::engine::EngineArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use evaluation::metrics::{self, ScoreSet, SplitMix, Weights};
use evaluation::model::*;
use evaluation::plot::{self, Axis, Chart, Series};
use evaluation::render::{html, summary};
use gallery::index::ExactIndex;
use gallery::transform::OrthogonalTransform;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Where the data and protocol come from; shared by `report` and `calibrate`.
#[derive(Args, Clone)]
pub struct DataArgs {
    /// Directory of identity/image folders (LFW layout).
    #[arg(long)]
    pub images: PathBuf,
    /// Pairs file (LFW format): use its pairs and folds instead of all genuine pairs plus
    /// sampled impostors.
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// Impostor pairs sampled (seeded) when no pairs file is given.
    #[arg(long, default_value_t = 200_000)]
    pub impostors: usize,
    /// Use every impostor pair (n²/2 comparisons) instead of a sample.
    #[arg(long)]
    pub all_impostors: bool,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Use only the first N identities (sorted), for quick checks.
    #[arg(long)]
    pub max_identities: Option<usize>,
    /// Average each embedding with the embedding of the mirrored chip.
    #[arg(long)]
    pub flip: bool,
    /// Average each embedding over N dlib-style jittered copies of the chip (dlib's num_jitters).
    #[arg(long, default_value_t = 0)]
    pub jitter: usize,
    /// Parallel embedding workers (each with one inference thread). Default: all cores.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Do not read or write the sealed embedding cache.
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

impl DataArgs {
    pub fn spec(&self) -> Result<EmbedSpec> {
        let spec = EmbedSpec {
            engine: self.engine.clone(),
            flip: self.flip,
            jitter: self.jitter,
            workers: self.workers.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            }),
            cache: !self.no_cache,
        };
        spec.check()?;
        Ok(spec)
    }
}

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Where report.html, report.json and the figures go.
    #[arg(long)]
    pub out: PathBuf,
    /// Packs or settings to compare (repeat): PACK or PACK+flip. Default: --pack (with --flip).
    #[arg(long = "compare")]
    pub compare: Vec<String>,
    /// CSV of per-image (`image` = identity/file) or per-identity (`identity`) attributes; every
    /// other column is a grouping.
    #[arg(long)]
    pub attributes: Option<PathBuf>,
    /// Bootstrap replicates (by identity) for the 95% intervals; 0 for none.
    #[arg(long, default_value_t = 200)]
    pub bootstrap: usize,
    /// FMR of the global operating threshold at which groups are compared.
    #[arg(long, default_value_t = 1e-3)]
    pub group_fmr: f64,
    /// FPIR of the global 1:N threshold at which groups are compared.
    #[arg(long, default_value_t = 1e-2)]
    pub group_fpir: f64,
    /// Warn when a max/min ratio across groups exceeds this.
    #[arg(long, default_value_t = 2.0)]
    pub max_differential: f64,
}

/// Which image pairs are compared.
pub struct Protocol {
    pub description: String,
    pub genuine: Vec<(u32, u32)>,
    pub impostor: Vec<(u32, u32)>,
    /// Pairs-file folds as (a, b, same), for the fold accuracy.
    pub folds: Option<Vec<Vec<(u32, u32, bool)>>>,
    /// Pairs naming an image that is not in the set (or was left out as a duplicate).
    pub missing: Vec<String>,
}

pub fn protocol(ds: &Dataset, a: &DataArgs) -> Result<Protocol> {
    if let Some(pf) = &a.pairs {
        let text =
            std::fs::read_to_string(pf).with_context(|| format!("reading {}", pf.display()))?;
        let by_rel: HashMap<&str, u32> = ds
            .images
            .iter()
            .enumerate()
            .map(|(i, im)| (im.rel.as_str(), i as u32))
            .collect();
        let mut p = Protocol {
            description: format!("pairs file {}", pf.display()),
            genuine: Vec::new(),
            impostor: Vec::new(),
            folds: Some(Vec::new()),
            missing: Vec::new(),
        };
        for fold in super::parse_pairs(&text)? {
            let mut f = Vec::new();
            for pair in fold {
                let rel = |k: &(String, u32)| format!("{0}/{0}_{1:04}.jpg", k.0, k.1);
                let (ra, rb) = (rel(&pair.a), rel(&pair.b));
                match (by_rel.get(ra.as_str()), by_rel.get(rb.as_str())) {
                    (Some(&i), Some(&j)) => {
                        f.push((i, j, pair.same));
                        if pair.same {
                            p.genuine.push((i, j));
                        } else {
                            p.impostor.push((i, j));
                        }
                    }
                    _ => p.missing.push(format!("{ra} {rb}")),
                }
            }
            if let Some(folds) = p.folds.as_mut() {
                folds.push(f);
            }
        }
        return Ok(p);
    }
    let n = ds.images.len();
    let mut genuine = Vec::new();
    for i in 0..n {
        for j in i + 1..n {
            if ds.images[i].identity != ds.images[j].identity {
                break;
            }
            genuine.push((i as u32, j as u32));
        }
    }
    let possible = n * (n - 1) / 2 - genuine.len();
    let impostor: Vec<(u32, u32)> = if a.all_impostors || a.impostors >= possible {
        let mut v = Vec::with_capacity(possible);
        for i in 0..n {
            for j in i + 1..n {
                if ds.images[i].identity != ds.images[j].identity {
                    v.push((i as u32, j as u32));
                }
            }
        }
        v
    } else {
        let mut rng = SplitMix::new(a.seed);
        let mut set = HashSet::with_capacity(a.impostors);
        while set.len() < a.impostors {
            let (i, j) = (rng.below(n), rng.below(n));
            if ds.images[i].identity != ds.images[j].identity {
                set.insert((i.min(j) as u32, i.max(j) as u32));
            }
        }
        let mut v: Vec<_> = set.into_iter().collect();
        v.sort_unstable();
        v
    };
    Ok(Protocol {
        description: format!(
            "all {} genuine pairs within identities; {} impostor pairs across identities{}",
            genuine.len(),
            impostor.len(),
            if impostor.len() == possible {
                " (all)".to_string()
            } else {
                format!(" (seeded uniform sample, seed {})", a.seed)
            }
        ),
        genuine,
        impostor,
        folds: None,
        missing: Vec::new(),
    })
}

/// Dissimilarity of two embeddings in the pack's metric: distance, or 1 − cosine.
pub fn dissimilarity(cosine: bool, metric: vision::pack::Metric, a: &[f32], b: &[f32]) -> f64 {
    let s = metric.compare(a, b);
    if cosine {
        1.0 - s
    } else {
        s
    }
}

/// Scores of the protocol's pairs whose images both pass `keep` and have embeddings, with
/// identities renumbered 0.. (for the bootstrap); returns the set and the identity count.
pub fn score_set(
    ds: &Dataset,
    emb: &[Embedded],
    p: &Protocol,
    score: &dyn Fn(&[f32], &[f32]) -> f64,
    keep: &dyn Fn(u32) -> bool,
) -> (ScoreSet, usize) {
    let mut ids: HashMap<u32, u32> = HashMap::new();
    let mut id = |img: u32| -> u32 {
        let n = ids.len() as u32;
        *ids.entry(ds.images[img as usize].identity).or_insert(n)
    };
    let pair = |i: u32, j: u32| -> Option<f64> {
        if !keep(i) || !keep(j) {
            return None;
        }
        match (&emb[i as usize].embedding, &emb[j as usize].embedding) {
            (Some(a), Some(b)) => Some(score(a, b)),
            _ => None,
        }
    };
    let mut g = Vec::new();
    for &(i, j) in &p.genuine {
        if let Some(d) = pair(i, j) {
            g.push((d, id(i)));
        }
    }
    let mut imp = Vec::new();
    for &(i, j) in &p.impostor {
        if let Some(d) = pair(i, j) {
            imp.push((d, id(i), id(j)));
        }
    }
    let n = ids.len();
    (ScoreSet::new(g, imp), n)
}

/// Whether `n` comparisons can measure a rate of `r` at all (at least one error allowed).
pub(super) fn supported(n: usize, r: f64) -> bool {
    n as f64 * r >= 1.0
}

fn one_to_one(s: &ScoreSet, ids: usize, a: &ReportArgs, to_score: &dyn Fn(f64) -> f64) -> OneToOne {
    let w = s.unit_weights();
    let (eer, eer_t) = metrics::eer(s, &w);
    let levels: Vec<f64> = FMR_LEVELS
        .iter()
        .copied()
        .filter(|f| supported(s.impostor.len(), *f))
        .collect();
    let stats = |w: &Weights| -> Vec<f64> {
        let mut v = vec![metrics::eer(s, w).0];
        v.extend(levels.iter().map(|f| metrics::fnmr_at_fmr(s, w, *f).0));
        v
    };
    let ci = if a.bootstrap > 0 && !s.genuine.is_empty() && !s.impostor.is_empty() {
        metrics::bootstrap(s, ids, a.bootstrap, a.data.seed, stats)
    } else {
        Vec::new()
    };
    let ops: Vec<FmrPoint> = FMR_LEVELS
        .iter()
        .map(|&f| {
            if let Some(k) = levels.iter().position(|l| *l == f) {
                let (fnmr, t) = metrics::fnmr_at_fmr(s, &w, f);
                FmrPoint {
                    fmr: f,
                    supported_by_data: true,
                    fnmr,
                    tar: 1.0 - fnmr,
                    threshold: to_score(t),
                    fnmr_ci95: ci.get(k + 1).map(|&c| c.into()),
                }
            } else {
                FmrPoint {
                    fmr: f,
                    supported_by_data: false,
                    fnmr: f64::NAN,
                    tar: f64::NAN,
                    threshold: f64::NAN,
                    fnmr_ci95: None,
                }
            }
        })
        .collect();
    OneToOne {
        genuine_pairs: s.genuine.len(),
        impostor_pairs: s.impostor.len(),
        identities: ids,
        eer,
        eer_ci95: ci.first().map(|&c| c.into()),
        eer_threshold: to_score(eer_t),
        fnmr_at_fmr: ops,
        pairs_protocol: None,
    }
}

/// Mean ± std of accuracy over the pairs file's folds, the threshold chosen on the other folds.
fn fold_accuracy(
    folds: &[Vec<(u32, u32, bool)>],
    emb: &[Embedded],
    score: &dyn Fn(&[f32], &[f32]) -> f64,
) -> FoldAccuracy {
    let scored: Vec<Vec<(f64, bool)>> = folds
        .iter()
        .map(|f| {
            f.iter()
                .filter_map(|&(i, j, same)| {
                    match (&emb[i as usize].embedding, &emb[j as usize].embedding) {
                        (Some(a), Some(b)) => Some((score(a, b), same)),
                        _ => None,
                    }
                })
                .collect()
        })
        .collect();
    let accs: Vec<f64> = super::cross_fold(&scored)
        .into_iter()
        .map(|r| r.0)
        .collect();
    let mean = accs.iter().sum::<f64>() / accs.len().max(1) as f64;
    let std =
        (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / accs.len().max(1) as f64).sqrt();
    FoldAccuracy {
        folds: accs.len(),
        accuracy_mean: mean,
        accuracy_std: std,
        fold_accuracy: accs,
    }
}

/// 1:N protocol: people with 2+ images enrol their first and search with the rest (mated);
/// people with one image alternate between enrolled distractor and non-mated search.
pub struct Split {
    pub enrolled: Vec<u32>,
    pub mated: Vec<u32>,
    pub nonmated: Vec<u32>,
}

pub fn split_1n(ds: &Dataset, emb: &[Embedded]) -> Split {
    let mut by_id: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (i, im) in ds.images.iter().enumerate() {
        if emb[i].embedding.is_some() {
            by_id.entry(im.identity).or_default().push(i as u32);
        }
    }
    let mut s = Split {
        enrolled: Vec::new(),
        mated: Vec::new(),
        nonmated: Vec::new(),
    };
    let mut singles = 0usize;
    for imgs in by_id.values() {
        if imgs.len() >= 2 {
            s.enrolled.push(imgs[0]);
            s.mated.extend(&imgs[1..]);
        } else {
            if singles.is_multiple_of(2) {
                s.enrolled.push(imgs[0]);
            } else {
                s.nonmated.push(imgs[0]);
            }
            singles += 1;
        }
    }
    s
}

/// Search outcomes: for mated searches (probe image, mate's rank within the top `MAX_RANK`,
/// rank-1 dissimilarity, rank-1 is the mate), for non-mated ones (probe, rank-1 dissimilarity).
pub struct Searches {
    pub mated: Vec<(u32, Option<usize>, f64, bool)>,
    pub nonmated: Vec<(u32, f64)>,
}

/// Run the 1:N searches through the gallery's exact index, on `gallery` (enrolled images), with
/// templates optionally through a keyed transform. Mated searches whose mate is not enrolled
/// in `gallery` are left out (the caller picks them).
pub fn search_1n(
    ds: &Dataset,
    emb: &[Embedded],
    gallery: &[u32],
    mated: &[u32],
    nonmated: &[u32],
    cosine: bool,
    transform: Option<&OrthogonalTransform>,
) -> Result<Searches> {
    // Cosine packs: unit-length templates make Euclidean ranking the cosine ranking.
    let prep = |i: u32| -> Option<Vec<f32>> {
        let mut e = emb[i as usize].embedding.clone()?;
        if cosine {
            let n = e.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            e.iter_mut().for_each(|x| *x /= n);
        }
        Some(transform.map_or(e.clone(), |t| t.apply(&e)))
    };
    let dim = gallery
        .iter()
        .find_map(|i| emb[*i as usize].embedding.as_ref().map(|e| e.len()))
        .context("empty gallery")?;
    let mut idx = ExactIndex::new(dim);
    for &g in gallery {
        if let Some(x) = prep(g) {
            idx.push(ds.images[g as usize].identity as u64, &x, i64::MAX);
        }
    }
    let search = |q: &[f32], k: usize| -> Vec<(u64, f64)> {
        let q2: f64 = q.iter().map(|v| (*v as f64).powi(2)).sum();
        idx.search(&[q], k, None, 0)
            .pop()
            .unwrap_or_default()
            .into_iter()
            .map(|h| {
                let d2 = (q2 - 2.0 * h.score as f64).max(0.0);
                // Same dissimilarity as 1:1: 1 − cosine = d²/2 on unit vectors.
                (h.id, if cosine { d2 / 2.0 } else { d2.sqrt() })
            })
            .collect()
    };
    let mut out = Searches {
        mated: Vec::with_capacity(mated.len()),
        nonmated: Vec::with_capacity(nonmated.len()),
    };
    for &m in mated {
        let Some(q) = prep(m) else { continue };
        let me = ds.images[m as usize].identity as u64;
        let hits = search(&q, MAX_RANK);
        let rank = hits.iter().position(|h| h.0 == me).map(|r| r + 1);
        let top = hits.first().map_or(f64::INFINITY, |h| h.1);
        out.mated.push((m, rank, top, rank == Some(1)));
    }
    for &n in nonmated {
        let Some(q) = prep(n) else { continue };
        let top = search(&q, 1).first().map_or(f64::INFINITY, |h| h.1);
        out.nonmated.push((n, top));
    }
    Ok(out)
}

/// Rank and open-set figures of a set of searches.
pub fn open_set(s: &Searches, to_score: &dyn Fn(f64) -> f64) -> OpenSet {
    let ranks: Vec<Option<usize>> = s.mated.iter().map(|m| m.1).collect();
    let cmc = metrics::cmc(&ranks, MAX_RANK);
    let mated: Vec<(bool, f64)> = s.mated.iter().map(|m| (m.3, m.2)).collect();
    let nm: Vec<f64> = s.nonmated.iter().map(|n| n.1).collect();
    let at: Vec<FpirPoint> = FPIR_LEVELS
        .iter()
        .map(|&f| {
            let (fnir, t) = metrics::fnir_at_fpir(&mated, &nm, f);
            FpirPoint {
                fpir: f,
                fnir,
                threshold: to_score(t),
                supported_by_data: supported(nm.len(), f),
            }
        })
        .collect();
    OpenSet {
        mated_searches: s.mated.len(),
        nonmated_searches: s.nonmated.len(),
        rank1: cmc.first().copied().unwrap_or(f64::NAN),
        rank10: cmc.get(9).copied().unwrap_or(f64::NAN),
        cmc,
        fnir_at_fpir: at,
    }
}

pub fn run(home: &Path, a: ReportArgs) -> Result<i32> {
    let base = a.data.spec()?;
    let specs: Vec<EmbedSpec> = if a.compare.is_empty() {
        vec![base.clone()]
    } else {
        a.compare
            .iter()
            .map(|c| EmbedSpec::parse(c, &base))
            .collect::<Result<_>>()?
    };
    if !(a.group_fmr > 0.0 && a.group_fmr < 1.0 && a.group_fpir > 0.0 && a.group_fpir < 1.0) {
        bail!("--group-fmr and --group-fpir must lie strictly between 0 and 1");
    }
    let ds = Dataset::load(&a.data.images, a.data.max_identities)?;
    let attrs = a
        .attributes
        .as_ref()
        .map(|p| Attributes::load(p, &ds))
        .transpose()?;
    let proto = protocol(&ds, &a.data)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let files = ds.files();
    let mut packs = Vec::new();
    let mut det = Vec::new();
    let mut roc = Vec::new();
    let mut cmc_series = Vec::new();
    let mut size_series = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    for spec in &specs {
        let label = spec.label();
        let run = embed_all(home, spec, &files)?;
        let emb = &run.results;
        let (metric, cosine) = pack_metric(home, &spec.engine.pack)?;
        let to_score = move |d: f64| if cosine { 1.0 - d } else { d };
        let score = move |x: &[f32], y: &[f32]| dissimilarity(cosine, metric, x, y);
        let no_detect: Vec<&str> = ds
            .images
            .iter()
            .zip(emb)
            .filter(|(_, e)| e.embedding.is_some() && !e.detected)
            .map(|(im, _)| im.rel.as_str())
            .collect();
        let no_decode: Vec<DecodeFailure> = ds
            .images
            .iter()
            .zip(emb)
            .filter(|(_, e)| e.embedding.is_none())
            .map(|(im, e)| DecodeFailure {
                image: im.rel.clone(),
                error: e.error.clone(),
            })
            .collect();

        // 1:1
        let (set, ids) = score_set(&ds, emb, &proto, &score, &|_| true);
        if set.genuine.is_empty() || set.impostor.is_empty() {
            bail!("{label}: no genuine or no impostor comparisons to score");
        }
        let mut o2o = one_to_one(&set, ids, &a, &to_score);
        if let Some(folds) = &proto.folds {
            o2o.pairs_protocol = Some(fold_accuracy(folds, emb, &score));
        }
        let w = set.unit_weights();
        let (_, t_op) = metrics::fnmr_at_fmr(&set, &w, a.group_fmr);
        let pts = metrics::det_points(&set, 400);
        let marks = |tar: bool| -> Vec<(f64, f64, String)> {
            [1e-2, 1e-3]
                .iter()
                .filter(|f| supported(set.impostor.len(), **f))
                .map(|&f| {
                    let fnmr = metrics::fnmr_at_fmr(&set, &w, f).0;
                    let y = if tar { 1.0 - fnmr } else { fnmr };
                    (f, y, format!("{:.2}% @ {f:.0e}", y * 100.0))
                })
                .collect()
        };
        det.push(Series {
            name: label.clone(),
            points: pts.clone(),
            marks: marks(false),
        });
        roc.push(Series {
            name: label.clone(),
            points: pts.iter().map(|(f, n)| (*f, 1.0 - n)).collect(),
            marks: marks(true),
        });
        let hist_file = format!("hist-{label}.svg");
        std::fs::write(
            a.out.join(&hist_file),
            plot::histogram(&label, &set.genuine, &set.impostor, Some(t_op)),
        )?;

        // 1:N
        let split = split_1n(&ds, emb);
        let searches = search_1n(
            &ds,
            emb,
            &split.enrolled,
            &split.mated,
            &split.nonmated,
            cosine,
            None,
        )?;
        let o2n_all = open_set(&searches, &to_score);
        cmc_series.push(Series {
            name: label.clone(),
            points: o2n_all
                .cmc
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(r, v)| ((r + 1) as f64, *v))
                .collect(),
            marks: Vec::new(),
        });
        let mated_pairs: Vec<(bool, f64)> = searches.mated.iter().map(|m| (m.3, m.2)).collect();
        let nm_all: Vec<f64> = searches.nonmated.iter().map(|n| n.1).collect();
        let (_, t_1n) = metrics::fnir_at_fpir(&mated_pairs, &nm_all, a.group_fpir);
        // Growth with gallery size: seeded subsets of the enrolled people; mated searches of
        // people in the subset, the same non-mated searches throughout.
        let mut sizes: Vec<usize> = (2..)
            .map(|e| 10usize.pow(e))
            .take_while(|n| *n < split.enrolled.len())
            .collect();
        sizes.push(split.enrolled.len());
        let mut order = split.enrolled.clone();
        let mut rng = SplitMix::new(a.data.seed ^ 0x51ED);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let mut by_size = Vec::new();
        let mut size_pts = Vec::new();
        let mut subsets: Vec<(usize, Searches)> = Vec::new();
        for &n in &sizes {
            // The full gallery is the run above; only the subsets need searching again.
            let r = if n == split.enrolled.len() {
                o2n_all.clone()
            } else {
                let g: Vec<u32> = order[..n].to_vec();
                let in_g: HashSet<u32> =
                    g.iter().map(|i| ds.images[*i as usize].identity).collect();
                let mated: Vec<u32> = split
                    .mated
                    .iter()
                    .copied()
                    .filter(|m| in_g.contains(&ds.images[*m as usize].identity))
                    .collect();
                let s = search_1n(&ds, emb, &g, &mated, &split.nonmated, cosine, None)?;
                let r = open_set(&s, &to_score);
                subsets.push((n, s));
                r
            };
            size_pts.push((n as f64, r.fnir_at_1e2()));
            by_size.push(GallerySizePoint {
                gallery_size: n,
                mated_searches: r.mated_searches,
                nonmated_searches: r.nonmated_searches,
                rank1: r.rank1,
                fnir_at_fpir: r.fnir_at_fpir,
            });
        }
        size_series.push(Series {
            name: label.clone(),
            points: size_pts,
            marks: Vec::new(),
        });
        let runs: Vec<(usize, &Searches)> = subsets
            .iter()
            .map(|(n, s)| (*n, s))
            .chain(std::iter::once((split.enrolled.len(), &searches)))
            .collect();
        let scale = super::scale::gallery_scale(&super::scale::Inputs {
            ds: &ds,
            emb,
            split: &split,
            runs: &runs,
            dissimilarity: &score,
            to_score: &to_score,
            replicates: a.bootstrap,
            seed: a.data.seed,
        });

        // Per group
        let groups_json = match &attrs {
            Some(at) => super::groups::group_tables(
                &super::groups::Inputs {
                    ds: &ds,
                    emb,
                    proto: &proto,
                    score: &score,
                    to_score: &to_score,
                    searches: &searches,
                    t_op,
                    t_1n,
                    label: &label,
                    args: &a,
                },
                at,
                &mut warnings,
            )?,
            None => BTreeMap::new(),
        };

        packs.push(PackReport {
            label,
            pack: spec.engine.pack.clone(),
            flip: spec.flip,
            jitter: spec.jitter,
            metric: if cosine {
                "cosine (dissimilarity = 1 - cosine; thresholds are cosine similarity)"
            } else {
                "euclidean distance"
            }
            .into(),
            embedding: EmbeddingRun {
                computed: run.computed,
                from_cache: run.from_cache,
                seconds: run.seconds,
                workers: spec.workers,
            },
            failures_to_detect: no_detect.iter().map(|s| s.to_string()).collect(),
            failures_to_decode: no_decode,
            one_to_one: o2o,
            one_to_n: OneToN {
                gallery_size: split.enrolled.len(),
                all: o2n_all,
                by_gallery_size: by_size,
                scale,
                improvements: super::improve::improvements(
                    &ds,
                    emb,
                    &split,
                    cosine,
                    a.bootstrap,
                    a.data.seed,
                )?,
                cohort_by_size: super::improve::cohort_by_size(
                    &ds,
                    emb,
                    &split,
                    cosine,
                    &sizes
                        .iter()
                        .map(|n| order[..*n].to_vec())
                        .collect::<Vec<_>>(),
                )?,
            },
            operating_points: OperatingPoints {
                one_to_one: FmrThreshold {
                    fmr: a.group_fmr,
                    threshold: to_score(t_op),
                },
                one_to_n: FpirThreshold {
                    fpir: a.group_fpir,
                    threshold: to_score(t_1n),
                },
            },
            groups: groups_json,
            histogram: hist_file,
        });
    }

    let log_fmr = || Axis {
        label: "false match rate (FMR)".into(),
        log: true,
        min: 1e-6,
        max: 1.0,
    };
    let figures = [
        (
            "det.svg",
            Chart {
                title: "DET: FNMR against FMR (lower is better)".into(),
                x: log_fmr(),
                y: Axis {
                    label: "false non-match rate (FNMR)".into(),
                    log: true,
                    min: 1e-4,
                    max: 1.0,
                },
                series: det,
            },
        ),
        (
            "roc.svg",
            Chart {
                title: "ROC: TAR against FMR (higher is better)".into(),
                x: log_fmr(),
                y: Axis {
                    label: "true accept rate (1 - FNMR)".into(),
                    log: false,
                    min: 0.5,
                    max: 1.0,
                },
                series: roc,
            },
        ),
        (
            "cmc.svg",
            Chart {
                title: "CMC: mate within rank r (closed-set view of the mated searches)".into(),
                x: Axis {
                    label: "rank".into(),
                    log: false,
                    min: 1.0,
                    max: MAX_RANK as f64,
                },
                y: Axis {
                    label: "identification rate".into(),
                    log: false,
                    min: 0.5,
                    max: 1.0,
                },
                series: cmc_series,
            },
        ),
        (
            "gallery-size.svg",
            Chart {
                title: format!("FNIR at FPIR {:.0e} as the gallery grows", FPIR_LEVELS[1]),
                x: Axis {
                    label: "gallery size (people enrolled)".into(),
                    log: true,
                    min: 10.0,
                    max: 10f64.powi((ds.identities.len() as f64).log10().ceil() as i32),
                },
                y: Axis {
                    label: "FNIR".into(),
                    log: false,
                    min: 0.0,
                    max: 1.0,
                },
                series: size_series,
            },
        ),
    ];
    for (f, c) in &figures {
        std::fs::write(a.out.join(f), c.svg())?;
    }
    for (f, c) in super::scale::figures(&packs) {
        std::fs::write(a.out.join(f), c.svg())?;
    }
    let report = Report {
        facegate_version: env!("CARGO_PKG_VERSION").into(),
        dataset: DatasetInfo {
            images_dir: a.data.images.clone(),
            identities: ds.identities.len(),
            images: ds.images.len(),
            duplicates_left_out: ds.duplicates.clone(),
            attributes: a.attributes.clone(),
        },
        protocol: ProtocolInfo {
            one_to_one: proto.description.clone(),
            pairs_naming_missing_images: proto.missing.clone(),
            one_to_n: "people with 2+ images enrol the first and search with the rest (mated); people with one image alternate between enrolled distractor and non-mated search; exact search; gallery-size subsets are seeded samples of the enrolled people with the same non-mated searches".into(),
            threshold_rule: "match when dissimilarity <= t; FNMR at FMR only where impostor pairs x FMR >= 1; a 1:N candidate is returned when its dissimilarity is below the threshold".into(),
            intervals: format!("95% percentile bootstrap, {} replicates, identities resampled with replacement (impostor pairs weighted by both identities' draws)", a.bootstrap),
            groups: format!("per group: genuine and impostor pairs with both images in the group (same-group impostors, as in NIST's demographic reports), rates at the global threshold for FMR {:.0e}; 1:N searches by the probe's group at the global threshold for FPIR {:.0e}; differential = max/min across groups", a.group_fmr, a.group_fpir),
            seed: a.data.seed,
        },
        packs,
        warnings,
    };
    std::fs::write(
        a.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let page = html(&report, &mut |f| std::fs::read_to_string(a.out.join(f)))?;
    std::fs::write(a.out.join("report.html"), page)?;
    print!("{}", summary(&report));
    println!("wrote {}", a.out.join("report.html").display());
    Ok(0)
}
