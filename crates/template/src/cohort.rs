//! Score normalisation against a cohort (T-norm): a comparison's dissimilarity judged against
//! the same probe's dissimilarities to a cohort of other people — in facegate the gallery
//! itself, ranks 2…R of the search. The gallery decides on it under a cohort policy; the
//! evaluation measures and calibrates it; both call this one definition.

/// The probe's cohort: the mean and spread of its dissimilarities to the cohort's members.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cohort {
    pub mean: f64,
    /// Population standard deviation, at least [`MIN_SD`].
    pub sd: f64,
}

/// Floor on the spread, so z stays finite when every member is at the same distance.
pub const MIN_SD: f64 = 1e-9;

impl Cohort {
    /// From the probe's dissimilarities to the cohort's members (`None` for an empty cohort).
    pub fn of(others: &[f64]) -> Option<Cohort> {
        if others.is_empty() {
            return None;
        }
        let n = others.len() as f64;
        let mean = others.iter().sum::<f64>() / n;
        let var = others.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n;
        Some(Cohort {
            mean,
            sd: var.sqrt().max(MIN_SD),
        })
    }

    /// How far below the cohort's mean `d` lies, in cohort spreads (lower is closer).
    pub fn z(&self, d: f64) -> f64 {
        (d - self.mean) / self.sd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z_counts_spreads_from_the_cohort_mean() {
        // Mean 0.6, population sd 0.1.
        let c = Cohort::of(&[0.5, 0.7, 0.5, 0.7]).unwrap();
        assert!((c.mean - 0.6).abs() < 1e-12);
        assert!((c.sd - 0.1).abs() < 1e-12);
        assert!((c.z(0.3) + 3.0).abs() < 1e-9);
        assert!((c.z(0.6)).abs() < 1e-12);
    }

    #[test]
    fn a_flat_or_empty_cohort_stays_finite_or_absent() {
        assert_eq!(Cohort::of(&[]), None);
        let c = Cohort::of(&[0.4; 10]).unwrap();
        assert_eq!(c.sd, MIN_SD);
        assert!(c.z(0.3).is_finite() && c.z(0.3) < 0.0);
    }

    #[test]
    fn the_same_distance_counts_more_for_a_probe_close_to_nobody() {
        // Probe A is close to everybody, probe B to nobody: d = 0.45 is unremarkable for A and
        // far below B's cohort.
        let a = Cohort::of(&[0.50, 0.52, 0.55, 0.48, 0.51]).unwrap();
        let b = Cohort::of(&[0.80, 0.82, 0.85, 0.78, 0.81]).unwrap();
        assert!(b.z(0.45) < a.z(0.45) - 5.0);
    }
}
