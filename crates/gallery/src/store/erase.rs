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
        self.mark(&self.keys(), gallery, ps, "delete", now)?;
        let committed = self.audited(ctx, |tx| {
            let sid: i64 = tx
                .query_row(
                    "SELECT id FROM subjects WHERE gallery = ?1 AND pseudonym = ?2",
                    params![gallery, &ps[..]],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or_else(|| GalleryError::UnknownSubject(gallery.into()))?;
            let tids: Vec<i64> = {
                let mut st = tx.prepare("SELECT id FROM templates WHERE subject = ?1")?;
                let rows = st.query_map([sid], |r| r.get(0))?;
                rows.collect::<std::result::Result<_, _>>()?
            };
            tx.execute("DELETE FROM subjects WHERE id = ?1", [sid])?;
            tx.execute(
                "UPDATE galleries SET generation = generation + 1 WHERE name = ?1",
                [gallery],
            )?;
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
            tx.execute(
                "INSERT INTO receipts (receipt) VALUES (?1)",
                [serde_json::to_string(&receipt)
                    .map_err(|e| GalleryError::Invalid(e.to_string()))?],
            )?;
            Ok((receipt, sid, tids))
        });
        let ((receipt, sid, tids), _) = match committed {
            Ok(r) => r,
            Err(e) => {
                self.unmark(gallery, ps, "delete");
                return Err(e);
            }
        };
        self.destroy_key(gallery, ps)?;
        if let Some(lg) = self.loaded_entry(gallery) {
            let mut lg = lg.write().unwrap_or_else(|p| p.into_inner());
            if lg.index.is_compact() {
                for tid in tids {
                    lg.index.remove(tid as u64);
                }
            } else {
                lg.index.remove(sid as u64);
                lg.pseudonyms.remove(&(sid as u64));
            }
            lg.generation += 1;
        }
        Ok(receipt)
    }

    pub(super) fn destroy_key(&self, gallery: &str, ps: &[u8; 32]) -> Result<()> {
        let keys = self.keys();
        let tx = keys.write_tx()?;
        tx.execute(
            "DELETE FROM subject_keys WHERE gallery = ?1 AND pseudonym = ?2",
            params![gallery, &ps[..]],
        )?;
        tx.execute(
            "DELETE FROM pending WHERE gallery = ?1 AND pseudonym = ?2 AND op = 'delete'",
            params![gallery, &ps[..]],
        )?;
        tx.commit()?;
        // secure_delete zeroed the page in the WAL copy; checkpointing and truncating the WAL
        // removes the last file that held the old page.
        keys.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Erase every subject of `gallery` past its retention. Returns the signed receipts.
    pub fn purge(&self, ctx: &Context, gallery: &str) -> Result<Vec<DeletionReceipt>> {
        Action::Purge.check(ctx.role)?;
        self.gallery_meta(gallery)?;
        self.reconcile()?;
        let now = self.now();
        let expired: Vec<Vec<u8>> = {
            let db = self.db();
            let mut st =
                db.prepare("SELECT pseudonym FROM subjects WHERE gallery = ?1 AND expires <= ?2")?;
            let rows = st.query_map(params![gallery, now], |r| r.get(0))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
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
        let db = self.db();
        let mut st = db.prepare("SELECT receipt FROM receipts ORDER BY id")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(serde_json::from_str(&r?).map_err(|e| GalleryError::Invalid(e.to_string()))?);
        }
        Ok(out)
    }
}
