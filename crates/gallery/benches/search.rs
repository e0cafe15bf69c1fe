//! `cargo bench -p facegate-gallery`: exact 1:N search (10^5 × 128, top-10) single query and a
//! batch of 64, against a plain f32 scan of the same data; and sealing/opening a template.
//! Threads: rayon's default (all cores); set RAYON_NUM_THREADS=1 for one. FAISS side by side:
//! scripts/bench_search_faiss.py.
#![allow(clippy::unwrap_used)] // tests and benchmarks stop at the first surprise

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use gallery::index::{dot_f32, ExactIndex};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::hint::black_box;

#[path = "../../cli/src/machine.rs"]
mod machine;

fn unit_vectors(n: usize, dim: usize, seed: u8) -> Vec<Vec<f32>> {
    let mut rng = ChaCha20Rng::from_seed([seed; 32]);
    (0..n)
        .map(|_| {
            let v: Vec<f32> = (0..dim)
                .map(|_| (rng.next_u32() as f32 / u32::MAX as f32) - 0.5)
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect()
}

fn search(c: &mut Criterion) {
    let (n, dim) = (100_000, 128);
    let data = unit_vectors(n, dim, 1);
    let queries = unit_vectors(64, dim, 2);
    let mut idx = ExactIndex::new(dim);
    idx.reserve(n);
    for (i, v) in data.iter().enumerate() {
        idx.push(i as u64, v, i64::MAX);
    }
    let mut g = c.benchmark_group(format!(
        "exact_search_{n}x{dim}_top10_{}",
        idx.kernel_name()
    ));
    g.sample_size(20);
    let q1: Vec<&[f32]> = vec![&queries[0]];
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("facegate", "1 query"), |b| {
        b.iter(|| black_box(idx.search(black_box(&q1), 10, None, 0)))
    });
    g.bench_function(BenchmarkId::new("f32 scan (baseline)", "1 query"), |b| {
        b.iter(|| {
            let mut best: Vec<(f32, usize)> = data
                .iter()
                .enumerate()
                .map(|(i, x)| (dot_f32(&queries[0], x), i))
                .collect();
            best.select_nth_unstable_by(10, |a, b| b.0.total_cmp(&a.0));
            best.truncate(10);
            black_box(best)
        })
    });
    let q64: Vec<&[f32]> = queries.iter().map(|q| q.as_slice()).collect();
    g.throughput(Throughput::Elements(64));
    g.bench_function(BenchmarkId::new("facegate", "64 queries"), |b| {
        b.iter(|| black_box(idx.search(black_box(&q64), 10, None, 0)))
    });
    g.finish();
}

fn sealing(c: &mut Criterion) {
    let key = gallery::crypto::random_key().expect("key");
    let template: Vec<u8> = unit_vectors(1, 128, 3)[0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let sealed = gallery::crypto::seal(&key, b"aad", &template).expect("seal");
    let mut g = c.benchmark_group("template_seal_open_128d");
    g.bench_function("seal", |b| {
        b.iter(|| black_box(gallery::crypto::seal(&key, b"aad", black_box(&template))))
    });
    g.bench_function("open", |b| {
        b.iter(|| black_box(gallery::crypto::open(&key, b"aad", black_box(&sealed))))
    });
    g.finish();
}

criterion_group!(benches, search, sealing);

fn main() {
    // criterion_main!, with the machine line every facegate benchmark prints first.
    println!(
        "machine: {}; threads: {}; method: Criterion, time per iteration",
        machine::describe(),
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all cores (rayon default)".into())
    );
    benches();
    Criterion::default().configure_from_args().final_summary();
}
