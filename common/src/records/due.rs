//! Due records: deferred work in the state table, found by the sweep ([`crate::flows::sweep`]).
//!
//! A due record is `pk = due#<yyyymmddhh>#<shard>` (the UTC hour it is due in, and one of
//! [`SHARDS`] partitions chosen from the id), `sk = <mm>#<outbox id>` (the minute within the hour
//! first, so a partition reads in time order), with `due_at` (seconds), `why`, and a TTL of the
//! outbox retention. Sharding keeps the records of a busy hour off a single partition: at 10,000
//! queued items per second, 32 shards take about 310 writes/s each, well under DynamoDB's 1,000
//! per partition. The sweep reads an hour with one query per shard, so catching up a day costs
//! under a thousand queries. Records written before sharding (`pk = due#<yyyymmddhhmm>`,
//! `sk = <outbox id>`) are still read, one query per minute walked. A follow-up's sort key is
//! the id its follow-up item will get (`id_for("followup", recipient, due_at)`: every hold in one
//! window writes the same record), and it carries what the notification will say (the latest
//! held message's [`Notice`] fields).
//!
//! The sweep's progress is one more record, `sweep#cursor`: the next minute to walk and the last
//! sort key done within it.

use std::sync::Arc;

use crate::records::keys;
use crate::records::notice::Notice;
use crate::store::{Cond, Item, Store, StoreError, TTL_ATTR, Table, Update, Write};

const DUE_AT: &str = "due_at";
const WHY: &str = "why";
const NEXT_MINUTE: &str = "next_minute";
const AFTER: &str = "after";
const UPDATED_AT: &str = "updated_at";
const ABOUT: &str = "about";

/// Why an outbox item (or a follow-up) is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Every queued item: re-driven if it has not ended by then.
    Watch,
    /// Messages held by the debounce window or quiet hours: the follow-up notification.
    Followup,
    /// WeChat's daily quota (45009): the quota's reset.
    Parked,
    /// Re-driven by the sweep, not done yet: after the backoff, or when a claim can be retaken.
    Retry,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Watch => "watch",
            Why::Followup => "followup",
            Why::Parked => "parked",
            Why::Retry => "retry",
        }
    }

    fn parse(s: &str) -> Why {
        match s {
            "followup" => Why::Followup,
            "parked" => Why::Parked,
            "retry" => Why::Retry,
            // Anything else points at an outbox item to look at, as a watch does.
            _ => Why::Watch,
        }
    }
}

/// One due record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The outbox id it is about (for a follow-up, the id the follow-up item will get).
    pub id: String,
    pub due_at: i64,
    pub why: Why,
    /// What a follow-up will say.
    pub notice: Option<Notice>,
    /// The outbox id of the held message a follow-up speaks for (its preview), when known.
    pub about: Option<String>,
}

impl Due {
    fn from_item(i: &Item) -> Due {
        let why = Why::parse(i.s(WHY).unwrap_or(""));
        // `mm#<id>`, or a bare id in records written before sharding (ids have no `#`).
        let id = i.sk.split_once('#').map_or(i.sk.as_str(), |(_, id)| id);
        Due {
            id: id.to_owned(),
            due_at: i.n(DUE_AT).unwrap_or(0),
            why,
            notice: (why == Why::Followup)
                .then(|| Notice::from_item(i).ok())
                .flatten(),
            about: i.s(ABOUT).map(str::to_owned),
        }
    }

    /// The minute it is due in.
    pub fn minute(&self) -> i64 {
        minute_of(self.due_at)
    }

    /// A record that points at an outbox item, as a watch that is due now does.
    pub fn watch(id: &str) -> Due {
        Due {
            id: id.to_owned(),
            due_at: 0,
            why: Why::Watch,
            notice: None,
            about: None,
        }
    }
}

