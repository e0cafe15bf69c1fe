//! Moving a deployment from one backend to another (embedded SQLite ⇄ PostgreSQL): every row
//! copied as stored — sealed blobs, wrapped keys and the audit chain byte for byte, nothing
//! opened — then checked on the target before anyone uses it.

use super::backend::{Backend, NewSubject, SubjectRecord};
use super::*;

/// The record store's metadata a deployment needs: the wrapped service keys, the format and the
/// access list (its API keys).
const META: [&str; 5] = [
    "format",
    "pseudonym_key",
    "audit_key",
    "audit_public_key",
    access_list::ACCESS_LIST,
];

/// What a migration copied (and found again on the target).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Migration {
    pub galleries: usize,
    pub subjects: u64,
    pub templates: u64,
    pub images: u64,
    pub keys: usize,
    pub receipts: usize,
    pub audit_records: u64,
}

/// Rows a migration writes per statement (backends that batch) and reads ahead.
const CHUNK: usize = 10_000;

/// Copy everything of `from` into `to`, which must be empty. The source must have no unfinished
/// crash recovery (pending marks): open it once with its master key first, which settles them.
/// The audit chain is verified on the target with the source's public key before this returns;
/// the caller records the migration itself in the target's chain.
pub fn copy_backend(from: &dyn Backend, to: &dyn Backend) -> Result<Migration> {
    if to.meta("format")?.is_some() {
        return Err(GalleryError::Invalid(
            "the target already holds a facegate store: migrate into an empty one".into(),
        ));
    }
    if from.meta("format")?.is_none() {
        return Err(GalleryError::Invalid(
            "the source holds no facegate store".into(),
        ));
    }
    if !from.keys().marks()?.is_empty() {
        return Err(GalleryError::Invalid(
            "the source has unfinished crash recovery: open it once (any command) and retry".into(),
        ));
    }
    let public_key = from
        .stored_public_key()?
        .ok_or_else(|| GalleryError::Audit("the source's audit public key is missing".into()))?;
    // The source's own chain must verify before it is carried over.
    let before = audit::verify(from, &hex::encode(&public_key), &[])?;
    if !before.ok {
        return Err(GalleryError::Audit(format!(
            "the source's audit log does not verify: {}",
            before.problems.join("; ")
        )));
    }
    let mut report = Migration {
        galleries: 0,
        subjects: 0,
        templates: 0,
        images: 0,
        keys: 0,
        receipts: 0,
        audit_records: 0,
    };
    // Keys first: a subject row without its key would be erased by recovery, a key without a
    // subject row is removed as an orphan only after an hour.
    let keys = from.keys().all_keys()?;
    {
        let mut tx = to.keys().write()?;
        for run in keys.chunk_by(|a, b| a.gallery == b.gallery) {
            for chunk in run.chunks(CHUNK) {
                let rows: Vec<(&[u8], &[u8], i64)> = chunk
                    .iter()
                    .map(|k| (&k.pseudonym[..], &k.wrapped[..], k.created))
                    .collect();
                if tx.insert_keys(&chunk[0].gallery, &rows)?.contains(&false) {
                    return Err(GalleryError::Storage("a subject key appears twice".into()));
                }
            }
        }
        tx.commit()?;
    }
    report.keys = keys.len();
    let mut tx = to.write()?;
    for k in META {
        if let Some(v) = from.meta(k)? {
            tx.set_meta(k, &v)?;
        }
    }
    let subjects = from.all_subjects()?;
    for name in from.gallery_names()? {
        let g = from
            .gallery(&name)?
            .ok_or_else(|| GalleryError::Storage(format!("gallery {name} vanished")))?;
        let seed = from
            .gallery_seed(&name)?
            .ok_or_else(|| GalleryError::Storage(format!("gallery {name} has no seed")))?;
        tx.insert_gallery(&name, &g.policy, &seed, g.created)?;
        if let (Some(dim), Some(metric), Some(pack)) = (g.dim, &g.metric, &g.pack) {
            tx.set_kind(&name, dim, metric, pack)?;
        }
        report.galleries += 1;
        // Subjects, then their templates streamed and mapped to the new row ids.
        let mut ids: HashMap<i64, i64> = HashMap::new();
        let mine: Vec<&(i64, String, Vec<u8>)> =
            subjects.iter().filter(|(_, g, _)| *g == name).collect();
        for chunk in mine.chunks(CHUNK) {
            let records: Vec<SubjectRecord> = chunk
                .iter()
                .map(|(id, _, _)| {
                    from.subject_record(*id)?.ok_or_else(|| {
                        GalleryError::Storage("a subject vanished mid-migration".into())
                    })
                })
                .collect::<Result<_>>()?;
            let rows: Vec<NewSubject<'_>> = chunk
                .iter()
                .zip(&records)
                .map(|((_, _, ps), r)| NewSubject {
                    gallery: &name,
                    pseudonym: ps,
                    reference: &r.reference,
                    consent: r.consent.as_deref(),
                    enrolled: r.enrolled,
                    expires: r.expires,
                })
                .collect();
            let new = tx
                .insert_subjects(&rows)?
                .into_iter()
                .collect::<Option<Vec<i64>>>()
                .ok_or_else(|| GalleryError::Storage("a subject appears twice".into()))?;
            for (((id, _, _), r), new) in chunk.iter().zip(&records).zip(new) {
                for img in &r.images {
                    tx.insert_image(new, img)?;
                }
                report.images += r.images.len() as u64;
                ids.insert(*id, new);
            }
        }
        report.subjects += ids.len() as u64;
        // Templates streamed, written a chunk at a time.
        let mut failed = None;
        let mut copied = 0u64;
        let mut pending: Vec<(i64, Vec<u8>)> = Vec::with_capacity(CHUNK);
        let write = |tx: &mut Box<dyn WriteTxn + '_>, pending: &mut Vec<(i64, Vec<u8>)>| {
            let rows: Vec<(i64, &[u8])> = pending.iter().map(|(s, t)| (*s, &t[..])).collect();
            let n = tx.insert_templates(&rows)?.len() as u64;
            pending.clear();
            Ok::<u64, GalleryError>(n)
        };
        from.scan_templates(&name, &mut |subject, sealed| {
            let Some(new) = ids.get(&subject) else {
                return true; // another gallery's row
            };
            pending.push((*new, sealed));
            if pending.len() < CHUNK {
                return true;
            }
            match write(&mut tx, &mut pending) {
                Ok(n) => {
                    copied += n;
                    true
                }
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        copied += write(&mut tx, &mut pending)?;
        report.templates += copied;
    }
    let receipts = from.receipts()?;
    for r in &receipts {
        tx.insert_receipt(r)?;
    }
    report.receipts = receipts.len();
    // The audit chain: every record with its signed head, as stored.
    let mut heads: HashMap<u64, Vec<u8>> = HashMap::new();
    from.scan_heads(&mut |seq, _, sig| {
        heads.insert(seq, sig);
        Ok(())
    })?;
    let mut records = 0u64;
    from.scan_records(0, usize::MAX, &mut |seq, record, hash| {
        let sig = heads
            .remove(&seq)
            .ok_or_else(|| GalleryError::Audit(format!("audit record {seq} has no signed head")))?;
        tx.append_audit(seq, &record, &hash, &sig)?;
        records += 1;
        Ok(())
    })?;
    report.audit_records = records;
    tx.commit()?;
    // What is on the target now: the same counts, the same chain.
    let after = audit::verify(to, &hex::encode(&public_key), &[])?;
    if !after.ok || after.records != before.records {
        return Err(GalleryError::Audit(format!(
            "the migrated audit log does not verify: {}",
            after.problems.join("; ")
        )));
    }
    let moved = to.all_subjects()?.len() as u64;
    let moved_keys = to.keys().all_keys()?.len();
    if moved != report.subjects || moved_keys != report.keys {
        return Err(GalleryError::Storage(format!(
            "the target holds {moved} subjects and {moved_keys} keys, {} and {} were copied",
            report.subjects, report.keys
        )));
    }
    Ok(report)
}
