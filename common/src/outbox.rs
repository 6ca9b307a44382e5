//! The outbox: every outbound call (a notification, a customer-service message, an IM send) is
//! first an item here, written in the same transaction as the webhook's other effects. Its
//! stream invokes the dispatch function. Each item ends `sent`, `skipped` (why) or `failed` (why);
//! nothing leaves the outbox silently.
//!
//! Life of an item: `queued` → `sending` (claimed by one dispatcher; a claim older than
//! [`CLAIM_SECS`] may be taken over) → `sent` / `skipped` / `failed`, or back to `queued` with
//! `last_error` for a retry. A `queued` item with `not_before` in the future is parked (WeChat's
//! daily quota): no claim succeeds before then, and the sweep ([`crate::due`]) re-drives it.
//! Every write that queues an item also puts a watch record for it (same transaction), so an item
//! the stream never managed to deliver is re-driven by the sweep.

use sha1::{Digest, Sha1};

use crate::keys;
use crate::store::{Attr, Cond, Item, Store, StoreError, TTL_ATTR, Table, Update, Write};

/// A claim older than this is presumed dead (its dispatcher crashed mid-send) and may be retaken.
pub const CLAIM_SECS: i64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An IM message to an offline user, as a subscribe message (merged per recipient).
    Notify,
    /// A subscribe message requested through the admin API.
    Send,
    /// An official-account user's message, forwarded to their agent in IM.
    Forward,
    /// Import a follower into IM.
    Import,
    /// Delete (or deactivate) an unfollower's IM account.
    Delete,
    /// An agent's IM reply, delivered as a customer-service message.
    CustomerService,
    /// An IM message from the admin account to an agent.
    AgentNotice,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Notify,
        Kind::Send,
        Kind::Forward,
        Kind::Import,
        Kind::Delete,
        Kind::CustomerService,
        Kind::AgentNotice,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Notify => "notify",
            Kind::Send => "send",
            Kind::Forward => "forward",
            Kind::Import => "im_import",
            Kind::Delete => "im_delete",
            Kind::CustomerService => "kf",
            Kind::AgentNotice => "agent_notice",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What became of an item (or a merged group) after one dispatch attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Ended: sent, skipped or failed, with the reason recorded on the item.
    Done,
    /// Put back in the queue; the stream should retry after a pause.
    Retry { after_secs: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Queued,
    Sending,
    Sent,
    Skipped,
    Failed,
}

impl Status {
    /// Whether a stored status is one an item can still leave (it has not ended).
    pub fn is_open(status: &str) -> bool {
        status == Status::Queued.as_str() || status == Status::Sending.as_str()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Skipped => "skipped",
            Status::Failed => "failed",
        }
    }
}

