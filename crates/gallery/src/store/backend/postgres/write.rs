//! Write transactions on the record store.

use super::*;

/// A transaction on a pooled connection, serialised against every writer of the same database
/// by the `writer` row lock; rolled back when dropped uncommitted.
pub(super) struct Tx {
    pub(super) conn: Pooled,
    open: bool,
}

impl Tx {
    pub(super) fn begin(mut conn: Pooled) -> Result<Tx> {
        conn.client.batch_execute("BEGIN")?;
        let mut tx = Tx { conn, open: true };
        tx.conn
            .one("SELECT id FROM writer WHERE id = 1 FOR UPDATE", &[])?;
        Ok(tx)
    }

    pub(super) fn commit(mut self) -> Result<()> {
        self.open = false;
        self.conn.client.batch_execute("COMMIT")?;
        Ok(())
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.open {
            // A connection whose ROLLBACK fails is closed and the pool drops it (has_broken).
            let _ = self.conn.client.batch_execute("ROLLBACK");
        }
    }
}

/// Buffered rows written before the commit once this many are waiting.
const FLUSH_ROWS: usize = 8_192;

/// A record store transaction. Rows nothing reads back inside the transaction — audit records
/// with their heads, recorded changes — are buffered and written at commit in one statement
/// each (bulk enrolment appends one of each per subject); the chain's tail is read once (the
/// writer lock keeps it ours) and then follows this transaction's own appends. A long
/// transaction (a migration) writes its buffered audit rows every [`FLUSH_ROWS`].
pub(super) struct StoreTx {
    tx: Tx,
    tail: Option<Option<(u64, Vec<u8>)>>,
    audit: AuditRows,
    changes: ChangeRows,
}

#[derive(Default)]
struct AuditRows {
    seq: Vec<i64>,
    record: Vec<String>,
    hash: Vec<Vec<u8>>,
    sig: Vec<Vec<u8>>,
}

#[derive(Default)]
struct ChangeRows {
    gallery: Vec<String>,
    generation: Vec<i64>,
    kind: Vec<String>,
    subject: Vec<i64>,
    templates: Vec<String>,
}

impl StoreTx {
    pub(super) fn begin(conn: Pooled) -> Result<StoreTx> {
        Ok(StoreTx {
            tx: Tx::begin(conn)?,
            tail: None,
            audit: AuditRows::default(),
            changes: ChangeRows::default(),
        })
    }

    fn conn(&mut self) -> &mut Conn {
        &mut self.tx.conn
    }

    /// `n` new row ids from a table's identity sequence (`sql` takes n as $1), ascending.
    fn next_ids(&mut self, sql: &'static str, n: usize) -> Result<Vec<i64>> {
        let mut ids: Vec<i64> = self.conn().column(sql, &[&(n as i64)])?;
        ids.sort_unstable();
        Ok(ids)
    }

    /// Write the buffered rows (before the commit).
    fn flush(&mut self) -> Result<()> {
        if !self.audit.seq.is_empty() {
            let a = std::mem::take(&mut self.audit);
            self.tx.conn.execute(
                "WITH r AS (INSERT INTO audit (seq, record, hash)
                            SELECT * FROM unnest($1::BIGINT[], $2::TEXT[], $3::BYTEA[]))
                 INSERT INTO audit_heads (seq, hash, sig)
                 SELECT * FROM unnest($1::BIGINT[], $3::BYTEA[], $4::BYTEA[])",
                &[&a.seq, &a.record, &a.hash, &a.sig],
            )?;
        }
        if !self.changes.generation.is_empty() {
            let c = std::mem::take(&mut self.changes);
            self.tx.conn.execute(
                "INSERT INTO changes (gallery, generation, kind, subject, templates)
                 SELECT g, n, k, s, string_to_array(t, ',')::BIGINT[]
                 FROM unnest($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[])
                      AS u(g, n, k, s, t)",
                &[&c.gallery, &c.generation, &c.kind, &c.subject, &c.templates],
            )?;
        }
        Ok(())
    }
}

