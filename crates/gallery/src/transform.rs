//! Keyed, renewable template protection (ISO/IEC 24745): every template and probe of a gallery is
//! multiplied by a secret random orthogonal matrix drawn from the gallery's 32-byte seed.
//!
//! Why orthogonal: it preserves inner products and distances, so same-gallery scores are unchanged
//! (up to f32 rounding, ~1e-7), while two galleries with different seeds map one face to unrelated
//! directions (cross-gallery genuine scores look like impostor scores). Renewal = a new seed.
//! What it is not: encryption. Anyone holding the seed can invert it, and an attacker who sees
//! enough (template, transformed template) pairs can solve for the matrix; that is why the
//! transformed templates are also sealed at rest, and the seed is wrapped by the master key.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use zeroize::Zeroize;

pub struct OrthogonalTransform {
    dim: usize,
    /// Row-major dim x dim matrix.
    q: Vec<f64>,
}

impl Drop for OrthogonalTransform {
    fn drop(&mut self) {
        self.q.zeroize();
    }
}

fn gaussian(rng: &mut ChaCha20Rng) -> f64 {
    // Box-Muller on two uniforms in (0, 1].
    let u = |r: &mut ChaCha20Rng| ((r.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let (u1, u2) = (u(rng), u(rng));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl OrthogonalTransform {
    /// Haar-distributed orthogonal matrix: Gram-Schmidt (run twice for f64 orthogonality) on a
    /// Gaussian matrix seeded by `seed`. Deterministic for a given seed and dimension.
    pub fn from_seed(seed: &[u8; 32], dim: usize) -> Self {
        let mut rng = ChaCha20Rng::from_seed(*seed);
        let mut q: Vec<f64> = (0..dim * dim).map(|_| gaussian(&mut rng)).collect();
        for i in 0..dim {
            for _pass in 0..2 {
                for j in 0..i {
                    let dot: f64 = (0..dim).map(|c| q[i * dim + c] * q[j * dim + c]).sum();
                    for c in 0..dim {
                        q[i * dim + c] -= dot * q[j * dim + c];
                    }
                }
            }
            let norm = (0..dim).map(|c| q[i * dim + c].powi(2)).sum::<f64>().sqrt();
            for c in 0..dim {
                q[i * dim + c] /= norm;
            }
        }
        OrthogonalTransform { dim, q }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// y = Q x.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        debug_assert_eq!(x.len(), self.dim);
        (0..self.dim)
            .map(|r| {
                let row = &self.q[r * self.dim..(r + 1) * self.dim];
                row.iter().zip(x).map(|(a, b)| a * *b as f64).sum::<f64>() as f32
            })
            .collect()
    }

    /// x = Q^T y (the inverse), used only to move templates to a new seed.
    pub fn invert(&self, y: &[f32]) -> Vec<f64> {
        let mut x = vec![0.0f64; self.dim];
        for (r, yr) in y.iter().enumerate() {
            let row = &self.q[r * self.dim..(r + 1) * self.dim];
            for (xc, a) in x.iter_mut().zip(row) {
                *xc += a * *yr as f64;
            }
        }
        x
    }

    /// Move a template sealed under `self` to `to` in one step (Q_to Q_self^T y), in f64.
    pub fn rekey(&self, to: &OrthogonalTransform, y: &[f32]) -> Vec<f32> {
        let x = self.invert(y);
        (0..to.dim)
            .map(|r| {
                let row = &to.q[r * to.dim..(r + 1) * to.dim];
                row.iter().zip(&x).map(|(a, b)| a * b).sum::<f64>() as f32
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand_vec(rng: &mut ChaCha20Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| gaussian(rng) as f32 * 0.1).collect()
    }

    #[test]
    fn is_orthogonal_and_deterministic() {
        let t = OrthogonalTransform::from_seed(&[7; 32], 64);
        for i in 0..64 {
            for j in 0..64 {
                let dot: f64 = (0..64).map(|c| t.q[i * 64 + c] * t.q[j * 64 + c]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-12, "Q Q^T [{i},{j}] = {dot}");
            }
        }
        let t2 = OrthogonalTransform::from_seed(&[7; 32], 64);
        assert_eq!(t.q, t2.q);
        let t3 = OrthogonalTransform::from_seed(&[8; 32], 64);
        assert_ne!(t.q, t3.q);
    }

    #[test]
    fn preserves_distances_and_rekeys() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let t = OrthogonalTransform::from_seed(&[2; 32], 128);
        let u = OrthogonalTransform::from_seed(&[3; 32], 128);
        for _ in 0..20 {
            let (a, b) = (rand_vec(&mut rng, 128), rand_vec(&mut rng, 128));
            let d = |x: &[f32], y: &[f32]| -> f64 {
                x.iter()
                    .zip(y)
                    .map(|(p, q)| ((p - q) as f64).powi(2))
                    .sum::<f64>()
                    .sqrt()
            };
            let (ta, tb) = (t.apply(&a), t.apply(&b));
            assert!((d(&a, &b) - d(&ta, &tb)).abs() < 1e-6);
            // The transformed vector is not the original.
            assert!(d(&a, &ta) > 0.1);
            let moved = t.rekey(&u, &ta);
            let direct = u.apply(&a);
            assert!(d(&moved, &direct) < 1e-6);
        }
    }
}
