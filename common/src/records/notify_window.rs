//! The notification merge state of one recipient, `notify#<user>`:
//!
//! - `pending`: messages the user has not been told about (held back, or not notified for lack
//!   of a credit); the next notification's `{count}` includes them.
//! - `last_sent_at`: when the current debounce window began.
//! - `reserved_by`, `reserved_pending`, `prev_sent_at`: the latest reservation of the window
//!   (see [`crate::flows::deliver`] for why the window is reserved before sending).
//! - `reset_at`: when an applied Login last cleared the count (a withdrawal checks it, see
//!   [`uncount`]).

use crate::records::keys;
use crate::store::{Cond, Item, Store, StoreError, Table, Update, Write};

const PENDING: &str = "pending";
const LAST_SENT_AT: &str = "last_sent_at";
const RESERVED_BY: &str = "reserved_by";
const RESERVED_PENDING: &str = "reserved_pending";
const PREV_SENT_AT: &str = "prev_sent_at";
const LAST_OUTBOX: &str = "last_outbox";
const UPDATED_AT: &str = "updated_at";
const RESET_AT: &str = "reset_at";

/// The state as read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    /// Messages waiting (never negative: counts from before they were clamped read as zero).
    pub pending: i64,
    pub last_sent_at: Option<i64>,
}

impl Window {
    fn from_item(i: &Item) -> Window {
        Window {
            pending: i.n(PENDING).unwrap_or(0).max(0),
            last_sent_at: i.n(LAST_SENT_AT),
        }
    }

    /// When the debounce window ends, if it is still open at `now`.
    pub fn end(&self, debounce_secs: i64, now: i64) -> Option<i64> {
        let end = self.last_sent_at?.saturating_add(debounce_secs);
        (end > now).then_some(end)
    }
}

pub async fn get(store: &dyn Store, user: &str) -> Result<Window, StoreError> {
    Ok(store
        .get(Table::State, &keys::notify_state(user), keys::ONE)
        .await?
        .as_ref()
        .map(Window::from_item)
        .unwrap_or_default())
}

fn update(user: &str, updates: Vec<Update>) -> Write {
    Write::update(Table::State, &keys::notify_state(user), keys::ONE, updates)
}

/// What an ending does to the count of messages waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// Count these (held, or not notified for lack of a credit).
    Add(i64),
    /// The user has seen everything (online), or the messages are given up.
    Reset,
    Keep,
}

pub fn count(user: &str, pending: Pending, now: i64) -> Write {
    let mut u = vec![Update::set(UPDATED_AT, now)];
    match pending {
        Pending::Add(n) => u.push(Update::add(PENDING, n)),
        Pending::Reset => u.push(Update::set(PENDING, 0)),
        Pending::Keep => {}
    }
    update(user, u)
}

/// An applied Login: the user has seen what was waiting, and their next offline period starts
/// with a fresh debounce window (a notification right away, not one held back by the last).
/// Removing the reservation markers keeps an in-flight sender from restoring the old count.
pub fn login_reset(user: &str, now: i64) -> Write {
    update(
        user,
        vec![
            Update::set(PENDING, 0),
            Update::remove(LAST_SENT_AT),
            Update::remove(RESERVED_BY),
            Update::remove(RESERVED_PENDING),
            Update::remove(PREV_SENT_AT),
            Update::set(RESET_AT, now),
            Update::set(UPDATED_AT, now),
        ],
    )
}

/// Takes one withdrawn message (read elsewhere, recalled) out of the count, only while it is
/// still in it: it was counted at `counted_at` while the window's `last_sent_at` was `window`
/// (0: none). A notification since then moved the window (and told the count), and a Login
/// since then cleared it; either way the message is no longer counted, and the decrement would
/// take away a newer one.
pub fn uncount(user: &str, window: i64, counted_at: i64, now: i64) -> Write {
    let same_window = if window == 0 {
        Cond::lacks(LAST_SENT_AT)
    } else {
        Cond::eq(LAST_SENT_AT, window)
    };
    let no_reset_since = Cond::Or(vec![Cond::lacks(RESET_AT), Cond::lt(RESET_AT, counted_at)]);
    update(
        user,
        vec![Update::add(PENDING, -1), Update::set(UPDATED_AT, now)],
    )
    .when(Cond::And(vec![
        Cond::ge(PENDING, 1),
        same_window,
        no_reset_since,
    ]))
}

/// A window taken by one dispatcher, and what is needed to give it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub token: String,
    pub prev_sent_at: Option<i64>,
    /// The count moved out of `pending` into this notification.
    pub pending: i64,
}

/// Takes the window for one send: succeeds only while the window is free and `pending` is still
/// what `read` says, and moves `pending` into the reservation in the same write.
pub fn reserve(user: &str, read: &Window, now: i64, debounce_secs: i64) -> (Reservation, Write) {
    let r = Reservation {
        token: keys::random_id(),
        prev_sent_at: read.last_sent_at,
        pending: read.pending,
    };
    let window_free = Cond::Or(vec![
        Cond::lacks(LAST_SENT_AT),
        Cond::le(LAST_SENT_AT, now.saturating_sub(debounce_secs)),
    ]);
    let pending_unchanged = if read.pending == 0 {
        Cond::Or(vec![Cond::lacks(PENDING), Cond::le(PENDING, 0)])
    } else {
        Cond::eq(PENDING, read.pending)
    };
    let mut u = vec![
        Update::set(LAST_SENT_AT, now),
        Update::set(PENDING, 0),
        Update::set(RESERVED_BY, r.token.as_str()),
        Update::set(RESERVED_PENDING, r.pending),
        Update::set(UPDATED_AT, now),
    ];
    u.push(match r.prev_sent_at {
        Some(p) => Update::set(PREV_SENT_AT, p),
        None => Update::remove(PREV_SENT_AT),
    });
    let w = update(user, u).when(Cond::And(vec![window_free, pending_unchanged]));
    (r, w)
}

/// Gives the window back (nothing was sent) and restores `restore` to the count, unless the
/// reservation is no longer this one (a Login reset the state, or the window was taken anew).
pub fn unreserve(user: &str, r: &Reservation, restore: i64, now: i64) -> Write {
    let mut u = vec![
        Update::remove(RESERVED_BY),
        Update::remove(RESERVED_PENDING),
        Update::remove(PREV_SENT_AT),
        Update::set(UPDATED_AT, now),
    ];
    u.push(match r.prev_sent_at {
        Some(p) => Update::set(LAST_SENT_AT, p),
        None => Update::remove(LAST_SENT_AT),
    });
    if restore != 0 {
        u.push(Update::add(PENDING, restore));
    }
    update(user, u).when(Cond::eq(RESERVED_BY, r.token.as_str()))
}

/// The record of a settled send. `last_sent_at` and `pending` stay as the reservation set them
/// (a Login meanwhile may have reset them, which must stand), and so do the reservation markers:
/// they only matter to a rollback, which checks its own token, and removing them here could
/// remove a newer dispatcher's.
pub fn settled(user: &str, primary: &str, now: i64) -> Write {
    update(
        user,
        vec![
            Update::set(LAST_OUTBOX, primary),
            Update::set(UPDATED_AT, now),
        ],
    )
}
