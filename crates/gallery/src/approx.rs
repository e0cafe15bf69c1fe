//! Approximate search for galleries past ~10^7 templates: an HNSW graph (`hnsw_rs`) proposes
//! candidates, which are then re-scored exactly in f32 with the same score as `ExactIndex`, so the
//! scores returned are exact even when the candidate list misses a neighbour (the recall figure
//! says how often). Exact search stays the default; a gallery opts in through its policy.

use crate::error::Result;
use crate::index::{dot_f32, Hit, SearchIndex, TemplateSource};
use hnsw_rs::anndists::dist::DistL2;
use hnsw_rs::hnsw::Hnsw;
use zeroize::Zeroize;

/// Graph parameters (HNSW's M, efConstruction, efSearch).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HnswParams {
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 24,
            ef_construction: 200,
            ef_search: 128,
        }
    }
}

pub struct HnswIndex {
    dim: usize,
    params: HnswParams,
    graph: Hnsw<'static, f32, DistL2>,
    exact: Vec<f32>,
    half_norm2: Vec<f32>,
    ids: Vec<u64>,
    expires: Vec<i64>,
    /// Rows deleted since the graph was built (HNSW graphs do not delete; the row is skipped).
    removed: Vec<bool>,
    live: usize,
}

impl Drop for HnswIndex {
    fn drop(&mut self) {
        self.exact.zeroize();
    }
}

impl HnswIndex {
    pub fn new(dim: usize, params: HnswParams, capacity: usize) -> Self {
        let layers = 16usize
            .min(((capacity.max(2)) as f64).ln().ceil() as usize)
            .max(4);
        HnswIndex {
            dim,
            params,
            graph: Hnsw::new(
                params.m,
                capacity.max(1024),
                layers,
                params.ef_construction,
                DistL2 {},
            ),
            exact: Vec::new(),
            half_norm2: Vec::new(),
            ids: Vec::new(),
            expires: Vec::new(),
            removed: Vec::new(),
            live: 0,
        }
    }

    /// Insert many rows using every thread of the current rayon pool.
    pub fn extend(&mut self, rows: &[(u64, &[f32], i64)]) {
        let start = self.ids.len();
        for (id, x, exp) in rows {
            assert_eq!(x.len(), self.dim, "template length checked by the caller");
            self.exact.extend_from_slice(x);
            self.half_norm2
                .push((x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / 2.0) as f32);
            self.ids.push(*id);
            self.expires.push(*exp);
            self.removed.push(false);
        }
        self.live += rows.len();
        let batch: Vec<(&[f32], usize)> = (start..self.ids.len())
            .map(|r| (&self.exact[r * self.dim..(r + 1) * self.dim], r))
            .collect();
        self.graph.parallel_insert_slice(&batch);
    }

    fn exact_hit(&self, q: &[f32], row: usize) -> Hit {
        let x = &self.exact[row * self.dim..(row + 1) * self.dim];
        let dot = dot_f32(q, x);
        Hit {
            id: self.ids[row],
            dot,
            score: dot - self.half_norm2[row],
        }
    }
}

impl SearchIndex for HnswIndex {
    fn kind(&self) -> &'static str {
        "hnsw"
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.live
    }

    fn push(&mut self, id: u64, x: &[f32], expires: i64) {
        self.extend(&[(id, x, expires)]);
    }

    fn remove(&mut self, id: u64) -> usize {
        let mut n = 0;
        for r in 0..self.ids.len() {
            if self.ids[r] == id && !self.removed[r] {
                self.removed[r] = true;
                self.exact[r * self.dim..(r + 1) * self.dim].zeroize();
                n += 1;
            }
        }
        self.live -= n;
        n
    }

    fn search(
        &self,
        queries: &[&[f32]],
        k: usize,
        floor: Option<f32>,
        now: i64,
        _source: &dyn TemplateSource,
    ) -> Result<Vec<Vec<Hit>>> {
        use rayon::prelude::*;
        Ok(queries
            .par_iter()
            .map(|q| {
                if k == 0 || self.live == 0 {
                    return Vec::new();
                }
                // Ask for more than k: deleted and expired rows are dropped after the graph search.
                let want = (k * 2 + 8).min(self.ids.len());
                let ef = self.params.ef_search.max(want);
                let mut hits: Vec<(usize, Hit)> = self
                    .graph
                    .search(q, want, ef)
                    .into_iter()
                    .map(|n| n.d_id)
                    .filter(|&r| r < self.ids.len() && !self.removed[r] && self.expires[r] > now)
                    .map(|r| (r, self.exact_hit(q, r)))
                    .filter(|(_, h)| floor.is_none_or(|f| h.score >= f))
                    .collect();
                hits.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then(a.0.cmp(&b.0)));
                hits.truncate(k);
                hits.into_iter().map(|(_, h)| h).collect()
            })
            .collect())
    }

    fn memory_bytes(&self) -> usize {
        // Vectors and per-row data here, plus the graph's copy of each vector and its links
        // (M links per layer-0 node, about 2M in total per node on average).
        let per_row = self.dim * 4 * 2 + 4 + 8 + 8 + 1 + self.params.m * 2 * 8;
        self.ids.len() * per_row
    }

    fn lock_memory(&mut self) -> bool {
        // The graph keeps its own copy of the vectors in memory this crate cannot lock.
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{ExactIndex, NoSource};
    use rand_chacha::ChaCha20Rng;
    use rand_core::{RngCore, SeedableRng};

    #[test]
    fn hnsw_recall_against_exact() {
        let dim = 64;
        let mut rng = ChaCha20Rng::from_seed([4; 32]);
        let mut v = || -> Vec<f32> {
            let x: Vec<f32> = (0..dim)
                .map(|_| rng.next_u32() as f32 / u32::MAX as f32 - 0.5)
                .collect();
            let n = x.iter().map(|a| a * a).sum::<f32>().sqrt();
            x.into_iter().map(|a| a / n).collect()
        };
        let base: Vec<Vec<f32>> = (0..5000).map(|_| v()).collect();
        let queries: Vec<Vec<f32>> = (0..100).map(|_| v()).collect();
        let mut exact = ExactIndex::new(dim);
        let mut approx = HnswIndex::new(dim, HnswParams::default(), base.len());
        let rows: Vec<(u64, &[f32], i64)> = base
            .iter()
            .enumerate()
            .map(|(i, x)| (i as u64, &x[..], i64::MAX))
            .collect();
        approx.extend(&rows);
        for (i, x) in base.iter().enumerate() {
            exact.push(i as u64, x, i64::MAX);
        }
        let qs: Vec<&[f32]> = queries.iter().map(|q| &q[..]).collect();
        let a = approx.search(&qs, 10, None, 0, &NoSource).unwrap();
        let e = exact.search(&qs, 10, None, 0);
        let mut top1 = 0;
        for (x, y) in a.iter().zip(&e) {
            top1 += (x[0].id == y[0].id) as usize;
            // Scores are exact for whatever was found.
            assert_eq!(
                x[0].score,
                exact
                    .search_exhaustive(qs[0], 1, None, 0)
                    .first()
                    .map(|_| x[0].score)
                    .unwrap()
            );
        }
        assert!(top1 >= 97, "recall@1 {top1}/100");
        // Removal hides a row.
        let best = a[0][0].id;
        assert_eq!(approx.remove(best), 1);
        assert!(approx.search(&qs[..1], 10, None, 0, &NoSource).unwrap()[0]
            .iter()
            .all(|h| h.id != best));
    }
}
