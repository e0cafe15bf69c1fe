//! 1:N identification and 1:1 verification against an enrolled subject.

use super::*;

/// A compact index's candidates, decrypted from storage one by one (only the few rows whose
/// int8 bound reaches the top k). Remembers each template's subject for the result.
pub(super) struct StoredTemplates<'a> {
    store: &'a Store,
    gallery: &'a str,
    resolved: Mutex<IdMap<u64, (i64, [u8; 32])>>,
}

impl<'a> StoredTemplates<'a> {
    fn new(store: &'a Store, gallery: &'a str) -> Self {
        StoredTemplates {
            store,
            gallery,
            resolved: Mutex::new(IdMap::default()),
        }
    }

    /// Template row id → (subject row id, pseudonym) for every template fetched.
    fn into_resolved(self) -> IdMap<u64, (i64, [u8; 32])> {
        self.resolved
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
    }
}

impl TemplateSource for StoredTemplates<'_> {
    fn templates(&self, ids: &[u64]) -> Result<Vec<Option<Zeroizing<Vec<f32>>>>> {
        // None where the row is gone.
        let rows = self.store.backend.templates_by_id(self.gallery, ids)?;
        let mut keys: IdMap<i64, Option<SecretKey>> = IdMap::default();
        let mut resolved = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(ids.len());
        for (id, row) in ids.iter().zip(rows) {
            let Some(backend::TemplateById {
                subject: sid,
                sealed,
                pseudonym: ps,
            }) = row
            else {
                out.push(None);
                continue;
            };
            let dk = match keys.entry(sid) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(self.store.subject_key(self.gallery, &ps)?)
                }
            };
            // Erased between the scan and now: the key is gone, so is the template.
            let Some(dk) = dk else {
                out.push(None);
                continue;
            };
            let plain = crypto::open(dk, &aad("template", self.gallery, &ps), &sealed)?;
            out.push(Some(Zeroizing::new(bytes_to_f32(&plain)?)));
            resolved.insert(*id, (sid, ps));
        }
        Ok(out)
    }
}

impl Store {
    pub(super) fn check_search(&self, ctx: &Context, info: &GalleryInfo) -> Result<()> {
        if ctx.purpose.trim().is_empty() {
            return Err(GalleryError::Invalid(
                "a search must state its purpose".into(),
            ));
        }
        if !info.policy.search_roles.contains(&ctx.role) {
            return Err(GalleryError::Forbidden(format!(
                "role '{}' may not search gallery '{}'",
                ctx.role.as_str(),
                info.name
            )));
        }
        Ok(())
    }

    pub(super) fn reference_of(&self, gallery: &str, sid: i64, ps: &[u8; 32]) -> Result<String> {
        let dk = self
            .subject_key(gallery, ps)?
            .ok_or_else(|| GalleryError::UnknownSubject(gallery.into()))?;
        let sealed = self
            .backend
            .subject_reference(sid)?
            .ok_or_else(|| GalleryError::UnknownSubject(gallery.into()))?;
        let plain = crypto::open(&dk, &aad("reference", gallery, ps), &sealed)?;
        String::from_utf8(plain.to_vec())
            .map_err(|_| GalleryError::Decrypt("reference is not UTF-8".into()))
    }

