//! Crash recovery between the two databases: pending marks, start-up recovery, the full
//! consistency sweep.

use super::audited::SYSTEM_ACTOR;
use super::*;

/// Keys whose subject row never appeared are removed after this long (a crash mid-enrolment);
/// the delay keeps a concurrent enrolment in another process safe.
pub(super) const ORPHAN_KEY_AGE_MS: i64 = 3_600_000;

/// Whether the process that marked an enrolment could still be running it. This process knows
/// (`in_flight`: the subjects it is enrolling now). A process on another host (a node sharing
/// the database) may be. Another process on this host: on Linux, a process id with no /proc
/// entry is gone (its enrolment was interrupted); where /proc is absent, assume it may run. (A
/// reused pid errs on the safe side: it looks alive, and the hour-long orphan age still ends the
/// wait.)
pub(super) fn enrolment_may_be_running(owner: MarkOwner, in_flight: impl FnOnce() -> bool) -> bool {
    let MarkOwner { pid, here } = owner;
    if !here {
        // Another host's process: nothing here can tell whether it runs.
        return true;
    }
    if pid == std::process::id() as i64 {
        return in_flight();
    }
    if pid <= 0 {
        return false;
    }
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return true;
    }
    proc.join(pid.to_string()).exists()
}

impl Store {
    /// Runs [`Store::recover_pending`] and remembers whether it could finish. Called at open and
    /// before every write, so an interrupted deletion completes as soon as the disk allows.
    pub(super) fn retry_recovery(&self) {
        let outcome = self.recover_pending().err().map(|e| e.to_string());
        *self.recovery.lock().unwrap_or_else(|p| p.into_inner()) = outcome;
    }

    /// Why crash recovery is unfinished (`None`: nothing pending that could not be done). The CLI
    /// and the server report it; the store retries at every write.
    pub fn recovery_pending(&self) -> Option<String> {
        self.recovery
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Before a write: retry an unfinished recovery (a no-op when there is none).
    pub(super) fn before_write(&self) {
        if self.recovery_pending().is_some() {
            self.retry_recovery();
        }
    }

    /// Finish or undo what a crash between the two databases interrupted. Every enrolment and
    /// deletion marks its subject in `keys.db`'s `pending` table before touching `store.db` and
    /// clears the mark after, so start-up only looks at marked subjects, not the whole gallery.
    pub(super) fn recover_pending(&self) -> Result<()> {
        let marks = self.keys().marks()?;
        let now = self.now();
        for m in marks {
            let in_store = self.backend.subject_exists(&m.gallery, &m.pseudonym)?;
            let mut tx = self.keys().write()?;
            match (m.op.as_str(), in_store) {
                // Enrolment committed, or deletion never reached the record store: the key stays.
                ("enrol", true) | ("delete", true) => {}
                // Enrolment that never committed: drop its key once it is surely not in flight.
                ("enrol", false)
                    if now - m.created <= ORPHAN_KEY_AGE_MS
                        && enrolment_may_be_running(m.owner(), || {
                            super::enrol::enrolling(&m.gallery, &m.pseudonym)
                        }) =>
                {
                    continue
                }
                ("enrol", false) | ("delete", false) => {
                    tx.delete_key(&m.gallery, &m.pseudonym, None)?;
                }
                _ => {}
            }
            tx.unmark(&m.gallery, &m.pseudonym, &m.op)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// After a write failed half-way between the two databases (a database lost mid-call): make
    /// the next write run crash recovery first, so a key or mark left behind is settled while
    /// this process runs, not only at its next start.
    pub(super) fn interrupted(&self, e: &GalleryError) {
        let mut pending = self.recovery.lock().unwrap_or_else(|p| p.into_inner());
        if pending.is_none() {
            *pending = Some(format!("a write was interrupted: {e}"));
        }
    }

    pub(super) fn unmark(&self, gallery: &str, ps: &[u8], op: &str) {
        // Best effort: a mark left behind is only re-checked at the next start.
        self.clear_marks(gallery, std::iter::once(ps), op);
    }

    /// Full consistency sweep between the two databases (run by `purge`): subjects whose key is
    /// gone (e.g. an old `store.db` restored next to a newer `keys.db`) are deleted and audited;
    /// keys with no subject, older than an hour, are destroyed.
    pub fn reconcile(&self) -> Result<()> {
        let keyset = self.keys().all_keys()?;
        let have: std::collections::HashSet<(String, Vec<u8>)> = keyset
            .iter()
            .map(|k| (k.gallery.clone(), k.pseudonym.clone()))
            .collect();
        let subjects = self.backend.all_subjects()?;
        let now = self.now();
        let keyless: Vec<&(i64, String, Vec<u8>)> = subjects
            .iter()
            .filter(|(_, g, p)| !have.contains(&(g.clone(), p.clone())))
            .collect();
        if !keyless.is_empty() {
            self.audited_as(SYSTEM_ACTOR, |tx| {
                for (id, g, p) in keyless {
                    tx.delete_subject(*id)?;
                    tx.bump_generation(g)?;
                    tx.record(AuditEvent {
                        action: "delete".into(),
                        gallery: Some(g.clone()),
                        subject: Some(hex::encode(p)),
                        outcome: "completed after interruption (key already destroyed)".into(),
                        details: serde_json::Value::Null,
                    })?;
                }
                Ok(())
            })?;
        }
        let subject_set: std::collections::HashSet<(String, Vec<u8>)> =
            subjects.into_iter().map(|(_, g, p)| (g, p)).collect();
        let orphans: Vec<_> = keyset
            .into_iter()
            .filter(|k| {
                !subject_set.contains(&(k.gallery.clone(), k.pseudonym.clone()))
                    && now - k.created > ORPHAN_KEY_AGE_MS
            })
            .collect();
        if !orphans.is_empty() {
            let mut tx = self.keys().write()?;
            for k in &orphans {
                tx.delete_key(&k.gallery, &k.pseudonym, None)?;
            }
            tx.commit()?;
            self.keys().scrub()?;
        }
        Ok(())
    }
}

impl Mark {
    /// A mark of `op` on a subject by this process, now.
    pub(super) fn new(gallery: &str, pseudonym: &[u8], op: &str, now: i64) -> Mark {
        Mark {
            gallery: gallery.into(),
            pseudonym: pseudonym.to_vec(),
            op: op.into(),
            created: now,
            pid: std::process::id() as i64,
            here: true,
        }
    }

    pub(super) fn owner(&self) -> MarkOwner {
        MarkOwner {
            pid: self.pid,
            here: self.here,
        }
    }
}
