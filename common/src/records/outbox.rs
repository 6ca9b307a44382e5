//! The outbox: every outbound call (a notification, a customer-service message, an IM send) is
//! first an item here, written in the same transaction as the webhook's other effects. Its
//! stream invokes the dispatch function. Each item ends `sent`, `skipped` (why) or `failed` (why);
//! nothing leaves the outbox silently.
//!
//! Life of an item: `queued` → `sending` (claimed by one dispatcher; a claim older than
//! [`CLAIM_SECS`] may be taken over) → `sent` / `skipped` / `failed`, or back to `queued` with
//! `last_error` for a retry. A `queued` item with `not_before` in the future is parked (WeChat's
//! daily quota): no claim succeeds before then, and the sweep ([`crate::flows::sweep`]) re-drives it.
//! Every write that queues an item also puts a watch record for it (same transaction), so an item
//! the stream never managed to deliver is re-driven by the sweep.

use crate::records::due;
use crate::records::keys;
pub use crate::records::keys::{id_for, random_id};
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

/// What queueing needs to know: the time, how long items are kept, and when an unfinished item
/// is due for the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queueing {
    pub now: i64,
    pub retention_secs: i64,
    /// The watch record falls due this long after the item is queued.
    pub watch_after_secs: i64,
}

/// A new job and its watch record. This is the only way to queue a job, and it can only be
/// committed as both writes together, so no job is ever queued without the sweep's safety net
/// (an item the stream never delivers is re-driven when its watch falls due).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a queued job must be committed (with its watch)"]
pub struct Enqueue {
    id: String,
    item: Write,
    watch: Write,
}

impl Enqueue {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The conditional put of the item, then its watch record, for one transaction.
    pub fn writes(self) -> [Write; 2] {
        [self.item, self.watch]
    }
}

fn new_item(id: &str, kind: Kind, attrs: Vec<(&str, Attr)>, now: i64, retention_secs: i64) -> Item {
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
    item
}

/// A new job (the put is conditional, so a retried webhook queues it once), with its watch.
pub fn enqueue(id: &str, kind: Kind, attrs: Vec<(&str, Attr)>, q: Queueing) -> Enqueue {
    let item = new_item(id, kind, attrs, q.now, q.retention_secs);
    Enqueue {
        id: id.to_owned(),
        item: Write::put(Table::Outbox, item).when(Cond::NotExists),
        watch: due::due(id, q.now + q.watch_after_secs, due::WATCH, q.retention_secs),
    }
}

/// A job that ends as it is recorded: nothing was sent, and why is kept like any job's outcome
/// (the put is conditional, so a retried webhook records it once). Ended jobs need no watch.
pub fn ended(
    id: &str,
    kind: Kind,
    status: Status,
    reason: &str,
    attrs: Vec<(&str, Attr)>,
    now: i64,
    retention_secs: i64,
) -> Write {
    let mut item = new_item(id, kind, attrs, now, retention_secs);
    for (k, v) in [
        ("status", Attr::from(status.as_str())),
        ("reason", Attr::from(reason)),
        ("finished_at", Attr::from(now)),
    ] {
        item.attrs.insert(k.to_owned(), v);
    }
    Write::put(Table::Outbox, item).when(Cond::NotExists)
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
    id_from_pk(&item.pk).unwrap_or(&item.pk)
}

/// The id in an outbox partition key (`out#<id>`), if it is one.
pub fn id_from_pk(pk: &str) -> Option<&str> {
    pk.strip_prefix("out#")
}
