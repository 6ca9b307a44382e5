//! The local stand-in for the outbox table's DynamoDB Stream, as `wxim serve` runs it.
//!
//! In AWS, every item put into the outbox table becomes an INSERT record of its stream, and
//! Lambda hands the records, in batches of up to 10, to notify-dispatch; a record the function
//! reports failed is delivered again (up to `MaximumRetryAttempts`, 8 in template.yaml), and one
//! given up on is left to the sweep (its watch record). Locally the same happens without a scan:
//!
//! - [`StreamStore`] forwards every call to the real store and, after a successful `write` or
//!   `transact` that puts a new `queued` item into the outbox, sends the new ids to a channel:
//!   exactly the INSERT records the stream would carry (nothing for a write that failed, a
//!   duplicate refused by its condition, or an update);
//! - one dispatcher task ([`start`]) takes up to [`BATCH`] ids at a time and runs
//!   [`common::flows::dispatch::run`] on them, the code notify-dispatch runs; each retry it
//!   returns is fed back after its pause from a task of its own, so a backoff never holds up new
//!   items, up to [`MAX_REDELIVERIES`] times.
//!
//! The webhook answers as soon as its handler has written (the dispatcher works on another
//! task), so a slow or failing outbound call never makes WeChat or IM wait, as in AWS.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use common::App;
use common::flows::dispatch;
use common::records::outbox;
use common::store::{Item, Store, StoreError, Table, Write};
use tokio::sync::mpsc;

/// Records per dispatcher batch (the event source mapping's `BatchSize`).
pub const BATCH: usize = 10;
/// Redeliveries of a record the dispatcher asked to retry (`MaximumRetryAttempts`); after that
/// the item is the sweep's (its watch record falls due `SWEEP_STALE_SECS` after queueing).
pub const MAX_REDELIVERIES: u32 = 8;

/// One stream record: an outbox item just inserted, or redelivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    /// 0 for the INSERT itself, then one more per redelivery.
    pub redelivery: u32,
}

/// A store whose outbox inserts are streamed (see the module docs).
pub struct StreamStore {
    inner: Arc<dyn Store>,
    tx: mpsc::UnboundedSender<Record>,
}

impl fmt::Debug for StreamStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamStore")
            .field("inner", &self.inner)
            .finish()
    }
}

/// The stream's records, as the dispatcher (or a test) reads them.
pub struct Records {
    rx: mpsc::UnboundedReceiver<Record>,
    /// For redeliveries; weak, so the stream ends when the store is dropped.
    tx: mpsc::WeakUnboundedSender<Record>,
}

impl Records {
    /// The next record, `None` once the store is gone and everything was read.
    pub async fn recv(&mut self) -> Option<Record> {
        self.rx.recv().await
    }

    /// A record already waiting, if any.
    pub fn try_recv(&mut self) -> Option<Record> {
        self.rx.try_recv().ok()
    }
}

/// Wraps a store: its outbox inserts come out of the returned [`Records`].
pub fn wrap(inner: Arc<dyn Store>) -> (StreamStore, Records) {
    let (tx, rx) = mpsc::unbounded_channel();
    let weak = tx.downgrade();
    (StreamStore { inner, tx }, Records { rx, tx: weak })
}

/// The ids of the new queued items a set of writes puts into the outbox.
fn inserted(ws: &[Write]) -> Vec<String> {
    ws.iter()
        .filter_map(|w| outbox::queued_by(w).map(str::to_owned))
        .collect()
}

impl StreamStore {
    fn emit(&self, ids: Vec<String>) {
        for id in ids {
            // The dispatcher is gone only when the process is ending; the watch record still
            // has the item.
            let _ = self.tx.send(Record { id, redelivery: 0 });
        }
    }
}

#[async_trait]
impl Store for StreamStore {
    fn client_created(&self) -> bool {
        self.inner.client_created()
    }

    async fn get(&self, table: Table, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        self.inner.get(table, pk, sk).await
    }

