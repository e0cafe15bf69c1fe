//! `facegate bench-gallery`: what the encrypted store costs. Bulk-enrols n random templates, then
//! times opening the store and decrypting every template into the search index (the start-up cost
//! of a server), and a full identify call (search + audit record, fsync included).

use anyhow::{Context as _, Result};
use clap::Args;
use gallery::crypto::{self, LocalKeyRing};
use gallery::store::system_clock;
use gallery::{Context, Metric, Policy, Role, Store};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct BenchGalleryArgs {
    /// Templates to enrol (one per subject).
    #[arg(long, default_value_t = 1_000_000)]
    pub n: usize,
    #[arg(long, default_value_t = 128)]
    pub dim: usize,
    /// Threads for decryption and search.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Where to build the store (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Index to load: exact (f32 templates in memory) or compact (int8 codes only; candidates
    /// re-scored from storage). The policy of a store kept with --dir is switched to it.
    #[arg(long, default_value = "exact", value_parser = ["exact", "compact"])]
    pub index: String,
}

pub fn run(a: BenchGalleryArgs) -> Result<i32> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads.max(1))
        .build_global()
        .context("thread pool")?;
    let tmp = tempfile::tempdir()?;
    let dir = a.dir.clone().unwrap_or_else(|| tmp.path().join("data"));
    // With --dir the store and its key are kept, and a second run only measures the load.
    let key_file = dir.with_extension("bench.key");
    let reuse = a.dir.is_some() && Store::exists(&dir) && key_file.exists();
    let key = if reuse {
        crypto::read_master_key_file(&key_file)?
    } else {
        let k = crypto::random_key()?;
        if a.dir.is_some() {
            crypto::write_master_key_file(&key_file, &k)?;
        }
        k
    };
    let ctx = Context::new("bench", Role::Admin, "benchmark");
    let policy = Policy {
        enrol_min_quality: Default::default(),
        purpose: "benchmark".into(),
        legal_basis: "none (synthetic data)".into(),
        retention_days: 30,
        threshold: Some(0.6),
        target_fmr: None,
        max_candidates: 10,
        search_roles: vec![Role::Admin],
        index: if a.index == "compact" {
            gallery::IndexChoice::Compact
        } else {
            gallery::IndexChoice::Exact
        },
        reference_case: gallery::ReferenceCase::Upper,
    };
    let mut x: u64 = 0x2545F4914F6CDD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let t = Instant::now();
    if !reuse {
        let store = Store::open(
            &dir,
            Box::new(LocalKeyRing::new(key.clone())),
            system_clock(),
        )?;
        store.create_gallery(&ctx, "bench", &policy)?;
        let mut done = 0;
        while done < a.n {
            let m = (a.n - done).min(20_000);
            let items: Vec<(String, Vec<Vec<f32>>)> = (0..m)
                .map(|i| {
                    (
                        format!("S{:09}", done + i),
                        vec![(0..a.dim).map(|_| next()).collect()],
                    )
                })
                .collect();
            store.enrol_batch(&ctx, "bench", &items, Metric::Euclidean, "bench")?;
            done += m;
            eprint!("\renrolled {done}/{}", a.n);
        }
        eprintln!();
    }
    let enrol_s = t.elapsed().as_secs_f64();
    let disk: u64 = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok()?.metadata().ok().map(|m| m.len()))
        .sum();
    let t = Instant::now();
    let store = Store::open(&dir, Box::new(LocalKeyRing::new(key)), system_clock())?;
    let open_s = t.elapsed().as_secs_f64();
    if reuse && store.gallery("bench")?.policy.index != policy.index {
        store.update_policy(&ctx, "bench", &policy, None)?;
    }
    let anon_before = crate::cmd_bench::rss_anon_mb();
    let t = Instant::now();
    let (templates, memory, locked) = store.preload("bench")?;
    let load_s = t.elapsed().as_secs_f64();
    let anon_after = crate::cmd_bench::rss_anon_mb();
    let mut lat = Vec::new();
    for _ in 0..20 {
        let probe: Vec<f32> = (0..a.dim).map(|_| next()).collect();
        let t = Instant::now();
        store.identify(&ctx, "bench", &probe, None, 0.6)?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "n": a.n, "dim": a.dim, "threads": a.threads,
            "bulk_enrol_s": enrol_s, "bulk_enrol_per_s": a.n as f64 / enrol_s,
            "disk_mb": disk as f64 / 1e6,
            "open_s": open_s,
            "load_decrypt_s": load_s, "templates_loaded": templates,
            "index": a.index,
            "index_memory_mb": memory as f64 / 1e6, "memory_locked": locked,
            "index_bytes_per_template": memory as f64 / templates.max(1) as f64,
            "heap_before_load_mib": anon_before,
            "heap_after_load_mib": anon_after,
            "peak_rss_incl_mapped_db_mib": crate::cmd_bench::peak_rss_mb(),
            "identify_ms_median": lat[lat.len() / 2],
            "identify_note": "full call: transform, exact search, reference decryption, audit record with fsync",
        })
    );
    Ok(0)
}
