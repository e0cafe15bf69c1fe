//! The evaluation report's renderings: the self-contained `report.html` and the terminal summary,
//! both read from the [`Report`] model (`report.json` is the record; these only present it).

use crate::model::{Interval, Report, FMR_LEVELS, FPIR_LEVELS};
use std::fmt::Write as _;

/// A rate as a percentage; "—" where the data cannot define it.
fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{:.2}%", x * 100.0)
    } else {
        "—".into()
    }
}

fn ci_pct(v: Option<Interval>) -> String {
    match v {
        Some(Interval(a, b)) if a.is_finite() && b.is_finite() => {
            format!(" [{:.2}, {:.2}]", a * 100.0, b * 100.0)
        }
        _ => String::new(),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The HTML page. `figure` returns the SVG text of a figure the report names by file name (the
/// page embeds them, so it stands alone).
pub fn html(
    r: &Report,
    figure: &mut dyn FnMut(&str) -> std::io::Result<String>,
) -> std::io::Result<String> {
    let mut h = String::from("<!doctype html><meta charset='utf-8'><title>facegate evaluation report</title><style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;line-height:1.4}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th:first-child,td:first-child{text-align:left}.warn{background:#fff3cd;padding:.5em 1em;border-left:4px solid #e0a800}small{color:#555}</style>");
    let d = &r.dataset;
    let _ = write!(
        h,
        "<h1>facegate evaluation report</h1><p>Dataset <code>{}</code>: {} images of {} people ({} byte-identical duplicates left out). facegate {}.</p>",
        esc(&d.images_dir.display().to_string()),
        d.images,
        d.identities,
        d.duplicates_left_out.len(),
        esc(&r.facegate_version)
    );
    for w in &r.warnings {
        let _ = write!(h, "<p class='warn'>⚠ {}</p>", esc(w));
    }
    h.push_str("<h2>1:1 verification</h2><p><small>");
    h.push_str(&esc(&r.protocol.one_to_one));
    h.push_str(". ");
    h.push_str(&esc(&r.protocol.intervals));
    h.push_str(".</small></p><table><tr><th>pack</th><th>genuine / impostor pairs</th><th>EER [95% CI]</th>");
    for f in FMR_LEVELS {
        let _ = write!(h, "<th>FNMR @ FMR {f:.0e}</th>");
    }
    h.push_str("<th>fold accuracy</th></tr>");
    for p in &r.packs {
        let o = &p.one_to_one;
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{} / {}</td><td>{}{}</td>",
            esc(&p.label),
            o.genuine_pairs,
            o.impostor_pairs,
            pct(o.eer),
            ci_pct(o.eer_ci95)
        );
        for op in &o.fnmr_at_fmr {
            let _ = write!(
                h,
                "<td>{}<small>{}</small></td>",
                pct(op.fnmr),
                ci_pct(op.fnmr_ci95)
            );
        }
        match &o.pairs_protocol {
            Some(pp) => {
                let _ = write!(
                    h,
                    "<td>{:.2}% ± {:.2}</td>",
                    pp.accuracy_mean * 100.0,
                    pp.accuracy_std * 100.0
                );
            }
            None => h.push_str("<td>—</td>"),
        }
        h.push_str("</tr>");
    }
    h.push_str("</table><p><small>— : not enough impostor pairs to measure that FMR. Thresholds per operating point are in report.json.</small></p>");
    for f in ["det.svg", "roc.svg"] {
        h.push_str(&figure(f)?);
    }
    h.push_str("<h3>Score distributions</h3><p><small>Dashed line: the threshold of the group operating point.</small></p>");
    for p in &r.packs {
        h.push_str(&figure(&p.histogram)?);
    }
    h.push_str("<h2>1:N identification</h2><p><small>");
    h.push_str(&esc(&r.protocol.one_to_n));
    h.push_str(".</small></p><table><tr><th>pack</th><th>gallery</th><th>mated / non-mated searches</th><th>rank-1</th><th>rank-10</th>");
    for f in FPIR_LEVELS {
        let _ = write!(h, "<th>FNIR @ FPIR {f:.0e}</th>");
    }
    h.push_str("</tr>");
    for p in &r.packs {
        let o = &p.one_to_n;
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td>",
            esc(&p.label),
            o.gallery_size,
            o.all.mated_searches,
            o.all.nonmated_searches,
            pct(o.all.rank1),
            pct(o.all.rank10)
        );
        for x in &o.all.fnir_at_fpir {
            let _ = write!(
                h,
                "<td>{}</td>",
                if x.supported_by_data {
                    pct(x.fnir)
                } else {
                    "—".into()
                }
            );
        }
        h.push_str("</tr>");
    }
    h.push_str("</table><h3>By gallery size</h3><table><tr><th>pack</th><th>gallery size</th><th>mated searches</th><th>rank-1</th><th>FNIR @ FPIR 1e-2</th></tr>");
    for p in &r.packs {
        for s in &p.one_to_n.by_gallery_size {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.label),
                s.gallery_size,
                s.mated_searches,
                pct(s.rank1),
                pct(s.fnir_at_fpir.get(1).map_or(f64::NAN, |x| x.fnir))
            );
        }
    }
    h.push_str("</table>");
    for f in ["cmc.svg", "gallery-size.svg"] {
        h.push_str(&figure(f)?);
    }
    scale_html(r, &mut h, figure)?;
    improvements_html(r, &mut h);
    if r.packs.iter().any(|p| !p.groups.is_empty()) {
        let _ = write!(
            h,
            "<h2>By group</h2><p><small>{}.</small></p>",
            esc(&r.protocol.groups)
        );
        for p in &r.packs {
            for (col, g) in &p.groups {
                let _ = write!(h, "<h3>{} — {}</h3><table><tr><th>group</th><th>images</th><th>genuine / impostor pairs</th><th>FNMR [95% CI]</th><th>FMR [95% CI]</th><th>EER</th><th>rank-1</th><th>FNIR</th><th>FPIR</th></tr>",
                    esc(&p.label), esc(col));
                for row in &g.groups {
                    let _ = write!(h, "<tr><td>{}</td><td>{}</td><td>{} / {}{}</td><td>{}{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&row.group), row.images, row.genuine_pairs, row.impostor_pairs,
                        if row.too_few_impostor_pairs_for_fmr { " <small>(too few for this FMR)</small>" } else { "" },
                        pct(row.fnmr), ci_pct(row.fnmr_ci95), pct(row.fmr), ci_pct(row.fmr_ci95),
                        pct(row.eer), pct(row.rank1), pct(row.fnir), pct(row.fpir));
                }
                let [fnmr, fmr, fnir, fpir] = g.differential.ratios().map(|(_, ratio, spread)| {
                    let spread = if spread.is_finite() {
                        format!(" (max − min {:.2} points)", spread * 100.0)
                    } else {
                        String::new()
                    };
                    if ratio.is_finite() {
                        format!("{ratio:.2}x{spread}")
                    } else {
                        format!("— (a group at zero, or one group){spread}")
                    }
                });
                let _ = write!(h, "</table><p>Differential (max/min across groups): FNMR {fnmr}, FMR {fmr}, FNIR {fnir}, FPIR {fpir}.</p>");
                h.push_str(&figure(&g.figure)?);
            }
        }
    }
    h.push_str("<h2>Failures</h2>");
    for p in &r.packs {
        let _ = write!(h, "<details><summary>{}: {} images without a detected face (embedded from the central 40% of the image), {} that did not decode (left out)</summary><ul>",
            esc(&p.label), p.failures_to_detect.len(), p.failures_to_decode.len());
        for f in &p.failures_to_detect {
            let _ = write!(h, "<li><code>{}</code></li>", esc(f));
        }
        for f in &p.failures_to_decode {
            let _ = write!(
                h,
                "<li><code>{}</code>: {}</li>",
                esc(&f.image),
                esc(f.error.as_deref().unwrap_or(""))
            );
        }
        h.push_str("</ul></details>");
    }
    h.push_str("<p><small>Every number above is in report.json with its threshold.</small></p>");
    Ok(h)
}

