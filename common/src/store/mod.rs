//! The persistence boundary: a deliberately small subset of DynamoDB's data model (string keys,
//! string/number/bool attributes, conditional writes, transactions) that both the DynamoDB
//! implementation and the embedded SQLite one implement with the same semantics, checked by one
//! conformance suite.
//!
//! Expiry follows DynamoDB's TTL: an item whose `expires_at` (seconds) is in the past still exists
//! physically until it is purged, but reads never return it and [`Cond::NotExists`] treats it as
//! absent, so a dedupe marker stops deduplicating the moment it expires, whatever the purge lag.

mod dynamo;
#[cfg(feature = "embedded")]
mod embedded;
pub mod spool;
mod txn;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;

pub use dynamo::{DynamoStore, sdk_http_client};
#[cfg(feature = "embedded")]
pub use embedded::EmbeddedStore;
pub use spool::{Spool, SpoolError};
pub use txn::{Txn, TxnError};

/// Attribute read by DynamoDB's TTL and by every read path here.
pub const TTL_ATTR: &str = "expires_at";

/// The two tables: `State` holds everything keyed by user/app; `Outbox` holds work items and has
/// a DynamoDB Stream that invokes the dispatch function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    State,
    Outbox,
}

impl Table {
    pub const ALL: [Table; 2] = [Table::State, Table::Outbox];

    pub fn name(self) -> &'static str {
        match self {
            Table::State => "state",
            Table::Outbox => "outbox",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    S(String),
    N(i64),
    Bool(bool),
}

impl From<&str> for Attr {
    fn from(v: &str) -> Self {
        Attr::S(v.to_owned())
    }
}
impl From<String> for Attr {
    fn from(v: String) -> Self {
        Attr::S(v)
    }
}
impl From<&String> for Attr {
    fn from(v: &String) -> Self {
        Attr::S(v.clone())
    }
}
impl From<i64> for Attr {
    fn from(v: i64) -> Self {
        Attr::N(v)
    }
}
impl From<bool> for Attr {
    fn from(v: bool) -> Self {
        Attr::Bool(v)
    }
}

impl Attr {
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Attr::S(s) => serde_json::Value::String(s.clone()),
            Attr::N(n) => serde_json::Value::from(*n),
            Attr::Bool(b) => serde_json::Value::Bool(*b),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub pk: String,
    pub sk: String,
    pub attrs: BTreeMap<String, Attr>,
}

impl Item {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Item {
            pk: pk.into(),
            sk: sk.into(),
            attrs: BTreeMap::new(),
        }
    }

    pub fn with(mut self, name: &str, value: impl Into<Attr>) -> Self {
        self.attrs.insert(name.to_owned(), value.into());
        self
    }

    pub fn with_opt<V: Into<Attr>>(self, name: &str, value: Option<V>) -> Self {
        match value {
            Some(v) => self.with(name, v),
            None => self,
        }
    }

    pub fn s(&self, name: &str) -> Option<&str> {
        match self.attrs.get(name) {
            Some(Attr::S(s)) => Some(s),
            _ => None,
        }
    }

