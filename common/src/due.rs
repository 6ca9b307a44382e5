//! Deferred work: due records in the state table, and the sweep that acts on them.
//!
//! The outbox stream delivers each item once, right after it is queued. Some work cannot happen
//! then, and some is lost on the way; all of it is found again the same way:
//!
//! | what | when it is due | written by |
//! |---|---|---|
//! | watch: every queued item | `created_at + SWEEP_STALE_SECS` | the write that queues it (same transaction) |
//! | follow-up: messages held by the debounce window or quiet hours | when the hold ends | the hold (same transaction) |
//! | parked: WeChat's daily quota (45009) | the quota's reset, 00:05 China time | the park (same transaction) |
//! | retry / in flight: re-driven by the sweep, not done yet | after the backoff, or when the claim can be retaken | the sweep |
//!
//! **Keys.** A due record is `pk = due#<yyyymmddhhmm>` (the UTC minute it is due in), `sk = <outbox
//! id>`, with `due_at` (seconds), `why`, and a TTL of the outbox retention. A follow-up's sort
//! key is the id its follow-up item will get (`id_for("followup", recipient, due_at)`: every hold
//! in one window writes the same record), and it carries what the notification will say (the
//! latest held message's sender, preview and time). Time-bucketed keys let the sweep find due
//! work with one `Query` per minute and no index or scan; the price is that all records due in
//! one minute share a partition (DynamoDB's 1,000 writes/s per partition bound the watched
//! queue rate).
//!
//! **The sweep** (the notify-dispatch function on an EventBridge schedule, `rate(1 minute)` by
//! default; `wxim serve` every `SWEEP_INTERVAL_SECS`; `wxim sweep` once) walks the minutes from a
//! cursor (`sweep#cursor`: the next minute, and the last sort key done within it) up to the last
//! minute that ended at least [`SETTLE_SECS`] ago, so a record computed at the end of a minute
//! and written a moment later is never passed over. For each record:
//!
//! - an outbox item is read: ended or gone, nothing to do; parked (`not_before` ahead), its own
//!   record comes later; still claimed by a live dispatcher, checked again when the claim can be
//!   retaken; otherwise (queued but lost by the stream, or claimed by a dispatcher that died) it
//!   is re-driven through [`crate::dispatch::run`], the very code the stream runs, and a retry
//!   that run asks for becomes a new due record;
//! - a follow-up: when the recipient still has messages pending and no window or quiet hours
//!   hold them, the follow-up notification is queued as an outbox item (with its own watch), and
//!   the stream delivers it like any other; while a hold is still on, it moves to the hold's end.
//!
//! Everything is idempotent (claims, conditional puts), so two sweeps at once, or a sweep and the
//! stream, duplicate some work but never a send. A run starts no new work after [`BUDGET`] (what
//! it had no time to re-drive is rescheduled a minute later) or [`MAX_MINUTES_PER_RUN`], and the
//! next one continues from the cursor; a first run ever looks back [`FIRST_LOOKBACK_MINUTES`]. A
//! store failure stops a run where it is: nothing is marked done that was not.
//!
//! The webhooks' round trips do not change: each record rides in a request the webhook already
//! makes (an IM callback's single put becomes a two-item transaction).
//!
//! Configuration: `SWEEP_STALE_SECS` (default 600) is the watch delay; the schedule is the
//! template's `SweepSchedule` parameter; `SWEEP_INTERVAL_SECS` (default 60, 0 = off) paces
//! `wxim serve`. Items no due record points at (queued before watch records existed) are
//! found by [`rescan`] (`wxim sweep --scan-outbox`), an operator's one-off that reads the whole
//! outbox.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tracing::{info, warn};

use crate::app::App;
use crate::dispatch;
use crate::keys;
use crate::notify::deliver;
use crate::obs;
use crate::outbox::{self, CLAIM_SECS, Delivery, Kind, Status};
use crate::store::{Attr, Cond, Item, StoreError, TTL_ATTR, Table, Update, Write};

pub const WATCH: &str = "watch";
pub const FOLLOWUP: &str = "followup";
pub const PARKED: &str = "parked";
pub const RETRY: &str = "retry";

/// A minute is swept once it has been over this long.
pub const SETTLE_SECS: i64 = 30;
/// Where the very first sweep starts.
pub const FIRST_LOOKBACK_MINUTES: i64 = 60;
/// A run walks at most a day of minutes; a longer backlog takes several runs.
pub const MAX_MINUTES_PER_RUN: i64 = 24 * 60;
/// A run starts no new work after this long: with the slowest re-drive batch after it (a few
/// sends at `HTTP_TIMEOUT_MS` each) it still ends inside the function's 60 s timeout.
pub const BUDGET: Duration = Duration::from_secs(20);
/// Records handled between two looks at the budget.
const RECORD_CHUNK: usize = 25;
/// Recipients (or other jobs) per dispatch run, so one run cannot outlast the budget by much.
const REDRIVE_GROUPS: usize = 4;
/// Records whose items are read at once.
const READ_CONCURRENCY: usize = 16;

