//! What a face template is compared by. The vision layer makes templates and the gallery stores
//! and searches them; both speak of one [`Metric`], declared by the model pack that made the
//! template. This crate is that shared word and nothing more.

#![forbid(unsafe_code)]

pub mod cohort;
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

/// `v` at unit length (a zero vector stays as it is).
pub fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter().map(|x| x / n).collect()
    } else {
        v.to_vec()
    }
}

/// Several templates of one face as one: the mean of their unit vectors, scaled to their mean
/// norm, so a distance threshold made for single templates still applies (cosine templates,
/// being unit, stay unit). Used for a track's best frames (video) and for a subject enrolled
/// from several images under a policy that averages them (gallery). Empty in, empty out.
pub fn fuse(templates: &[Vec<f32>]) -> Vec<f32> {
    let Some(first) = templates.first() else {
        return Vec::new();
    };
    let mut sum = vec![0f32; first.len()];
    let mut norm = 0f32;
    for t in templates {
        norm += t.iter().map(|x| x * x).sum::<f32>().sqrt();
        for (s, x) in sum.iter_mut().zip(unit(t)) {
            *s += x;
        }
    }
    let mean_norm = norm / templates.len() as f32;
    let mut fused = unit(&sum);
    for x in &mut fused {
        *x *= mean_norm;
    }
    // The sum is a template too: not left in freed memory.
    zeroize::Zeroize::zeroize(&mut sum);
    fused
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_is_the_normalised_mean_at_the_mean_norm() {
        let f = fuse(&[vec![2.0, 0.0], vec![0.0, 4.0]]);
        // Direction: (1, 1)/sqrt(2); norm: (2 + 4) / 2 = 3.
        let want = 3.0 / 2f32.sqrt();
        assert!(
            (f[0] - want).abs() < 1e-6 && (f[1] - want).abs() < 1e-6,
            "{f:?}"
        );
        assert_eq!(fuse(&[vec![0.5, 0.5]]), vec![0.5, 0.5]);
        assert!(fuse(&[]).is_empty());
        // Unit templates stay unit.
        let u = fuse(&[vec![1.0, 0.0], vec![0.6, 0.8]]);
        assert!((u.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-6);
    }

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
