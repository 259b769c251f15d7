//! The outbox table (migration 3) as the publisher sees it: undelivered
//! rows in `seq` order, deleted once the broker acknowledged them, bounded
//! by age and count.
//!
//! The publisher has a connection of its own on the registry's file, opened
//! by [`crate::db::open`] like every other (WAL: the event writer is never
//! blocked by our reads; `secure_delete`: a delivered gate open or face crop
//! is overwritten when its row is deleted, not left in free pages;
//! `synchronous = NORMAL`: a power cut may undo the last deletes, which only
//! means duplicates with the same id, never a loss).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, params};
use time::OffsetDateTime;

use super::PublishError;
use crate::events::OutboxMessage;

/// One undelivered message.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub seq: i64,
    pub message_id: String,
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

impl OutboxRow {
    /// Whether the row must not be sent any more at `now`.
    pub fn expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|e| e <= ms(now))
    }
}

/// How many rows [`Outbox::enforce_limits`] dropped, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    pub by_age: u64,
    pub by_size: u64,
}

pub struct Outbox {
    conn: Connection,
}

pub(crate) fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn db(context: &'static str) -> impl FnOnce(rusqlite::Error) -> PublishError {
    move |source| PublishError::Outbox { context, source }
}

impl Outbox {
    /// Opens (and migrates) the database with a connection of our own.
    pub fn open(path: &Path) -> Result<Self, PublishError> {
        Ok(Self {
            conn: crate::registry::schema::open(path)?,
        })
    }

