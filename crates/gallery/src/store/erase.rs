//! Erasure: destroy the subject's key (so every backup loses it), delete its rows, sign a
//! receipt; retention purges.

use super::*;

/// Longest deletion reason kept (in the audit record and the signed receipt).
pub const MAX_REASON: usize = 512;

impl Store {
    /// Erase one subject: its key is destroyed, its rows deleted, a signed receipt returned.
    pub fn delete(
        &self,
        ctx: &Context,
        gallery: &str,
        reference: &str,
        reason: &str,
    ) -> Result<DeletionReceipt> {
        Action::Delete.check(ctx.role)?;
        let info = self.gallery_meta(gallery)?;
        let ps = self.subject_pseudonym(&info, reference)?;
        self.erase(ctx, gallery, &ps, reason)
    }

    pub(super) fn erase(
        &self,
        ctx: &Context,
        gallery: &str,
        ps: &[u8; 32],
        reason: &str,
    ) -> Result<DeletionReceipt> {
        if reason.trim().is_empty() {
            return Err(GalleryError::Invalid(
                "a deletion must state its reason".into(),
            ));
        }
        if reason.chars().count() > MAX_REASON {
            return Err(GalleryError::Invalid(format!(
                "a deletion reason is at most {MAX_REASON} characters"
            )));
        }
        self.before_write();
        let now = self.now();
        {
            let mut tx = self.keys().write()?;
            tx.mark(&Mark::new(gallery, ps, "delete", now))?;
            tx.commit()?;
        }
        let committed = self.audited(ctx, |tx| {
            let sid = tx
                .subject_id(gallery, ps)?
                .ok_or_else(|| GalleryError::UnknownSubject(gallery.into()))?;
            let tids = tx.template_ids(sid)?;
            tx.delete_subject(sid)?;
            let generation = tx.bump_generation(gallery)?;
            tx.record_change(gallery, generation, "delete", sid, &tids)?;
            let head = tx.record(AuditEvent {
                action: "delete".into(),
                gallery: Some(gallery.into()),
                subject: Some(hex::encode(ps)),
                outcome: "erased".into(),
                details: serde_json::json!({ "reason": reason }),
            })?;
            let mut receipt = DeletionReceipt {
                gallery: gallery.into(),
                pseudonym: hex::encode(ps),
                time: audit::now_rfc3339(now),
                reason: reason.into(),
                audit_seq: head.seq,
                signature: String::new(),
                public_key: self.public_key.clone(),
            };
            receipt.signature =
                hex::encode(self.signer.sign(&receipt_message(&receipt)).to_bytes());
            tx.insert_receipt(
                &serde_json::to_string(&receipt)
                    .map_err(|e| GalleryError::Invalid(e.to_string()))?,
            )?;
            Ok((receipt, sid, tids, generation))
        });
        let ((receipt, sid, tids, generation), _) = match committed {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, GalleryError::Unavailable(_)) {
                    // The deletion may have committed before the connection was lost: the mark
                    // stays, and recovery destroys the key if the subject is gone.
                    self.interrupted(&e);
                } else {
                    self.unmark(gallery, ps, "delete");
                }
                return Err(e);
            }
        };
        if let Err(e) = self.destroy_key(gallery, ps) {
            // The subject is gone from the record store; its key goes at the next write.
            self.interrupted(&e);
            return Err(e);
        }
        // As in enrolment: applied here only onto an index current just before this change.
        if let Some(lg) = self.loaded_entry(gallery) {
            let mut lg = lg.write().unwrap_or_else(|p| p.into_inner());
            if lg.generation != generation - 1 {
                return Ok(receipt);
            }
            if lg.index.is_compact() {
                for tid in tids {
                    lg.index.remove(tid as u64);
                }
            } else {
                lg.index.remove(sid as u64);
                lg.pseudonyms.remove(&(sid as u64));
            }
            lg.generation = generation;
        }
        Ok(receipt)
    }

    pub(super) fn destroy_key(&self, gallery: &str, ps: &[u8; 32]) -> Result<()> {
        let mut tx = self.keys().write()?;
        tx.delete_key(gallery, ps, None)?;
        tx.unmark(gallery, ps, "delete")?;
        tx.commit()?;
        // No file of the key store may keep the destroyed key (the backend's guarantee).
        self.keys().scrub()
    }

    /// Erase every subject of `gallery` past its retention. Returns the signed receipts.
    pub fn purge(&self, ctx: &Context, gallery: &str) -> Result<Vec<DeletionReceipt>> {
        Action::Purge.check(ctx.role)?;
        self.gallery_meta(gallery)?;
        self.reconcile()?;
        let now = self.now();
        let expired = self.backend.expired(gallery, now)?;
        let mut receipts = Vec::with_capacity(expired.len());
        for p in expired {
            let ps: [u8; 32] = p.try_into().map_err(|_| {
                GalleryError::Invalid("stored pseudonym has the wrong length".into())
            })?;
            receipts.push(self.erase(ctx, gallery, &ps, "retention period expired")?);
        }
        Ok(receipts)
    }

    /// Every deletion receipt issued so far.
    pub fn receipts(&self) -> Result<Vec<DeletionReceipt>> {
        self.backend
            .receipts()?
            .iter()
            .map(|r| serde_json::from_str(r).map_err(|e| GalleryError::Invalid(e.to_string())))
            .collect()
    }
}
