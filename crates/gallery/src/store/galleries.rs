//! Galleries: creation, policy changes, listing, and each gallery's keyed transform.

use super::*;

pub(super) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(GalleryError::Invalid(format!(
            "gallery name '{name}' must be 1-64 characters of letters, digits, '-', '_' or '.'"
        )))
    }
}

impl Store {
    pub fn create_gallery(&self, ctx: &Context, name: &str, policy: &Policy) -> Result<()> {
        check_name(name)?;
        policy.validate()?;
        // A target FPIR sets the threshold for the (empty) gallery's first size step.
        let mut policy = policy.clone();
        policy.size_threshold(0);
        let policy = &policy;
        Action::CreateGallery.check(ctx.role)?;
        let seed = crypto::random_key()?;
        let wrapped = self.wrapper.wrap(&aad("gallery-seed", name, b""), &seed)?;
        let text =
            serde_json::to_string(policy).map_err(|e| GalleryError::Invalid(e.to_string()))?;
        let created = self.now();
        self.audited(ctx, |tx| {
            if !tx.insert_gallery(name, &text, &wrapped, created)? {
                return Err(GalleryError::GalleryExists(name.into()));
            }
            tx.record(AuditEvent {
                action: "gallery-create".into(),
                gallery: Some(name.into()),
                outcome: "created".into(),
                details: serde_json::to_value(policy).unwrap_or_default(),
                ..Default::default()
            })
        })?;
        Ok(())
    }

    /// Replace a gallery's policy (admin). `evidence` says why (e.g. a calibration's dataset and
    /// figures) and is kept in the audit record with the old and new policy.
    pub fn update_policy(
        &self,
        ctx: &Context,
        name: &str,
        policy: &Policy,
        evidence: Option<serde_json::Value>,
    ) -> Result<()> {
        policy.validate()?;
        Action::ChangePolicy.check(ctx.role)?;
        let old = self.gallery_meta(name)?.policy;
        // A target FPIR sets the threshold for the gallery's size now (with headroom).
        let mut policy = policy.clone();
        if policy.fpir_target.is_some() {
            policy.size_threshold(self.backend.subject_count(name)?);
        }
        let policy = &policy;
        if old.reference_case != policy.reference_case {
            // Pseudonyms are keyed on the normalised reference: another rule would orphan every
            // enrolled subject.
            if self.backend.has_subjects(name)? {
                return Err(GalleryError::Invalid(
                    "the reference case rule cannot change once subjects are enrolled".into(),
                ));
            }
        }
        let text =
            serde_json::to_string(policy).map_err(|e| GalleryError::Invalid(e.to_string()))?;
        // Another search structure: every process rebuilds its loaded index.
        let rebuild = old.index != policy.index;
        self.audited(ctx, |tx| {
            tx.set_policy(name, &text)?;
            if rebuild {
                tx.bump_generation(name)?;
            }
            tx.record(AuditEvent {
                action: "policy-change".into(),
                gallery: Some(name.into()),
                outcome: "changed".into(),
                details: match evidence {
                    Some(e) => serde_json::json!({ "from": old, "to": policy, "evidence": e }),
                    None => serde_json::json!({ "from": old, "to": policy }),
                },
                ..Default::default()
            })
        })?;
        if rebuild {
            self.loaded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
        }
        Ok(())
    }

