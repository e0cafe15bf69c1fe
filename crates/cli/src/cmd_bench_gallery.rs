//! `facegate bench-gallery`: what the encrypted store costs. Bulk-enrols n random templates, then
//! times opening the store and decrypting every template into the search index (the start-up cost
//! of a server), a full identify call (search + audit record, fsync included), single
//! enrolments and erasures, and — with a second store on the same storage standing for another
//! node — what a search costs when it first follows another node's change. `--store` runs it
//! on PostgreSQL instead of the embedded SQLite files.

use anyhow::{Context as _, Result};
use app::data::Storage;
use clap::Args;
use gallery::crypto::{self, LocalKeyRing};
use gallery::store::system_clock;
use gallery::{Context, Enrolment, Metric, Policy, Role, Store};
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
    /// Build the gallery in PostgreSQL (an empty database) instead of a data directory.
    #[arg(long = "on-postgres")]
    pub postgres: Option<String>,
    /// The PostgreSQL key store (default: the --on-postgres database name with `_keys`).
    #[arg(long = "on-postgres-keys")]
    pub postgres_keys: Option<String>,
    /// Single enrolment/erasure cycles timed, each followed by a search on the second store.
    #[arg(long, default_value_t = 100)]
    pub cycles: usize,
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
    let storage = match &a.postgres {
        Some(url) => Storage::postgres(url, a.postgres_keys.as_deref())?,
        None => Storage::Embedded,
    };
    let embedded = storage == Storage::Embedded;
    // With --dir and its key file, a store built before (or migrated to PostgreSQL) is reused.
    let reuse = a.dir.is_some() && key_file.exists() && (!embedded || Store::exists(&dir));
    let open = |key: &crypto::SecretKey| -> Result<Store> {
        Ok(Store::with_backend(
            &dir,
            storage.backend(&dir)?,
            Box::new(LocalKeyRing::new(key.clone())),
            system_clock(),
        )?)
    };
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
        fpir_target: None,
        template_fusion: Default::default(),
        cohort: None,
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
    // Enrolled templates and the later probes come from two sequences, so a reused store's
    // probes are never copies of its enrolled templates.
    let xorshift = |mut x: u64| {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        }
    };
    let mut next = xorshift(0x2545F4914F6CDD1D);
    let mut fresh = xorshift(0x9E3779B97F4A7C15);
    let t = Instant::now();
    if !reuse {
        let store = open(&key)?;
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
    let store = open(&key)?;
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
        let probe: Vec<f32> = (0..a.dim).map(|_| fresh()).collect();
        let t = Instant::now();
        store.identify(&ctx, "bench", &probe, None, 0.6)?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    // Another node (a second store on the same storage) has the gallery loaded; this one enrols
    // a subject, the other searches; this one erases it, the other searches again. The other's
    // first search after each change follows it (that search is the change's "lag": no search
    // runs on an index older than the database).
    let other = open(&key)?;
    other.preload("bench")?;
    let (mut enrol_ms, mut delete_ms, mut follow_ms, mut steady_ms) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for c in 0..a.cycles {
        let reference = format!("CYCLE{c:07}");
        let t_ = (0..a.dim).map(|_| fresh()).collect::<Vec<f32>>();
        let t = Instant::now();
        enrol_one(&store, &ctx, &reference, &t_)?;
        enrol_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let r = other.identify(&ctx, "bench", &t_, Some(1), 0.6)?;
        follow_ms.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            r.candidates
                .first()
                .is_some_and(|c| c.reference == reference),
            "the other store did not find a subject enrolled before its search (it returned {:?}; reloads and follows {:?})",
            r.candidates.iter().map(|c| (&c.reference, c.score)).collect::<Vec<_>>(),
            other.load_stats()
        );
        let t = Instant::now();
        other.identify(&ctx, "bench", &t_, Some(1), 0.6)?;
        steady_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        store.delete(&ctx, "bench", &reference, "benchmark")?;
        delete_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let r = other.identify(&ctx, "bench", &t_, Some(1), 0.6)?;
        follow_ms.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            r.candidates.iter().all(|c| c.reference != reference),
            "the other store returned a subject erased before its search"
        );
    }
    let (reloads, followed) = other.load_stats();
    // On PostgreSQL the other node also listens to the change feed: how long from a change's
    // acknowledgement on this node until the other node's index has applied it, with no search
    // asking (the change-feed lag), and what the other's first search costs then.
    let (mut lag_ms, mut notified_search_ms) = (Vec::new(), Vec::new());
    if !embedded {
        lag_ms = change_feed_lag(
            &store,
            &other,
            &ctx,
            a.cycles,
            &mut || (0..a.dim).map(|_| fresh()).collect(),
            &mut notified_search_ms,
        )?;
    }
    let pct = |v: &mut Vec<f64>, q: f64| -> f64 {
        v.sort_by(f64::total_cmp);
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "{}",
        json!({
            "machine": crate::machine::describe(),
            "n": a.n, "dim": a.dim, "threads": a.threads,
            "bulk_enrol_s": enrol_s, "bulk_enrol_per_s": a.n as f64 / enrol_s,
            "disk_mb": if embedded { json!(disk as f64 / 1e6) } else { json!(null) },
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
            "storage": if embedded { "embedded sqlite" } else { "postgresql" },
            "cycles": a.cycles,
            "enrol_one_ms_p50": pct(&mut enrol_ms, 0.5), "enrol_one_ms_p99": pct(&mut enrol_ms, 0.99),
            "erase_one_ms_p50": pct(&mut delete_ms, 0.5), "erase_one_ms_p99": pct(&mut delete_ms, 0.99),
            "other_node_search_after_change_ms_p50": pct(&mut follow_ms, 0.5),
            "other_node_search_after_change_ms_p99": pct(&mut follow_ms, 0.99),
            "other_node_search_steady_ms_p50": pct(&mut steady_ms, 0.5),
            "other_node_reloads": reloads, "other_node_changes_followed": followed,
            "change_feed_lag_ms_p50": if embedded { json!(null) } else { json!(pct(&mut lag_ms, 0.5)) },
            "change_feed_lag_ms_p99": if embedded { json!(null) } else { json!(pct(&mut lag_ms, 0.99)) },
            "change_feed_lag_ms_max": if embedded { json!(null) } else { json!(pct(&mut lag_ms, 1.0)) },
            "change_feed_applied_before_ack": if embedded { json!(null) } else { json!(lag_ms.iter().filter(|l| **l == 0.0).count()) },
            "change_feed_changes": if embedded { json!(null) } else { json!(lag_ms.len()) },
            "other_node_search_after_notified_change_ms_p50": if embedded { json!(null) } else { json!(pct(&mut notified_search_ms, 0.5)) },
            "change_feed_note": if embedded { "SQLite has no change feed: another process follows a change at its next search" } else { "lag: from this node's acknowledgement of an enrolment or erasure until the other node's index has applied it (LISTEN/NOTIFY, then the change read and the subject's templates opened), polled every 50 us, no search on the other node meanwhile; 0 when the other node had applied it before the acknowledgement returned (notices go out at commit, the acknowledgement after the writer's own index and audit mirror are updated)" },
        })
    );
    Ok(0)
}