    /// Queues messages that belong to no event (a remote gate open).
    pub fn enqueue(
        &self,
        messages: &[OutboxMessage],
        now: OffsetDateTime,
    ) -> Result<(), PublishError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(db("begin enqueue"))?;
        for m in messages {
            tx.execute(
                "INSERT INTO outbox (message_id, topic, payload, qos, retain, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    m.message_id,
                    m.topic,
                    m.payload,
                    m.qos,
                    m.retain as i64,
                    ms(now),
                    m.expires_at.map(ms)
                ],
            )
            .map_err(db("queue a message in the outbox"))?;
        }
        tx.commit().map_err(db("commit enqueue"))
    }

    /// Undelivered rows after `seq`, oldest first, at most `limit`.
    pub fn next_after(&self, seq: i64, limit: usize) -> Result<Vec<OutboxRow>, PublishError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, message_id, topic, payload, qos, retain, created_at, expires_at
                 FROM outbox WHERE delivered_at IS NULL AND seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(db("query the outbox"))?;
        let rows = stmt
            .query_map(params![seq, limit as i64], |r| {
                Ok(OutboxRow {
                    seq: r.get(0)?,
                    message_id: r.get(1)?,
                    topic: r.get(2)?,
                    payload: r.get(3)?,
                    qos: r.get::<_, i64>(4)?.clamp(0, 2) as u8,
                    retain: r.get::<_, i64>(5)? != 0,
                    created_at: r.get(6)?,
                    expires_at: r.get(7)?,
                })
            })
            .map_err(db("query the outbox"))?;
        rows.collect::<Result<_, _>>()
            .map_err(db("read an outbox row"))
    }

    /// Deletes delivered (or given up) rows, in one transaction.
    pub fn remove(&self, seqs: &[i64]) -> Result<(), PublishError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(db("begin outbox delete"))?;
        {
            let mut stmt = tx
                .prepare_cached("DELETE FROM outbox WHERE seq = ?1")
                .map_err(db("delete outbox rows"))?;
            for s in seqs {
                stmt.execute([s]).map_err(db("delete outbox rows"))?;
            }
        }
        tx.commit().map_err(db("commit outbox delete"))
    }

    /// Undelivered rows.
    pub fn pending(&self) -> Result<u64, PublishError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM outbox WHERE delivered_at IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
            .map_err(db("count the outbox"))
    }

    /// Drops the oldest undelivered rows beyond the bounds: older than
    /// `max_age`, then all but the newest `max_rows`; and any rows marked
    /// delivered by other code.
    pub fn enforce_limits(
        &self,
        max_rows: u64,
        max_age: Duration,
        now: OffsetDateTime,
    ) -> Result<Dropped, PublishError> {
        let cutoff = ms(now) - max_age.as_millis().min(i64::MAX as u128) as i64;
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(db("begin outbox pruning"))?;
        tx.execute("DELETE FROM outbox WHERE delivered_at IS NOT NULL", [])
            .map_err(db("prune delivered rows"))?;
        let by_age = tx
            .execute("DELETE FROM outbox WHERE created_at < ?1", [cutoff])
            .map_err(db("drop outbox rows by age"))? as u64;
        let by_size = tx
            .execute(
                "DELETE FROM outbox WHERE seq <= (
                     SELECT seq FROM outbox ORDER BY seq DESC LIMIT 1 OFFSET ?1)",
                [max_rows.min(i64::MAX as u64) as i64],
            )
            .map_err(db("drop outbox rows by count"))? as u64;
        tx.commit().map_err(db("commit outbox pruning"))?;
        Ok(Dropped { by_age, by_size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, expires: Option<OffsetDateTime>) -> OutboxMessage {
        OutboxMessage {
            message_id: id.into(),
            topic: format!("t/{id}"),
            payload: id.as_bytes().to_vec(),
            qos: 1,
            retain: false,
            expires_at: expires,
        }
    }

    #[test]
    fn rows_come_in_order_and_leave_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(&dir.path().join("r.db")).unwrap();
        let now = OffsetDateTime::now_utc();
        o.enqueue(&[msg("a", None), msg("b", None), msg("c", None)], now)
            .unwrap();
        let rows = o.next_after(0, 2).unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| r.message_id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        let rest = o.next_after(rows[1].seq, 10).unwrap();
        assert_eq!(rest.len(), 1);
        o.remove(&[rows[0].seq]).unwrap();
        assert_eq!(o.pending().unwrap(), 2);
        assert_eq!(o.next_after(0, 10).unwrap()[0].message_id, "b");
    }

    #[test]
    fn expiry_is_judged_by_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(&dir.path().join("r.db")).unwrap();
        let now = OffsetDateTime::now_utc();
        o.enqueue(
            &[
                msg("gate", Some(now + time::Duration::seconds(5))),
                msg("ev", None),
            ],
            now,
        )
        .unwrap();
        let rows = o.next_after(0, 10).unwrap();
        assert!(!rows[0].expired(now));
        assert!(rows[0].expired(now + time::Duration::seconds(5)));
        assert!(!rows[1].expired(now + time::Duration::days(365)));
    }

    #[test]
    fn limits_drop_the_oldest_and_count_them() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(&dir.path().join("r.db")).unwrap();
        let now = OffsetDateTime::now_utc();
        let old = now - time::Duration::hours(2);
        o.enqueue(&[msg("old1", None), msg("old2", None)], old)
            .unwrap();
        let fresh: Vec<_> = (0..5).map(|i| msg(&format!("n{i}"), None)).collect();
        o.enqueue(&fresh, now).unwrap();
        let d = o.enforce_limits(3, Duration::from_secs(3600), now).unwrap();
        assert_eq!(
            d,
            Dropped {
                by_age: 2,
                by_size: 2
            }
        );
        let left: Vec<_> = o
            .next_after(0, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.message_id)
            .collect();
        assert_eq!(left, ["n2", "n3", "n4"]);
        let d = o.enforce_limits(3, Duration::from_secs(3600), now).unwrap();
        assert_eq!(d, Dropped::default());
    }

    /// Finding 12: a delivered gate open (or face crop) must not stay in the
    /// file's free pages once its row is deleted.
    #[test]
    fn delivered_rows_leave_no_bytes_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let o = Outbox::open(&path).unwrap();
        let now = OffsetDateTime::now_utc();
        let mut m = msg("gate", None);
        m.payload = b"{\"kind\":\"gate_open\",\"nonce\":\"NONCE-7f3a9c-UNIQUE\"}".to_vec();
        o.enqueue(&[m], now).unwrap();
        crate::db::checkpoint(&o.conn).unwrap();
        let seqs: Vec<i64> = o.next_after(0, 10).unwrap().iter().map(|r| r.seq).collect();
        o.remove(&seqs).unwrap();
        assert!(crate::db::checkpoint(&o.conn).unwrap());
        let bytes = std::fs::read(&path).unwrap();
        let needle = b"NONCE-7f3a9c-UNIQUE";
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "a delivered message survives in the database file"
        );
    }
}