/// `yyyymmddhh` (UTC) of the hour a minute falls in.
pub fn hour_bucket(minute: i64) -> String {
    let b = bucket(minute);
    b[..b.len().saturating_sub(2)].to_owned()
}

/// `yyyymmddhhmm` (UTC) of a minute counted from the epoch.
pub fn bucket(minute: i64) -> String {
    jiff::Timestamp::from_second(minute.saturating_mul(60))
        .map(|t| t.strftime("%Y%m%d%H%M").to_string())
        .unwrap_or_else(|_| "000000000000".into())
}

pub fn minute_of(secs: i64) -> i64 {
    secs.div_euclid(60)
}

/// Partitions per hour.
pub const SHARDS: u32 = 32;

/// The shard of an id: spread evenly for hex ids (every outbox id), stable for any string.
pub fn shard_of(id: &str) -> u32 {
    // FNV-1a: cheap, stable across versions and processes.
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % SHARDS
}

/// The partition key of a record due at `at` for `id`.
pub fn partition(id: &str, at: i64) -> String {
    keys::due_shard(&hour_bucket(minute_of(at)), shard_of(id))
}

/// The sort key: the minute within the hour, then the id.
fn sort_key(id: &str, at: i64) -> String {
    format!("{:02}#{id}", minute_of(at).rem_euclid(60))
}

fn record(id: &str, at: i64, why: Why, retention_secs: i64) -> Item {
    Item::new(partition(id, at), sort_key(id, at))
        .with(DUE_AT, at)
        .with(WHY, why.as_str())
        .with(TTL_ATTR, at.saturating_add(retention_secs))
}

/// A due record for an outbox item.
pub fn due(id: &str, at: i64, why: Why, retention_secs: i64) -> Write {
    Write::put(Table::State, record(id, at, why, retention_secs))
}

pub fn followup_id(recipient: &str, at: i64) -> String {
    keys::id_for(&["followup", recipient, &at.to_string()])
}

/// The follow-up for `recipient` at `at`, speaking for `latest` (a held message, or a follow-up):
/// `about` is the outbox id of the held message, so that its recall or reading finds it.
pub fn followup(
    recipient: &str,
    at: i64,
    latest: &Notice,
    about: Option<&str>,
    retention_secs: i64,
) -> Write {
    let mut item = record(
        &followup_id(recipient, at),
        at,
        Why::Followup,
        retention_secs,
    );
    let carried = Notice {
        recipient: recipient.to_owned(),
        msg_key: None,
        presence: None,
        followup: false,
        ..latest.clone()
    };
    for (k, v) in carried.attrs() {
        if Notice::CARRIED.contains(&k) {
            item.attrs.insert(k.to_owned(), v);
        }
    }
    if let Some(a) = about {
        item.attrs.insert(ABOUT.to_owned(), a.into());
    }
    Write::put(Table::State, item)
}

/// The follow-up due for `recipient` at `at`, if it is still there.
pub async fn get_followup(
    store: &dyn Store,
    recipient: &str,
    at: i64,
) -> Result<Option<Due>, StoreError> {
    let id = followup_id(recipient, at);
    Ok(store
        .get(Table::State, &partition(&id, at), &sort_key(&id, at))
        .await?
        .map(|i| Due::from_item(&i)))
}

/// The removal of the follow-up due for `recipient` at `at` (nothing is left to speak for).
pub fn drop_followup(recipient: &str, at: i64) -> Write {
    let id = followup_id(recipient, at);
    Write::delete(Table::State, &partition(&id, at), &sort_key(&id, at))
}