    /// Before an enrolment takes a gallery with a target FPIR to `size` subjects: refuse or warn
    /// when the pack's expected FNIR there passes the policy's limit, and move the threshold
    /// (tighter, audited as `threshold-follow`) when it was set for fewer subjects. Returns the
    /// warnings for the enroller. The policy's own rule acts here, so no admin role is needed;
    /// the record names the enrolling actor. A gallery deciding on a cohort z-threshold warns
    /// when it grows past the size that threshold was calibrated at.
    pub(super) fn follow_gallery_size(
        &self,
        ctx: &Context,
        gallery: &str,
        policy: &Policy,
        adding: u64,
    ) -> Result<Vec<String>> {
        if let Some(c) = &policy.cohort {
            let size = self.backend.subject_count(gallery)?.saturating_add(adding);
            return Ok(if size > c.calibrated_at {
                vec![format!(
                    "at {size} subjects the gallery is larger than the {} its cohort z-threshold {:.3} was calibrated at for FPIR {:.0e}: more impostors pass than that; recalibrate (eval calibrate --cohort) at the size it will reach",
                    c.calibrated_at, c.z_threshold, c.fpir
                )]
            } else {
                Vec::new()
            });
        }
        let Some(target) = &policy.fpir_target else {
            return Ok(Vec::new());
        };
        let size = self.backend.subject_count(gallery)?.saturating_add(adding);
        let mut next = policy.clone();
        let moved = next.follow_size(size);
        let mut warnings = Vec::new();
        if let (Some(e), Some(max)) = (next.expected(size), target.max_fnir) {
            if e.fnir > max {
                let msg = format!(
                    "at {size} subjects and FPIR {:.0e}, the pack is expected to miss {:.1}% of listed people (threshold {:.4}); the policy's limit is {:.1}%",
                    target.fpir,
                    e.fnir * 100.0,
                    e.threshold,
                    max * 100.0
                );
                if target.refuse_beyond_max_fnir {
                    return Err(GalleryError::Outgrown(msg));
                }
                warnings.push(msg);
            }
        }
        if let Some(from) = moved {
            let text =
                serde_json::to_string(&next).map_err(|e| GalleryError::Invalid(e.to_string()))?;
            let details = serde_json::json!({
                "from_threshold": from,
                "to_threshold": next.threshold,
                "gallery_size": size,
                "sized_for": next.fpir_target.as_ref().map(|f| f.sized_for),
                "target_fpir": target.fpir,
                "expected": next.expected(size),
            });
            self.audited(ctx, |tx| {
                tx.set_policy(gallery, &text)?;
                tx.record(AuditEvent {
                    action: "threshold-follow".into(),
                    gallery: Some(gallery.into()),
                    outcome: "moved".into(),
                    details,
                    ..Default::default()
                })
            })?;
        }
        Ok(warnings)
    }

    pub fn galleries(&self) -> Result<Vec<GalleryInfo>> {
        let names = self.backend.gallery_names()?;
        names.iter().map(|n| self.gallery(n)).collect()
    }

    /// Policy and template kind of a gallery, without counting anything (the hot path).
    pub(super) fn gallery_meta(&self, name: &str) -> Result<GalleryInfo> {
        let row = self
            .backend
            .gallery(name)?
            .ok_or_else(|| GalleryError::UnknownGallery(name.into()))?;
        let policy: Policy = serde_json::from_str(&row.policy)
            .map_err(|e| GalleryError::Invalid(format!("stored policy: {e}")))?;
        Ok(GalleryInfo {
            name: name.into(),
            dim: row.dim.map(|d| d as usize),
            metric: row.metric.as_deref().map(Metric::parse).transpose()?,
            pack: row.pack,
            created: audit::now_rfc3339(row.created),
            subjects: 0,
            templates: 0,
            expired: 0,
            expected: None,
            policy,
        })
    }

    /// A gallery's policy, template kind and counts.
    pub fn gallery(&self, name: &str) -> Result<GalleryInfo> {
        let mut info = self.gallery_meta(name)?;
        let counts = self.backend.counts(name, self.now())?;
        info.subjects = counts.subjects;
        info.templates = counts.templates;
        info.expired = counts.expired;
        info.expected = info.policy.expected(counts.subjects + counts.expired);
        Ok(info)
    }

    pub(super) fn transform(&self, gallery: &str, dim: usize) -> Result<Arc<OrthogonalTransform>> {
        let mut cache = self.transforms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = cache.get(gallery) {
            if t.dim() == dim {
                return Ok(t.clone());
            }
        }
        let wrapped = self
            .backend
            .gallery_seed(gallery)?
            .ok_or_else(|| GalleryError::UnknownGallery(gallery.into()))?;
        let seed = self
            .wrapper
            .unwrap_key(&aad("gallery-seed", gallery, b""), &wrapped)?;
        let t = Arc::new(OrthogonalTransform::from_seed(&seed, dim));
        cache.insert(gallery.into(), t.clone());
        Ok(t)
    }

    pub(super) fn protect(&self, gallery: &str, metric: Metric, x: &[f32]) -> Result<Vec<f32>> {
        let t = self.transform(gallery, x.len())?;
        Ok(match metric {
            Metric::Cosine => t.apply(&unit(x)),
            Metric::Euclidean => t.apply(x),
        })
    }
}
