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
        self.audited(ctx, |tx| {
            let n = tx.execute(
                "INSERT OR IGNORE INTO galleries (name, policy, seed, created) VALUES (?1, ?2, ?3, ?4)",
                params![name, text, wrapped, self.now()],
            )?;
            if n == 0 {
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
            let enrolled: bool = self.db().query_row(
                "SELECT EXISTS(SELECT 1 FROM subjects WHERE gallery = ?1)",
                [name],
                |r| r.get(0),
            )?;
            if enrolled {
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
            tx.execute(
                "UPDATE galleries SET policy = ?1 WHERE name = ?2",
                params![text, name],
            )?;
            if rebuild {
                tx.execute(
                    "UPDATE galleries SET generation = generation + 1 WHERE name = ?1",
                    [name],
                )?;
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
        let names: Vec<String> = {
            let db = self.db();
            let mut st = db.prepare("SELECT name FROM galleries ORDER BY name")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        names.iter().map(|n| self.gallery(n)).collect()
    }

    /// Policy and template kind of a gallery, without counting anything (the hot path).
    pub(super) fn gallery_meta(&self, name: &str) -> Result<GalleryInfo> {
        let db = self.db();
        let row: Option<GalleryRow> = db
            .query_row(
                "SELECT policy, dim, metric, pack, created FROM galleries WHERE name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let (policy, dim, metric, pack, created) =
            row.ok_or_else(|| GalleryError::UnknownGallery(name.into()))?;
        let policy: Policy = serde_json::from_str(&policy)
            .map_err(|e| GalleryError::Invalid(format!("stored policy: {e}")))?;
        Ok(GalleryInfo {
            name: name.into(),
            dim: dim.map(|d| d as usize),
            metric: metric.as_deref().map(Metric::parse).transpose()?,
            pack,
            created: audit::now_rfc3339(created),
            subjects: 0,
            templates: 0,
            expired: 0,
            policy,
        })
    }

    /// A gallery's policy, template kind and counts.
    pub fn gallery(&self, name: &str) -> Result<GalleryInfo> {
        let mut info = self.gallery_meta(name)?;
        let db = self.db();
        let now = self.now();
        let count = |sql: &str| -> Result<u64> {
            Ok(db.query_row(sql, params![name, now], |r| r.get::<_, i64>(0))? as u64)
        };
        info.subjects = count("SELECT COUNT(*) FROM subjects WHERE gallery = ?1 AND expires > ?2")?;
        info.templates = count(
            "SELECT COUNT(*) FROM templates t JOIN subjects s ON t.subject = s.id
             WHERE s.gallery = ?1 AND s.expires > ?2",
        )?;
        info.expired = count("SELECT COUNT(*) FROM subjects WHERE gallery = ?1 AND expires <= ?2")?;
        Ok(info)
    }

    pub(super) fn transform(&self, gallery: &str, dim: usize) -> Result<Arc<OrthogonalTransform>> {
        let mut cache = self.transforms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = cache.get(gallery) {
            if t.dim() == dim {
                return Ok(t.clone());
            }
        }
        let wrapped: Vec<u8> = self
            .db()
            .query_row(
                "SELECT seed FROM galleries WHERE name = ?1",
                [gallery],
                |r| r.get(0),
            )
            .optional()?
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
