//! The messages a recipient may still be told about, one item per message:
//! `pk = wait#<recipient>`, `sk = <conversation>#<msg_time>#<outbox id>`, where the
//! conversation is `c2c:<sender>` or `group:<group id>`. Written in the same transaction that
//! queues the message's notification, so a read report finds every message of a conversation
//! with one query (by the sort-key prefix) and a recall finds its own message's.
//!
//! When the dispatcher holds a message (debounce window, quiet hours) or leaves it waiting for a
//! credit, it counts the message in the recipient's `pending` ([`crate::records::notify_window`])
//! and records here how: the window it was counted in (`last_sent_at` then), when, and the
//! follow-up it waits for. That is what lets a read report or a recall take the message out of
//! the count again, and only while it is still in it (see [`crate::flows::withdraw`]).
//! The record is removed when the message is told or withdrawn; one that outlives its message
//! (a held message told by a follow-up) expires with the outbox retention and, read again,
//! changes nothing because its window has moved on.

use crate::records::keys;
use crate::records::notice::Notice;
use crate::store::{Item, Store, StoreError, TTL_ATTR, Table, Update, Write};

const ID: &str = "id";
const SENDER: &str = "sender";
const PREVIEW: &str = "preview";
const MSG_TIME: &str = "msg_time";
const COUNTED_AT: &str = "counted_at";
const COUNTED_WINDOW: &str = "counted_window";
const FOLLOWUP_AT: &str = "followup_at";

/// One waiting message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub recipient: String,
    pub sk: String,
    pub id: String,
    pub sender: String,
    pub preview: String,
    pub msg_time: i64,
    /// Counted in `pending`: when, and the window's `last_sent_at` then (0: none).
    pub counted: Option<(i64, i64)>,
    /// The follow-up the message waits for (a hold's end).
    pub followup_at: Option<i64>,
    /// The group the message was sent in (an @-mention).
    pub group: Option<String>,
}

impl Waiting {
    fn from_item(recipient: &str, i: &Item) -> Option<Waiting> {
        let (conversation, msg_time, id) = split(&i.sk)?;
        Some(Waiting {
            recipient: recipient.to_owned(),
            sk: i.sk.clone(),
            id: id.to_owned(),
            sender: i.s(SENDER).unwrap_or("").to_owned(),
            preview: i.s(PREVIEW).unwrap_or("").to_owned(),
            msg_time,
            counted: i
                .n(COUNTED_AT)
                .map(|at| (at, i.n(COUNTED_WINDOW).unwrap_or(0))),
            followup_at: i.n(FOLLOWUP_AT),
            group: conversation.strip_prefix("group:").map(str::to_owned),
        })
    }

    /// The removal of this record.
    pub fn remove(&self) -> Write {
        Write::delete(Table::State, &keys::waiting(&self.recipient), &self.sk)
    }
}

/// The conversation a notice belongs to, as the sort key spells it.
pub fn conversation_of(n: &Notice) -> String {
    match &n.group {
        Some(g) => format!("group:{g}"),
        None => format!("c2c:{}", n.sender),
    }
}

/// The one-to-one conversation with `peer`.
pub fn c2c(peer: &str) -> String {
    format!("c2c:{peer}")
}

/// `(conversation, msg_time, id)`: ids and times have no `#`, a conversation may.
fn split(sk: &str) -> Option<(&str, i64, &str)> {
    let mut parts = sk.rsplitn(3, '#');
    let id = parts.next()?;
    let t = parts.next()?.parse().ok()?;
    Some((parts.next()?, t, id))
}

fn sort_key(n: &Notice, id: &str) -> String {
    format!("{}#{:012}#{id}", conversation_of(n), n.msg_time.max(0))
}

fn base(n: &Notice, id: &str, retention_secs: i64, now: i64) -> Vec<Update> {
    vec![
        Update::set(ID, id),
        Update::set(SENDER, n.sender.as_str()),
        Update::set(PREVIEW, n.preview.as_str()),
        Update::set(MSG_TIME, n.msg_time),
        Update::set(TTL_ATTR, now.saturating_add(retention_secs)),
    ]
}

/// The record of a message whose notification `id` is being queued.
pub fn queued(n: &Notice, id: &str, retention_secs: i64, now: i64) -> Write {
    Write::update(
        Table::State,
        &keys::waiting(&n.recipient),
        &sort_key(n, id),
        base(n, id, retention_secs, now),
    )
}

/// The message is counted in `pending`, in the window whose `last_sent_at` is `window`, and
/// waits for the follow-up at `followup_at` (none: it waits for the next notification). An
/// upsert, so a message queued before these records existed gets one too.
pub fn counted(
    n: &Notice,
    id: &str,
    window: Option<i64>,
    followup_at: Option<i64>,
    retention_secs: i64,
    now: i64,
) -> Write {
    let mut u = base(n, id, retention_secs, now);
    u.push(Update::set(COUNTED_AT, now));
    u.push(Update::set(COUNTED_WINDOW, window.unwrap_or(0)));
    u.push(match followup_at {
        Some(t) => Update::set(FOLLOWUP_AT, t),
        None => Update::remove(FOLLOWUP_AT),
    });
    Write::update(
        Table::State,
        &keys::waiting(&n.recipient),
        &sort_key(n, id),
        u,
    )
}

/// The message was told (sent, or merged into a sent notification): nothing waits any more.
pub fn told(n: &Notice, id: &str) -> Write {
    Write::delete(Table::State, &keys::waiting(&n.recipient), &sort_key(n, id))
}

/// Every waiting message of `recipient` in `conversation`, oldest first.
pub async fn in_conversation(
    store: &dyn Store,
    recipient: &str,
    conversation: &str,
) -> Result<Vec<Waiting>, StoreError> {
    let items = store
        .query(
            Table::State,
            &keys::waiting(recipient),
            &format!("{conversation}#"),
        )
        .await?;
    Ok(items
        .iter()
        .filter_map(|i| Waiting::from_item(recipient, i))
        // The prefix of `c2c:a` also matches `c2c:a#b`: keep only this conversation.
        .filter(|w| split(&w.sk).is_some_and(|(c, _, _)| c == conversation))
        .collect())
}

/// Every waiting message of `recipient`, in sort-key order.
pub async fn all(store: &dyn Store, recipient: &str) -> Result<Vec<Waiting>, StoreError> {
    let items = store
        .query(Table::State, &keys::waiting(recipient), "")
        .await?;
    Ok(items
        .iter()
        .filter_map(|i| Waiting::from_item(recipient, i))
        .collect())
}

/// The record of notification `id` to `recipient`, when there is one.
pub async fn of_item(
    store: &dyn Store,
    n: &Notice,
    id: &str,
) -> Result<Option<Waiting>, StoreError> {
    Ok(store
        .get(Table::State, &keys::waiting(&n.recipient), &sort_key(n, id))
        .await?
        .and_then(|i| Waiting::from_item(&n.recipient, &i)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_keys_split_from_the_right() {
        assert_eq!(
            split("group:@TGS#2J4SZEAEL#001700000000#ab12"),
            Some(("group:@TGS#2J4SZEAEL", 1_700_000_000, "ab12"))
        );
        assert_eq!(split("c2c:a#b#000000000005#id"), Some(("c2c:a#b", 5, "id")));
        assert_eq!(split("nothing"), None);
    }
}
