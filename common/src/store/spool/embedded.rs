//! The local spool: SQLite in a file of its own (`spool.db` beside the embedded store's
//! `wxim.db`), so that what the store could not take does not depend on the store's file. It
//! behaves as the SQS queue with its redrive policy: a received message is hidden for
//! [`VISIBILITY_SECS`], a deleted one is gone, and one received more than [`MAX_RECEIVES`]
//! times is kept as dead (the dead-letter queue) instead of being handed out again.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, TransactionBehavior, params};

use super::{MAX_RECEIVES, Received, Spool, SpoolError, VISIBILITY_SECS};
use crate::clock::Clock;

pub struct EmbeddedSpool {
    conn: Mutex<Connection>,
    clock: Arc<dyn Clock>,
    path: String,
}

impl std::fmt::Debug for EmbeddedSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedSpool")
            .field("path", &self.path)
            .finish()
    }
}

fn err(e: rusqlite::Error) -> SpoolError {
    SpoolError(format!("embedded spool: {e}"))
}

/// A handle names the message and the receive it came from, so a handle from an earlier
/// receive cannot delete or reschedule a message someone else has received since.
fn parse_handle(handle: &str) -> Result<(i64, i64), SpoolError> {
    handle
        .split_once('.')
        .and_then(|(id, n)| Some((id.parse().ok()?, n.parse().ok()?)))
        .ok_or_else(|| SpoolError("not a receipt handle of this spool".into()))
}

impl EmbeddedSpool {
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, SpoolError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| SpoolError(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(err)?;
        Self::init(conn, clock, path.display().to_string())
    }

    /// An in-memory spool, for tests that need no file.
    pub fn in_memory(clock: Arc<dyn Clock>) -> Result<Self, SpoolError> {
        Self::init(
            Connection::open_in_memory().map_err(err)?,
            clock,
            ":memory:".into(),
        )
    }

    fn init(conn: Connection, clock: Arc<dyn Clock>, path: String) -> Result<Self, SpoolError> {
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        let _: Result<String, _> = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0));
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS spool (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                body TEXT NOT NULL,
                sent_at INTEGER NOT NULL,
                receives INTEGER NOT NULL DEFAULT 0,
                visible_at INTEGER NOT NULL,
                dead_at INTEGER
            );",
        )
        .map_err(err)?;
        Ok(EmbeddedSpool {
            conn: Mutex::new(conn),
            clock,
            path,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bodies moved to the dead-letter queue, oldest first (for the operator and tests).
    pub fn dead_letters(&self) -> Result<Vec<String>, SpoolError> {
        self.bodies("dead_at IS NOT NULL")
    }

    /// The bodies still waiting to be applied (received or not).
    pub fn pending(&self) -> Result<Vec<String>, SpoolError> {
        self.bodies("dead_at IS NULL")
    }

    fn bodies(&self, filter: &str) -> Result<Vec<String>, SpoolError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT body FROM spool WHERE {filter} ORDER BY id"
            ))
            .map_err(err)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)
    }
}

#[async_trait]
impl Spool for EmbeddedSpool {
    async fn send(&self, body: &str) -> Result<(), SpoolError> {
        let now = self.clock.now();
        self.lock()
            .execute(
                "INSERT INTO spool (body, sent_at, visible_at) VALUES (?1, ?2, ?2)",
                params![body, now],
            )
            .map_err(err)?;
        Ok(())
    }

    async fn receive(&self, max: usize) -> Result<Vec<Received>, SpoolError> {
        let now = self.clock.now();
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        // As SQS's redrive: a message due again after its last allowed receive goes to the
        // dead-letter queue rather than to a consumer.
        tx.execute(
            "UPDATE spool SET dead_at = ?1
             WHERE dead_at IS NULL AND visible_at <= ?1 AND receives >= ?2",
            params![now, MAX_RECEIVES],
        )
        .map_err(err)?;
        let due: Vec<(i64, String, i64)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT id, body, receives FROM spool
                     WHERE dead_at IS NULL AND visible_at <= ?1 ORDER BY id LIMIT ?2",
                )
                .map_err(err)?;
            let rows = stmt
                .query_map(params![now, max as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .map_err(err)?;
            rows.collect::<Result<_, _>>().map_err(err)?
        };
        let mut out = Vec::with_capacity(due.len());
        for (id, body, receives) in due {
            let n = receives + 1;
            tx.execute(
                "UPDATE spool SET receives = ?2, visible_at = ?3 WHERE id = ?1",
                params![id, n, now + i64::from(VISIBILITY_SECS)],
            )
            .map_err(err)?;
            out.push(Received {
                handle: format!("{id}.{n}"),
                body,
                receive_count: n as u32,
            });
        }
        tx.commit().map_err(err)?;
        Ok(out)
    }

    async fn delete(&self, handle: &str) -> Result<(), SpoolError> {
        let (id, n) = parse_handle(handle)?;
        self.lock()
            .execute(
                "DELETE FROM spool WHERE id = ?1 AND receives = ?2",
                params![id, n],
            )
            .map_err(err)?;
        Ok(())
    }

    async fn retry_after(&self, handle: &str, secs: u32) -> Result<(), SpoolError> {
        let (id, n) = parse_handle(handle)?;
        self.lock()
            .execute(
                "UPDATE spool SET visible_at = ?3 WHERE id = ?1 AND receives = ?2 AND dead_at IS NULL",
                params![id, n, self.clock.now() + i64::from(secs)],
            )
            .map_err(err)?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("spool file {}", self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[tokio::test]
    async fn a_message_is_hidden_while_received_and_gone_once_deleted() {
        let clock = Arc::new(ManualClock::at(1_000));
        let s = EmbeddedSpool::in_memory(clock.clone()).unwrap();
        s.send("a").await.unwrap();
        s.send("b").await.unwrap();
        let got = s.receive(10).await.unwrap();
        assert_eq!(
            got.iter().map(|r| r.body.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(
            s.receive(10).await.unwrap().is_empty(),
            "hidden while received"
        );
        s.delete(&got[0].handle).await.unwrap();
        s.retry_after(&got[1].handle, 5).await.unwrap();
        clock.advance(5);
        let again = s.receive(10).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].body.as_str(), again[0].receive_count), ("b", 2));
        // The first receive's handle no longer deletes it.
        s.delete(&got[1].handle).await.unwrap();
        assert_eq!(s.pending().unwrap(), ["b"]);
    }

    #[tokio::test]
    async fn a_message_received_too_often_is_dead_lettered() {
        let clock = Arc::new(ManualClock::at(1_000));
        let s = EmbeddedSpool::in_memory(clock.clone()).unwrap();
        s.send("never applies").await.unwrap();
        for n in 1..=MAX_RECEIVES {
            let got = s.receive(10).await.unwrap();
            assert_eq!(got.len(), 1, "receive {n}");
            s.retry_after(&got[0].handle, 1).await.unwrap();
            clock.advance(1);
        }
        assert!(s.receive(10).await.unwrap().is_empty());
        assert_eq!(s.dead_letters().unwrap(), ["never applies"]);
        assert!(s.pending().unwrap().is_empty());
    }
}