/// The due records of the minutes `first..=last` (which lie in one hour), in time order: one
/// query per shard of the hour, and one per minute for records written before sharding.
pub async fn in_span(
    store: &Arc<dyn Store>,
    first: i64,
    last: i64,
) -> Result<Vec<Due>, StoreError> {
    let hour = hour_bucket(first);
    let mut pks: Vec<String> = (0..SHARDS).map(|s| keys::due_shard(&hour, s)).collect();
    pks.extend((first..=last).map(|m| keys::due(&bucket(m))));
    let mut set = tokio::task::JoinSet::new();
    for pk in pks {
        let store = store.clone();
        set.spawn(async move { store.query(Table::State, &pk, "").await });
    }
    let mut out: Vec<Due> = vec![];
    while let Some(joined) = set.join_next().await {
        let items = joined.map_err(|e| StoreError::Unavailable(format!("query task: {e}")))??;
        out.extend(
            items
                .iter()
                .map(Due::from_item)
                .filter(|d| (first..=last).contains(&d.minute())),
        );
    }
    out.sort_by(|a, b| (a.minute(), &a.id).cmp(&(b.minute(), &b.id)));
    out.dedup_by(|a, b| a.id == b.id && a.minute() == b.minute());
    Ok(out)
}

/// How far the sweep has got: the next minute to walk, and the last sort key done within it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    pub next_minute: Option<i64>,
    pub after: Option<String>,
}

pub async fn cursor(store: &dyn Store) -> Result<Cursor, StoreError> {
    let c = store
        .get(Table::State, keys::SWEEP_CURSOR, keys::ONE)
        .await?;
    Ok(Cursor {
        next_minute: c.as_ref().and_then(|c| c.n(NEXT_MINUTE)),
        after: c.as_ref().and_then(|c| c.s(AFTER)).map(str::to_owned),
    })
}

/// Moves the cursor from `from` (as read) to `to`; conditional on it still being `from`, so a
/// concurrent run that got further wins.
pub fn advance(from: &Cursor, to: &Cursor, now: i64) -> Write {
    let mut u = vec![Update::set(UPDATED_AT, now)];
    if let Some(m) = to.next_minute {
        u.push(Update::set(NEXT_MINUTE, m));
    }
    u.push(match &to.after {
        Some(a) => Update::set(AFTER, a.as_str()),
        None => Update::remove(AFTER),
    });
    let unchanged = match (from.next_minute, &from.after) {
        (None, _) => Cond::lacks(NEXT_MINUTE),
        (Some(m), None) => Cond::And(vec![Cond::eq(NEXT_MINUTE, m), Cond::lacks(AFTER)]),
        (Some(m), Some(a)) => {
            Cond::And(vec![Cond::eq(NEXT_MINUTE, m), Cond::eq(AFTER, a.as_str())])
        }
    };
    Write::update(Table::State, keys::SWEEP_CURSOR, keys::ONE, u).when(unchanged)
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

#[cfg(test)]
mod shard_tests {
    use super::*;
    use crate::records::keys::id_for;

    /// A simulated busy minute: 10,000 offline messages a second for a minute, each queued item
    /// with its watch record due in the same minute. No partition may take more than DynamoDB's
    /// 1,000 writes a second.
    #[test]
    fn a_busy_minute_spreads_across_partitions() {
        let per_second = 10_000u32;
        let mut per_shard = vec![0u32; SHARDS as usize];
        for i in 0..per_second {
            let id = id_for(&["notify", &i.to_string()]);
            per_shard[shard_of(&id) as usize] += 1;
        }
        let max = *per_shard.iter().max().unwrap();
        let min = *per_shard.iter().min().unwrap();
        let mean = per_second / SHARDS;
        assert!(max < 1_000, "hottest shard {max} writes/s");
        assert!(
            max <= mean * 12 / 10 && min >= mean * 8 / 10,
            "uneven: {min}..{max} around {mean}"
        );
        // One hour's records sit under SHARDS partitions, all of the same hour.
        let pks: std::collections::BTreeSet<String> = (0..1000)
            .map(|i| partition(&id_for(&[&i.to_string()]), 1_700_000_000))
            .collect();
        assert_eq!(pks.len(), SHARDS as usize);
        assert!(pks.iter().all(|p| p.starts_with("due#2023111422#")));
    }
}
