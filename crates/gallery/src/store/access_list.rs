//! The access list: the service's API keys (their hashes, roles and galleries), one small
//! document in the record store's metadata. On a shared store (PostgreSQL) every node accepts
//! the same keys and a revocation holds on all of them; `migrate` carries it. Its format is the
//! server's (`server::apikeys`); here it is kept, and changed only together with its audit
//! record, in one transaction: a key that exists was recorded, a revocation that was recorded
//! happened.

use super::*;

/// Its metadata key.
pub(super) const ACCESS_LIST: &str = "access_list";

impl Store {
    /// The access list as stored, `None` before the first key.
    pub fn access_list(&self) -> Result<Option<Vec<u8>>> {
        self.backend.meta(ACCESS_LIST)
    }

    /// Change the access list: `change` gets the stored document and returns the new one, the
    /// audit record of the change and what the caller is to get back. Both are written in one
    /// transaction (serialised with every other write, on every node), or neither.
    pub fn change_access_list<T>(
        &self,
        ctx: &Context,
        change: impl FnOnce(Option<Vec<u8>>) -> Result<(Vec<u8>, AuditEvent, T)>,
    ) -> Result<T> {
        ctx.check()?;
        Action::ManageApiKeys.check(ctx.role)?;
        self.change_access_list_as(ctx.audit_actor(), change)
    }

    /// `change_access_list` by the service itself (actor `facegate`, role `system`), for what
    /// no caller asked: moving a node's old `apikeys.db` into the list.
    pub fn change_access_list_as_service<T>(
        &self,
        purpose: &str,
        change: impl FnOnce(Option<Vec<u8>>) -> Result<(Vec<u8>, AuditEvent, T)>,
    ) -> Result<T> {
        let actor = Actor {
            id: "facegate",
            role: "system",
            purpose,
        };
        self.change_access_list_as(actor, change)
    }

    fn change_access_list_as<T>(
        &self,
        actor: Actor<'_>,
        change: impl FnOnce(Option<Vec<u8>>) -> Result<(Vec<u8>, AuditEvent, T)>,
    ) -> Result<T> {
        let (out, _) = self.audited_as(actor, |tx| {
            let (doc, event, out) = change(tx.meta(ACCESS_LIST)?)?;
            tx.set_meta(ACCESS_LIST, &doc)?;
            tx.record(event)?;
            Ok(out)
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::LocalKeyRing;

    #[test]
    fn the_access_list_changes_only_with_its_audit_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = crypto::random_key().expect("key");
        let store = Store::open(dir.path(), Box::new(LocalKeyRing::new(key)), system_clock())
            .expect("store opens");
        let ctx = Context::new("admin", Role::Admin, "key administration");
        assert_eq!(store.access_list().expect("read"), None);
        let event = |action: &str| AuditEvent {
            action: action.into(),
            outcome: "done".into(),
            ..Default::default()
        };
        let got = store
            .change_access_list(&ctx, |old| {
                assert_eq!(old, None);
                Ok((b"one".to_vec(), event("apikey-create"), 7))
            })
            .expect("change");
        assert_eq!(got, 7);
        assert_eq!(store.access_list().expect("read"), Some(b"one".to_vec()));
        let records = store.audit_records().expect("records");
        assert_eq!(
            records.last().map(|r| r.action.as_str()),
            Some("apikey-create")
        );
        // A change that fails leaves the document and the chain as they were.
        let failed = store.change_access_list(&ctx, |old| -> Result<(Vec<u8>, AuditEvent, ())> {
            assert_eq!(old.as_deref(), Some(&b"one"[..]));
            Err(GalleryError::Invalid("refused".into()))
        });
        assert!(failed.is_err());
        assert_eq!(store.access_list().expect("read"), Some(b"one".to_vec()));
        assert_eq!(store.audit_records().expect("records").len(), records.len());
        // Only an admin changes it.
        let operator = Context::new("op", Role::Operator, "key administration");
        let refused =
            store.change_access_list(&operator, |_| -> Result<(Vec<u8>, AuditEvent, ())> {
                Ok((b"two".to_vec(), event("apikey-create"), ()))
            });
        assert!(matches!(refused, Err(GalleryError::Forbidden(_))));
        assert_eq!(store.access_list().expect("read"), Some(b"one".to_vec()));
        // The service's own metadata is not reachable through it.
        assert!(store.backend.meta("audit_key").expect("read").is_some());
        assert_ne!(ACCESS_LIST, "audit_key");
    }
}
