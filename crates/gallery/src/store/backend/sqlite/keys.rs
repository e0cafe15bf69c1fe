//! The key store on `keys.db`: wrapped subject keys and pending marks, and the scrub that leaves
//! no destroyed key in any file.

use super::*;

impl KeyStore for SqliteKeys {
    fn write(&self) -> Result<Box<dyn KeyTxn + '_>> {
        Ok(Box::new(KeysTx(Tx::begin(lock(&self.conn))?)))
    }

    fn wrapped(&self, gallery: &str, pseudonym: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(lock(&self.conn)
            .query_row(
                "SELECT wrapped FROM subject_keys WHERE gallery = ?1 AND pseudonym = ?2",
                params![gallery, pseudonym],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn scan_wrapped(&self, gallery: &str, each: &mut dyn FnMut([u8; 32], Vec<u8>)) -> Result<()> {
        let conn = lock(&self.conn);
        // A table scan in storage order: through the (gallery, pseudonym) index every row would
        // cost a random seek.
        let mut st = conn.prepare_cached(
            "SELECT pseudonym, wrapped FROM subject_keys NOT INDEXED WHERE gallery = ?1",
        )?;
        let mut q = st.query([gallery])?;
        while let Some(r) = q.next()? {
            each(r.get(0)?, r.get(1)?);
        }
        Ok(())
    }

    fn all_keys(&self) -> Result<Vec<KeyRow>> {
        all_keys(&lock(&self.conn))
    }

    fn marks(&self) -> Result<Vec<Mark>> {
        let conn = lock(&self.conn);
        let mut st =
            conn.prepare_cached("SELECT gallery, pseudonym, op, created, pid FROM pending")?;
        let rows = st.query_map([], |r| {
            Ok(Mark {
                gallery: r.get(0)?,
                pseudonym: r.get(1)?,
                op: r.get(2)?,
                created: r.get(3)?,
                pid: r.get(4)?,
                here: true,
            })
        })?;
        collect(rows)
    }

    fn scrub(&self) -> Result<()> {
        // secure_delete zeroed the page in the WAL copy; checkpointing and truncating the WAL
        // removes the last file that held the old page.
        lock(&self.conn).query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

fn all_keys(conn: &Connection) -> Result<Vec<KeyRow>> {
    let mut st =
        conn.prepare_cached("SELECT gallery, pseudonym, wrapped, created FROM subject_keys")?;
    let rows = st.query_map([], |r| {
        Ok(KeyRow {
            gallery: r.get(0)?,
            pseudonym: r.get(1)?,
            wrapped: r.get(2)?,
            created: r.get(3)?,
        })
    })?;
    collect(rows)
}

struct KeysTx<'a>(Tx<'a>);

impl KeysTx<'_> {
    fn conn(&self) -> &Connection {
        &self.0.conn
    }
}

impl KeyTxn for KeysTx<'_> {
    fn insert_key(
        &mut self,
        gallery: &str,
        pseudonym: &[u8],
        wrapped: &[u8],
        created: i64,
    ) -> Result<bool> {
        let n = self
            .conn()
            .prepare_cached(
                "INSERT OR IGNORE INTO subject_keys (gallery, pseudonym, wrapped, created) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![gallery, pseudonym, wrapped, created])?;
        Ok(n == 1)
    }

    fn key_created(&mut self, gallery: &str, pseudonym: &[u8]) -> Result<Option<i64>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT created FROM subject_keys WHERE gallery = ?1 AND pseudonym = ?2",
                params![gallery, pseudonym],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn replace_key(
        &mut self,
        gallery: &str,
        pseudonym: &[u8],
        wrapped: &[u8],
        created: i64,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE subject_keys SET wrapped = ?3, created = ?4 WHERE gallery = ?1 AND pseudonym = ?2",
            params![gallery, pseudonym, wrapped, created],
        )?;
        Ok(())
    }

    fn delete_key(&mut self, gallery: &str, pseudonym: &[u8], created: Option<i64>) -> Result<()> {
        match created {
            Some(c) => self.conn().execute(
                "DELETE FROM subject_keys WHERE gallery = ?1 AND pseudonym = ?2 AND created = ?3",
                params![gallery, pseudonym, c],
            )?,
            None => self.conn().execute(
                "DELETE FROM subject_keys WHERE gallery = ?1 AND pseudonym = ?2",
                params![gallery, pseudonym],
            )?,
        };
        Ok(())
    }

    fn all_keys(&mut self) -> Result<Vec<KeyRow>> {
        all_keys(self.conn())
    }

    fn set_wrapped(&mut self, gallery: &str, pseudonym: &[u8], wrapped: &[u8]) -> Result<()> {
        self.conn()
            .prepare_cached(
                "UPDATE subject_keys SET wrapped = ?1 WHERE gallery = ?2 AND pseudonym = ?3",
            )?
            .execute(params![wrapped, gallery, pseudonym])?;
        Ok(())
    }

    fn mark(&mut self, m: &Mark) -> Result<()> {
        self.conn()
            .prepare_cached(
                "INSERT OR REPLACE INTO pending (gallery, pseudonym, op, created, pid) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![m.gallery, m.pseudonym, m.op, m.created, m.pid])?;
        Ok(())
    }

    fn mark_owner(
        &mut self,
        gallery: &str,
        pseudonym: &[u8],
        op: &str,
    ) -> Result<Option<MarkOwner>> {
        // keys.db is a local file: every mark in it was written on this host.
        Ok(self
            .conn()
            .query_row(
                "SELECT pid FROM pending WHERE gallery = ?1 AND pseudonym = ?2 AND op = ?3",
                params![gallery, pseudonym, op],
                |r| r.get(0),
            )
            .optional()?
            .map(|pid| MarkOwner { pid, here: true }))
    }

    fn unmark(&mut self, gallery: &str, pseudonym: &[u8], op: &str) -> Result<()> {
        self.conn()
            .prepare_cached(
                "DELETE FROM pending WHERE gallery = ?1 AND pseudonym = ?2 AND op = ?3",
            )?
            .execute(params![gallery, pseudonym, op])?;
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<()> {
        self.0.commit()
    }
}
