//! The per-group part of the evaluation report: for every attribute column, each group's 1:1
//! and 1:N figures at the global operating points, its own FNMR curve, the differentials across
//! groups and a DET figure of the column.

use super::dataset::{Attributes, Dataset, Embedded};
use super::report::{score_set, supported, Protocol, ReportArgs, Searches};
use anyhow::Result;
use evaluation::metrics;
use evaluation::model::*;
use evaluation::plot::{Axis, Chart, Series};
use std::collections::BTreeMap;

/// What the group figures are computed from (the pack's run of the report).
pub(super) struct Inputs<'a> {
    pub ds: &'a Dataset,
    pub emb: &'a [Embedded],
    pub proto: &'a Protocol,
    pub score: &'a dyn Fn(&[f32], &[f32]) -> f64,
    pub to_score: &'a dyn Fn(f64) -> f64,
    pub searches: &'a Searches,
    /// The global 1:1 and 1:N operating thresholds (dissimilarities).
    pub t_op: f64,
    pub t_1n: f64,
    pub label: &'a str,
    pub args: &'a ReportArgs,
}

/// An optional rate as NaN when absent (the model's "undefined").
fn ratio(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

/// Every attribute column's group table; warnings for differentials over the bound.
pub(super) fn group_tables(
    inputs: &Inputs<'_>,
    at: &Attributes,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, GroupTable>> {
    let Inputs {
        ds,
        emb,
        proto,
        score,
        to_score,
        searches,
        t_op,
        t_1n,
        label,
        args: a,
    } = *inputs;
    let mut groups_json = BTreeMap::new();
    for (c, col) in at.columns.iter().enumerate() {
        let vals = &at.values[c];
        let names: std::collections::BTreeSet<&str> =
            vals.iter().flatten().map(String::as_str).collect();
        let mut rows = Vec::new();
        let mut group_det = Vec::new();
        let (mut fnmrs, mut fmrs, mut fnirs, mut fpirs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for gname in names {
            let inside = |i: u32| vals[i as usize].as_deref() == Some(gname);
            let (gs, gids) = score_set(ds, emb, proto, score, &inside);
            let gw = gs.unit_weights();
            let (fmr, fnmr) = if gs.genuine.is_empty() || gs.impostor.is_empty() {
                (f64::NAN, f64::NAN)
            } else {
                metrics::rates(&gs, &gw, t_op)
            };
            let ci = if a.bootstrap > 0 && !gs.genuine.is_empty() && !gs.impostor.is_empty() {
                metrics::bootstrap(&gs, gids, a.bootstrap, a.data.seed, |w| {
                    let (fm, fnm) = metrics::rates(&gs, w, t_op);
                    vec![fnm, fm]
                })
            } else {
                Vec::new()
            };
            let eer = if gs.genuine.is_empty() || gs.impostor.is_empty() {
                f64::NAN
            } else {
                metrics::eer(&gs, &gw).0
            };
            let gm: Vec<(bool, f64)> = searches
                .mated
                .iter()
                .filter(|m| inside(m.0))
                .map(|m| (m.3, m.2))
                .collect();
            let gn: Vec<f64> = searches
                .nonmated
                .iter()
                .filter(|n| inside(n.0))
                .map(|n| n.1)
                .collect();
            let rank1 = gm.iter().filter(|m| m.0).count() as f64 / gm.len().max(1) as f64;
            let rank10 = searches
                .mated
                .iter()
                .filter(|m| inside(m.0) && m.1.is_some_and(|r| r <= 10))
                .count() as f64
                / gm.len().max(1) as f64;
            // The group's own curve: FNMR at each FMR its same-group impostors can measure.
            let own: Vec<GroupFmrPoint> = FMR_LEVELS
                .iter()
                .map(|&f| {
                    if !gs.genuine.is_empty() && supported(gs.impostor.len(), f) {
                        let (fnmr, t) = metrics::fnmr_at_fmr(&gs, &gw, f);
                        GroupFmrPoint {
                            fmr: f,
                            fnmr,
                            threshold: to_score(t),
                        }
                    } else {
                        GroupFmrPoint {
                            fmr: f,
                            fnmr: f64::NAN,
                            threshold: f64::NAN,
                        }
                    }
                })
                .collect();
            if !gs.genuine.is_empty() && !gs.impostor.is_empty() {
                group_det.push(Series {
                    name: format!(
                        "{gname} ({} / {} pairs)",
                        gs.genuine.len(),
                        gs.impostor.len()
                    ),
                    points: metrics::det_points(&gs, 300),
                    marks: Vec::new(),
                });
            }
            let fnir = if gm.is_empty() {
                f64::NAN
            } else {
                metrics::fnir_at(&gm, t_1n)
            };
            let fpir = if gn.is_empty() {
                f64::NAN
            } else {
                metrics::fpir_at(&gn, t_1n)
            };
            let images = vals
                .iter()
                .zip(emb)
                .filter(|(v, e)| v.as_deref() == Some(gname) && e.embedding.is_some())
                .count();
            fnmrs.push(fnmr);
            fmrs.push(fmr);
            fnirs.push(fnir);
            fpirs.push(fpir);
            let small = !supported(gs.impostor.len(), a.group_fmr);
            let undefined_if_no_mates = |x: f64| if gm.is_empty() { f64::NAN } else { x };
            rows.push(GroupRow {
                group: gname.to_string(),
                images,
                identities: gids,
                genuine_pairs: gs.genuine.len(),
                impostor_pairs: gs.impostor.len(),
                fnmr,
                fnmr_ci95: ci.first().map(|&c| c.into()),
                fmr,
                fmr_ci95: ci.get(1).map(|&c| c.into()),
                eer,
                too_few_impostor_pairs_for_fmr: small,
                fnmr_at_fmr: own,
                mated_searches: gm.len(),
                rank1: undefined_if_no_mates(rank1),
                rank10: undefined_if_no_mates(rank10),
                fnir,
                nonmated_searches: gn.len(),
                fpir,
            });
        }
        let diff = Differential {
            fnmr: ratio(metrics::differential(&fnmrs)),
            fmr: ratio(metrics::differential(&fmrs)),
            fnir: ratio(metrics::differential(&fnirs)),
            fpir: ratio(metrics::differential(&fpirs)),
            fnmr_spread: ratio(metrics::spread(&fnmrs)),
            fmr_spread: ratio(metrics::spread(&fmrs)),
            fnir_spread: ratio(metrics::spread(&fnirs)),
            fpir_spread: ratio(metrics::spread(&fpirs)),
        };
        for (k, v, _) in diff.ratios() {
            if v.is_finite() && v > a.max_differential {
                warnings.push(format!(
                    "{label}: {k} differs {v:.2}x across `{col}` groups (bound {:.2})",
                    a.max_differential
                ));
            }
        }
        let figure = format!("det-{label}-{col}.svg").replace(
            |ch: char| !(ch.is_ascii_alphanumeric() || "+-_.".contains(ch)),
            "_",
        );
        let chart = Chart {
            title: format!("DET by {col} ({label}), same-group impostors"),
            x: Axis {
                label: "false match rate (FMR)".into(),
                log: true,
                min: 1e-6,
                max: 1.0,
            },
            y: Axis {
                label: "false non-match rate (FNMR)".into(),
                log: true,
                min: 1e-4,
                max: 1.0,
            },
            series: group_det,
        };
        std::fs::write(a.out.join(&figure), chart.svg())?;
        groups_json.insert(
            col.clone(),
            GroupTable {
                groups: rows,
                differential: diff,
                figure,
            },
        );
    }
    Ok(groups_json)
}
