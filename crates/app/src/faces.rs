//! Which face an answer is about when an image holds several: the one asked for, or the largest
//! (at a gate, the traveller is the face nearest the camera). The CLI and the server both say
//! which rule they used.

use std::collections::BTreeMap;

use crate::{AppError, Result};
use vision::pipeline::Face;
use vision::quality::{OfiqAligned, Quality};

/// Refuses a gate naming a quality component that does not exist (checked when a gallery's
/// policy is set, so a typo cannot silently disable a gate).
pub fn check_quality_gate(gate: &BTreeMap<String, u8>) -> Result<()> {
    for (name, min) in gate {
        if !OfiqAligned::NAMES.contains(&name.as_str()) {
            return Err(AppError::Refused(format!(
                "unknown quality component {name:?} (known: {})",
                OfiqAligned::NAMES.join(", ")
            )));
        }
        if *min > 100 {
            return Err(AppError::Refused(format!(
                "quality gate {name} = {min}: scores run from 0 to 100"
            )));
        }
    }
    Ok(())
}

/// An enrolment image's face against a gallery's quality gate (minimum OFIQ-aligned score per
/// component): every component below its minimum is named in the refusal.
pub fn pass_quality_gate(q: &Quality, gate: &BTreeMap<String, u8>, what: &str) -> Result<()> {
    if gate.is_empty() {
        return Ok(());
    }
    let Some(ofiq) = &q.ofiq else {
        return Err(AppError::Refused(format!(
            "{what}: the gallery has a quality gate, but this pack measures no quality components"
        )));
    };
    let below: Vec<String> = gate
        .iter()
        .filter_map(|(name, &min)| {
            let c = ofiq.component(name)?;
            (c.score < min).then(|| format!("{name} {} < {min}", c.score))
        })
        .collect();
    if below.is_empty() {
        Ok(())
    } else {
        Err(AppError::Refused(format!(
            "{what}: below the gallery's enrolment quality gate ({})",
            below.join(", ")
        )))
    }
}

/// The face chosen from an image's faces.
#[derive(Debug)]
pub struct Chosen {
    pub face: Face,
    /// Its index among the faces found.
    pub index: usize,
    /// "requested" or "largest".
    pub rule: &'static str,
    /// How many faces the image holds.
    pub found: usize,
}

/// The index of the largest face (by box area), the face an answer is about by default.
pub fn largest(faces: &[Face]) -> Option<usize> {
    (0..faces.len()).max_by(|&a, &b| faces[a].rect.area().total_cmp(&faces[b].rect.area()))
}

/// Face `index` if given, else the largest; `what` names the image in refusals ("probe").
pub fn choose(faces: Vec<Face>, index: Option<usize>, what: &str) -> Result<Chosen> {
    let found = faces.len();
    if found == 0 {
        return Err(AppError::Refused(format!(
            "no face found in the {what} image"
        )));
    }
    let (index, rule) = match index {
        Some(i) if i < found => (i, "requested"),
        Some(i) => {
            return Err(AppError::Refused(format!(
                "the {what} image has {found} face(s); face {i} does not exist"
            )))
        }
        None => (largest(&faces).unwrap_or(0), "largest"),
    };
    let face = faces
        .into_iter()
        .nth(index)
        .ok_or_else(|| AppError::Refused(format!("no face {index} in the {what} image")))?;
    Ok(Chosen {
        face,
        index,
        rule,
        found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vision::geometry::Rect;
    use vision::pipeline::Quality;

    fn face(side: f64) -> Face {
        Face {
            rect: Rect {
                left: 0.0,
                top: 0.0,
                right: side,
                bottom: side,
            },
            score: 1.0,
            landmarks: Vec::new(),
            quality: Quality {
                face_px: side,
                ..Default::default()
            },
            chip: None,
            embedding: vec![side as f32],
            liveness: None,
        }
    }

    #[test]
    fn the_largest_face_unless_one_is_asked_for() {
        let c = choose(vec![face(50.0), face(120.0), face(80.0)], None, "probe").unwrap();
        assert_eq!((c.index, c.rule, c.found), (1, "largest", 3));
        let c = choose(vec![face(50.0), face(120.0)], Some(0), "probe").unwrap();
        assert_eq!(
            (c.index, c.rule, c.face.embedding[0]),
            (0, "requested", 50.0)
        );
        let e = choose(vec![face(50.0)], Some(3), "reference").unwrap_err();
        assert!(e.to_string().contains("face 3 does not exist"), "{e}");
        let e = choose(Vec::new(), None, "probe").unwrap_err();
        assert_eq!(e.to_string(), "no face found in the probe image");
    }
}