impl WriteTxn for StoreTx {
    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        meta(self.conn(), key)
    }

    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.conn().execute(
            "INSERT INTO meta (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            &[&key, &value],
        )?;
        Ok(())
    }

    fn insert_gallery(
        &mut self,
        name: &str,
        policy: &str,
        seed: &[u8],
        created: i64,
    ) -> Result<bool> {
        let n = self.conn().execute(
            "INSERT INTO galleries (name, policy, seed, created) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[&name, &policy, &seed, &created],
        )?;
        Ok(n == 1)
    }

    fn set_policy(&mut self, name: &str, policy: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE galleries SET policy = $1 WHERE name = $2",
            &[&policy, &name],
        )?;
        Ok(())
    }

    fn set_kind(&mut self, name: &str, dim: i64, metric: &str, pack: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE galleries SET dim = $2, metric = $3, pack = $4 WHERE name = $1",
            &[&name, &dim, &metric, &pack],
        )?;
        Ok(())
    }

    fn set_seed(&mut self, name: &str, seed: &[u8]) -> Result<()> {
        self.conn().execute(
            "UPDATE galleries SET seed = $1 WHERE name = $2",
            &[&seed, &name],
        )?;
        Ok(())
    }

    fn seeds(&mut self) -> Result<Vec<(String, Vec<u8>)>> {
        self.conn()
            .all("SELECT name, seed FROM galleries", &[])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    fn bump_generation(&mut self, name: &str) -> Result<i64> {
        let generation: i64 = self
            .conn()
            .one(
                "UPDATE galleries SET generation = generation + 1 WHERE name = $1 RETURNING generation",
                &[&name],
            )?
            .try_get(0)?;
        // Changes too old to follow go, once per transaction (not per recorded row).
        let oldest = generation - CHANGES_KEPT;
        self.conn().execute(
            "DELETE FROM changes WHERE gallery = $1 AND generation <= $2",
            &[&name, &oldest],
        )?;
        // Nodes listening are told at commit (PostgreSQL delivers a notice only if its
        // transaction commits, and folds repeats of one in a transaction into one).
        self.conn()
            .execute("SELECT pg_notify('facegate_changes', $1)", &[&name])?;
        Ok(generation)
    }

    fn record_change(
        &mut self,
        gallery: &str,
        generation: i64,
        kind: &str,
        subject: i64,
        templates: &[i64],
    ) -> Result<()> {
        let c = &mut self.changes;
        c.gallery.push(gallery.to_string());
        c.generation.push(generation);
        c.kind.push(kind.to_string());
        c.subject.push(subject);
        c.templates.push(ids_text(templates));
        Ok(())
    }

    fn insert_subject(&mut self, s: &NewSubject<'_>) -> Result<Option<i64>> {
        self.conn().value(
            "INSERT INTO subjects (gallery, pseudonym, reference, consent, enrolled, expires)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING id",
            &[
                &s.gallery,
                &s.pseudonym,
                &s.reference,
                &s.consent,
                &s.enrolled,
                &s.expires,
            ],
        )
    }

    fn insert_subjects(&mut self, rows: &[NewSubject<'_>]) -> Result<Vec<Option<i64>>> {
        // Row ids are taken from the sequence first and given to the rows in order, so which
        // id is whose never depends on the order PostgreSQL returns inserted rows in.
        let ids = self.next_ids(
            "SELECT nextval(pg_get_serial_sequence('subjects', 'id')) FROM generate_series(1, $1::BIGINT)",
            rows.len(),
        )?;
        let gallery: Vec<&str> = rows.iter().map(|r| r.gallery).collect();
        let pseudonym: Vec<&[u8]> = rows.iter().map(|r| r.pseudonym).collect();
        let reference: Vec<&[u8]> = rows.iter().map(|r| r.reference).collect();
        let consent: Vec<Option<&[u8]>> = rows.iter().map(|r| r.consent).collect();
        let enrolled: Vec<i64> = rows.iter().map(|r| r.enrolled).collect();
        let expires: Vec<i64> = rows.iter().map(|r| r.expires).collect();
        let inserted: std::collections::HashSet<i64> = self
            .conn()
            .column::<i64>(
                "INSERT INTO subjects (id, gallery, pseudonym, reference, consent, enrolled, expires)
                 OVERRIDING SYSTEM VALUE
                 SELECT * FROM unnest($1::BIGINT[], $2::TEXT[], $3::BYTEA[], $4::BYTEA[],
                                      $5::BYTEA[], $6::BIGINT[], $7::BIGINT[])
                 ON CONFLICT DO NOTHING RETURNING id",
                &[&ids, &gallery, &pseudonym, &reference, &consent, &enrolled, &expires],
            )?
            .into_iter()
            .collect();
        Ok(ids
            .into_iter()
            .map(|id| inserted.contains(&id).then_some(id))
            .collect())
    }

    fn insert_templates(&mut self, rows: &[(i64, &[u8])]) -> Result<Vec<i64>> {
        let ids = self.next_ids(
            "SELECT nextval(pg_get_serial_sequence('templates', 'id')) FROM generate_series(1, $1::BIGINT)",
            rows.len(),
        )?;
        let subject: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let sealed: Vec<&[u8]> = rows.iter().map(|r| r.1).collect();
        self.conn().execute(
            "INSERT INTO templates (id, subject, sealed) OVERRIDING SYSTEM VALUE
             SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BYTEA[])",
            &[&ids, &subject, &sealed],
        )?;
        Ok(ids)
    }

    fn insert_template(&mut self, subject: i64, sealed: &[u8]) -> Result<i64> {
        Ok(self
            .conn()
            .one(
                "INSERT INTO templates (subject, sealed) VALUES ($1, $2) RETURNING id",
                &[&subject, &sealed],
            )?
            .try_get(0)?)
    }

    fn insert_image(&mut self, subject: i64, sealed: &[u8]) -> Result<()> {
        self.conn().execute(
            "INSERT INTO images (subject, sealed) VALUES ($1, $2)",
            &[&subject, &sealed],
        )?;
        Ok(())
    }

    fn subject_id(&mut self, gallery: &str, pseudonym: &[u8]) -> Result<Option<i64>> {
        self.conn().value(
            "SELECT id FROM subjects WHERE gallery = $1 AND pseudonym = $2",
            &[&gallery, &pseudonym],
        )
    }

    fn template_ids(&mut self, subject: i64) -> Result<Vec<i64>> {
        self.conn().column(
            "SELECT id FROM templates WHERE subject = $1 ORDER BY id",
            &[&subject],
        )
    }

    fn delete_subject(&mut self, subject: i64) -> Result<()> {
        // Templates and images go with it (ON DELETE CASCADE).
        self.conn()
            .execute("DELETE FROM subjects WHERE id = $1", &[&subject])?;
        Ok(())
    }

    fn gallery_templates(&mut self, gallery: &str) -> Result<Vec<StoredTemplate>> {
        gallery_templates(self.conn(), gallery)
    }

    fn update_template(&mut self, id: i64, sealed: &[u8]) -> Result<()> {
        self.conn().execute(
            "UPDATE templates SET sealed = $1 WHERE id = $2",
            &[&sealed, &id],
        )?;
        Ok(())
    }

    fn insert_receipt(&mut self, receipt: &str) -> Result<()> {
        self.conn()
            .execute("INSERT INTO receipts (receipt) VALUES ($1)", &[&receipt])?;
        Ok(())
    }

    fn audit_tail(&mut self) -> Result<Option<(u64, Vec<u8>)>> {
        if let Some(tail) = &self.tail {
            return Ok(tail.clone());
        }
        let tail = self
            .conn()
            .opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])?
            .map(|r| Ok::<_, GalleryError>((seq(r.try_get(0)?), r.try_get(1)?)))
            .transpose()?;
        self.tail = Some(tail.clone());
        Ok(tail)
    }

    fn append_audit(&mut self, seq: u64, record: &str, hash: &[u8], sig: &[u8]) -> Result<()> {
        self.tail = Some(Some((seq, hash.to_vec())));
        let a = &mut self.audit;
        a.seq.push(sql_seq(seq));
        a.record.push(record.to_string());
        a.hash.push(hash.to_vec());
        a.sig.push(sig.to_vec());
        // A migration carries the whole chain in one transaction: the buffer stays a few
        // megabytes.
        if a.seq.len() >= FLUSH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        self.flush()?;
        self.tx.commit()
    }
}
