//! The notification merge state of one recipient, `notify#<user>`: how many messages wait
//! (`pending`), when the current debounce window began (`last_sent_at`), and the latest window
//! reservation (`reserved_by`, `reserved_pending`, `prev_sent_at`; see [`crate::flows::deliver`]).

use crate::config::NotifyConfig;
use crate::records::keys;
use crate::store::{Item, Table, Update, Write};

pub fn notify_state_update(user: &str, updates: Vec<Update>) -> Write {
    Write::update(Table::State, &keys::notify_state(user), keys::ONE, updates)
}

/// An applied Login: the user has seen what was waiting, and their next offline period starts
/// with a fresh debounce window (a notification right away, not one held back by the last).
/// Removing the reservation markers keeps an in-flight sender from restoring the old count.
pub fn login_reset(user: &str, now: i64) -> Write {
    notify_state_update(
        user,
        vec![
            Update::set("pending", 0),
            Update::remove("last_sent_at"),
            Update::remove("reserved_by"),
            Update::remove("reserved_pending"),
            Update::remove("prev_sent_at"),
            Update::set("updated_at", now),
        ],
    )
}

/// When the debounce window that `state` describes ends, if it is still open at `now`.
pub fn window_end(state: Option<&Item>, n: &NotifyConfig, now: i64) -> Option<i64> {
    let last = state?.n("last_sent_at")?;
    let end = last.saturating_add(n.debounce_secs);
    (end > now).then_some(end)
}