/// Gallery size beyond the data: the prediction, its check where LFW-dev measures, in words.
fn scale_html(
    r: &Report,
    h: &mut String,
    figure: &mut dyn FnMut(&str) -> std::io::Result<String>,
) -> std::io::Result<()> {
    let packs: Vec<_> = r
        .packs
        .iter()
        .filter_map(|p| p.one_to_n.scale.as_ref().map(|s| (p, s)))
        .collect();
    let Some((_, first)) = packs.first() else {
        return Ok(());
    };
    let _ = write!(
        h,
        "<h2>Gallery size: what a threshold gives at N</h2><p><small>{}.</small></p><ul>",
        esc(&first.method)
    );
    for (p, s) in &packs {
        for sentence in s.in_words(&p.label) {
            let _ = write!(h, "<li>{}</li>", esc(&sentence));
        }
    }
    h.push_str("</ul><h3>Prediction checked where the data measures it</h3><table><tr><th>pack</th><th>gallery size</th><th>target FPIR</th><th>threshold</th><th>predicted FPIR [95% CI]</th><th>measured FPIR [Wilson 95%]</th><th>target inside</th><th>predicted FNIR [95% CI]</th><th>measured FNIR</th></tr>");
    for (p, s) in &packs {
        for c in &s.checks {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{:.0e}</td><td>{:.4}</td><td>{}{}</td><td>{}{} <small>({} searches)</small></td><td>{}</td><td>{}{}</td><td>{}</td></tr>",
                esc(&p.label),
                c.gallery_size,
                c.target_fpir,
                c.threshold,
                pct(c.target_fpir),
                ci_pct(c.predicted_fpir_ci95),
                pct(c.measured_fpir),
                ci_pct(Some(c.measured_fpir_ci95)),
                c.nonmated_searches,
                if c.within_measured_interval { "yes" } else { "<b>no</b>" },
                pct(c.predicted_fnir),
                ci_pct(c.predicted_fnir_ci95),
                pct(c.measured_fnir)
            );
        }
    }
    h.push_str("</table><h3>Predicted beyond the data</h3><table><tr><th>pack</th><th>gallery size</th><th>FPIR</th><th>threshold [95% CI]</th><th>FNIR [95% CI]</th></tr>");
    for (p, s) in &packs {
        for x in &s.predictions {
            let ci = x
                .threshold_ci95
                .map_or(String::new(), |Interval(a, b)| format!(" [{a:.4}, {b:.4}]"));
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{:.0e}</td><td>{:.0e}</td><td>{:.4}{ci}</td><td>{}{}</td></tr>",
                esc(&p.label),
                x.gallery_size,
                x.fpir,
                x.threshold,
                pct(x.fnir),
                ci_pct(x.fnir_ci95)
            );
        }
    }
    h.push_str("</table>");
    h.push_str(&figure("gallery-scale.svg")?);
    for (p, _) in &packs {
        h.push_str(&figure(&format!("tail-{}.svg", p.label))?);
    }
    Ok(())
}

