//! Embedded implementation on SQLite, so the local command line needs no server. Conditions and
//! updates are evaluated with the same reference functions ([`Cond::eval`], [`Update::apply`])
//! inside one `BEGIN IMMEDIATE` transaction, which gives DynamoDB's all-or-nothing behaviour and
//! lets `wxim serve` and `wxim state dump` share the file from two processes.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{Attr, Item, Store, StoreError, Table, Write};
use crate::clock::Clock;

pub struct EmbeddedStore {
    conn: Mutex<Connection>,
    clock: Arc<dyn Clock>,
    path: String,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish()
    }
}

fn db_err(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::Unavailable("embedded store is busy".into())
        }
        other => StoreError::Unavailable(format!("embedded store: {other}")),
    }
}

impl EmbeddedStore {
    /// Opens (creating when needed) the database file, and purges expired items the way
    /// DynamoDB's TTL eventually would.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let conn = Connection::open(path).map_err(db_err)?;
        Self::init(conn, clock, path.display().to_string())
    }

    /// An in-memory database, for tests that need no file.
    pub fn in_memory(clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(db_err)?;
        Self::init(conn, clock, ":memory:".into())
    }

    fn init(conn: Connection, clock: Arc<dyn Clock>, path: String) -> Result<Self, StoreError> {
        conn.busy_timeout(Duration::from_secs(5)).map_err(db_err)?;
        // WAL lets a second process read while `wxim serve` writes; it is refused for
        // in-memory databases, which do not need it.
        let _: Result<String, _> = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0));
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS items (
                tbl TEXT NOT NULL,
                pk TEXT NOT NULL,
                sk TEXT NOT NULL,
                attrs TEXT NOT NULL,
                expires_at INTEGER,
                PRIMARY KEY (tbl, pk, sk)
            ) WITHOUT ROWID;",
        )
        .map_err(db_err)?;
        conn.execute(
            "DELETE FROM items WHERE expires_at IS NOT NULL AND expires_at < ?1",
            params![clock.now()],
        )
        .map_err(db_err)?;
        Ok(EmbeddedStore {
            conn: Mutex::new(conn),
            clock,
            path,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (its own transaction
        // rolls back), so a poisoned mutex is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn encode_attrs(item: &Item) -> String {
    let mut m = serde_json::Map::new();
    for (k, v) in &item.attrs {
        let tagged = match v {
            Attr::S(s) => serde_json::json!({ "S": s }),
            Attr::N(n) => serde_json::json!({ "N": n }),
            Attr::Bool(b) => serde_json::json!({ "BOOL": b }),
        };
        m.insert(k.clone(), tagged);
    }
    serde_json::Value::Object(m).to_string()
}

fn decode_item(pk: String, sk: String, attrs: &str) -> Result<Item, StoreError> {
    let bad = || StoreError::Invalid(format!("corrupt attributes for {pk}/{sk}"));
    let v: serde_json::Value = serde_json::from_str(attrs).map_err(|_| bad())?;
    let mut item = Item::new(pk.clone(), sk.clone());
    for (k, tagged) in v.as_object().ok_or_else(bad)? {
        let a = if let Some(s) = tagged.get("S").and_then(|x| x.as_str()) {
            Attr::S(s.to_owned())
        } else if let Some(n) = tagged.get("N").and_then(|x| x.as_i64()) {
            Attr::N(n)
        } else if let Some(b) = tagged.get("BOOL").and_then(|x| x.as_bool()) {
            Attr::Bool(b)
        } else {
            return Err(bad());
        };
        item.attrs.insert(k.clone(), a);
    }
    Ok(item)
}

fn load(conn: &Connection, table: Table, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
    let row: Option<String> = conn
        .query_row(
            "SELECT attrs FROM items WHERE tbl = ?1 AND pk = ?2 AND sk = ?3",
            params![table.name(), pk, sk],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    row.map(|a| decode_item(pk.to_owned(), sk.to_owned(), &a))
        .transpose()
}

fn save(conn: &Connection, table: Table, item: &Item) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO items (tbl, pk, sk, attrs, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (tbl, pk, sk) DO UPDATE SET attrs = excluded.attrs, expires_at = excluded.expires_at",
        params![
            table.name(),
            item.pk,
            item.sk,
            encode_attrs(item),
            item.expires_at()
        ],
    )
    .map_err(db_err)?;
    Ok(())
}

/// Applies one write inside an open transaction; returns the item after an update.
fn apply(conn: &Connection, w: &Write, index: usize, now: i64) -> Result<Option<Item>, StoreError> {
    let (table, pk, sk) = w.key();
    super::validate_key(pk, sk)?;
    let current = load(conn, table, pk, sk)?;
    if let Some(c) = w.cond()
        && !c.eval(current.as_ref(), now)
    {
        return Err(StoreError::ConditionFailed { index });
    }
    match w {
        Write::Put { item, .. } => {
            save(conn, table, item)?;
            Ok(None)
        }
        Write::Update { updates, .. } => {
            let mut item = current.unwrap_or_else(|| Item::new(pk, sk));
            for u in updates {
                u.apply(&mut item)?;
            }
            save(conn, table, &item)?;
            Ok(Some(item))
        }
        Write::Delete { .. } => {
            conn.execute(
                "DELETE FROM items WHERE tbl = ?1 AND pk = ?2 AND sk = ?3",
                params![table.name(), pk, sk],
            )
            .map_err(db_err)?;
            Ok(None)
        }
        Write::Check { .. } => Ok(None),
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, table: Table, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        super::validate_key(pk, sk)?;
        let now = self.clock.now();
        let conn = self.lock();
        Ok(load(&conn, table, pk, sk)?.filter(|i| !i.is_expired(now)))
    }

    async fn query(
        &self,
        table: Table,
        pk: &str,
        sk_prefix: &str,
    ) -> Result<Vec<Item>, StoreError> {
        let now = self.clock.now();
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT sk, attrs FROM items WHERE tbl = ?1 AND pk = ?2 AND substr(sk, 1, length(?3)) = ?3 ORDER BY sk",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![table.name(), pk, sk_prefix], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(db_err)?;
        let mut out = vec![];
        for row in rows {
            let (sk, attrs) = row.map_err(db_err)?;
            let item = decode_item(pk.to_owned(), sk, &attrs)?;
            if !item.is_expired(now) {
                out.push(item);
            }
        }
        Ok(out)
    }

    async fn scan(&self, table: Table) -> Result<Vec<Item>, StoreError> {
        let now = self.clock.now();
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT pk, sk, attrs FROM items WHERE tbl = ?1 ORDER BY pk, sk")
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![table.name()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(db_err)?;
        let mut out = vec![];
        for row in rows {
            let (pk, sk, attrs) = row.map_err(db_err)?;
            let item = decode_item(pk, sk, &attrs)?;
            if !item.is_expired(now) {
                out.push(item);
            }
        }
        Ok(out)
    }

    async fn write(&self, w: Write) -> Result<Option<Item>, StoreError> {
        if matches!(w, Write::Check { .. }) {
            return Err(StoreError::Invalid(
                "a condition check is only valid inside a transaction".into(),
            ));
        }
        let now = self.clock.now();
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let out = apply(&tx, &w, 0, now)?;
        tx.commit().map_err(db_err)?;
        Ok(out)
    }

    async fn transact(&self, ws: Vec<Write>) -> Result<(), StoreError> {
        super::validate_transaction(&ws)?;
        if ws
            .iter()
            .any(|w| matches!(w, Write::Update { updates, .. } if updates.is_empty()))
        {
            return Err(StoreError::Invalid(
                "a transactional update needs an action".into(),
            ));
        }
        let now = self.clock.now();
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        for (i, w) in ws.iter().enumerate() {
            // Dropping `tx` on the error path rolls everything back.
            apply(&tx, w, i, now)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(())
    }
}
