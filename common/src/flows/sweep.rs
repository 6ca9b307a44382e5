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
//! **Keys** ([`crate::records::due`]): `pk = due#<yyyymmddhhmm>#<shard>` (the UTC minute it is due
//! in, one of 32 shards by id), `sk = <outbox id>`. A follow-up's sort key is the id its follow-up
//! item will get (every hold in one window writes the same record), and it carries what the
//! notification will say. Time-bucketed keys let the sweep find due work with a few `Query`s per
//! hour and no index or scan; the shards keep a busy hour's writes spread over partitions.
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
//!   is re-driven through [`crate::flows::dispatch::run`], the very code the stream runs, and a retry
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
use tracing::info;

use crate::app::App;
use crate::flows::dispatch;
use crate::obs;
use crate::records::due::{self, Due, Why};
use crate::records::notify_window;
use crate::records::outbox::{self, CLAIM_SECS, Job, Notice, OutboxItem, Status};
use crate::store::StoreError;

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
    let last = due::minute_of(now - SETTLE_SECS) - 1;
    let start = due::cursor(store).await?;
    let mut minute = start
        .next_minute
        .unwrap_or(last + 1 - FIRST_LOOKBACK_MINUTES);
    let mut after = start.after.clone();
    let mut report = Report::default();
    let mut result = Ok(());
    while minute <= last {
        if report.minutes >= MAX_MINUTES_PER_RUN || started.elapsed() >= BUDGET {
            break;
        }
        // The rest of this minute's hour (due records are read an hour at a time).
        let end = last
            .min((minute.div_euclid(60) + 1) * 60 - 1)
            .min(minute + (MAX_MINUTES_PER_RUN - report.minutes) - 1);
        match sweep_span(
            app,
            minute,
            end,
            after.as_deref(),
            now,
            started,
            &mut report,
        )
        .await
        {
            Ok(None) => {
                report.minutes += end - minute + 1;
                minute = end + 1;
                after = None;
            }
            Ok(Some((m, done_up_to))) => {
                minute = m;
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
    report.cursor = due::bucket(minute);
    let reached = due::Cursor {
        next_minute: Some(minute),
        after,
    };
    if reached != start {
        // Only forward from where this run started: a concurrent run that got further wins.
        match store.write(due::advance(&start, &reached, now)).await {
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
    let records: Vec<Due> = outbox::open_items(&*app.store)
        .await?
        .iter()
        .map(|i| Due::watch(&i.id))
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

/// Sweeps the minutes `minute..=end` (within one hour), from after the record `after` of
/// `minute`; `Ok(None)` when the span is done, `Ok(Some((m, id)))` when the budget ran out after
/// the record `id` of minute `m` (or before any, with `minute` and `after` unchanged).
async fn sweep_span(
    app: &App,
    minute: i64,
    end: i64,
    after: Option<&str>,
    now: i64,
    started: Instant,
    report: &mut Report,
) -> Result<Option<(i64, Option<String>)>, StoreError> {
    let mut records = due::in_span(&app.store, minute, end).await?;
    if let Some(a) = after {
        records.retain(|r| (r.minute(), r.id.as_str()) > (minute, a));
    }
    let mut done: (i64, Option<String>) = (minute, after.map(str::to_owned));
    for chunk in records.chunks(RECORD_CHUNK) {
        if started.elapsed() >= BUDGET {
            return Ok(Some(done));
        }
        process(app, chunk, now, started, report).await?;
        if let Some(r) = chunk.last() {
            done = (r.minute(), Some(r.id.clone()));
        }
    }
    Ok(None)
}

/// What the sweep does for an item's record, from the item's state.
enum Next {
    Nothing,
    Redrive,
    CheckAt(i64),
}

fn next_for(item: &OutboxItem, now: i64) -> Next {
    match item.status {
        // Parked: its own record comes at `not_before`.
        Status::Queued if item.parked_at(now).is_some() => Next::Nothing,
        Status::Queued => Next::Redrive,
        Status::Sending => {
            let claimed_at = item.claimed_at.unwrap_or(0);
            if claimed_at < now - CLAIM_SECS {
                Next::Redrive
            } else {
                Next::CheckAt(claimed_at + CLAIM_SECS + 1)
            }
        }
        Status::Sent | Status::Skipped | Status::Failed => Next::Nothing,
    }
}

async fn process(
    app: &App,
    records: &[Due],
    now: i64,
    started: Instant,
    report: &mut Report,
) -> Result<(), StoreError> {
    report.records += records.len();
    let retention = app.config.outbox_retention_secs;
    let mut ids: Vec<String> = vec![];
    for r in records {
        if r.why == Why::Followup {
            followup_due(app, r, now, report).await?;
        } else if !ids.contains(&r.id) {
            ids.push(r.id.clone());
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
                let key = match item.recipient() {
                    Some(r) => format!("notify#{r}"),
                    None => format!("job#{id}"),
                };
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, g)) => g.push(id.clone()),
                    None => groups.push((key, vec![id.clone()])),
                }
            }
            Next::CheckAt(t) => {
                app.store
                    .write(due::due(id, t, Why::Retry, retention))
                    .await?;
                report.rescheduled += 1;
            }
        }
    }
    for batch in groups.chunks(REDRIVE_GROUPS) {
        let ids: Vec<String> = batch.iter().flat_map(|(_, g)| g.iter().cloned()).collect();
        if started.elapsed() >= BUDGET {
            // No time left in this run: the next one takes them.
            for id in &ids {
                app.store
                    .write(due::due(id, now + 60, Why::Retry, retention))
                    .await?;
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
                .write(due::due(
                    &r.id,
                    r.not_before.max(now + 1),
                    Why::Retry,
                    retention,
                ))
                .await?;
            report.rescheduled += 1;
        }
    }
    Ok(())
}

/// The outbox items of `ids`, in order, a few reads at a time.
async fn read_items(app: &App, ids: &[String]) -> Result<Vec<Option<OutboxItem>>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(READ_CONCURRENCY) {
        let mut set = tokio::task::JoinSet::new();
        for (i, id) in chunk.iter().enumerate() {
            let store = app.store.clone();
            let id = id.clone();
            set.spawn(async move { (i, outbox::read(&*store, &id).await) });
        }
        let mut got: Vec<Option<OutboxItem>> = vec![None; chunk.len()];
        while let Some(joined) = set.join_next().await {
            let (i, r) = joined.map_err(|e| StoreError::Unavailable(format!("read task: {e}")))?;
            got[i] = match r {
                // An item this version cannot read is passed over, not the whole run.
                Err(StoreError::Corrupt(why)) => {
                    tracing::warn!(outbox_id = %chunk[i], decision = "unreadable", reason = %why);
                    None
                }
                other => other?,
            };
        }
        out.extend(got);
    }
    Ok(out)
}

/// A hold has ended: queue the follow-up notification if there is still something to tell and
/// nothing holds it any more; move it to the end of a hold that is still on.
async fn followup_due(
    app: &App,
    rec: &Due,
    now: i64,
    report: &mut Report,
) -> Result<(), StoreError> {
    let (Some(n), Some(latest)) = (&app.config.notify, &rec.notice) else {
        return Ok(());
    };
    let recipient = latest.recipient.as_str();
    let window = notify_window::get(&*app.store, recipient).await?;
    if window.pending <= 0 {
        info!(
            recipient,
            decision = "followup_not_needed",
            "nothing pending (told since, or back online)"
        );
        return Ok(());
    }
    let retention = app.config.outbox_retention_secs;
    let hold = window
        .end(n.debounce_secs, now)
        .or_else(|| n.quiet_end(now));
    if let Some(until) = hold {
        app.store
            .write(due::followup(
                recipient,
                until,
                latest,
                rec.about.as_deref(),
                retention,
            ))
            .await?;
        report.rescheduled += 1;
        return Ok(());
    }
    let followup = Notice {
        presence: Some("unknown".into()),
        followup: true,
        msg_key: None,
        ..latest.clone()
    };
    let job = outbox::enqueue(&rec.id, &Job::Notify(followup), app.queueing());
    match app.store.transact(job.writes().into()).await {
        Ok(()) => {
            info!(recipient, outbox_id = %rec.id, decision = "followup_queued", pending = window.pending);
            report.followups += 1;
            Ok(())
        }
        Err(StoreError::ConditionFailed { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(all(test, feature = "embedded"))]
mod tests {
    use super::*;
    use crate::flows::testing::bench;

    #[tokio::test]
    async fn a_job_the_stream_never_delivered_is_redriven_when_its_watch_falls_due() {
        // No IM: the re-driven deletion ends at once, without any network.
        let b = bench(&[
            ("IM_SDKAPPID", ""),
            ("IM_SECRET_KEY", ""),
            ("IM_AGENT_ACCOUNTS", ""),
        ]);
        let job = Job::Delete {
            user_id: "oX".into(),
        };
        let e = outbox::enqueue("lost1", &job, b.app.queueing());
        b.commit(e.writes()).await;
        let early = sweep(&b.app).await.unwrap();
        assert_eq!(early.redriven, 0);
        b.clock.advance(b.app.config.sweep_stale_secs + 120);
        let report = sweep(&b.app).await.unwrap();
        assert_eq!(report.redriven, 1, "{report:?}");
        let item = b.item("lost1").await;
        assert_eq!(item.status, Status::Failed);
        assert_eq!(item.reason.as_deref(), Some("im_not_configured"));
        // The cursor moved on: the next run finds nothing new.
        let again = sweep(&b.app).await.unwrap();
        assert_eq!(again.redriven, 0);
    }
}
