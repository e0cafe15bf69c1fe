//! `facegate bench-search`: exact top-k speed of the gallery index on raw f32 files, the same files
//! scripts/bench_search_faiss.py gives FAISS, so both run on identical data, k and threads.

use anyhow::{bail, Context, Result};
use clap::Args;
use gallery::approx::{HnswIndex, HnswParams};
use gallery::index::{ExactIndex, SearchIndex};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct BenchSearchArgs {
    /// Gallery vectors: raw little-endian f32, n × dim.
    #[arg(long)]
    pub base: PathBuf,
    /// Query vectors: raw little-endian f32, q × dim.
    #[arg(long)]
    pub queries: PathBuf,
    #[arg(long)]
    pub dim: usize,
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Search threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Queries per batch for the throughput figure.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Exact neighbours (raw little-endian i64, q × k) to report recall@k against.
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Single queries timed one by one for the latency figure.
    #[arg(long, default_value_t = 50)]
    pub single: usize,
    /// exact (default) or hnsw.
    #[arg(long, default_value = "exact", value_parser = ["exact", "hnsw"])]
    pub index: String,
    /// HNSW efSearch.
    #[arg(long, default_value_t = 128)]
    pub ef_search: usize,
}

fn read_f32(path: &Path, dim: usize) -> Result<Vec<f32>> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if b.len() % (4 * dim) != 0 {
        bail!(
            "{} is not a whole number of {dim}-D f32 vectors",
            path.display()
        );
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

pub fn run(a: BenchSearchArgs) -> Result<i32> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads.max(1))
        .build_global()
        .context("thread pool")?;
    let base = read_f32(&a.base, a.dim)?;
    let queries = read_f32(&a.queries, a.dim)?;
    let n = base.len() / a.dim;
    let t = Instant::now();
    let idx: Box<dyn SearchIndex> = if a.index == "hnsw" {
        let params = HnswParams {
            ef_search: a.ef_search,
            ..Default::default()
        };
        let mut h = HnswIndex::new(a.dim, params, n);
        let rows: Vec<(u64, &[f32], i64)> = base
            .chunks_exact(a.dim)
            .enumerate()
            .map(|(i, x)| (i as u64, x, i64::MAX))
            .collect();
        h.extend(&rows);
        Box::new(h)
    } else {
        let mut e = ExactIndex::new(a.dim);
        e.reserve(n);
        for (i, x) in base.chunks_exact(a.dim).enumerate() {
            e.push(i as u64, x, i64::MAX);
        }
        Box::new(e)
    };
    let build_s = t.elapsed().as_secs_f64();
    let exhaustive = |q: &[f32]| -> Vec<gallery::index::Hit> {
        // Same scoring function as both indexes: q·x − |x|²/2 in f32, over the original data.
        let mut all: Vec<(usize, f32)> = base
            .chunks_exact(a.dim)
            .enumerate()
            .map(|(i, x)| {
                let hn = (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / 2.0) as f32;
                (i, gallery::index::dot_f32(q, x) - hn)
            })
            .collect();
        all.sort_by(|p, q| q.1.total_cmp(&p.1).then(p.0.cmp(&q.0)));
        all.truncate(a.k);
        all.into_iter()
            .map(|(i, s)| {
                let x = &base[i * a.dim..(i + 1) * a.dim];
                gallery::index::Hit {
                    id: i as u64,
                    dot: gallery::index::dot_f32(q, x),
                    score: s,
                }
            })
            .collect()
    };
    let qs: Vec<&[f32]> = queries.chunks_exact(a.dim).collect();
    let batch = &qs[..a.batch.min(qs.len())];
    idx.search(&batch[..1], a.k, None, 0); // warm-up
    let t = Instant::now();
    let results = idx.search(batch, a.k, None, 0);
    let batch_s = t.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = qs
        .iter()
        .take(a.single)
        .map(|q| {
            let t = Instant::now();
            idx.search(&[q], a.k, None, 0);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    // Exactness: the index must return what an exhaustive f32 scan returns (for hnsw: how often).
    let exact_checked = batch.len().min(8);
    let exact_equal = (0..exact_checked).all(|i| results[i] == exhaustive(batch[i]));
    let recall1 = match &a.truth {
        Some(p) => {
            let b = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let truth: Vec<i64> = b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect();
            let hit = results
                .iter()
                .enumerate()
                .filter(|(qi, r)| r.first().is_some_and(|h| h.id as i64 == truth[qi * a.k]))
                .count();
            Some(hit as f64 / results.len().max(1) as f64)
        }
        None => None,
    };
    let recall = match &a.truth {
        Some(p) => {
            let b = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let truth: Vec<i64> = b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect();
            let mut hit = 0usize;
            for (qi, r) in results.iter().enumerate() {
                let want = &truth[qi * a.k..(qi + 1) * a.k];
                hit += r.iter().filter(|h| want.contains(&(h.id as i64))).count();
            }
            Some(hit as f64 / (results.len() * a.k) as f64)
        }
        None => None,
    };
    let out = json!({
        "engine": "facegate",
        "index": idx.kind(),
        "kernel": if a.index == "hnsw" { format!("hnsw_rs M={} efC={} efS={}", HnswParams::default().m, HnswParams::default().ef_construction, a.ef_search) } else { ExactIndex::new(a.dim).kernel_name().to_string() },
        "recall_at_1": recall1,
        "n": n, "dim": a.dim, "k": a.k, "threads": a.threads,
        "batch": batch.len(),
        "batch_qps": batch.len() as f64 / batch_s,
        "single_ms_median": lat.get(lat.len() / 2).copied(),
        "single_ms_p99": lat.get(lat.len() * 99 / 100).copied(),
        "recall_at_k": recall,
        "equals_exhaustive_f32": exact_equal,
        "build_s": build_s,
        "memory_mb": idx.memory_bytes() as f64 / 1e6,
    });
    println!("{out}");
    Ok(0)
}
