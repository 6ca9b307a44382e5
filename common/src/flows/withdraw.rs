//! Notifications the user no longer needs: a message they read on another device
//! (`C2C.CallbackAfterMsgReport`) or one its sender recalled (`C2C.CallbackAfterMsgWithDraw`).
//!
//! Each message's notification is marked withdrawn on its outbox item, once (a duplicate
//! callback finds the mark and changes nothing). Then, by where the item stands:
//!
//! - **queued** (not yet dispatched, waiting for a retry, or parked): ended `skipped` with the
//!   reason (`read`, `recalled`). A dispatcher that claims it meanwhile sees the mark and ends
//!   it the same way ([`crate::flows::deliver`]).
//! - **held** (the debounce window, quiet hours) or left waiting for a credit: it is counted in
//!   the recipient's `pending`, so it is taken out of the count, but only while it is still in
//!   it ([`notify_window::uncount`]); a follow-up that spoke for it speaks for the latest
//!   message still held with it, or is dropped when none is.
//! - **told** (sent, or merged into a notification that went out): nothing; WeChat cannot take
//!   a subscribe message back, and the count it told stands.
//! - **being sent** right now: the dispatcher that claimed it before the mark decides: it may go
//!   out, or be held and stay counted (the window of that race is the dispatch itself).

use tracing::info;

use crate::app::App;
use crate::obs;
use crate::protocol::im::callback::{ReadReport, Recall};
use crate::records::due;
use crate::records::notify_window;
use crate::records::outbox::{self, Job, Notice, OutboxItem, Status};
use crate::records::waiting::{self, Waiting};
use crate::store::StoreError;

/// What became of one message's notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawal {
    /// Still queued: ended without being sent.
    Dropped,
    /// Held or waiting for a credit: no longer counted.
    Uncounted,
    /// A dispatcher holds it at this moment.
    InFlight,
    /// Already told (or no longer counted): nothing to take back.
    AlreadyTold,
    /// The message queued no notification (not bound, online, no credit, …).
    NotQueued,
    /// Withdrawn before: a duplicate callback.
    Duplicate,
}

impl Withdrawal {
    pub fn as_str(self) -> &'static str {
        match self {
            Withdrawal::Dropped => "dropped",
            Withdrawal::Uncounted => "uncounted",
            Withdrawal::InFlight => "in_flight",
            Withdrawal::AlreadyTold => "already_told",
            Withdrawal::NotQueued => "not_queued",
            Withdrawal::Duplicate => "duplicate",
        }
    }
}

/// The outcome of one callback: what became of each message it withdrew.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Withdrawn {
    pub outcomes: Vec<Withdrawal>,
}

impl Withdrawn {
    pub fn count(&self, w: Withdrawal) -> usize {
        self.outcomes.iter().filter(|o| **o == w).count()
    }
}

/// Reasons a held or credit-less message was counted under (see `deliver`).
const COUNTED: [&str; 3] = ["merged_within_debounce_window", "quiet_hours", "no_credit"];

/// `C2C.CallbackAfterMsgWithDraw`: the recalled message's notification (the same outbox id its
/// after-send callback gave it).
pub async fn recall(app: &App, r: &Recall) -> Result<Withdrawn, StoreError> {
    let id = outbox::id_for(&["notify", &r.idempotency_key()]);
    let o = withdraw(app, &id, "recalled", None).await?;
    Ok(Withdrawn { outcomes: vec![o] })
}

/// `C2C.CallbackAfterMsgReport`: every message from the peer sent up to `LastReadTime`.
pub async fn read(app: &App, r: &ReadReport) -> Result<Withdrawn, StoreError> {
    let waiting = waiting::in_conversation(&*app.store, &r.reader, &waiting::c2c(&r.peer)).await?;
    let mut out = Withdrawn::default();
    for w in waiting
        .into_iter()
        .filter(|w| w.msg_time <= r.last_read_time)
    {
        let id = w.id.clone();
        out.outcomes
            .push(withdraw(app, &id, "read", Some(w)).await?);
    }
    Ok(out)
}

