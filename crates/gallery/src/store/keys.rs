//! Subject keys, gallery rekeying (template renewal) and master-key rotation.

use super::*;

impl Store {
    /// Every wrapped subject key of a gallery, by pseudonym (for loading and rekeying).
    pub(super) fn wrapped_keys(&self, gallery: &str) -> Result<IdMap<[u8; 32], Vec<u8>>> {
        let keys = self.keys();
        // A table scan in storage order: through the (gallery, pseudonym) index every row would
        // cost a random seek.
        let mut st = keys.prepare(
            "SELECT pseudonym, wrapped FROM subject_keys NOT INDEXED WHERE gallery = ?1",
        )?;
        let mut q = st.query([gallery])?;
        let mut out = IdMap::default();
        while let Some(r) = q.next()? {
            let ps: [u8; 32] = r.get(0)?;
            out.insert(ps, r.get(1)?);
        }
        Ok(out)
    }

    /// A subject's data key, unwrapped; `None` once it has been destroyed (erased) or if the
    /// subject never existed.
    pub(super) fn subject_key(&self, gallery: &str, ps: &[u8; 32]) -> Result<Option<SecretKey>> {
        let wrapped: Option<Vec<u8>> = self
            .keys()
            .query_row(
                "SELECT wrapped FROM subject_keys WHERE gallery = ?1 AND pseudonym = ?2",
                params![gallery, &ps[..]],
                |r| r.get(0),
            )
            .optional()?;
        wrapped
            .map(|w| {
                self.wrapper
                    .unwrap_key(&aad("subject-key", gallery, ps), &w)
            })
            .transpose()
    }

    /// Every template of a gallery that still has its subject key, decrypted (for rekeying and
    /// export; `load` streams instead, to keep a big gallery's peak memory down).
    pub(super) fn open_templates(
        &self,
        conn: &Connection,
        gallery: &str,
        wrapped: &IdMap<[u8; 32], Vec<u8>>,
    ) -> Result<Vec<OpenTemplate>> {
        let rows: Vec<(i64, [u8; 32], i64, Vec<u8>)> = {
            let mut st = conn.prepare(
                "SELECT t.id, s.pseudonym, s.expires, t.sealed FROM templates t JOIN subjects s ON t.subject = s.id
                 WHERE s.gallery = ?1 ORDER BY t.id",
            )?;
            let rows = st.query_map([gallery], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        rows.par_iter()
            .filter_map(|(id, ps, expires, sealed)| {
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
                resealed = self
                    .open_templates(tx, gallery, &wrapped)?
                    .par_iter()
                    .map(|t| {
                        let a = aad("template", gallery, &t.pseudonym);
                        let moved = old.rekey(&new, &t.template);
                        Ok((t.id, crypto::seal(&t.key, &a, &f32_to_bytes(&moved))?))
                    })
                    .collect::<Result<_>>()?;
                for (tid, s) in &resealed {
                    tx.execute(
                        "UPDATE templates SET sealed = ?1 WHERE id = ?2",
                        params![s, tid],
                    )?;
                }
            }
            tx.execute(
                "UPDATE galleries SET seed = ?1, generation = generation + 1 WHERE name = ?2",
                params![new_wrapped, gallery],
            )?;
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
            let keys = self.keys();
            let tx = keys.write_tx()?;
            let rows: Vec<(String, Vec<u8>, Vec<u8>)> = {
                let mut st = tx.prepare("SELECT gallery, pseudonym, wrapped FROM subject_keys")?;
                let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect::<std::result::Result<_, _>>()?
            };
            for (g, ps, w) in rows {
                let a = aad("subject-key", &g, &ps);
                let dk = new.unwrap_key(&a, &w)?;
                tx.execute(
                    "UPDATE subject_keys SET wrapped = ?1 WHERE gallery = ?2 AND pseudonym = ?3",
                    params![new.wrap(&a, &dk)?, g, ps],
                )?;
                count += 1;
            }
            tx.commit()?;
            keys.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        let from = self.wrapper.current_id();
        self.audited(ctx, |tx| {
            for (k, a) in [
                ("pseudonym_key", &b"facegate/pseudonym-key/v1"[..]),
                ("audit_key", b"facegate/audit-key/v1"),
            ] {
                let w: Vec<u8> =
                    tx.query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get(0))?;
                let key = new.unwrap_key(a, &w)?;
                tx.execute(
                    "UPDATE meta SET v = ?1 WHERE k = ?2",
                    params![new.wrap(a, &key)?, k],
                )?;
                count += 1;
            }
            let seeds: Vec<(String, Vec<u8>)> = {
                let mut st = tx.prepare("SELECT name, seed FROM galleries")?;
                let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<std::result::Result<_, _>>()?
            };
            for (g, w) in seeds {
                let a = aad("gallery-seed", &g, b"");
                let seed = new.unwrap_key(&a, &w)?;
                tx.execute(
                    "UPDATE galleries SET seed = ?1 WHERE name = ?2",
                    params![new.wrap(&a, &seed)?, g],
                )?;
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
