//! Subject keys, gallery rekeying (template renewal) and master-key rotation.

use super::*;

impl Store {
    /// Every wrapped subject key of a gallery, by pseudonym (for loading and rekeying).
    pub(super) fn wrapped_keys(&self, gallery: &str) -> Result<IdMap<[u8; 32], Vec<u8>>> {
        let mut out = IdMap::default();
        self.keys().scan_wrapped(gallery, &mut |ps, wrapped| {
            out.insert(ps, wrapped);
        })?;
        Ok(out)
    }

    /// A subject's data key, unwrapped; `None` once it has been destroyed (erased) or if the
    /// subject never existed.
    pub(super) fn subject_key(&self, gallery: &str, ps: &[u8; 32]) -> Result<Option<SecretKey>> {
        self.keys()
            .wrapped(gallery, ps)?
            .map(|w| {
                self.wrapper
                    .unwrap_key(&aad("subject-key", gallery, ps), &w)
            })
            .transpose()
    }

    /// Every template of `rows` that still has its subject key, decrypted (for rekeying and
    /// export; `load` streams instead, to keep a big gallery's peak memory down).
    pub(super) fn open_templates(
        &self,
        rows: &[backend::StoredTemplate],
        gallery: &str,
        wrapped: &IdMap<[u8; 32], Vec<u8>>,
    ) -> Result<Vec<OpenTemplate>> {
        rows.par_iter()
            .filter_map(|t| {
                let (id, ps, expires, sealed) = (&t.id, &t.pseudonym, &t.expires, &t.sealed);
                // No key: erased, and so is the template.
                let w = wrapped.get(ps)?;
                Some((|| {
                    let key = self
                        .wrapper
                        .unwrap_key(&aad("subject-key", gallery, ps), w)?;
                    let plain = crypto::open(&key, &aad("template", gallery, ps), sealed)?;
                    Ok(OpenTemplate {
                        id: *id,
                        pseudonym: *ps,
                        expires: *expires,
                        template: Zeroizing::new(bytes_to_f32(&plain)?),
                        key,
                    })
                })())
            })
            .collect()
    }

    /// Move every template of `gallery` to a fresh transform (renewal): no images, no re-enrolment.
    /// Templates stored before the call no longer match probes protected after it.
    pub fn rekey_gallery(&self, ctx: &Context, gallery: &str) -> Result<usize> {
        Action::Rekey.check(ctx.role)?;
        let info = self.gallery_meta(gallery)?;
        let new_seed = crypto::random_key()?;
        let new_wrapped = self
            .wrapper
            .wrap(&aad("gallery-seed", gallery, b""), &new_seed)?;
        // Transforms and keys are read before the store lock is taken (`transform` reads the seed
        // through it); a gallery with no template yet only gets its new seed.
        let plan = match info.dim {
            Some(dim) => Some((
                self.transform(gallery, dim)?,
                OrthogonalTransform::from_seed(&new_seed, dim),
                self.wrapped_keys(gallery)?,
            )),
            None => None,
        };
        let (resealed, _) = self.audited(ctx, |tx| {
            let mut resealed: Vec<(i64, Vec<u8>)> = Vec::new();
            if let Some((old, new, wrapped)) = plan {
                let rows = tx.gallery_templates(gallery)?;
                resealed = self
                    .open_templates(&rows, gallery, &wrapped)?
                    .par_iter()
                    .map(|t| {
                        let a = aad("template", gallery, &t.pseudonym);
                        let moved = old.rekey(&new, &t.template);
                        Ok((t.id, crypto::seal(&t.key, &a, &f32_to_bytes(&moved))?))
                    })
                    .collect::<Result<_>>()?;
                for (tid, s) in &resealed {
                    tx.update_template(*tid, s)?;
                }
            }
            tx.set_seed(gallery, &new_wrapped)?;
            tx.bump_generation(gallery)?;
            tx.record(AuditEvent {
                action: "gallery-rekey".into(),
                gallery: Some(gallery.into()),
                outcome: "rekeyed".into(),
                details: serde_json::json!({ "templates": resealed.len() }),
                ..Default::default()
            })?;
            Ok(resealed)
        })?;
        let moved = resealed.len();
        self.transforms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(gallery);
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(gallery);
        Ok(moved)
    }

    /// Rewrap every key under `new` (the master-key rotation). Templates are not touched. `new`
    /// must still open blobs of the current key (a ring holding both).
    pub fn rotate_master(&mut self, ctx: &Context, new: Box<dyn KeyWrapper>) -> Result<usize> {
        Action::RotateMasterKey.check(ctx.role)?;
        let mut count = 0;
        {
            let mut tx = self.keys().write()?;
            for k in tx.all_keys()? {
                let a = aad("subject-key", &k.gallery, &k.pseudonym);
                let dk = new.unwrap_key(&a, &k.wrapped)?;
                tx.set_wrapped(&k.gallery, &k.pseudonym, &new.wrap(&a, &dk)?)?;
                count += 1;
            }
            tx.commit()?;
            // Keys wrapped by the old master key must not linger in the store's files.
            self.keys().scrub()?;
        }
        let from = self.wrapper.current_id();
        self.audited(ctx, |tx| {
            for (k, a) in [
                ("pseudonym_key", &b"facegate/pseudonym-key/v1"[..]),
                ("audit_key", b"facegate/audit-key/v1"),
            ] {
                let w = tx
                    .meta(k)?
                    .ok_or_else(|| GalleryError::Key(format!("{k} missing")))?;
                let key = new.unwrap_key(a, &w)?;
                tx.set_meta(k, &new.wrap(a, &key)?)?;
                count += 1;
            }
            for (g, w) in tx.seeds()? {
                let a = aad("gallery-seed", &g, b"");
                let seed = new.unwrap_key(&a, &w)?;
                tx.set_seed(&g, &new.wrap(&a, &seed)?)?;
                count += 1;
            }
            tx.record(AuditEvent {
                action: "key-rotate".into(),
                outcome: "rewrapped".into(),
                details: serde_json::json!({ "from_key": from, "to_key": new.current_id(), "keys": count }),
                ..Default::default()
            })
        })?;
        self.wrapper = new;
        Ok(count)
    }
}
