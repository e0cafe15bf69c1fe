//! The key store database: wrapped subject keys and pending marks.
//!
//! Destroying a key deletes its row and then vacuums the table ([`KeyStore::scrub`]): the dead
//! row version, which holds the wrapped key, is pruned from the table. What PostgreSQL does not promise is that
//! no byte of it survives anywhere: its write-ahead log (and a standby's, and a WAL archive) holds
//! the row until those segments are recycled, and a base backup holds what it copied. Every such
//! remnant is a key *wrapped* by the master key, so the key store's backup rule is: keep its WAL
//! archive and backups no longer than the retention window, and after an erasure that must reach
//! old copies, rotate the master key (`facegate keys rotate`) — the remnants are then wrapped by
//! a key that no longer exists.

use super::*;

pub(super) const KEYS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS subject_keys (
  gallery TEXT NOT NULL, pseudonym BYTEA NOT NULL, wrapped BYTEA NOT NULL, created BIGINT NOT NULL,
  PRIMARY KEY (gallery, pseudonym));
CREATE TABLE IF NOT EXISTS pending (
  gallery TEXT NOT NULL, pseudonym BYTEA NOT NULL, op TEXT NOT NULL, created BIGINT NOT NULL,
  pid BIGINT NOT NULL DEFAULT 0, node TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (gallery, pseudonym, op));
CREATE TABLE IF NOT EXISTS writer (id INT PRIMARY KEY CHECK (id = 1));
INSERT INTO writer VALUES (1) ON CONFLICT DO NOTHING;
";

impl PgKeys {
    fn conn(&self) -> Result<Pooled> {
        Ok(self.pool.get()?)
    }
}

fn key_rows(rows: &[Row]) -> Result<Vec<KeyRow>> {
    rows.iter()
        .map(|r| {
            Ok(KeyRow {
                gallery: r.try_get(0)?,
                pseudonym: r.try_get(1)?,
                wrapped: r.try_get(2)?,
                created: r.try_get(3)?,
            })
        })
        .collect()
}

const ALL_KEYS: &str = "SELECT gallery, pseudonym, wrapped, created FROM subject_keys";

impl KeyStore for PgKeys {
    fn write(&self) -> Result<Box<dyn KeyTxn + '_>> {
        Ok(Box::new(KeysTx {
            tx: Tx::begin(self.conn()?)?,
            node: &self.node,
        }))
    }

    fn wrapped(&self, gallery: &str, pseudonym: &[u8]) -> Result<Option<Vec<u8>>> {
        self.conn()?.value(
            "SELECT wrapped FROM subject_keys WHERE gallery = $1 AND pseudonym = $2",
            &[&gallery, &pseudonym],
        )
    }

    fn scan_wrapped(&self, gallery: &str, each: &mut dyn FnMut([u8; 32], Vec<u8>)) -> Result<()> {
        self.conn()?.stream(
            "SELECT pseudonym, wrapped FROM subject_keys WHERE gallery = $1",
            &[&gallery],
            &mut |r| {
                each(pseudonym(r, 0)?, r.try_get(1)?);
                Ok(true)
            },
        )
    }

    fn all_keys(&self) -> Result<Vec<KeyRow>> {
        key_rows(&self.conn()?.all(ALL_KEYS, &[])?)
    }

    fn marks(&self) -> Result<Vec<Mark>> {
        self.conn()?
            .all(
                "SELECT gallery, pseudonym, op, created, pid, node FROM pending",
                &[],
            )?
            .iter()
            .map(|r| {
                let node: String = r.try_get(5)?;
                Ok(Mark {
                    gallery: r.try_get(0)?,
                    pseudonym: r.try_get(1)?,
                    op: r.try_get(2)?,
                    created: r.try_get(3)?,
                    pid: r.try_get(4)?,
                    here: node == self.node,
                })
            })
            .collect()
    }

    fn scrub(&self) -> Result<()> {
        // VACUUM cannot run inside a transaction: the pooled connection is in autocommit. It
        // prunes the dead row (the wrapped key) from the table; the index holds only the
        // (gallery, pseudonym) pair, so its cleanup is left to PostgreSQL's own judgement (forcing
        // it scans the whole index: 25 ms an erasure at 10^6 keys).
        self.conn()?.client.batch_execute("VACUUM subject_keys")?;
        Ok(())
    }
}

struct KeysTx<'a> {
    tx: Tx,
    node: &'a str,
}

