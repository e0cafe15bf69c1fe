//! `facegate eval report`: 1:1 error rates of one or more packs on an identity/image directory,
//! written as report.json (every number), det.svg and per-pack score histograms (SVG), and a
//! self-contained report.html, with a short summary on the terminal.
//!
//! Pairs: every genuine pair within an identity, and a seeded sample of impostor pairs across
//! identities. Scores are dissimilarities (distance, or 1 − cosine), so one threshold rule serves
//! every pack: a pair matches when d ≤ t.

use crate::engine::{load, EngineArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct ReportArgs {
    /// Directory of identity/image folders (LFW layout).
    #[arg(long)]
    pub images: PathBuf,
    /// Where report.html, report.json and the figures go.
    #[arg(long)]
    pub out: PathBuf,
    /// Packs to compare (repeat). Default: dlib.
    #[arg(long = "compare")]
    pub packs: Vec<String>,
    /// Impostor pairs sampled (seeded).
    #[arg(long, default_value_t = 200_000)]
    pub impostors: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Use only the first N identities (sorted), for quick checks.
    #[arg(long)]
    pub max_identities: Option<usize>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// FMR and FNMR at threshold `t` (match when d ≤ t).
pub fn rates(genuine: &[f64], impostor: &[f64], t: f64) -> (f64, f64) {
    let fm = impostor.iter().filter(|d| **d <= t).count() as f64 / impostor.len().max(1) as f64;
    let fnm = genuine.iter().filter(|d| **d > t).count() as f64 / genuine.len().max(1) as f64;
    (fm, fnm)
}

/// The largest threshold whose FMR is at most `fmr`, and the FNMR there.
pub fn fnmr_at_fmr(genuine: &[f64], impostor_sorted: &[f64], fmr: f64) -> (f64, f64) {
    let allowed = (fmr * impostor_sorted.len() as f64).floor() as usize;
    // Thresholds just below the (allowed+1)-th smallest impostor distance let `allowed` through.
    let t = match impostor_sorted.get(allowed) {
        Some(&d) => prev_f64(d),
        None => f64::INFINITY,
    };
    (rates(genuine, impostor_sorted, t).1, t)
}

fn prev_f64(x: f64) -> f64 {
    if x > 0.0 {
        f64::from_bits(x.to_bits() - 1)
    } else if x == 0.0 {
        -f64::MIN_POSITIVE
    } else {
        f64::from_bits(x.to_bits() + 1)
    }
}

/// Equal error rate: the point where FMR and FNMR cross (mean of the two at the closest threshold).
pub fn eer(genuine: &[f64], impostor: &[f64]) -> (f64, f64) {
    let mut ts: Vec<f64> = genuine.iter().chain(impostor).copied().collect();
    ts.sort_by(f64::total_cmp);
    ts.dedup();
    let mut best = (f64::INFINITY, 0.0, 0.0);
    for t in ts {
        let (fm, fnm) = rates(genuine, impostor, t);
        if (fm - fnm).abs() < best.0 {
            best = ((fm - fnm).abs(), (fm + fnm) / 2.0, t);
        }
    }
    (best.1, best.2)
}

/// DET points (FMR, FNMR) at every distinct impostor distance (thinned to ~400 points).
fn det_points(genuine: &[f64], impostor_sorted: &[f64]) -> Vec<(f64, f64)> {
    let mut g = genuine.to_vec();
    g.sort_by(f64::total_cmp);
    let step = (impostor_sorted.len() / 400).max(1);
    let mut pts = Vec::new();
    for (i, t) in impostor_sorted.iter().enumerate().step_by(step) {
        let fm = (i + 1) as f64 / impostor_sorted.len() as f64;
        let above = g.len() - g.partition_point(|d| d <= t);
        pts.push((fm, above as f64 / g.len().max(1) as f64));
    }
    pts
}

/// One curve of the DET plot: pack name, (FMR, FNMR) points, marked operating points.
type DetSeries = (String, Vec<(f64, f64)>, Vec<(f64, f64)>);

fn svg_det(series: &[DetSeries]) -> String {
    // Log-log DET plot; axes 1e-6..1 (FMR) and 1e-4..1 (FNMR). Operating points are marked.
    let (w, h, l, b, r, t) = (720.0, 480.0, 70.0, 50.0, 20.0, 30.0);
    let x = |v: f64| l + (v.max(1e-6).log10() + 6.0) / 6.0 * (w - l - r);
    let y = |v: f64| t + (1.0 - (v.max(1e-4).log10() + 4.0) / 4.0) * (h - t - b);
    let colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];
    let mut s = format!("<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>");
    let _ = write!(s, "<rect width='{w}' height='{h}' fill='white'/>");
    for e in -6..=0 {
        let xv = x(10f64.powi(e));
        let _ = write!(s, "<line x1='{xv}' y1='{t}' x2='{xv}' y2='{}' stroke='#ddd'/><text x='{xv}' y='{}' text-anchor='middle'>1e{e}</text>", h - b, h - b + 16.0);
    }
    for e in -4..=0 {
        let yv = y(10f64.powi(e));
        let _ = write!(s, "<line x1='{l}' y1='{yv}' x2='{}' y2='{yv}' stroke='#ddd'/><text x='{}' y='{}' text-anchor='end'>1e{e}</text>", w - r, l - 6.0, yv + 4.0);
    }
    let _ = write!(
        s,
        "<text x='{}' y='{}' text-anchor='middle'>false match rate (FMR)</text>",
        (l + w - r) / 2.0,
        h - 10.0
    );
    let _ = write!(s, "<text x='16' y='{}' transform='rotate(-90 16 {})' text-anchor='middle'>false non-match rate (FNMR)</text>", (t + h - b) / 2.0, (t + h - b) / 2.0);
    for (i, (name, pts, ops)) in series.iter().enumerate() {
        let c = colours[i % colours.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|(fm, fnm)| format!("{:.1},{:.1}", x(*fm), y(*fnm)))
            .collect();
        let _ = write!(
            s,
            "<polyline fill='none' stroke='{c}' stroke-width='2' points='{}'/>",
            path.join(" ")
        );
        for (fm, fnm) in ops {
            let _ = write!(s, "<circle cx='{:.1}' cy='{:.1}' r='4' fill='{c}'/><text x='{:.1}' y='{:.1}' fill='{c}'>{:.1}% @ {fm:.0e}</text>", x(*fm), y(*fnm), x(*fm) + 6.0, y(*fnm) - 6.0, fnm * 100.0);
        }
        let _ = write!(s, "<rect x='{}' y='{}' width='14' height='4' fill='{c}'/><text x='{}' y='{}'>{name}</text>", w - 240.0, t + 10.0 + 18.0 * i as f64, w - 220.0, t + 15.0 + 18.0 * i as f64);
    }
    s.push_str("</svg>");
    s
}

fn svg_hist(name: &str, genuine: &[f64], impostor: &[f64]) -> String {
    let (w, h, l, b) = (720.0, 260.0, 50.0, 40.0);
    let all = genuine.iter().chain(impostor);
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, z), v| {
        (a.min(*v), z.max(*v))
    });
    let bins = 50usize;
    let span = (hi - lo).max(1e-9);
    let hist = |v: &[f64]| {
        let mut c = vec![0f64; bins];
        for d in v {
            c[(((d - lo) / span) * bins as f64)
                .floor()
                .clamp(0.0, bins as f64 - 1.0) as usize] += 1.0;
        }
        let n = v.len().max(1) as f64;
        c.into_iter().map(|x| x / n).collect::<Vec<_>>()
    };
    let (g, i) = (hist(genuine), hist(impostor));
    let top = g.iter().chain(&i).cloned().fold(0.0, f64::max).max(1e-9);
    let bw = (w - l - 10.0) / bins as f64;
    let mut s = format!("<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'><rect width='{w}' height='{h}' fill='white'/>");
    for (k, (gv, iv)) in g.iter().zip(&i).enumerate() {
        let x0 = l + k as f64 * bw;
        let gh = gv / top * (h - b - 20.0);
        let ih = iv / top * (h - b - 20.0);
        let _ = write!(s, "<rect x='{x0:.1}' y='{:.1}' width='{:.1}' height='{gh:.1}' fill='#2ca02c' fill-opacity='0.6'/>", h - b - gh, bw);
        let _ = write!(s, "<rect x='{x0:.1}' y='{:.1}' width='{:.1}' height='{ih:.1}' fill='#d62728' fill-opacity='0.6'/>", h - b - ih, bw);
    }
    let _ = write!(
        s,
        "<text x='{l}' y='{}'>{lo:.3}</text><text x='{}' y='{}' text-anchor='end'>{hi:.3}</text>",
        h - b + 16.0,
        w - 10.0,
        h - b + 16.0
    );
    let _ = write!(s, "<text x='{}' y='{}' text-anchor='middle'>{name}: dissimilarity (green genuine, red impostor; share of pairs per bin)</text></svg>", w / 2.0, h - 8.0);
    s
}

