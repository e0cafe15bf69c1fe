//! Reading data out: protected templates for migration, a kept enrolment image.

use super::*;

impl Store {
    /// The protected (transformed) templates of a gallery, for migration to another engine or for
    /// an unlinkability check. Admin only, audited as an export. They are still keyed by the
    /// gallery's transform: without its seed they cannot be compared with anything outside it.
    pub fn export_templates(
        &self,
        ctx: &Context,
        gallery: &str,
    ) -> Result<Vec<(String, Vec<f32>)>> {
        Action::ExportTemplates.check(ctx.role)?;
        // From storage, not from the loaded index: a compact index holds no f32 templates.
        let wrapped = self.wrapped_keys(gallery)?;
        let now = self.now();
        let rows = self.backend.gallery_templates(gallery)?;
        let out: Vec<(String, Vec<f32>)> = self
            .open_templates(&rows, gallery, &wrapped)?
            .into_iter()
            .filter(|t| t.expires > now)
            .map(|t| (hex::encode(t.pseudonym), t.template.to_vec()))
            .collect();
        self.audit_event(
            ctx,
            AuditEvent {
                action: "export".into(),
                gallery: Some(gallery.into()),
                outcome: "exported".into(),
                details: serde_json::json!({ "templates": out.len() }),
                ..Default::default()
            },
        )?;
        Ok(out)
    }

    /// Sealed enrolment image of a subject, if one was kept (decrypted for the caller).
    pub fn enrolment_image(
        &self,
        ctx: &Context,
        gallery: &str,
        reference: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>> {
        Action::ReadEnrolmentImage.check(ctx.role)?;
        let info = self.gallery_meta(gallery)?;
        let ps = self.subject_pseudonym(&info, reference)?;
        let dk = self
            .subject_key(gallery, &ps)?
            .ok_or_else(|| GalleryError::UnknownSubject(gallery.into()))?;
        let Some(sealed) = self.backend.subject_image(gallery, &ps)? else {
            return Ok(None);
        };
        let img = crypto::open(&dk, &aad("image", gallery, &ps), &sealed)?;
        self.audit_event(
            ctx,
            AuditEvent {
                action: "image-read".into(),
                gallery: Some(gallery.into()),
                subject: Some(hex::encode(ps)),
                outcome: "read".into(),
                details: serde_json::Value::Null,
            },
        )?;
        Ok(Some(img))
    }
}