impl KeysTx<'_> {
    fn conn(&mut self) -> &mut Conn {
        &mut self.tx.conn
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
        let n = self.conn().execute(
            "INSERT INTO subject_keys (gallery, pseudonym, wrapped, created) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[&gallery, &pseudonym, &wrapped, &created],
        )?;
        Ok(n == 1)
    }

    fn insert_keys(&mut self, gallery: &str, rows: &[(&[u8], &[u8], i64)]) -> Result<Vec<bool>> {
        let pseudonym: Vec<&[u8]> = rows.iter().map(|r| r.0).collect();
        let wrapped: Vec<&[u8]> = rows.iter().map(|r| r.1).collect();
        let created: Vec<i64> = rows.iter().map(|r| r.2).collect();
        let mut inserted: std::collections::HashSet<Vec<u8>> = self
            .conn()
            .column::<Vec<u8>>(
                "INSERT INTO subject_keys (gallery, pseudonym, wrapped, created)
                 SELECT $1, p, w, c FROM unnest($2::BYTEA[], $3::BYTEA[], $4::BIGINT[]) AS u(p, w, c)
                 ON CONFLICT DO NOTHING RETURNING pseudonym",
                &[&gallery, &pseudonym, &wrapped, &created],
            )?
            .into_iter()
            .collect();
        // A pseudonym given twice was inserted once: its first row (as one-by-one inserts).
        Ok(pseudonym.iter().map(|p| inserted.remove(*p)).collect())
    }

    fn mark_all(&mut self, marks: &[Mark]) -> Result<()> {
        // One statement may not upsert a row twice: a repeated mark keeps its last values, as
        // marking one by one would.
        let mut last: HashMap<(&str, &[u8], &str), &Mark> = HashMap::new();
        for m in marks {
            last.insert((&m.gallery, &m.pseudonym, &m.op), m);
        }
        let marks: Vec<&Mark> = last.into_values().collect();
        let gallery: Vec<&str> = marks.iter().map(|m| m.gallery.as_str()).collect();
        let pseudonym: Vec<&[u8]> = marks.iter().map(|m| m.pseudonym.as_slice()).collect();
        let op: Vec<&str> = marks.iter().map(|m| m.op.as_str()).collect();
        let created: Vec<i64> = marks.iter().map(|m| m.created).collect();
        let pid: Vec<i64> = marks.iter().map(|m| m.pid).collect();
        let node = self.node.to_string();
        self.conn().execute(
            "INSERT INTO pending (gallery, pseudonym, op, created, pid, node)
             SELECT g, p, o, c, i, $6
             FROM unnest($1::TEXT[], $2::BYTEA[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[])
                  AS u(g, p, o, c, i)
             ON CONFLICT (gallery, pseudonym, op) DO UPDATE
             SET created = excluded.created, pid = excluded.pid, node = excluded.node",
            &[&gallery, &pseudonym, &op, &created, &pid, &node],
        )?;
        Ok(())
    }

    fn key_created(&mut self, gallery: &str, pseudonym: &[u8]) -> Result<Option<i64>> {
        self.conn().value(
            "SELECT created FROM subject_keys WHERE gallery = $1 AND pseudonym = $2",
            &[&gallery, &pseudonym],
        )
    }

    fn replace_key(
        &mut self,
        gallery: &str,
        pseudonym: &[u8],
        wrapped: &[u8],
        created: i64,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE subject_keys SET wrapped = $3, created = $4 WHERE gallery = $1 AND pseudonym = $2",
            &[&gallery, &pseudonym, &wrapped, &created],
        )?;
        Ok(())
    }

    fn delete_key(&mut self, gallery: &str, pseudonym: &[u8], created: Option<i64>) -> Result<()> {
        match created {
            Some(c) => self.conn().execute(
                "DELETE FROM subject_keys WHERE gallery = $1 AND pseudonym = $2 AND created = $3",
                &[&gallery, &pseudonym, &c],
            )?,
            None => self.conn().execute(
                "DELETE FROM subject_keys WHERE gallery = $1 AND pseudonym = $2",
                &[&gallery, &pseudonym],
            )?,
        };
        Ok(())
    }

    fn all_keys(&mut self) -> Result<Vec<KeyRow>> {
        key_rows(&self.conn().all(ALL_KEYS, &[])?)
    }

    fn set_wrapped(&mut self, gallery: &str, pseudonym: &[u8], wrapped: &[u8]) -> Result<()> {
        self.conn().execute(
            "UPDATE subject_keys SET wrapped = $1 WHERE gallery = $2 AND pseudonym = $3",
            &[&wrapped, &gallery, &pseudonym],
        )?;
        Ok(())
    }

    fn mark(&mut self, m: &Mark) -> Result<()> {
        let node = self.node.to_string();
        self.conn().execute(
            "INSERT INTO pending (gallery, pseudonym, op, created, pid, node) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (gallery, pseudonym, op) DO UPDATE
             SET created = excluded.created, pid = excluded.pid, node = excluded.node",
            &[&m.gallery, &m.pseudonym, &m.op, &m.created, &m.pid, &node],
        )?;
        Ok(())
    }

    fn mark_owner(
        &mut self,
        gallery: &str,
        pseudonym: &[u8],
        op: &str,
    ) -> Result<Option<MarkOwner>> {
        self.conn()
            .opt(
                "SELECT pid, node FROM pending WHERE gallery = $1 AND pseudonym = $2 AND op = $3",
                &[&gallery, &pseudonym, &op],
            )?
            .map(|r| {
                let node: String = r.try_get(1)?;
                Ok(MarkOwner {
                    pid: r.try_get(0)?,
                    here: node == self.node,
                })
            })
            .transpose()
    }

    fn unmark(&mut self, gallery: &str, pseudonym: &[u8], op: &str) -> Result<()> {
        self.conn().execute(
            "DELETE FROM pending WHERE gallery = $1 AND pseudonym = $2 AND op = $3",
            &[&gallery, &pseudonym, &op],
        )?;
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit()
    }
}
