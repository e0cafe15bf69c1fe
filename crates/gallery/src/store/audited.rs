//! The audit trail: every biometric operation commits its record in the same transaction as
//! its effect (`Store::audited`), and the `audit.head` mirror follows each commit.

use super::*;

/// A write transaction on the record store that cannot commit without its audit record: the
/// only way the service changes the record store (see [`Store::audited`]). Derefs to the
/// backend's transaction for the operation's own writes.
pub(super) struct AuditedTx<'c> {
    tx: Box<dyn WriteTxn + 'c>,
    signer: &'c SigningKey,
    actor: Actor<'c>,
    now: i64,
    head: Option<SignedHead>,
}

impl AuditedTx<'_> {
    /// Append `ev` to the hash chain inside this transaction; returns the head it makes.
    pub(super) fn record(&mut self, ev: AuditEvent) -> Result<SignedHead> {
        let head = audit::append(&mut *self.tx, self.signer, &self.actor, self.now, ev)?;
        self.head = Some(head.clone());
        Ok(head)
    }
}

impl<'c> std::ops::Deref for AuditedTx<'c> {
    type Target = dyn WriteTxn + 'c;
    fn deref(&self) -> &Self::Target {
        &*self.tx
    }
}

impl std::ops::DerefMut for AuditedTx<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self.tx
    }
}

/// The actor of records the service writes on its own (crash recovery).
pub(super) const SYSTEM_ACTOR: Actor<'static> = Actor {
    id: "facegate",
    role: "system",
    purpose: "crash recovery",
};

impl Store {
    /// Run `op` in one write transaction on `store.db` and commit it together with the audit
    /// record(s) `op` wrote through [`AuditedTx::record`]. An operation that wrote no record is
    /// rolled back with an error: no change to the store goes unaudited. After the commit the
    /// `audit.head` mirror follows.
    pub(super) fn audited<T>(
        &self,
        ctx: &Context,
        op: impl FnOnce(&mut AuditedTx<'_>) -> Result<T>,
    ) -> Result<(T, SignedHead)> {
        ctx.check()?;
        self.audited_as(ctx.audit_actor(), op)
    }

    pub(super) fn audited_as<T>(
        &self,
        actor: Actor<'_>,
        op: impl FnOnce(&mut AuditedTx<'_>) -> Result<T>,
    ) -> Result<(T, SignedHead)> {
        let (out, head) = {
            let mut atx = AuditedTx {
                tx: self.backend.write()?,
                signer: &self.signer,
                actor,
                now: self.now(),
                head: None,
            };
            let out = op(&mut atx)?;
            let AuditedTx { tx, head, .. } = atx;
            let head = head.ok_or_else(|| {
                GalleryError::Audit("an operation tried to commit without its audit record".into())
            })?;
            tx.commit()?;
            (out, head)
        };
        self.after_commit(&head);
        Ok((out, head))
    }

    fn after_commit(&self, head: &SignedHead) {
        // The mirror is a second witness against truncation; failing to write it must not undo a
        // committed action, and the next write retries.
        let _order = self.mirror.lock().unwrap_or_else(|p| p.into_inner());
        let _ = audit::advance_head_file(&self.dir.join("audit.head"), head);
    }

    /// Record an action that changes nothing else (e.g. an export, a failed search).
    pub fn audit_event(&self, ctx: &Context, ev: AuditEvent) -> Result<u64> {
        let ((), head) = self.audited(ctx, |tx| tx.record(ev).map(drop))?;
        Ok(head.seq)
    }

    /// Record what the service itself observed, with no caller to name (e.g. failed
    /// authentications, aggregated): actor `facegate`, role `system`, the given purpose.
    pub fn audit_system_event(&self, purpose: &str, ev: AuditEvent) -> Result<u64> {
        let actor = Actor {
            id: "facegate",
            role: "system",
            purpose,
        };
        let ((), head) = self.audited_as(actor, |tx| tx.record(ev).map(drop))?;
        Ok(head.seq)
    }

    /// At most `limit` audit records from sequence number `from` on.
    pub fn audit_records_page(&self, from: u64, limit: usize) -> Result<Vec<audit::AuditRecord>> {
        audit::records_page(&*self.backend, from, limit)
    }

    /// Verify the audit log. `pin` is the public key the verifier trusts (default: the stored one);
    /// `anchors` are heads kept elsewhere (the mirror file is always checked).
    pub fn audit_verify(
        &self,
        pin: Option<&str>,
        anchors: &[(String, SignedHead)],
    ) -> Result<AuditReport> {
        verify_log(&*self.backend, &self.dir, pin, anchors)
    }

    pub fn audit_records(&self) -> Result<Vec<audit::AuditRecord>> {
        audit::records(&*self.backend)
    }

    /// The current signed head, for anchoring outside this machine.
    pub fn audit_head(&self) -> Result<Option<SignedHead>> {
        let row = self.backend.last_head()?;
        Ok(row.map(|(seq, hash, sig)| SignedHead {
            seq,
            hash: hex::encode(hash),
            signature: hex::encode(sig),
            public_key: self.public_key.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::LocalKeyRing;

    #[test]
    fn a_change_without_its_audit_record_is_rolled_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = crypto::random_key().expect("key");
        let store = Store::open(dir.path(), Box::new(LocalKeyRing::new(key)), system_clock())
            .expect("store opens");
        let ctx = Context::new("tester", Role::Admin, "unit test");
        let unaudited = store.audited(&ctx, |tx| tx.set_meta("probe", &[0]));
        assert!(matches!(unaudited, Err(GalleryError::Audit(_))));
        let kept = store.backend.meta("probe").expect("query");
        assert!(kept.is_none(), "the unaudited change must not be committed");
        let ((), head) = store
            .audited(&ctx, |tx| {
                tx.set_meta("probe", &[0])?;
                tx.record(AuditEvent {
                    action: "test".into(),
                    outcome: "done".into(),
                    ..Default::default()
                })
                .map(drop)
            })
            .expect("audited change commits");
        assert_eq!(
            store.audit_head().expect("head").map(|h| h.seq),
            Some(head.seq)
        );
    }
}