async fn withdraw(
    app: &App,
    id: &str,
    reason: &str,
    known: Option<Waiting>,
) -> Result<Withdrawal, StoreError> {
    let store = &*app.store;
    let now = app.now();
    let item = match store.write(outbox::withdraw(id, reason, now)).await {
        Ok(Some(i)) => OutboxItem::from_item(&i)?,
        Ok(None) => return Ok(Withdrawal::NotQueued),
        Err(StoreError::ConditionFailed { .. }) => {
            let seen = outbox::read(store, id).await?;
            // A record whose message is withdrawn or unknown waits for nothing.
            if let Some(w) = &known {
                store.write(w.remove()).await?;
            }
            return Ok(match seen {
                Some(i) if i.cancelled.is_some() => Withdrawal::Duplicate,
                _ => Withdrawal::NotQueued,
            });
        }
        Err(e) => return Err(e),
    };
    let Job::Notify(n) = &item.job else {
        return Ok(Withdrawal::NotQueued);
    };
    let w = match known {
        Some(w) => Some(w),
        None => waiting::of_item(store, n, id).await?,
    };
    let outcome = match item.status {
        Status::Queued => {
            let mut ws = vec![outbox::end_unclaimed(id, Status::Skipped, reason, now)];
            ws.extend(w.as_ref().map(Waiting::remove));
            match store.transact(ws).await {
                // Claimed meanwhile, after the mark: the dispatcher ends it with the reason.
                Ok(()) | Err(StoreError::ConditionFailed { .. }) => Withdrawal::Dropped,
                Err(e) => return Err(e),
            }
        }
        Status::Sending => Withdrawal::InFlight,
        Status::Skipped
            if item.reason.as_deref().is_some_and(|r| COUNTED.contains(&r))
                && w.as_ref().is_some_and(|w| w.counted.is_some()) =>
        {
            let w = w.as_ref().expect("checked above");
            uncount(app, n, w).await?
        }
        _ => {
            if let Some(w) = &w {
                store.write(w.remove()).await?;
            }
            Withdrawal::AlreadyTold
        }
    };
    obs::metric(
        "NotificationsWithdrawn",
        &[("Reason", reason), ("Outcome", outcome.as_str())],
        1.0,
    );
    info!(outbox_id = %id, recipient = %n.recipient, reason, withdrawal = outcome.as_str(), "notification withdrawn");
    Ok(outcome)
}

/// Takes a held message out of the count (while it is still in it) and out of the follow-up.
async fn uncount(app: &App, n: &Notice, w: &Waiting) -> Result<Withdrawal, StoreError> {
    let store = &*app.store;
    let now = app.now();
    let Some((counted_at, window)) = w.counted else {
        return Ok(Withdrawal::AlreadyTold);
    };
    let ws = vec![
        notify_window::uncount(&n.recipient, window, counted_at, now),
        w.remove(),
    ];
    match store.transact(ws).await {
        Ok(()) => {}
        // Told by a notification since, or seen (a Login): the count has moved on.
        Err(StoreError::ConditionFailed { .. }) => {
            store.write(w.remove()).await?;
            return Ok(Withdrawal::AlreadyTold);
        }
        Err(e) => return Err(e),
    }
    if let Some(at) = w.followup_at {
        refollow(app, n, w, at).await?;
    }
    Ok(Withdrawal::Uncounted)
}

/// The follow-up at `at` spoke for the withdrawn message: it now speaks for the latest message
/// still held for it, and is dropped when none is (what else is counted waits for the next
/// notification).
async fn refollow(app: &App, n: &Notice, gone: &Waiting, at: i64) -> Result<(), StoreError> {
    let store = &*app.store;
    let Some(rec) = due::get_followup(store, &n.recipient, at).await? else {
        return Ok(());
    };
    let (Some(about), Some(said)) = (rec.about.as_deref(), rec.notice.as_ref()) else {
        return Ok(());
    };
    if about != gone.id {
        return Ok(());
    }
    let next = waiting::all(store, &n.recipient)
        .await?
        .into_iter()
        .filter(|w| w.id != gone.id && w.counted.is_some() && w.followup_at == Some(at))
        .max_by_key(|w| w.msg_time);
    let w = match next {
        Some(w) => {
            let latest = Notice {
                sender: w.sender.clone(),
                preview: w.preview.clone(),
                msg_time: w.msg_time,
                group: w.group.clone(),
                ..said.clone()
            };
            due::followup(
                &n.recipient,
                at,
                &latest,
                Some(&w.id),
                app.config.outbox_retention_secs,
            )
        }
        None => due::drop_followup(&n.recipient, at),
    };
    store.write(w).await?;
    Ok(())
}