pub fn run(home: &Path, a: ReportArgs) -> Result<i32> {
    let packs = if a.packs.is_empty() {
        vec![a.engine.pack.clone()]
    } else {
        a.packs.clone()
    };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&a.images)
        .with_context(|| format!("reading {}", a.images.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    if let Some(m) = a.max_identities {
        dirs.truncate(m);
    }
    let mut images: Vec<(usize, PathBuf)> = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        images.extend(v.into_iter().map(|p| (i, p)));
    }
    if images.len() < 2 || dirs.len() < 2 {
        bail!(
            "need at least two identities with images under {}",
            a.images.display()
        );
    }
    // Pairs once, shared by every pack: all genuine, and a seeded impostor sample.
    let mut genuine_pairs = Vec::new();
    for i in 0..images.len() {
        for j in i + 1..images.len() {
            if images[i].0 == images[j].0 {
                genuine_pairs.push((i, j));
            } else {
                break;
            }
        }
    }
    let mut x = a.seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut rnd = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let mut impostor_pairs = std::collections::HashSet::new();
    let target = a
        .impostors
        .min(images.len() * (images.len() - 1) / 2 - genuine_pairs.len());
    while impostor_pairs.len() < target {
        let (i, j) = (rnd(images.len()), rnd(images.len()));
        if images[i].0 != images[j].0 {
            impostor_pairs.insert((i.min(j), i.max(j)));
        }
    }
    let impostor_pairs: Vec<(usize, usize)> = impostor_pairs.into_iter().collect();
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut results = Vec::new();
    let mut series = Vec::new();
    let mut hists = Vec::new();
    for pack in &packs {
        let mut engine = a.engine.clone();
        engine.pack = pack.clone();
        let p = load(home, &engine)?;
        let cosine = !vision::pipeline::is_match(p.metric(), 0.0, 1.0);
        let bar = indicatif::ProgressBar::new(images.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos}/{len} images ({eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!("embedding ({pack})"));
        let mut misses = 0usize;
        let mut emb = Vec::with_capacity(images.len());
        for (_, path) in &images {
            emb.push(
                crate::cmd_eval::embedding_for(&p, path, false, &mut misses)
                    .with_context(|| format!("{}", path.display()))?,
            );
            bar.inc(1);
        }
        bar.finish_and_clear();
        let d = |(i, j): &(usize, usize)| -> f64 {
            let s = vision::pipeline::compare(p.metric(), &emb[*i], &emb[*j]);
            if cosine {
                1.0 - s
            } else {
                s
            }
        };
        let genuine: Vec<f64> = genuine_pairs.iter().map(d).collect();
        let mut impostor: Vec<f64> = impostor_pairs.iter().map(d).collect();
        impostor.sort_by(f64::total_cmp);
        let (eer_v, eer_t) = eer(&genuine, &impostor);
        let mut ops = Vec::new();
        let mut op_pts = Vec::new();
        for e in 1..=6 {
            let fmr = 10f64.powi(-e);
            let supported = impostor.len() as f64 * fmr >= 1.0;
            let (fnmr, t) = fnmr_at_fmr(&genuine, &impostor, fmr);
            let score_t = if cosine { 1.0 - t } else { t };
            ops.push(json!({"fmr": fmr, "fnmr": if supported { Some(fnmr) } else { None }, "threshold": if supported { Some(score_t) } else { None }, "supported_by_data": supported}));
            if supported && (e == 2 || e == 3) {
                op_pts.push((fmr, fnmr));
            }
        }
        series.push((pack.clone(), det_points(&genuine, &impostor), op_pts));
        let hist_file = format!("hist-{pack}.svg");
        std::fs::write(a.out.join(&hist_file), svg_hist(pack, &genuine, &impostor))?;
        hists.push(hist_file);
        results.push(json!({
            "pack": pack,
            "metric": if cosine { "cosine (dissimilarity = 1 - cosine)" } else { "euclidean distance" },
            "images": images.len(), "identities": dirs.len(), "failures_to_detect": misses,
            "genuine_pairs": genuine.len(), "impostor_pairs": impostor.len(),
            "eer": eer_v, "eer_threshold": if cosine { 1.0 - eer_t } else { eer_t },
            "fnmr_at_fmr": ops,
        }));
    }
    std::fs::write(a.out.join("det.svg"), svg_det(&series))?;
    let report = json!({
        "dataset": a.images, "seed": a.seed, "impostors_requested": a.impostors,
        "method": "all genuine pairs within identities; seeded uniform sample of impostor pairs across identities; threshold rule: match when dissimilarity <= t; FNMR at FMR only where impostor pairs x FMR >= 1",
        "results": results,
    });
    std::fs::write(
        a.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    // HTML: tables and the figures inline, nothing fetched from anywhere.
    let mut html = String::from("<!doctype html><meta charset='utf-8'><title>facegate evaluation report</title><style>body{font-family:sans-serif;max-width:900px;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style>");
    let _ = write!(
        html,
        "<h1>facegate evaluation report</h1><p>Dataset <code>{}</code>. {}</p>",
        a.images.display(),
        report["method"].as_str().unwrap_or("")
    );
    html.push_str("<table><tr><th>pack</th><th>images</th><th>failures to detect</th><th>genuine pairs</th><th>impostor pairs</th><th>EER</th>");
    for e in 1..=6 {
        let _ = write!(html, "<th>FNMR @ FMR 1e-{e}</th>");
    }
    html.push_str("</tr>");
    for r in &results {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}%</td>",
            r["pack"].as_str().unwrap_or(""),
            r["images"],
            r["failures_to_detect"],
            r["genuine_pairs"],
            r["impostor_pairs"],
            r["eer"].as_f64().unwrap_or(f64::NAN) * 100.0
        );
        for op in r["fnmr_at_fmr"].as_array().into_iter().flatten() {
            match op["fnmr"].as_f64() {
                Some(v) => {
                    let _ = write!(html, "<td>{:.2}%</td>", v * 100.0);
                }
                None => html.push_str("<td>—</td>"),
            }
        }
        html.push_str("</tr>");
    }
    html.push_str("</table><p>— : not enough impostor pairs for that FMR.</p><h2>DET curve</h2>");
    html.push_str(&std::fs::read_to_string(a.out.join("det.svg"))?);
    html.push_str("<h2>Score distributions</h2>");
    for h in &hists {
        html.push_str(&std::fs::read_to_string(a.out.join(h))?);
    }
    std::fs::write(a.out.join("report.html"), html)?;
    for r in &results {
        let f = |i: usize| {
            r["fnmr_at_fmr"][i]["fnmr"]
                .as_f64()
                .map_or("—".to_string(), |v| format!("{:.2}%", v * 100.0))
        };
        println!(
            "{}: {} genuine / {} impostor pairs, EER {:.2}%, FNMR @ FMR 1e-2 {}, 1e-3 {}, 1e-4 {}",
            r["pack"].as_str().unwrap_or(""),
            r["genuine_pairs"],
            r["impostor_pairs"],
            r["eer"].as_f64().unwrap_or(f64::NAN) * 100.0,
            f(1),
            f(2),
            f(3)
        );
    }
    println!("wrote {}", a.out.join("report.html").display());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_eer_and_fnmr_at_fmr_on_known_scores() {
        // 4 genuine, 10 impostor dissimilarities.
        let g = [0.1, 0.2, 0.3, 0.9];
        let mut imp = vec![0.25, 0.5, 0.6, 0.7, 0.8, 0.85, 0.95, 1.0, 1.1, 1.2];
        imp.sort_by(f64::total_cmp);
        assert_eq!(rates(&g, &imp, 0.3), (0.1, 0.25));
        // FMR 0.1: one impostor may pass -> threshold just below 0.5 -> FNMR 1/4 (0.9 misses).
        let (fnmr, t) = fnmr_at_fmr(&g, &imp, 0.1);
        assert!(t < 0.5 && t > 0.49);
        assert_eq!(fnmr, 0.25);
        // FMR 0: none may pass -> threshold below 0.25 -> 0.3 and 0.9 miss.
        assert_eq!(fnmr_at_fmr(&g, &imp, 0.0).0, 0.5);
        // EER: the closest crossing is at t = 0.5 (FMR 0.2, FNMR 0.25; gap 0.05) -> EER 0.225.
        let (e, t) = eer(&g, &imp);
        assert!((e - 0.225).abs() < 1e-12, "{e}");
        assert_eq!(t, 0.5);
    }
}