/// More from the same model: each way of searching beside its baseline.
fn improvements_html(r: &Report, h: &mut String) {
    if r.packs.iter().all(|p| p.one_to_n.improvements.is_empty()) {
        return;
    }
    h.push_str("<h2>More from the same model</h2><table><tr><th>pack</th><th>variant</th><th>mated / non-mated searches</th>");
    for f in FPIR_LEVELS {
        let _ = write!(h, "<th>FNIR @ FPIR {f:.0e} [95% CI]</th>");
    }
    h.push_str("</tr>");
    for p in &r.packs {
        for v in &p.one_to_n.improvements {
            let _ = write!(
                h,
                "<tr><td>{}</td><td title='{}'>{}</td><td>{} / {}</td>",
                esc(&p.label),
                esc(&v.description),
                esc(&v.name),
                v.mated_searches,
                v.nonmated_searches
            );
            for x in &v.fnir_at_fpir {
                let cell = if x.supported_by_data {
                    format!("{}{}", pct(x.fnir), ci_pct(x.fnir_ci95))
                } else {
                    "—".into()
                };
                let _ = write!(h, "<td>{cell}</td>");
            }
            h.push_str("</tr>");
        }
    }
    h.push_str("</table>");
    if r.packs.iter().all(|p| p.one_to_n.cohort_by_size.is_empty()) {
        return;
    }
    h.push_str("<h3>Cohort normalisation and gallery size</h3><p>The z-threshold that keeps each FPIR at each gallery size, what it misses beside the distance threshold at the same FPIR, and what the z-threshold measured at the largest size does in the smaller galleries (a gallery with a cohort policy calibrated at one size and holding fewer).</p><table><tr><th>pack</th><th>FPIR</th><th>gallery size</th><th>z-threshold</th><th>FNIR, cohort</th><th>FNIR, distance</th><th>largest size's z-threshold here: FPIR</th><th>FNIR</th></tr>");
    for p in &r.packs {
        for c in &p.one_to_n.cohort_by_size {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{:.0e}</td><td>{}</td><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.label),
                c.fpir,
                c.gallery_size,
                c.z_threshold,
                pct(c.fnir),
                pct(c.fnir_distance),
                pct(c.largest_threshold_fpir),
                pct(c.largest_threshold_fnir)
            );
        }
    }
    h.push_str("</table>");
}

