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
