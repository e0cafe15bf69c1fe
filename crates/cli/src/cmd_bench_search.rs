//! `facegate bench-search`: exact top-k speed of the gallery index on raw f32 files, the same files
//! scripts/bench_search_faiss.py gives FAISS, so both run on identical data, k and threads.

use anyhow::{bail, Context, Result};
use clap::Args;
use gallery::index::ExactIndex;
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
    let mut idx = ExactIndex::new(a.dim);
    idx.reserve(n);
    for (i, x) in base.chunks_exact(a.dim).enumerate() {
        idx.push(i as u64, x, i64::MAX);
    }
    let build_s = t.elapsed().as_secs_f64();
    drop(base);
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
    // Exactness: the int8 scan must return what an exhaustive f32 scan returns.
    let exact_checked = batch.len().min(8);
    let exact_equal =
        (0..exact_checked).all(|i| results[i] == idx.search_exhaustive(batch[i], a.k, None, 0));
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
        "kernel": idx.kernel_name(),
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