    async fn get_many(
        &self,
        table: Table,
        keys: &[(&str, &str)],
    ) -> Result<Vec<Option<Item>>, StoreError> {
        self.inner.get_many(table, keys).await
    }

    async fn query(
        &self,
        table: Table,
        pk: &str,
        sk_prefix: &str,
    ) -> Result<Vec<Item>, StoreError> {
        self.inner.query(table, pk, sk_prefix).await
    }

    async fn scan(&self, table: Table) -> Result<Vec<Item>, StoreError> {
        self.inner.scan(table).await
    }

    async fn write(&self, w: Write) -> Result<Option<Item>, StoreError> {
        let ids = inserted(std::slice::from_ref(&w));
        let out = self.inner.write(w).await?;
        self.emit(ids);
        Ok(out)
    }

    async fn transact(&self, ws: Vec<Write>) -> Result<(), StoreError> {
        let ids = inserted(&ws);
        self.inner.transact(ws).await?;
        self.emit(ids);
        Ok(())
    }
}

/// The app with its store streamed, and the one dispatcher task reading the stream (it ends
/// when the app is dropped; abort it to stop it sooner).
pub fn start(app: App) -> (Arc<App>, tokio::task::JoinHandle<()>) {
    let (store, records) = wrap(app.store.clone());
    let app = Arc::new(App {
        store: Arc::new(store),
        ..app
    });
    let task = tokio::spawn(dispatcher(Arc::downgrade(&app), records));
    (app, task)
}

/// The dispatcher: batches of up to [`BATCH`] records through the flow notify-dispatch runs,
/// retries fed back after their pause.
pub async fn dispatcher(app: Weak<App>, mut records: Records) {
    let mut batch: Vec<Record> = Vec::with_capacity(BATCH);
    loop {
        batch.clear();
        if records.rx.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        let Some(app) = app.upgrade() else { return };
        // A redelivery can meet a fresh record of the same item in one batch: run it once.
        let mut ids: Vec<String> = vec![];
        for r in &batch {
            if !ids.contains(&r.id) {
                ids.push(r.id.clone());
            }
        }
        let retries = dispatch::run(&app, &ids).await;
        for retry in retries {
            let redelivery = batch
                .iter()
                .filter(|r| r.id == retry.id)
                .map(|r| r.redelivery)
                .max()
                .unwrap_or(0)
                + 1;
            if redelivery > MAX_REDELIVERIES {
                tracing::warn!(outbox_id = %retry.id, decision = "stream_gave_up", redeliveries = MAX_REDELIVERIES, "left to the sweep (its watch record)");
                continue;
            }
            let Some(tx) = records.tx.upgrade() else {
                continue;
            };
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(retry.pause_ms)).await;
                let _ = tx.send(Record {
                    id: retry.id,
                    redelivery,
                });
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::records::outbox::{Job, Queueing, Status};
    use common::store::{Cond, Update};

    fn delete() -> Job {
        Job::Delete {
            user_id: "u".into(),
        }
    }

    fn q() -> Queueing {
        Queueing {
            now: 1_700_000_000,
            retention_secs: 3600,
            watch_after_secs: 600,
        }
    }

    #[test]
    fn only_new_queued_outbox_items_are_inserts() {
        let job = outbox::enqueue("job1", &delete(), q());
        assert_eq!(inserted(&job.writes()), ["job1"]);
        let ended = outbox::ended(
            "job2",
            &delete(),
            Status::Skipped,
            "no_agent_configured",
            q(),
        );
        assert!(
            inserted(&[ended]).is_empty(),
            "an ended job needs no dispatch"
        );
        let claim = Write::update(
            Table::Outbox,
            "out#job1",
            "_",
            vec![Update::set("status", "queued")],
        );
        assert!(inserted(&[claim]).is_empty(), "an update is no INSERT");
        let state = Write::put(
            Table::State,
            Item::new("out#x", "_").with("status", "queued"),
        )
        .when(Cond::NotExists);
        assert!(
            inserted(&[state]).is_empty(),
            "only the outbox table streams"
        );
    }
}
