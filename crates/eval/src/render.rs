//! The evaluation report's renderings: the self-contained `report.html` and the terminal summary,
//! both read from the report's JSON (`report.json` is the record; these only present it).

use anyhow::Result;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;

use super::report::{FMR_LEVELS, FPIR_LEVELS};

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or("—".to_string(), |x| format!("{:.2}%", x * 100.0))
}

fn ci_pct(v: &Value) -> String {
    match (v[0].as_f64(), v[1].as_f64()) {
        (Some(a), Some(b)) => format!(" [{:.2}, {:.2}]", a * 100.0, b * 100.0),
        _ => String::new(),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub(super) fn html(r: &Value, out: &Path) -> Result<String> {
    let mut h = String::from("<!doctype html><meta charset='utf-8'><title>facegate evaluation report</title><style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;line-height:1.4}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th:first-child,td:first-child{text-align:left}.warn{background:#fff3cd;padding:.5em 1em;border-left:4px solid #e0a800}small{color:#555}</style>");
    let d = &r["dataset"];
    let _ = write!(
        h,
        "<h1>facegate evaluation report</h1><p>Dataset <code>{}</code>: {} images of {} people ({} byte-identical duplicates left out). facegate {}.</p>",
        esc(d["images_dir"].as_str().unwrap_or("")),
        d["images"], d["identities"],
        d["duplicates_left_out"].as_array().map_or(0, |v| v.len()),
        esc(r["facegate_version"].as_str().unwrap_or(""))
    );
    for w in r["warnings"].as_array().into_iter().flatten() {
        let _ = write!(h, "<p class='warn'>⚠ {}</p>", esc(w.as_str().unwrap_or("")));
    }
    let packs = r["packs"].as_array().cloned().unwrap_or_default();
    h.push_str("<h2>1:1 verification</h2><p><small>");
    h.push_str(&esc(r["protocol"]["one_to_one"].as_str().unwrap_or("")));
    h.push_str(". ");
    h.push_str(&esc(r["protocol"]["intervals"].as_str().unwrap_or("")));
    h.push_str(".</small></p><table><tr><th>pack</th><th>genuine / impostor pairs</th><th>EER [95% CI]</th>");
    for f in FMR_LEVELS {
        let _ = write!(h, "<th>FNMR @ FMR {f:.0e}</th>");
    }
    h.push_str("<th>fold accuracy</th></tr>");
    for p in &packs {
        let o = &p["one_to_one"];
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{} / {}</td><td>{}{}</td>",
            esc(p["label"].as_str().unwrap_or("")),
            o["genuine_pairs"],
            o["impostor_pairs"],
            pct(&o["eer"]),
            ci_pct(&o["eer_ci95"])
        );
        for op in o["fnmr_at_fmr"].as_array().into_iter().flatten() {
            let _ = write!(
                h,
                "<td>{}<small>{}</small></td>",
                pct(&op["fnmr"]),
                ci_pct(&op["fnmr_ci95"])
            );
        }
        let pp = &o["pairs_protocol"];
        match (pp["accuracy_mean"].as_f64(), pp["accuracy_std"].as_f64()) {
            (Some(m), Some(s)) => {
                let _ = write!(h, "<td>{:.2}% ± {:.2}</td>", m * 100.0, s * 100.0);
            }
            _ => h.push_str("<td>—</td>"),
        }
        h.push_str("</tr>");
    }
    h.push_str("</table><p><small>— : not enough impostor pairs to measure that FMR. Thresholds per operating point are in report.json.</small></p>");
    for f in ["det.svg", "roc.svg"] {
        h.push_str(&std::fs::read_to_string(out.join(f))?);
    }
    h.push_str("<h3>Score distributions</h3><p><small>Dashed line: the threshold of the group operating point.</small></p>");
    for p in &packs {
        if let Some(f) = p["histogram"].as_str() {
            h.push_str(&std::fs::read_to_string(out.join(f))?);
        }
    }
    h.push_str("<h2>1:N identification</h2><p><small>");
    h.push_str(&esc(r["protocol"]["one_to_n"].as_str().unwrap_or("")));
    h.push_str(".</small></p><table><tr><th>pack</th><th>gallery</th><th>mated / non-mated searches</th><th>rank-1</th><th>rank-10</th>");
    for f in FPIR_LEVELS {
        let _ = write!(h, "<th>FNIR @ FPIR {f:.0e}</th>");
    }
    h.push_str("</tr>");
    for p in &packs {
        let o = &p["one_to_n"];
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td>",
            esc(p["label"].as_str().unwrap_or("")),
            o["gallery_size"],
            o["all"]["mated_searches"],
            o["all"]["nonmated_searches"],
            pct(&o["all"]["rank1"]),
            pct(&o["all"]["rank10"])
        );
        for x in o["all"]["fnir_at_fpir"].as_array().into_iter().flatten() {
            let _ = write!(
                h,
                "<td>{}</td>",
                if x["supported_by_data"] == true {
                    pct(&x["fnir"])
                } else {
                    "—".into()
                }
            );
        }
        h.push_str("</tr>");
    }
    h.push_str("</table><h3>By gallery size</h3><table><tr><th>pack</th><th>gallery size</th><th>mated searches</th><th>rank-1</th><th>FNIR @ FPIR 1e-2</th></tr>");
    for p in &packs {
        for s in p["one_to_n"]["by_gallery_size"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(p["label"].as_str().unwrap_or("")),
                s["gallery_size"],
                s["mated_searches"],
                pct(&s["rank1"]),
                pct(&s["fnir_at_fpir"][1]["fnir"])
            );
        }
    }
    h.push_str("</table>");
    for f in ["cmc.svg", "gallery-size.svg"] {
        h.push_str(&std::fs::read_to_string(out.join(f))?);
    }
    let any_groups = packs
        .iter()
        .any(|p| p["groups"].as_object().is_some_and(|g| !g.is_empty()));
    if any_groups {
        let _ = write!(
            h,
            "<h2>By group</h2><p><small>{}.</small></p>",
            esc(r["protocol"]["groups"].as_str().unwrap_or(""))
        );
        for p in &packs {
            for (col, g) in p["groups"].as_object().into_iter().flatten() {
                let _ = write!(h, "<h3>{} — {}</h3><table><tr><th>group</th><th>images</th><th>genuine / impostor pairs</th><th>FNMR [95% CI]</th><th>FMR [95% CI]</th><th>EER</th><th>rank-1</th><th>FNIR</th><th>FPIR</th></tr>",
                    esc(p["label"].as_str().unwrap_or("")), esc(col));
                for row in g["groups"].as_array().into_iter().flatten() {
                    let _ = write!(h, "<tr><td>{}</td><td>{}</td><td>{} / {}{}</td><td>{}{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(row["group"].as_str().unwrap_or("")), row["images"], row["genuine_pairs"], row["impostor_pairs"],
                        if row["too_few_impostor_pairs_for_fmr"] == true { " <small>(too few for this FMR)</small>" } else { "" },
                        pct(&row["fnmr"]), ci_pct(&row["fnmr_ci95"]), pct(&row["fmr"]), ci_pct(&row["fmr_ci95"]),
                        pct(&row["eer"]), pct(&row["rank1"]), pct(&row["fnir"]), pct(&row["fpir"]));
                }
                let df = &g["differential"];
                let x = |k: &str| {
                    let spread = df[format!("{k}_spread")]
                        .as_f64()
                        .map_or(String::new(), |v| {
                            format!(" (max − min {:.2} points)", v * 100.0)
                        });
                    df[k].as_f64().map_or(
                        format!("— (a group at zero, or one group){spread}"),
                        |v| format!("{v:.2}x{spread}"),
                    )
                };
                let _ = write!(h, "</table><p>Differential (max/min across groups): FNMR {}, FMR {}, FNIR {}, FPIR {}.</p>", x("fnmr"), x("fmr"), x("fnir"), x("fpir"));
                if let Some(f) = g["figure"].as_str() {
                    h.push_str(&std::fs::read_to_string(out.join(f))?);
                }
            }
        }
    }
    h.push_str("<h2>Failures</h2>");
    for p in &packs {
        let fd = p["failures_to_detect"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let fdec = p["failures_to_decode"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let _ = write!(h, "<details><summary>{}: {} images without a detected face (embedded from the central 40% of the image), {} that did not decode (left out)</summary><ul>",
            esc(p["label"].as_str().unwrap_or("")), fd.len(), fdec.len());
        for f in fd.iter().chain(&fdec) {
            let _ = write!(h, "<li><code>{}</code></li>", esc(&f.to_string()));
        }
        h.push_str("</ul></details>");
    }
    h.push_str("<p><small>Every number above is in report.json with its threshold.</small></p>");
    Ok(h)
}

/// The terminal summary: one line per pack and view, then warnings.
pub(super) fn summary(r: &Value) {
    for p in r["packs"].as_array().into_iter().flatten() {
        let o = &p["one_to_one"];
        let f = |i: usize| pct(&o["fnmr_at_fmr"][i]["fnmr"]);
        println!(
            "{}: 1:1 {} genuine / {} impostor pairs, EER {}{}, FNMR @ FMR 1e-2 {}, 1e-3 {}, 1e-4 {}",
            p["label"].as_str().unwrap_or(""),
            o["genuine_pairs"],
            o["impostor_pairs"],
            pct(&o["eer"]),
            ci_pct(&o["eer_ci95"]),
            f(1),
            f(2),
            f(3)
        );
        if let Some(m) = o["pairs_protocol"]["accuracy_mean"].as_f64() {
            println!(
                "{}: pairs protocol accuracy {:.2}% ± {:.2}",
                p["label"].as_str().unwrap_or(""),
                m * 100.0,
                o["pairs_protocol"]["accuracy_std"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
                    * 100.0
            );
        }
        let n = &p["one_to_n"]["all"];
        println!(
            "{}: 1:N gallery {}, rank-1 {}, FNIR @ FPIR 1e-2 {}; failures to detect {}",
            p["label"].as_str().unwrap_or(""),
            p["one_to_n"]["gallery_size"],
            pct(&n["rank1"]),
            pct(&n["fnir_at_fpir"][1]["fnir"]),
            p["failures_to_detect"].as_array().map_or(0, |v| v.len())
        );
        for (col, g) in p["groups"].as_object().into_iter().flatten() {
            let d = &g["differential"];
            let x = |k: &str| {
                d[k].as_f64()
                    .map_or("—".to_string(), |v| format!("{v:.2}x"))
            };
            println!(
                "{}: by {col}: differential FNMR {}, FMR {}, FNIR {}, FPIR {}",
                p["label"].as_str().unwrap_or(""),
                x("fnmr"),
                x("fmr"),
                x("fnir"),
                x("fpir")
            );
        }
    }
    for w in r["warnings"].as_array().into_iter().flatten() {
        println!("warning: {}", w.as_str().unwrap_or(""));
    }
}