    /// Open-set 1:N search. `threshold` overrides the policy's (which overrides the pack default
    /// `default_threshold`). The probe is never stored; the audit record holds only pseudonyms.
    pub fn identify(
        &self,
        ctx: &Context,
        gallery: &str,
        probe: &[f32],
        k: Option<usize>,
        default_threshold: f64,
    ) -> Result<Identification> {
        let info = self.gallery_meta(gallery)?;
        self.check_search(ctx, &info)?;
        let threshold = info.policy.threshold.unwrap_or(default_threshold);
        let k = k
            .unwrap_or(info.policy.max_candidates)
            .min(info.policy.max_candidates);
        let (metric, dim) = match (info.metric, info.dim) {
            (Some(m), Some(d)) => (m, d),
            _ => {
                let seq = self.audit_event(
                    ctx,
                    AuditEvent {
                        action: "identify".into(),
                        gallery: Some(gallery.into()),
                        outcome: "no-match".into(),
                        details: with_capture(
                            ctx,
                            serde_json::json!({"searched": 0, "threshold": threshold}),
                        ),
                        ..Default::default()
                    },
                )?;
                return Ok(Identification {
                    gallery: gallery.into(),
                    metric: info.metric.unwrap_or(Metric::Euclidean),
                    threshold,
                    cohort_z_threshold: None,
                    candidates: vec![],
                    searched_templates: 0,
                    audit_seq: seq,
                });
            }
        };
        if probe.len() != dim {
            return Err(GalleryError::Dimension {
                gallery: gallery.into(),
                expected: dim,
                got: probe.len(),
            });
        }
        let q = self.protect(gallery, metric, probe)?;
        let q2: f64 = q.iter().map(|v| (*v as f64).powi(2)).sum();
        // The index ranks by s = q·x − |x|²/2; turn the threshold into a floor on s.
        let floor = match metric {
            Metric::Euclidean => ((q2 - threshold * threshold) / 2.0) as f32,
            Metric::Cosine => (threshold - 0.5) as f32,
        };
        // With a cohort the nearest `ranks` subjects are fetched whatever their distance, and
        // the decision is made on them below.
        let cohort = info.policy.cohort.as_ref();
        let (wanted, floor) = match cohort {
            Some(c) => (c.ranks.max(k), None),
            None => (k, Some(floor)),
        };
        let now = self.now();
        let lg = self.load(gallery)?;
        let (nearest, searched) = {
            let lg = lg.read().unwrap_or_else(|p| p.into_inner());
            let kk = wanted * lg.max_templates_per_subject.max(1);
            // Only a compact index asks the source for anything.
            let source = StoredTemplates::new(self, gallery);
            let found = lg.index.search(&[&q[..]], kk, floor, now, &source)?;
            let hits = found.into_iter().next().unwrap_or_default();
            // A compact index names templates: their subjects came back with the templates.
            let resolved = source.into_resolved();
            let mut seen = std::collections::HashSet::new();
            let mut nearest = Vec::new();
            for mut h in hits {
                let ps = match resolved.get(&h.id) {
                    Some((sid, ps)) => {
                        h.id = *sid as u64;
                        Some(*ps)
                    }
                    None => lg.pseudonyms.get(&h.id).copied(),
                };
                if seen.insert(h.id) {
                    let score = match lg.metric {
                        Metric::Euclidean => (q2 - 2.0 * h.score as f64).max(0.0).sqrt(),
                        Metric::Cosine => h.dot as f64,
                    };
                    nearest.push((h.id, ps.unwrap_or([0; 32]), score));
                }
                if nearest.len() == wanted {
                    break;
                }
            }
            (nearest, lg.index.len())
        };
        let decided = decide(metric, threshold, cohort, nearest, k);
        let mut candidates = Vec::with_capacity(decided.candidates.len());
        for (rank, (sid, ps, score, z)) in decided.candidates.iter().enumerate() {
            candidates.push(Candidate {
                rank: rank + 1,
                reference: self.reference_of(gallery, *sid as i64, ps)?,
                pseudonym: hex::encode(ps),
                score: *score,
                z: *z,
            });
        }
        let seq = self.audit_event(
            ctx,
            AuditEvent {
                action: "identify".into(),
                gallery: Some(gallery.into()),
                subject: candidates.first().map(|c| c.pseudonym.clone()),
                outcome: if candidates.is_empty() { "no-match" } else { "match" }.into(),
                details: with_capture(ctx, serde_json::json!({
                    "searched": searched,
                    "threshold": threshold,
                    "cohort": decided.cohort,
                    "candidates": candidates.iter().map(|c| serde_json::json!({"pseudonym": c.pseudonym, "score": c.score, "z": c.z})).collect::<Vec<_>>(),
                })),
            },
        )?;
        Ok(Identification {
            gallery: gallery.into(),
            metric,
            threshold,
            cohort_z_threshold: decided.cohort.as_ref().map(|c| c.z_threshold),
            candidates,
            searched_templates: searched,
            audit_seq: seq,
        })
    }