/// A deterministic id from what makes a job unique, so that a retried webhook writes the same
/// item and the conditional put turns the retry into a no-op.
pub fn id_for(parts: &[&str]) -> String {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh random id (for admin sends, which have no natural key).
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The conditional put of a new job.
pub fn enqueue(
    id: &str,
    kind: Kind,
    attrs: Vec<(&str, Attr)>,
    now: i64,
    retention_secs: i64,
) -> Write {
    let mut item = Item::new(keys::outbox(id), keys::ONE)
        .with("id", id)
        .with("kind", kind.as_str())
        .with("status", Status::Queued.as_str())
        .with("attempts", 0i64)
        .with("created_at", now)
        .with("updated_at", now)
        .with(TTL_ATTR, now + retention_secs);
    for (k, v) in attrs {
        item.attrs.insert(k.to_owned(), v);
    }
    Write::put(Table::Outbox, item).when(Cond::NotExists)
}

/// A job that ends as it is recorded: nothing was sent, and why is kept like any job's outcome
/// (the put is conditional, so a retried webhook records it once).
pub fn ended(
    id: &str,
    kind: Kind,
    status: Status,
    reason: &str,
    attrs: Vec<(&str, Attr)>,
    now: i64,
    retention_secs: i64,
) -> Write {
    let mut w = enqueue(id, kind, attrs, now, retention_secs);
    if let Write::Put { item, .. } = &mut w {
        for (k, v) in [
            ("status", Attr::from(status.as_str())),
            ("reason", Attr::from(reason)),
            ("finished_at", Attr::from(now)),
        ] {
            item.attrs.insert(k.to_owned(), v);
        }
    }
    w
}

pub async fn get(store: &dyn Store, id: &str) -> Result<Option<Item>, StoreError> {
    store.get(Table::Outbox, &keys::outbox(id), keys::ONE).await
}

/// Takes a job for sending; `None` when it is not (or no longer) this dispatcher's to send.
pub async fn claim(store: &dyn Store, id: &str, now: i64) -> Result<Option<Item>, StoreError> {
    let w = Write::update(
        Table::Outbox,
        &keys::outbox(id),
        keys::ONE,
        vec![
            Update::set("status", Status::Sending.as_str()),
            Update::set("claimed_at", now),
            Update::set("updated_at", now),
            Update::add("attempts", 1),
        ],
    )
    .when(Cond::Or(vec![
        Cond::And(vec![
            Cond::eq("status", Status::Queued.as_str()),
            Cond::Or(vec![Cond::lacks("not_before"), Cond::le("not_before", now)]),
        ]),
        Cond::And(vec![
            Cond::eq("status", Status::Sending.as_str()),
            Cond::lt("claimed_at", now - CLAIM_SECS),
        ]),
    ]));
    match store.write(w).await {
        Ok(item) => Ok(item),
        Err(StoreError::ConditionFailed { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The final state of a claimed job, with its reason and any result attributes.
pub fn finish(
    id: &str,
    status: Status,
    reason: Option<&str>,
    extra: Vec<(&str, Attr)>,
    now: i64,
) -> Write {
    let mut u = vec![
        Update::set("status", status.as_str()),
        Update::set("updated_at", now),
        Update::set("finished_at", now),
        Update::remove("claimed_at"),
    ];
    if let Some(r) = reason {
        u.push(Update::set("reason", r));
    }
    for (k, v) in extra {
        u.push(Update::Set(k.to_owned(), v));
    }
    Write::update(Table::Outbox, &keys::outbox(id), keys::ONE, u)
        .when(Cond::eq("status", Status::Sending.as_str()))
}

/// Puts a claimed job back for another attempt, recording why this one failed.
pub fn release(id: &str, error: &str, now: i64) -> Write {
    requeue(id, error, None, now)
}

/// Puts a claimed job back, not to be claimed before `until` (WeChat's daily quota is used up).
pub fn park(id: &str, error: &str, until: i64, now: i64) -> Write {
    requeue(id, error, Some(until), now)
}

fn requeue(id: &str, error: &str, not_before: Option<i64>, now: i64) -> Write {
    Write::update(
        Table::Outbox,
        &keys::outbox(id),
        keys::ONE,
        vec![
            Update::set("status", Status::Queued.as_str()),
            Update::set("last_error", error),
            match not_before {
                Some(t) => Update::set("not_before", t),
                None => Update::remove("not_before"),
            },
            Update::set("updated_at", now),
            Update::remove("claimed_at"),
        ],
    )
    .when(Cond::eq("status", Status::Sending.as_str()))
}

/// The attempts made on a group of items (the most any of them had).
pub fn attempts(items: &[Item]) -> i64 {
    items
        .iter()
        .filter_map(|i| i.n("attempts"))
        .max()
        .unwrap_or(1)
}

/// Every job waiting that may be claimed now (parked ones wait for the sweep), oldest first:
/// what the stream would deliver next (the local runner dispatches these right after a write,
/// as the stream would).
pub async fn queued(store: &dyn Store, now: i64) -> Result<Vec<Item>, StoreError> {
    let mut items: Vec<Item> = store
        .scan(Table::Outbox)
        .await?
        .into_iter()
        .filter(|i| i.s("status") == Some(Status::Queued.as_str()))
        .filter(|i| i.n("not_before").is_none_or(|t| t <= now))
        .collect();
    items.sort_by_key(|i| (i.n("created_at").unwrap_or(0), i.pk.clone()));
    Ok(items)
}

/// The id of an outbox item from its partition key.
pub fn id_of(item: &Item) -> &str {
    item.pk.strip_prefix("out#").unwrap_or(&item.pk)
}