/// The terminal summary: one line per pack and view, then warnings.
pub fn summary(r: &Report) -> String {
    let mut s = String::new();
    for p in &r.packs {
        let o = &p.one_to_one;
        let f = |i: usize| pct(o.fnmr_at_fmr.get(i).map_or(f64::NAN, |x| x.fnmr));
        let _ = writeln!(
            s,
            "{}: 1:1 {} genuine / {} impostor pairs, EER {}{}, FNMR @ FMR 1e-2 {}, 1e-3 {}, 1e-4 {}",
            p.label,
            o.genuine_pairs,
            o.impostor_pairs,
            pct(o.eer),
            ci_pct(o.eer_ci95),
            f(1),
            f(2),
            f(3)
        );
        if let Some(pp) = &o.pairs_protocol {
            let _ = writeln!(
                s,
                "{}: pairs protocol accuracy {:.2}% ± {:.2}",
                p.label,
                pp.accuracy_mean * 100.0,
                pp.accuracy_std * 100.0
            );
        }
        let n = &p.one_to_n.all;
        let _ = writeln!(
            s,
            "{}: 1:N gallery {}, rank-1 {}, FNIR @ FPIR 1e-2 {}; failures to detect {}",
            p.label,
            p.one_to_n.gallery_size,
            pct(n.rank1),
            pct(n.fnir_at_1e2()),
            p.failures_to_detect.len()
        );
        if let Some(sc) = &p.one_to_n.scale {
            for sentence in sc.in_words(&p.label) {
                let _ = writeln!(s, "{sentence}");
            }
        }
        for (col, g) in &p.groups {
            let [fnmr, fmr, fnir, fpir] = g.differential.ratios().map(|(_, v, _)| {
                if v.is_finite() {
                    format!("{v:.2}x")
                } else {
                    "—".into()
                }
            });
            let _ = writeln!(
                s,
                "{}: by {col}: differential FNMR {fnmr}, FMR {fmr}, FNIR {fnir}, FPIR {fpir}",
                p.label
            );
        }
    }
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}