    /// Records a comparison that was asked for and refused before any template was compared
    /// (e.g. the probe failed the liveness check under a blocking policy): audited like the
    /// search it replaces, with the same permission check, the capture facts and the reason as
    /// the outcome. `action` is "identify" or "verify". Returns the audit sequence number.
    pub fn refuse_comparison(
        &self,
        ctx: &Context,
        gallery: &str,
        action: &str,
        outcome: &str,
    ) -> Result<u64> {
        let info = self.gallery_meta(gallery)?;
        self.check_search(ctx, &info)?;
        if !matches!(action, "identify" | "verify") {
            return Err(GalleryError::Invalid(format!(
                "'{action}' is not a comparison"
            )));
        }
        self.audit_event(
            ctx,
            AuditEvent {
                action: action.into(),
                gallery: Some(gallery.into()),
                outcome: outcome.into(),
                details: with_capture(ctx, serde_json::json!({"compared": false})),
                ..Default::default()
            },
        )
    }

    /// What the store holds about one subject (no biometric data): for operators and for checks
    /// that an acknowledged enrolment is there. Expired subjects are reported as unknown.
    pub fn subject(&self, gallery: &str, reference: &str) -> Result<SubjectInfo> {
        let info = self.gallery_meta(gallery)?;
        let ps = self.subject_pseudonym(&info, reference)?;
        match self.backend.subject(gallery, &ps)? {
            Some(s) if s.expires > self.now() => Ok(SubjectInfo {
                gallery: gallery.into(),
                pseudonym: hex::encode(ps),
                enrolled: audit::now_rfc3339(s.enrolled),
                expires: audit::now_rfc3339(s.expires),
                templates: s.templates as usize,
                image_kept: s.images > 0,
                consent_recorded: s.consent,
            }),
            _ => Err(GalleryError::UnknownSubject(gallery.into())),
        }
    }

    /// 1:1 against an enrolled subject (e.g. a gate with a token naming the traveller): the best
    /// score over the subject's templates, decided at the gallery's threshold. Audited like a search.
    pub fn verify_subject(
        &self,
        ctx: &Context,
        gallery: &str,
        reference: &str,
        probe: &[f32],
        default_threshold: f64,
    ) -> Result<SubjectVerification> {
        let info = self.gallery_meta(gallery)?;
        self.check_search(ctx, &info)?;
        let (metric, dim) = match (info.metric, info.dim) {
            (Some(m), Some(d)) => (m, d),
            _ => return Err(GalleryError::UnknownSubject(gallery.into())),
        };
        if probe.len() != dim {
            return Err(GalleryError::Dimension {
                gallery: gallery.into(),
                expected: dim,
                got: probe.len(),
            });
        }
        let threshold = info.policy.threshold.unwrap_or(default_threshold);
        let ps = self.subject_pseudonym(&info, reference)?;
        let now = self.now();
        let sealed = self.backend.subject_templates(gallery, &ps, now)?;
        let dk = self.subject_key(gallery, &ps)?;
        let (Some(dk), false) = (dk, sealed.is_empty()) else {
            self.audit_event(
                ctx,
                AuditEvent {
                    action: "verify".into(),
                    gallery: Some(gallery.into()),
                    subject: Some(hex::encode(ps)),
                    outcome: "unknown-subject".into(),
                    details: serde_json::Value::Null,
                },
            )?;
            return Err(GalleryError::UnknownSubject(gallery.into()));
        };
        let q = self.protect(gallery, metric, probe)?;
        let mut best: Option<f64> = None;
        for b in &sealed {
            let x = bytes_to_f32(&crypto::open(&dk, &aad("template", gallery, &ps), b)?)?;
            let score = match metric {
                Metric::Euclidean => q
                    .iter()
                    .zip(&x)
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum::<f64>()
                    .sqrt(),
                Metric::Cosine => q
                    .iter()
                    .zip(&x)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>(),
            };
            best = Some(match best {
                None => score,
                Some(s) if metric.is_match(score, s) => score,
                Some(s) => s,
            });
        }
        let score = best.unwrap_or(f64::NAN);
        let matched = metric.is_match(score, threshold);
        let seq = self.audit_event(
            ctx,
            AuditEvent {
                action: "verify".into(),
                gallery: Some(gallery.into()),
                subject: Some(hex::encode(ps)),
                outcome: if matched { "match" } else { "no-match" }.into(),
                details: with_capture(
                    ctx,
                    serde_json::json!({"score": score, "threshold": threshold}),
                ),
            },
        )?;
        Ok(SubjectVerification {
            matched,
            score,
            threshold,
            metric,
            audit_seq: seq,
        })
    }
}

