//! The typed report model reads and writes `report.json` exactly, and the renderings read it.
#![allow(clippy::unwrap_used)] // tests stop at the first surprise

use evaluation::model::{Report, FMR_LEVELS};
use evaluation::render::{html, summary};
use std::path::Path;

/// The LFW-dev report kept in docs/ (written by `facegate eval report`, three packs, groups).
fn kept_report() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/lfw-dev-report.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn report_json_round_trips_through_the_model() {
    let original = kept_report();
    let report: Report = serde_json::from_value(original.clone()).unwrap();
    assert_eq!(report.packs.len(), 3);
    assert_eq!(
        report.packs[0].one_to_one.fnmr_at_fmr.len(),
        FMR_LEVELS.len()
    );
    // Unsupported operating points are null in JSON and NaN in the model, and back.
    let unsupported = report.packs[0]
        .one_to_one
        .fnmr_at_fmr
        .iter()
        .find(|p| !p.supported_by_data)
        .unwrap();
    assert!(unsupported.fnmr.is_nan() && unsupported.threshold.is_nan());
    // The gallery-size prediction reads back with its tail model.
    let scale = report.packs[0].one_to_n.scale.as_ref().unwrap();
    assert!(scale.tail.validate().is_ok());
    assert!(!scale.tail.probe_spread.is_empty());
    let written = serde_json::to_value(&report).unwrap();
    assert_eq!(
        written, original,
        "the model must write the same report.json"
    );
}

#[test]
fn renderings_show_the_models_numbers() {
    let report: Report = serde_json::from_value(kept_report()).unwrap();
    let mut asked = Vec::new();
    let page = html(&report, &mut |f| {
        asked.push(f.to_string());
        Ok(format!("<svg id='{f}'></svg>"))
    })
    .unwrap();
    for f in ["det.svg", "roc.svg", "cmc.svg", "gallery-size.svg"] {
        assert!(asked.iter().any(|a| a == f), "{f} not embedded");
    }
    let p = &report.packs[0];
    assert!(asked.contains(&p.histogram));
    let eer = format!("{:.2}%", p.one_to_one.eer * 100.0);
    assert!(page.contains(&eer), "EER {eer} missing from the page");
    let text = summary(&report);
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with(&format!("{}: 1:1", p.label)))
            .count(),
        1
    );
    assert!(text.contains(&eer));
    // The gallery-size section says, in words, what the model predicts at 10^6.
    let at = p.one_to_n.scale.as_ref().unwrap().at(1e6, 1e-3).unwrap();
    let words = format!(
        "a watchlist of 1,000,000 people at FPIR 1e-3 misses about {:.0}%",
        at.fnir * 100.0
    );
    assert!(page.contains(&words) && text.contains(&words), "{words}");
    assert!(asked.iter().any(|a| a == "gallery-scale.svg"));
    assert!(asked.iter().any(|a| *a == format!("tail-{}.svg", p.label)));
    // A figure that cannot be read is an error, not a page without it.
    let missing = html(&report, &mut |_| {
        Err(std::io::Error::new(std::io::ErrorKind::NotFound, "gone"))
    });
    assert!(missing.is_err());
}
