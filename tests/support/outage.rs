//! Store and spool failures on demand: a store that fails every request as DynamoDB does when it
//! is throttled or unreachable, for as long as a test says, and a spool that records what it
//! keeps (so a test can deliver a message twice, as SQS may) and can fail too.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use common::store::spool::Received;
use common::store::{Item, Spool, SpoolError, Store, StoreError, Table, Write};

/// How the store is failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// DynamoDB's throttling (what the SDK reports after its own retries).
    Throttled,
    /// No connection at all.
    Unreachable,
}

impl Failure {
    fn error(self) -> StoreError {
        StoreError::Unavailable(match self {
            Failure::Throttled => "TransactWriteItems: ThrottlingException".into(),
            Failure::Unreachable => "unreachable: connection refused".into(),
        })
    }
}

/// The real store, failing every request while a failure is set.
#[derive(Debug)]
pub struct Outage {
    inner: Arc<dyn Store>,
    /// The failure, and how many requests still succeed before it starts.
    failing: Mutex<Option<(usize, Failure)>>,
}

impl Outage {
    pub fn new(inner: Arc<dyn Store>) -> Arc<Outage> {
        Arc::new(Outage {
            inner,
            failing: Mutex::new(None),
        })
    }

    /// Starts (`Some`) or ends (`None`) the outage.
    pub fn set(&self, f: Option<Failure>) {
        *self.failing.lock().unwrap() = f.map(|f| (0, f));
    }

    /// The outage starts after `ok` more requests have succeeded: a failure between two writes
    /// of one event.
    pub fn set_after(&self, ok: usize, f: Failure) {
        *self.failing.lock().unwrap() = Some((ok, f));
    }

    fn check(&self) -> Result<(), StoreError> {
        match &mut *self.failing.lock().unwrap() {
            Some((0, f)) => Err(f.error()),
            Some((ok, _)) => {
                *ok -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Store for Outage {
    async fn get(&self, t: Table, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        self.check()?;
        self.inner.get(t, pk, sk).await
    }
    async fn get_many(
        &self,
        t: Table,
        keys: &[(&str, &str)],
    ) -> Result<Vec<Option<Item>>, StoreError> {
        self.check()?;
        self.inner.get_many(t, keys).await
    }
    async fn query(&self, t: Table, pk: &str, prefix: &str) -> Result<Vec<Item>, StoreError> {
        self.check()?;
        self.inner.query(t, pk, prefix).await
    }
    async fn scan(&self, t: Table) -> Result<Vec<Item>, StoreError> {
        self.check()?;
        self.inner.scan(t).await
    }
    async fn write(&self, w: Write) -> Result<Option<Item>, StoreError> {
        self.check()?;
        self.inner.write(w).await
    }
    async fn transact(&self, ws: Vec<Write>) -> Result<(), StoreError> {
        self.check()?;
        self.inner.transact(ws).await
    }
}

/// The real spool, recording every message it kept; [`RecordingSpool::fail`] makes sends fail.
#[derive(Debug)]
pub struct RecordingSpool {
    pub inner: Arc<dyn Spool>,
    kept: Mutex<Vec<String>>,
    failing: AtomicBool,
}

impl RecordingSpool {
    pub fn new(inner: Arc<dyn Spool>) -> Arc<RecordingSpool> {
        Arc::new(RecordingSpool {
            inner,
            kept: Mutex::new(vec![]),
            failing: AtomicBool::new(false),
        })
    }

    pub fn kept(&self) -> Vec<String> {
        self.kept.lock().unwrap().clone()
    }

    pub fn fail(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }
}

#[async_trait]
impl Spool for RecordingSpool {
    async fn send(&self, body: &str) -> Result<(), SpoolError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(SpoolError("SendMessage: unreachable".into()));
        }
        self.inner.send(body).await?;
        self.kept.lock().unwrap().push(body.to_owned());
        Ok(())
    }
    async fn receive(&self, max: usize) -> Result<Vec<Received>, SpoolError> {
        self.inner.receive(max).await
    }
    async fn delete(&self, handle: &str) -> Result<(), SpoolError> {
        self.inner.delete(handle).await
    }
    async fn retry_after(&self, handle: &str, secs: u32) -> Result<(), SpoolError> {
        self.inner.retry_after(handle, secs).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}
