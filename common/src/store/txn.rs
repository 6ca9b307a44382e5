//! A transaction whose conditional writes carry names, so that a failed condition is known by
//! what it guarded (a dedupe marker, a used login code) rather than by its position in the list.

use super::{Store, StoreError, Write};

/// Writes for one `Store::transact`, some of them named.
#[derive(Debug, Clone)]
pub struct Txn<N> {
    writes: Vec<Write>,
    names: Vec<Option<N>>,
}

/// Why a transaction did not commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnError<N> {
    /// A condition failed: on the write with this name, or on an unnamed one.
    Condition(Option<N>),
    Store(StoreError),
}

impl<N> TxnError<N> {
    /// The store's own error for a failure no caller interprets (an unnamed condition reads as
    /// a concurrent change, which a retry resolves).
    pub fn into_store_error(self) -> StoreError {
        match self {
            TxnError::Store(e) => e,
            TxnError::Condition(_) => {
                StoreError::Unavailable("a concurrent write changed a record; try again".into())
            }
        }
    }
}

impl<N: Copy> Default for Txn<N> {
    fn default() -> Self {
        Txn {
            writes: vec![],
            names: vec![],
        }
    }
}

impl<N: Copy> Txn<N> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, w: Write) {
        self.writes.push(w);
        self.names.push(None);
    }

    pub fn extend(&mut self, ws: impl IntoIterator<Item = Write>) {
        for w in ws {
            self.push(w);
        }
    }

    /// A write whose failed condition the caller wants to recognise.
    pub fn named(&mut self, name: N, w: Write) {
        self.writes.push(w);
        self.names.push(Some(name));
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.writes.len()
    }

    pub async fn commit(self, store: &dyn Store) -> Result<(), TxnError<N>> {
        let names = self.names;
        match store.transact(self.writes).await {
            Ok(()) => Ok(()),
            Err(StoreError::ConditionFailed { index }) => {
                Err(TxnError::Condition(names.get(index).copied().flatten()))
            }
            Err(e) => Err(TxnError::Store(e)),
        }
    }
}
