//! Due records: deferred work in the state table, found by the sweep ([`crate::flows::sweep`]).
//!
//! A due record is `pk = due#<yyyymmddhhmm>` (the UTC minute it is due in), `sk = <outbox id>`,
//! with `due_at` (seconds), `why`, and a TTL of the outbox retention. A follow-up's sort key is
//! the id its follow-up item will get (`id_for("followup", recipient, due_at)`: every hold in one
//! window writes the same record), and it carries what the notification will say.

use crate::records::keys;
use crate::store::{Attr, Item, TTL_ATTR, Table, Write};

pub const WATCH: &str = "watch";
pub const FOLLOWUP: &str = "followup";
pub const PARKED: &str = "parked";
pub const RETRY: &str = "retry";

/// What a follow-up due record carries over to its notification.
pub const PAYLOAD: [&str; 7] = [
    "recipient",
    "sender",
    "preview",
    "msg_time",
    "app",
    "openid",
    "template_id",
];

/// `yyyymmddhhmm` (UTC) of a minute counted from the epoch.
pub fn bucket(minute: i64) -> String {
    jiff::Timestamp::from_second(minute.saturating_mul(60))
        .map(|t| t.strftime("%Y%m%d%H%M").to_string())
        .unwrap_or_else(|_| "000000000000".into())
}

pub fn minute_of(secs: i64) -> i64 {
    secs.div_euclid(60)
}

/// A due record for an outbox item.
pub fn due(id: &str, at: i64, why: &str, retention_secs: i64) -> Write {
    Write::put(
        Table::State,
        Item::new(keys::due(&bucket(minute_of(at))), id)
            .with("due_at", at)
            .with("why", why)
            .with(TTL_ATTR, at.saturating_add(retention_secs)),
    )
}

pub fn followup_id(recipient: &str, at: i64) -> String {
    keys::id_for(&["followup", recipient, &at.to_string()])
}

/// The follow-up for `recipient` at `at`, speaking for `latest` (a held message, or a follow-up).
pub fn followup(recipient: &str, at: i64, latest: &Item, retention_secs: i64) -> Write {
    let mut item = Item::new(
        keys::due(&bucket(minute_of(at))),
        followup_id(recipient, at),
    )
    .with("due_at", at)
    .with("why", FOLLOWUP)
    .with(TTL_ATTR, at.saturating_add(retention_secs));
    for k in PAYLOAD {
        if let Some(v) = latest.attrs.get(k) {
            item.attrs.insert(k.to_owned(), v.clone());
        }
    }
    item.attrs
        .insert("recipient".to_owned(), Attr::from(recipient));
    Write::put(Table::State, item)
}

/// WeChat's daily quotas reset at midnight China Standard Time (UTC+8, no daylight saving);
/// parked work waits until five minutes past it, clear of the reset itself.
pub fn next_quota_reset(now: i64) -> i64 {
    const CST: i64 = 8 * 3600;
    let day = (now + CST).div_euclid(86_400);
    (day + 1) * 86_400 - CST + 5 * 60
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_utc_minutes() {
        // 1700000000 = 2023-11-14T22:13:20Z.
        assert_eq!(bucket(minute_of(1_700_000_000)), "202311142213");
        assert_eq!(bucket(minute_of(1_700_000_000) + 1), "202311142214");
        assert_eq!(bucket(0), "197001010000");
    }

    #[test]
    fn the_quota_resets_after_midnight_in_china() {
        // 2023-11-15 06:13:20 in Shanghai → 2023-11-16 00:05 Shanghai = 2023-11-15T16:05Z.
        assert_eq!(next_quota_reset(1_700_000_000), 1_700_064_300);
        // One second before midnight in Shanghai → five minutes and a second later.
        let before_midnight = 1_700_064_000 - 1;
        assert_eq!(next_quota_reset(before_midnight), 1_700_064_300);
    }
}
