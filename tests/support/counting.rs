//! A store that counts what it is asked, in DynamoDB's billing terms, so tests can state the
//! round trips and capacity units each kind of event costs (README, "Scale").

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use common::store::{Item, Store, StoreError, Table, Write};

/// Requests and capacity units since the last [`CountingStore::take`]. Every item here is
/// under 1 KB: a strongly consistent read costs 1 RCU, a write 1 WCU, and a transaction doubles
/// both (DynamoDB's transactional pricing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Round trips to the store.
    pub requests: u32,
    pub reads: u32,
    pub writes: u32,
    pub rcu: u32,
    pub wcu: u32,
}

#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn Store>,
    counts: Mutex<Counts>,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn Store>) -> Arc<CountingStore> {
        Arc::new(CountingStore {
            inner,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// The counts so far, starting again from zero.
    pub fn take(&self) -> Counts {
        std::mem::take(&mut *self.counts.lock().unwrap())
    }

    fn add(&self, f: impl FnOnce(&mut Counts)) {
        let mut c = self.counts.lock().unwrap();
        c.requests += 1;
        f(&mut c);
    }
}

#[async_trait]
impl Store for CountingStore {
    fn client_created(&self) -> bool {
        self.inner.client_created()
    }

    async fn get(&self, table: Table, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        self.add(|c| {
            c.reads += 1;
            c.rcu += 1;
        });
        self.inner.get(table, pk, sk).await
    }

    async fn get_many(
        &self,
        table: Table,
        keys: &[(&str, &str)],
    ) -> Result<Vec<Option<Item>>, StoreError> {
        // One BatchGetItem; strongly consistent, one unit per small item as separate reads.
        let n = keys.len() as u32;
        self.add(|c| {
            c.reads += n;
            c.rcu += n;
        });
        self.inner.get_many(table, keys).await
    }

    async fn query(
        &self,
        table: Table,
        pk: &str,
        sk_prefix: &str,
    ) -> Result<Vec<Item>, StoreError> {
        let items = self.inner.query(table, pk, sk_prefix).await?;
        let n = items.len().max(1) as u32;
        self.add(|c| {
            c.reads += n;
            // A query reads 4 KB per RCU: these small items fit several per unit.
            c.rcu += n.div_ceil(4);
        });
        Ok(items)
    }

    async fn scan(&self, table: Table) -> Result<Vec<Item>, StoreError> {
        self.inner.scan(table).await
    }

    async fn write(&self, w: Write) -> Result<Option<Item>, StoreError> {
        self.add(|c| {
            c.writes += 1;
            c.wcu += 1;
        });
        self.inner.write(w).await
    }

    async fn transact(&self, ws: Vec<Write>) -> Result<(), StoreError> {
        let n = ws.len() as u32;
        self.add(|c| {
            c.writes += n;
            c.wcu += 2 * n;
        });
        self.inner.transact(ws).await
    }
}
