//! What a face template is compared by. The vision layer makes templates and the gallery stores
//! and searches them; both speak of one [`Metric`], declared by the model pack that made the
//! template. This crate is that shared word and nothing more.

#![forbid(unsafe_code)]

pub mod tail;

use serde::{Deserialize, Serialize};

/// How two templates of a model pack are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Euclidean distance on raw embeddings; lower is more alike (dlib).
    Euclidean,
    /// Cosine similarity; higher is more alike (ArcFace-style). Galleries store such templates
    /// at unit length.
    Cosine,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown metric '{0}' (euclidean or cosine)")]
pub struct UnknownMetric(pub String);

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Euclidean => "euclidean",
            Metric::Cosine => "cosine",
        }
    }

    pub fn parse(s: &str) -> Result<Metric, UnknownMetric> {
        match s {
            "euclidean" => Ok(Metric::Euclidean),
            "cosine" => Ok(Metric::Cosine),
            _ => Err(UnknownMetric(s.to_string())),
        }
    }

    /// What a score means, for people reading an answer.
    pub fn describe(self) -> &'static str {
        match self {
            Metric::Euclidean => "euclidean distance (lower = more similar)",
            Metric::Cosine => "cosine similarity (higher = more similar)",
        }
    }

    /// Whether a higher score means more alike.
    pub fn is_similarity(self) -> bool {
        self == Metric::Cosine
    }

    /// Whether `score` is a match at `threshold`, in this metric's direction.
    pub fn is_match(self, score: f64, threshold: f64) -> bool {
        match self {
            Metric::Euclidean => score <= threshold,
            Metric::Cosine => score >= threshold,
        }
    }

    /// The score between two templates (f64 accumulation).
    pub fn compare(self, a: &[f32], b: &[f32]) -> f64 {
        match self {
            Metric::Euclidean => a
                .iter()
                .zip(b)
                .map(|(x, y)| ((x - y) as f64).powi(2))
                .sum::<f64>()
                .sqrt(),
            Metric::Cosine => {
                let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
                let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                if na == 0.0 || nb == 0.0 {
                    0.0
                } else {
                    dot / (na * nb)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_names_and_scores() {
        assert!(Metric::Euclidean.is_match(0.5, 0.6) && !Metric::Euclidean.is_match(0.7, 0.6));
        assert!(Metric::Cosine.is_match(0.7, 0.6) && !Metric::Cosine.is_match(0.5, 0.6));
        for m in [Metric::Euclidean, Metric::Cosine] {
            assert_eq!(Metric::parse(m.as_str()), Ok(m));
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.as_str()));
        }
        assert!(Metric::parse("manhattan").is_err());
        assert_eq!(Metric::Euclidean.compare(&[0.0, 3.0], &[4.0, 0.0]), 5.0);
        assert!((Metric::Cosine.compare(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-12);
        assert_eq!(Metric::Cosine.compare(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }
}
