//! Quick look at exact-search speed on random data: `cargo run --release --example search_speed -- N DIM Q THREADS`.
#![allow(clippy::unwrap_used)] // a measuring script stops at the first surprise
use gallery::index::ExactIndex;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (n, dim, nq, threads) = (a[0], a[1], a[2], a[3]);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .unwrap();
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let mut g = || {
        let u1 = ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = ((rng.next_u64() >> 11) as f64) / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    };
    let mut unit = |d: usize| {
        let v: Vec<f32> = (0..d).map(|_| g()).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect::<Vec<f32>>()
    };
    let mut idx = ExactIndex::new(dim);
    idx.reserve(n);
    for i in 0..n {
        idx.push(i as u64, &unit(dim), i64::MAX);
    }
    let qs: Vec<Vec<f32>> = (0..nq).map(|_| unit(dim)).collect();
    let qr: Vec<&[f32]> = qs.iter().map(|q| q.as_slice()).collect();
    let t = std::time::Instant::now();
    let res = idx.search(&qr, 10, None, 0);
    let dt = t.elapsed().as_secs_f64();
    println!("kernel {}", idx.kernel_name());
    println!("batch {nq}: {:.1} ms, {:.1} QPS", dt * 1e3, nq as f64 / dt);
    let t = std::time::Instant::now();
    for q in qr.iter().take(10) {
        idx.search(&[q], 10, None, 0);
    }
    println!(
        "single: {:.2} ms/query",
        t.elapsed().as_secs_f64() * 1e3 / 10.0
    );
    let t = std::time::Instant::now();
    let ex = idx.search_exhaustive(qr[0], 10, None, 0);
    println!(
        "exhaustive f32 one query: {:.1} ms; equal: {}",
        t.elapsed().as_secs_f64() * 1e3,
        ex == res[0]
    );
}