/// One subject with one template into the benchmark's gallery.
fn enrol_one(store: &Store, ctx: &Context, reference: &str, template: &[f32]) -> Result<()> {
    store.enrol(
        ctx,
        "bench",
        reference,
        &[template.to_vec()],
        Metric::Euclidean,
        "bench",
        &Enrolment::default(),
    )?;
    Ok(())
}

/// Cycles of enrol-then-erase on `store` while `other` follows the change feed on a thread of its
/// own; returns each change's lag (ms) until `other`'s index reached the change's generation,
/// and pushes the cost of `other`'s first search after each enrolment to `search_ms`.
fn change_feed_lag(
    store: &Store,
    other: &Store,
    ctx: &Context,
    cycles: usize,
    template: &mut dyn FnMut() -> Vec<f32>,
    search_ms: &mut Vec<f64>,
) -> Result<Vec<f64>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| -> Result<Vec<f64>> {
        let follower = sc.spawn(|| {
            other.follow_notices(&stop, Duration::from_millis(200), &mut |e| {
                eprintln!("change feed: {e}")
            })
        });
        let measured = (|| -> Result<Vec<f64>> {
            let mut lag = Vec::new();
            // The feed opens on the follower's thread; give it a moment before the first change.
            std::thread::sleep(Duration::from_millis(500));
            let wait_for = |g: i64| -> Result<f64> {
                let t = Instant::now();
                if other.loaded_generation("bench") == Some(g) {
                    return Ok(0.0);
                }
                while other.loaded_generation("bench") != Some(g) {
                    anyhow::ensure!(
                        t.elapsed() < Duration::from_secs(10),
                        "the other node did not apply generation {g} within 10 s (at {:?})",
                        other.loaded_generation("bench")
                    );
                    std::thread::sleep(Duration::from_micros(50));
                }
                Ok(t.elapsed().as_secs_f64() * 1e3)
            };
            for c in 0..cycles {
                let reference = format!("FEED{c:07}");
                let t_ = template();
                enrol_one(store, ctx, &reference, &t_)?;
                let g = store
                    .loaded_generation("bench")
                    .context("the enrolling node has the gallery loaded")?;
                lag.push(wait_for(g)?);
                let t = Instant::now();
                let r = other.identify(ctx, "bench", &t_, Some(1), 0.6)?;
                search_ms.push(t.elapsed().as_secs_f64() * 1e3);
                anyhow::ensure!(
                    r.candidates
                        .first()
                        .is_some_and(|c| c.reference == reference),
                    "the other node did not find a subject it had been notified of"
                );
                store.delete(ctx, "bench", &reference, "benchmark")?;
                let g = store
                    .loaded_generation("bench")
                    .context("the erasing node has the gallery loaded")?;
                lag.push(wait_for(g)?);
            }
            Ok(lag)
        })();
        stop.store(true, Ordering::Relaxed);
        let has_feed = follower
            .join()
            .map_err(|_| anyhow::anyhow!("the change follower panicked"))?;
        anyhow::ensure!(has_feed, "this store has no change feed");
        measured
    })
}