/// Nonces of accepted commands, kept on disk until their command could no
/// longer pass the age check (`expires_at`), so a restart does not forget
/// them: a command replayed after a restart is refused, whatever its
/// timestamp. Its own connection with `synchronous = FULL`: a nonce is on
/// disk before its command acts.
pub struct NonceStore {
    conn: Connection,
}

/// What [`NonceStore::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceClaim {
    /// First use: recorded.
    Fresh,
    /// Already used by an earlier command (this run or an earlier one).
    Used,
    /// The store holds `max` live nonces already (an eviction could let a
    /// replay through, so nothing is recorded).
    Full,
}

impl NonceStore {
    /// Opens the table in the outbox database (created if missing).
    pub fn open(path: &Path) -> Result<Self, PublishError> {
        // The one opener (db.rs: WAL, busy timeout, secure_delete, schema),
        // then FULL sync: a nonce must be on disk before its command acts.
        let conn = crate::registry::schema::open(path)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db("set synchronous"))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS command_nonces (
                 nonce TEXT PRIMARY KEY,
                 expires_at INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS command_nonces_expiry ON command_nonces (expires_at);",
        )
        .map_err(db("create the nonce table"))?;
        Ok(Self { conn })
    }

    /// Records `nonce` until `until` unless it is already there; forgets
    /// nonces expired at `now` first. One transaction, committed (FULL
    /// sync) before this returns.
    pub fn claim(
        &self,
        nonce: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
        max: usize,
    ) -> Result<NonceClaim, PublishError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(db("begin nonce claim"))?;
        tx.execute(
            "DELETE FROM command_nonces WHERE expires_at <= ?1",
            [ms(now)],
        )
        .map_err(db("forget expired nonces"))?;
        let used: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM command_nonces WHERE nonce = ?1)",
                [nonce],
                |r| r.get(0),
            )
            .map_err(db("look up a nonce"))?;
        if used {
            return Ok(NonceClaim::Used);
        }
        let live: i64 = tx
            .query_row("SELECT count(*) FROM command_nonces", [], |r| r.get(0))
            .map_err(db("count nonces"))?;
        if live.max(0) as usize >= max {
            return Ok(NonceClaim::Full);
        }
        tx.execute(
            "INSERT INTO command_nonces (nonce, expires_at) VALUES (?1, ?2)",
            params![nonce, ms(until)],
        )
        .map_err(db("record a nonce"))?;
        tx.commit().map_err(db("commit nonce claim"))?;
        Ok(NonceClaim::Fresh)
    }
}

#[cfg(test)]
mod nonce_tests {
    use super::*;

    #[test]
    fn a_nonce_is_used_once_across_connections_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let now = OffsetDateTime::now_utc();
        let until = now + time::Duration::seconds(30);
        let a = NonceStore::open(&path).unwrap();
        assert_eq!(a.claim("n-1", until, now, 10).unwrap(), NonceClaim::Fresh);
        assert_eq!(a.claim("n-1", until, now, 10).unwrap(), NonceClaim::Used);
        drop(a);
        // A new connection (a restarted gateway) still knows it.
        let b = NonceStore::open(&path).unwrap();
        assert_eq!(b.claim("n-1", until, now, 10).unwrap(), NonceClaim::Used);
        // Forgotten once expired (its command is stale by then anyway).
        let later = until + time::Duration::seconds(30);
        assert_eq!(b.claim("n-1", later, until, 10).unwrap(), NonceClaim::Fresh);
        assert_eq!(b.claim("n-2", later, until, 1).unwrap(), NonceClaim::Full);
    }
}
