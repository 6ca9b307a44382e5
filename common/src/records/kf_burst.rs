//! The agent replies to one follower that wait to be merged, `kfq#<app>#<IM account>`: one entry per
//! reply (sort key `<MsgTime>#<MsgSeq>#<outbox id>`, so a query reads them in the order the agent
//! wrote them), put in the same transaction as the reply's outbox item. Entries are never
//! updated: they expire after [`ENTRY_SECS`], and a reply already sent (merged or on its own)
//! simply cannot be claimed again, so a stale entry merges nothing.

use crate::config::AppKind;
use crate::records::keys;
use crate::store::{Item, Store, StoreError, TTL_ATTR, Table, Write};

const ID: &str = "id";
const AGENT: &str = "agent";

/// How long an entry is kept: well past any burst's wait, so that a dispatcher slowed by a
/// retry still finds the replies it should merge; a reply found later goes on its own.
pub const ENTRY_SECS: i64 = 300;

/// A reply waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its outbox item.
    pub id: String,
    pub agent: String,
    /// Its place in the conversation: IM's `MsgTime`, then `MsgSeq`.
    pub order: (i64, u64),
}

fn sort_key(msg_time: i64, msg_seq: u64, id: &str) -> String {
    format!("{msg_time:012}#{msg_seq:020}#{id}")
}

/// The entry for the reply queued as outbox item `id`.
pub fn entry(
    app: AppKind,
    im_user: &str,
    id: &str,
    agent: &str,
    msg_time: i64,
    msg_seq: u64,
    now: i64,
) -> Write {
    let item = Item::new(
        keys::kf_burst(app, im_user),
        sort_key(msg_time, msg_seq, id),
    )
    .with(ID, id)
    .with(AGENT, agent)
    .with(TTL_ATTR, now + ENTRY_SECS);
    Write::put(Table::State, item)
}

/// The follower's waiting replies, in the order they were written.
pub async fn waiting(
    store: &dyn Store,
    app: AppKind,
    im_user: &str,
) -> Result<Vec<Entry>, StoreError> {
    let items = store
        .query(Table::State, &keys::kf_burst(app, im_user), "")
        .await?;
    Ok(items
        .iter()
        .filter_map(|i| {
            let mut parts = i.sk.splitn(3, '#');
            let t = parts.next()?.parse().ok()?;
            let seq = parts.next()?.parse().ok()?;
            Some(Entry {
                id: i.s(ID)?.to_owned(),
                agent: i.s(AGENT).unwrap_or("").to_owned(),
                order: (t, seq),
            })
        })
        .collect())
}