/// What a follow-up due record carries over to its notification.
const PAYLOAD: [&str; 7] = [
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

fn minute_of(secs: i64) -> i64 {
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

/// Appends a watch record for every outbox item `ws` queues (items put already ended need none),
/// for the same transaction.
pub fn watch_new(app: &App, ws: &mut Vec<Write>) {
    let stale = app.config.sweep_stale_secs;
    let retention = app.config.outbox_retention_secs;
    let watches: Vec<Write> = ws
        .iter()
        .filter_map(|w| match w {
            Write::Put {
                table: Table::Outbox,
                item,
                ..
            } if item.s("status") == Some(Status::Queued.as_str()) => {
                let created = item.n("created_at").unwrap_or_else(|| app.now());
                Some(due(outbox::id_of(item), created + stale, WATCH, retention))
            }
            _ => None,
        })
        .collect();
    ws.extend(watches);
}

/// The write that queues an item, with its watch: commit with `Store::transact` (a failed
/// condition on the item is reported at index 0, as a single write reports it).
pub fn with_watch(app: &App, w: Write) -> Vec<Write> {
    let mut ws = vec![w];
    watch_new(app, &mut ws);
    ws
}

pub fn followup_id(recipient: &str, at: i64) -> String {
    outbox::id_for(&["followup", recipient, &at.to_string()])
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

/// Parks claimed items until `until` (the daily quota is used up): back to `queued` with
/// `not_before`, and a due record for each, in one transaction. The stream is done with them;
/// the sweep re-drives them. Items that have used all their attempts fail instead, so nothing
/// is parked forever.
pub async fn park(
    app: &App,
    items: &[Item],
    reason: &str,
    until: i64,
) -> Result<Delivery, StoreError> {
    let now = app.now();
    let attempts = outbox::attempts(items);
    let retention = app.config.outbox_retention_secs;
    if attempts >= app.config.dispatch_max_attempts {
        let r = format!("retries_exhausted: {reason}");
        let ws: Vec<Write> = items
            .iter()
            .map(|i| outbox::finish(outbox::id_of(i), Status::Failed, Some(&r), vec![], now))
            .collect();
        app.store.transact(ws).await?;
        for i in items {
            let kind = i.s("kind").unwrap_or("");
            obs::metric("JobsFailed", &[("Kind", kind), ("Reason", reason)], 1.0);
            info!(outbox_id = %outbox::id_of(i), kind, decision = "failed", reason = %r);
        }
        return Ok(Delivery::Done);
    }
    let mut ws = vec![];
    for i in items {
        let id = outbox::id_of(i);
        ws.push(outbox::park(id, reason, until, now));
        ws.push(due(id, until, PARKED, retention));
    }
    app.store.transact(ws).await?;
    obs::metric("SendsParked", &[("ErrCode", reason)], items.len() as f64);
    for i in items {
        warn!(outbox_id = %outbox::id_of(i), decision = "parked", reason, until, "waiting for WeChat's daily quota to reset");
    }
    Ok(Delivery::Done)
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Minutes walked to the end.
    pub minutes: i64,
    pub records: usize,
    /// Items handed to the dispatcher again.
    pub redriven: usize,
    /// Follow-up notifications queued.
    pub followups: usize,
    /// Records moved later (a hold still on, a claim still live, a retry).
    pub rescheduled: usize,
    /// The minute the next run starts from.
    pub cursor: String,
    /// Whether every minute that could be swept has been.
    pub caught_up: bool,
}

impl Report {
    pub fn to_json(&self) -> Value {
        json!({
            "minutes": self.minutes,
            "records": self.records,
            "redriven": self.redriven,
            "followups": self.followups,
            "rescheduled": self.rescheduled,
            "cursor": self.cursor,
            "caught_up": self.caught_up,
        })
    }
}

/// One sweep (see the module docs).
pub async fn sweep(app: &App) -> Result<Report, StoreError> {
    let started = Instant::now();
    let now = app.now();
    let store = &*app.store;
    let last = minute_of(now - SETTLE_SECS) - 1;
    let cursor = store
        .get(Table::State, keys::SWEEP_CURSOR, keys::ONE)
        .await?;
    let start = cursor.as_ref().and_then(|c| c.n("next_minute"));
    let start_after = cursor
        .as_ref()
        .and_then(|c| c.s("after"))
        .map(str::to_owned);
    let mut minute = start.unwrap_or(last + 1 - FIRST_LOOKBACK_MINUTES);
    let mut after = start_after.clone();
    let mut report = Report::default();
    let mut result = Ok(());
    while minute <= last {
        if report.minutes >= MAX_MINUTES_PER_RUN || started.elapsed() >= BUDGET {
            break;
        }
        match sweep_minute(app, minute, after.as_deref(), now, started, &mut report).await {
            Ok(None) => {
                minute += 1;
                after = None;
                report.minutes += 1;
            }
            Ok(Some(done_up_to)) => {
                after = done_up_to;
                break;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    report.caught_up = minute > last;
    report.cursor = bucket(minute);
    if (Some(minute), &after) != (start, &start_after) {
        let mut u = vec![
            Update::set("next_minute", minute),
            Update::set("updated_at", now),
        ];
        u.push(match &after {
            Some(a) => Update::set("after", a.as_str()),
            None => Update::remove("after"),
        });
        // Only forward from where this run started: a concurrent run that got further wins.
        let from = match (start, &start_after) {
            (None, _) => Cond::lacks("next_minute"),
            (Some(m), None) => Cond::And(vec![Cond::eq("next_minute", m), Cond::lacks("after")]),
            (Some(m), Some(a)) => Cond::And(vec![
                Cond::eq("next_minute", m),
                Cond::eq("after", a.as_str()),
            ]),
        };
        let w = Write::update(Table::State, keys::SWEEP_CURSOR, keys::ONE, u).when(from);
        match store.write(w).await {
            Ok(_) | Err(StoreError::ConditionFailed { .. }) => {}
            Err(e) if result.is_ok() => result = Err(e),
            Err(_) => {}
        }
    }
    info!(
        decision = "swept",
        minutes = report.minutes,
        records = report.records,
        redriven = report.redriven,
        followups = report.followups,
        rescheduled = report.rescheduled,
        cursor = %report.cursor,
        caught_up = report.caught_up
    );
    if report.records > 0 {
        obs::metric("SweepRecords", &[], report.records as f64);
    }
    result.map(|()| report)
}

/// The operator's safety net (`wxim sweep --scan-outbox`): every unfinished outbox item is
/// treated as if its watch record were due now, whatever its due records say. For items queued
/// before watch records existed, or after due records were lost; it reads the whole outbox
/// table (a `Scan`), so it is not part of the scheduled sweep.
pub async fn rescan(app: &App) -> Result<Report, StoreError> {
    let started = Instant::now();
    let now = app.now();
    let records: Vec<Item> = app
        .store
        .scan(Table::Outbox)
        .await?
        .into_iter()
        .filter(|i| Status::is_open(i.s("status").unwrap_or("")))
        .map(|i| Item::new("scan", outbox::id_of(&i)).with("why", WATCH))
        .collect();
    let mut report = Report::default();
    for chunk in records.chunks(RECORD_CHUNK) {
        process(app, chunk, now, started, &mut report).await?;
    }
    report.cursor = "outbox scan".into();
    report.caught_up = true;
    info!(
        decision = "rescanned",
        records = report.records,
        redriven = report.redriven,
        rescheduled = report.rescheduled
    );
    Ok(report)
}

/// Sweeps one minute from after `after`; `Ok(None)` when the minute is done, `Ok(Some(sk))`
/// when the budget ran out after the record `sk` (or before any, with `after` unchanged).
async fn sweep_minute(
    app: &App,
    minute: i64,
    after: Option<&str>,
    now: i64,
    started: Instant,
    report: &mut Report,
) -> Result<Option<Option<String>>, StoreError> {
    let mut records = app
        .store
        .query(Table::State, &keys::due(&bucket(minute)), "")
        .await?;
    if let Some(a) = after {
        records.retain(|r| r.sk.as_str() > a);
    }
    let mut done: Option<String> = after.map(str::to_owned);
    for chunk in records.chunks(RECORD_CHUNK) {
        if started.elapsed() >= BUDGET {
            return Ok(Some(done));
        }
        process(app, chunk, now, started, report).await?;
        done = chunk.last().map(|r| r.sk.clone());
    }
    Ok(None)
}

/// What the sweep does for an item's record, from the item's state.
enum Next {
    Nothing,
    Redrive,
    CheckAt(i64),
}

fn next_for(item: &Item, now: i64) -> Next {
    let status = item.s("status").unwrap_or("");
    if !Status::is_open(status) {
        return Next::Nothing;
    }
    if status == Status::Queued.as_str() {
        return match item.n("not_before") {
            // Parked: its own record comes at `not_before`.
            Some(t) if t > now => Next::Nothing,
            _ => Next::Redrive,
        };
    }
    let claimed_at = item.n("claimed_at").unwrap_or(0);
    if claimed_at < now - CLAIM_SECS {
        Next::Redrive
    } else {
        Next::CheckAt(claimed_at + CLAIM_SECS + 1)
    }
}

async fn process(
    app: &App,
    records: &[Item],
    now: i64,
    started: Instant,
    report: &mut Report,
) -> Result<(), StoreError> {
    report.records += records.len();
    let retention = app.config.outbox_retention_secs;
    let mut ids: Vec<String> = vec![];
    for r in records {
        if r.s("why") == Some(FOLLOWUP) {
            followup_due(app, r, now, report).await?;
        } else if !ids.contains(&r.sk) {
            ids.push(r.sk.clone());
        }
    }
    let items = read_items(app, &ids).await?;
    // Items to re-drive, grouped as the dispatcher merges them (a recipient's notifications
    // together), so that a batch boundary never splits a merge.
    let mut groups: Vec<(String, Vec<String>)> = vec![];
    for (id, item) in ids.iter().zip(&items) {
        // Gone (expired): nothing left to do.
        let Some(item) = item else { continue };
        match next_for(item, now) {
            Next::Nothing => {}
            Next::Redrive => {
                let key = match item.s("kind") {
                    Some(k) if k == Kind::Notify.as_str() => {
                        format!("notify#{}", item.s("recipient").unwrap_or(""))
                    }
                    _ => format!("job#{id}"),
                };
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, g)) => g.push(id.clone()),
                    None => groups.push((key, vec![id.clone()])),
                }
            }
            Next::CheckAt(t) => {
                app.store.write(due(id, t, RETRY, retention)).await?;
                report.rescheduled += 1;
            }
        }
    }
    for batch in groups.chunks(REDRIVE_GROUPS) {
        let ids: Vec<String> = batch.iter().flat_map(|(_, g)| g.iter().cloned()).collect();
        if started.elapsed() >= BUDGET {
            // No time left in this run: the next one takes them.
            for id in &ids {
                app.store.write(due(id, now + 60, RETRY, retention)).await?;
                report.rescheduled += 1;
            }
            continue;
        }
        info!(
            decision = "redrive",
            count = ids.len(),
            "unfinished outbox items"
        );
        report.redriven += ids.len();
        for r in dispatch::run(app, &ids).await {
            app.store
                .write(due(&r.id, r.not_before.max(now + 1), RETRY, retention))
                .await?;
            report.rescheduled += 1;
        }
    }
    Ok(())
}

/// The outbox items of `ids`, in order, a few reads at a time.
async fn read_items(app: &App, ids: &[String]) -> Result<Vec<Option<Item>>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(READ_CONCURRENCY) {
        let mut set = tokio::task::JoinSet::new();
        for (i, id) in chunk.iter().enumerate() {
            let store = app.store.clone();
            let id = id.clone();
            set.spawn(async move { (i, outbox::get(&*store, &id).await) });
        }
        let mut got: Vec<Option<Item>> = vec![None; chunk.len()];
        while let Some(joined) = set.join_next().await {
            let (i, r) = joined.map_err(|e| StoreError::Unavailable(format!("read task: {e}")))?;
            got[i] = r?;
        }
        out.extend(got);
    }
    Ok(out)
}

/// A hold has ended: queue the follow-up notification if there is still something to tell and
/// nothing holds it any more; move it to the end of a hold that is still on.
async fn followup_due(
    app: &App,
    rec: &Item,
    now: i64,
    report: &mut Report,
) -> Result<(), StoreError> {
    let (Some(n), Some(recipient)) = (&app.config.notify, rec.s("recipient")) else {
        return Ok(());
    };
    let state = app
        .store
        .get(Table::State, &keys::notify_state(recipient), keys::ONE)
        .await?;
    let pending = state.as_ref().and_then(|s| s.n("pending")).unwrap_or(0);
    if pending <= 0 {
        info!(
            recipient,
            decision = "followup_not_needed",
            "nothing pending (told since, or back online)"
        );
        return Ok(());
    }
    let retention = app.config.outbox_retention_secs;
    let hold = deliver::window_end(state.as_ref(), n, now).or_else(|| deliver::quiet_end(n, now));
    if let Some(until) = hold {
        app.store
            .write(followup(recipient, until, rec, retention))
            .await?;
        report.rescheduled += 1;
        return Ok(());
    }
    let mut attrs: Vec<(&str, Attr)> = PAYLOAD
        .iter()
        .filter_map(|k| rec.attrs.get(*k).map(|v| (*k, v.clone())))
        .collect();
    attrs.push((deliver::FOLLOWUP_ATTR, Attr::Bool(true)));
    attrs.push(("presence", Attr::from("unknown")));
    let w = outbox::enqueue(&rec.sk, Kind::Notify, attrs, now, retention);
    match app.store.transact(with_watch(app, w)).await {
        Ok(()) => {
            info!(recipient, outbox_id = %rec.sk, decision = "followup_queued", pending);
            report.followups += 1;
            Ok(())
        }
        Err(StoreError::ConditionFailed { .. }) => Ok(()),
        Err(e) => Err(e),
    }
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