    pub fn n(&self, name: &str) -> Option<i64> {
        match self.attrs.get(name) {
            Some(Attr::N(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.attrs.get(name) {
            Some(Attr::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    pub fn expires_at(&self) -> Option<i64> {
        self.n(TTL_ATTR)
    }

    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at().is_some_and(|t| t < now)
    }

    /// One flat JSON object (`pk`, `sk`, then the attributes), as `wxim state dump` prints it.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        map.insert("pk".into(), self.pk.clone().into());
        map.insert("sk".into(), self.sk.clone().into());
        for (k, v) in &self.attrs {
            map.insert(k.clone(), v.to_json());
        }
        serde_json::Value::Object(map)
    }
}

/// Conditions, evaluated against the item as stored before the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    /// No live item under the key (absent, or present but expired).
    NotExists,
    /// A live item exists under the key.
    Exists,
    /// The attribute is present.
    Has(String),
    /// The attribute is absent.
    Lacks(String),
    Eq(String, Attr),
    Ne(String, Attr),
    /// Number comparisons; false when the attribute is absent or not a number.
    Lt(String, i64),
    Le(String, i64),
    Gt(String, i64),
    Ge(String, i64),
    And(Vec<Cond>),
    Or(Vec<Cond>),
}

impl Cond {
    pub fn eq(name: &str, v: impl Into<Attr>) -> Cond {
        Cond::Eq(name.to_owned(), v.into())
    }
    pub fn ne(name: &str, v: impl Into<Attr>) -> Cond {
        Cond::Ne(name.to_owned(), v.into())
    }
    pub fn lacks(name: &str) -> Cond {
        Cond::Lacks(name.to_owned())
    }
    pub fn has(name: &str) -> Cond {
        Cond::Has(name.to_owned())
    }
    pub fn lt(name: &str, v: i64) -> Cond {
        Cond::Lt(name.to_owned(), v)
    }
    pub fn le(name: &str, v: i64) -> Cond {
        Cond::Le(name.to_owned(), v)
    }
    pub fn gt(name: &str, v: i64) -> Cond {
        Cond::Gt(name.to_owned(), v)
    }
    pub fn ge(name: &str, v: i64) -> Cond {
        Cond::Ge(name.to_owned(), v)
    }

    /// Evaluates against a stored item (`None` when absent), the reference semantics that the
    /// DynamoDB expression translation must match.
    pub fn eval(&self, item: Option<&Item>, now: i64) -> bool {
        let live = item.filter(|i| !i.is_expired(now));
        match self {
            Cond::NotExists => live.is_none(),
            Cond::Exists => live.is_some(),
            Cond::Has(n) => item.is_some_and(|i| i.attrs.contains_key(n)),
            Cond::Lacks(n) => !item.is_some_and(|i| i.attrs.contains_key(n)),
            Cond::Eq(n, v) => item.and_then(|i| i.attrs.get(n)) == Some(v),
            Cond::Ne(n, v) => item.and_then(|i| i.attrs.get(n)) != Some(v),
            Cond::Lt(n, v) => item.and_then(|i| i.n(n)).is_some_and(|x| x < *v),
            Cond::Le(n, v) => item.and_then(|i| i.n(n)).is_some_and(|x| x <= *v),
            Cond::Gt(n, v) => item.and_then(|i| i.n(n)).is_some_and(|x| x > *v),
            Cond::Ge(n, v) => item.and_then(|i| i.n(n)).is_some_and(|x| x >= *v),
            Cond::And(cs) => cs.iter().all(|c| c.eval(item, now)),
            Cond::Or(cs) => cs.iter().any(|c| c.eval(item, now)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    Set(String, Attr),
    /// Sets only when the attribute is absent (DynamoDB `if_not_exists`).
    SetIfAbsent(String, Attr),
    /// Adds to a number attribute, treating an absent one as 0.
    Add(String, i64),
    Remove(String),
}

impl Update {
    pub fn set(name: &str, v: impl Into<Attr>) -> Update {
        Update::Set(name.to_owned(), v.into())
    }
    pub fn set_if_absent(name: &str, v: impl Into<Attr>) -> Update {
        Update::SetIfAbsent(name.to_owned(), v.into())
    }
    pub fn add(name: &str, n: i64) -> Update {
        Update::Add(name.to_owned(), n)
    }
    pub fn remove(name: &str) -> Update {
        Update::Remove(name.to_owned())
    }

    /// Applies to an item in place: the reference semantics for the embedded store.
    pub fn apply(&self, item: &mut Item) -> Result<(), StoreError> {
        match self {
            Update::Set(n, v) => {
                item.attrs.insert(n.clone(), v.clone());
            }
            Update::SetIfAbsent(n, v) => {
                item.attrs.entry(n.clone()).or_insert_with(|| v.clone());
            }
            Update::Add(n, d) => {
                let cur = match item.attrs.get(n) {
                    None => 0,
                    Some(Attr::N(x)) => *x,
                    Some(_) => {
                        return Err(StoreError::Invalid(format!(
                            "ADD on non-number attribute {n}"
                        )));
                    }
                };
                item.attrs.insert(n.clone(), Attr::N(cur + d));
            }
            Update::Remove(n) => {
                item.attrs.remove(n);
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put {
        table: Table,
        item: Item,
        cond: Option<Cond>,
    },
    Update {
        table: Table,
        pk: String,
        sk: String,
        updates: Vec<Update>,
        cond: Option<Cond>,
    },
    Delete {
        table: Table,
        pk: String,
        sk: String,
        cond: Option<Cond>,
    },
    /// Only meaningful inside a transaction: a condition on another item.
    Check {
        table: Table,
        pk: String,
        sk: String,
        cond: Cond,
    },
}

impl Write {
    pub fn put(table: Table, item: Item) -> Write {
        Write::Put {
            table,
            item,
            cond: None,
        }
    }
    pub fn update(table: Table, pk: &str, sk: &str, updates: Vec<Update>) -> Write {
        Write::Update {
            table,
            pk: pk.to_owned(),
            sk: sk.to_owned(),
            updates,
            cond: None,
        }
    }
    pub fn delete(table: Table, pk: &str, sk: &str) -> Write {
        Write::Delete {
            table,
            pk: pk.to_owned(),
            sk: sk.to_owned(),
            cond: None,
        }
    }
    pub fn check(table: Table, pk: &str, sk: &str, cond: Cond) -> Write {
        Write::Check {
            table,
            pk: pk.to_owned(),
            sk: sk.to_owned(),
            cond,
        }
    }

    /// Adds a condition (combined with AND when one is already there).
    pub fn when(mut self, c: Cond) -> Write {
        let slot = match &mut self {
            Write::Put { cond, .. } | Write::Update { cond, .. } | Write::Delete { cond, .. } => {
                cond
            }
            Write::Check { cond, .. } => {
                let prev = std::mem::replace(cond, Cond::Exists);
                *cond = Cond::And(vec![prev, c]);
                return self;
            }
        };
        *slot = Some(match slot.take() {
            None => c,
            Some(prev) => Cond::And(vec![prev, c]),
        });
        self
    }

    pub fn key(&self) -> (Table, &str, &str) {
        match self {
            Write::Put { table, item, .. } => (*table, &item.pk, &item.sk),
            Write::Update { table, pk, sk, .. }
            | Write::Delete { table, pk, sk, .. }
            | Write::Check { table, pk, sk, .. } => (*table, pk, sk),
        }
    }

    pub fn cond(&self) -> Option<&Cond> {
        match self {
            Write::Put { cond, .. } | Write::Update { cond, .. } | Write::Delete { cond, .. } => {
                cond.as_ref()
            }
            Write::Check { cond, .. } => Some(cond),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A condition did not hold; `index` is the position of the failing write in a transaction
    /// (0 for a single write).
    #[error("condition failed on write {index}")]
    ConditionFailed { index: usize },
    /// Throttling, conflicts, network: the caller should fail so that the sender retries.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A request the store refuses (a bug on our side, never retried).
    #[error("store rejected the request: {0}")]
    Invalid(String),
    /// A stored record that cannot be read as what it should be (its key and what is wrong).
    #[error("unreadable record: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn is_condition_failed(&self) -> bool {
        matches!(self, StoreError::ConditionFailed { .. })
    }
}

/// What every backend provides; see the module docs for the shared semantics.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// The live item under the key (expired items read as absent).
    async fn get(&self, table: Table, pk: &str, sk: &str) -> Result<Option<Item>, StoreError>;
    /// The live items under several independent keys (`None` where absent or expired), in the
    /// order asked: one request where the backend has one (DynamoDB's `BatchGetItem`, strongly
    /// consistent, for the same read units as separate reads), so that a flow reading two
    /// unrelated records waits for one round trip, not two. At most [`MAX_BATCH_GET`] keys,
    /// none twice. Backends without such a request read the keys one by one.
    async fn get_many(
        &self,
        table: Table,
        keys: &[(&str, &str)],
    ) -> Result<Vec<Option<Item>>, StoreError> {
        validate_batch_get(keys)?;
        let mut out = Vec::with_capacity(keys.len());
        for (pk, sk) in keys {
            out.push(self.get(table, pk, sk).await?);
        }
        Ok(out)
    }
    /// Live items under `pk` whose sort key starts with `sk_prefix`, in sort-key order.
    async fn query(&self, table: Table, pk: &str, sk_prefix: &str)
    -> Result<Vec<Item>, StoreError>;
    /// Every live item of a table (for state dumps and the local stream emulation).
    async fn scan(&self, table: Table) -> Result<Vec<Item>, StoreError>;
    /// One write; an update returns the item as it is after the write.
    async fn write(&self, w: Write) -> Result<Option<Item>, StoreError>;
    /// All writes or none; at most one write per item, at most 100 writes.
    async fn transact(&self, ws: Vec<Write>) -> Result<(), StoreError>;
    /// Whether the backend's client exists yet: a store that connects somewhere creates its
    /// client at its first call, not when it is constructed. Backends with no client say no.
    fn client_created(&self) -> bool {
        false
    }
}

/// Checks the transaction rules DynamoDB enforces, so the embedded store refuses what production
/// would refuse.
pub(crate) fn validate_transaction(ws: &[Write]) -> Result<(), StoreError> {
    if ws.is_empty() || ws.len() > 100 {
        return Err(StoreError::Invalid(format!(
            "a transaction holds 1 to 100 writes, not {}",
            ws.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for w in ws {
        if !seen.insert(w.key()) {
            return Err(StoreError::Invalid(
                "a transaction cannot touch the same item twice".into(),
            ));
        }
    }
    Ok(())
}

/// DynamoDB's limit on the keys of one `BatchGetItem`.
pub const MAX_BATCH_GET: usize = 100;

/// The rules of [`Store::get_many`], which DynamoDB enforces (a repeated key is its
/// `ValidationException`), checked alike on every backend.
pub fn validate_batch_get(keys: &[(&str, &str)]) -> Result<(), StoreError> {
    if keys.len() > MAX_BATCH_GET {
        return Err(StoreError::Invalid(format!(
            "a batch read holds at most {MAX_BATCH_GET} keys, not {}",
            keys.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for &(pk, sk) in keys {
        validate_key(pk, sk)?;
        if !seen.insert((pk, sk)) {
            return Err(StoreError::Invalid(
                "a batch read cannot ask for the same item twice".into(),
            ));
        }
    }
    Ok(())
}

pub(crate) fn validate_key(pk: &str, sk: &str) -> Result<(), StoreError> {
    if pk.is_empty() || sk.is_empty() {
        return Err(StoreError::Invalid(
            "key attributes must not be empty".into(),
        ));
    }
    // DynamoDB's limits on key attribute sizes.
    if pk.len() > 2048 || sk.len() > 1024 {
        return Err(StoreError::Invalid(
            "key attributes too large (partition key at most 2048 bytes, sort key 1024)".into(),
        ));
    }
    Ok(())
}