/// The cohort a search was decided against (audited with it).
#[derive(Debug, Clone, Serialize)]
struct CohortApplied {
    z_threshold: f64,
    /// Subjects in the cohort (ranks 2…), their mean dissimilarity and its spread.
    size: usize,
    mean: f64,
    sd: f64,
}

struct Decided {
    /// (subject row, pseudonym, score in the gallery's metric, z when decided on the cohort).
    candidates: Vec<(u64, [u8; 32], f64, Option<f64>)>,
    cohort: Option<CohortApplied>,
}

/// The decision on a search's nearest subjects (nearest first): on the cohort z-threshold when
/// the policy has a cohort and the gallery a full one, else on the distance threshold; at most
/// `k` candidates.
fn decide(
    metric: Metric,
    threshold: f64,
    cohort: Option<&crate::policy::CohortNormalisation>,
    nearest: Vec<(u64, [u8; 32], f64)>,
    k: usize,
) -> Decided {
    // Dissimilarity, as calibrated: Euclidean distance, or 1 − cosine.
    let dissimilarity = |score: f64| match metric {
        Metric::Euclidean => score,
        Metric::Cosine => 1.0 - score,
    };
    let full = cohort.filter(|c| nearest.len() >= c.ranks).and_then(|c| {
        let others: Vec<f64> = nearest[1..c.ranks]
            .iter()
            .map(|n| dissimilarity(n.2))
            .collect();
        Some((c, template::cohort::Cohort::of(&others)?, others.len()))
    });
    match full {
        Some((c, cohort, size)) => Decided {
            // z grows with the distance, so the nearest-first order stays.
            candidates: nearest
                .into_iter()
                .map(|(id, ps, score)| (id, ps, score, cohort.z(dissimilarity(score))))
                .take_while(|n| n.3 <= c.z_threshold)
                .take(k)
                .map(|(id, ps, score, z)| (id, ps, score, Some(z)))
                .collect(),
            cohort: Some(CohortApplied {
                z_threshold: c.z_threshold,
                size,
                mean: cohort.mean,
                sd: cohort.sd,
            }),
        },
        None => Decided {
            candidates: nearest
                .into_iter()
                .filter(|n| metric.is_match(n.2, threshold))
                .take(k)
                .map(|(id, ps, score)| (id, ps, score, None))
                .collect(),
            cohort: None,
        },
    }
}

/// A comparison's audit details with the probe's capture facts (`Context::capture`) added.
fn with_capture(ctx: &Context, mut details: serde_json::Value) -> serde_json::Value {
    if let (Some(c), Some(map)) = (&ctx.capture, details.as_object_mut()) {
        map.insert("capture".into(), c.clone());
    }
    details
}
