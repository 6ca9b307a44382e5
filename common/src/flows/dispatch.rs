//! The dispatcher: takes outbox items (from the DynamoDB Stream in Lambda, from the store locally,
//! from due records in the sweep), claims each, performs it, and reports which must be retried.
//! Notifications for the same recipient in one batch are delivered together, as one merged
//! message.
//!
//! A claim that is refused says nothing by itself, so the item is read: an ended item was
//! handled already; a parked one (`not_before` ahead) belongs to the sweep now; anything else is
//! still being sent by another dispatcher — or by one that crashed or timed out, whose claim
//! becomes retakable after [`outbox::CLAIM_SECS`]. That last case is a retry, never a drop: the
//! stream redelivers the record (after a pause) until the claim can be retaken or the item ends.

use std::time::Duration;

use tracing::{info, warn};

use crate::app::App;
use crate::flows::deliver;
use crate::records::outbox::{self, CLAIM_SECS, Delivery, Kind, Status};
use crate::store::{Item, StoreError};

/// The longest pause before a Lambda invocation returns, so it always returns in time.
const MAX_PAUSE_MS: u64 = 20_000;

/// An item to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    pub id: String,
    /// How long the stream pauses before the redelivery (the backoff).
    pub pause_ms: u64,
    /// The earliest time another attempt makes sense (when the sweep schedules it).
    pub not_before: i64,
}

/// Waits out the longest backoff among the retries, so that the stream's immediate
/// redelivery (or the local runner's next round) comes after it.
pub async fn pause(retry: &[Retry]) {
    let ms = retry.iter().map(|r| r.pause_ms).max().unwrap_or(0);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Performs the given items; returns those to retry, with their backoff.
pub async fn run(app: &App, ids: &[String]) -> Vec<Retry> {
    let now = app.now();
    let mut claimed: Vec<Item> = vec![];
    let mut retry: Vec<Retry> = vec![];
    for id in ids {
        match outbox::claim(&*app.store, id, now).await {
            Ok(Some(item)) => claimed.push(item),
            Ok(None) => retry.extend(refused(app, id, now).await),
            Err(e) => {
                warn!(outbox_id = %id, decision = "retry_later", reason = %e);
                retry.push(store_retry(app, id, now));
            }
        }
    }
    let mut done = vec![false; claimed.len()];
    for i in 0..claimed.len() {
        if done[i] {
            continue;
        }
        let item = &claimed[i];
        let kind = item.s("kind").and_then(Kind::parse);
        // Group every notification for the same recipient in this batch with this one.
        let group: Vec<usize> = if kind == Some(Kind::Notify) {
            (i..claimed.len())
                .filter(|&j| {
                    !done[j]
                        && claimed[j].s("kind") == Some(Kind::Notify.as_str())
                        && claimed[j].s("recipient") == item.s("recipient")
                })
                .collect()
        } else {
            vec![i]
        };
        for &j in &group {
            done[j] = true;
        }
        let mut items: Vec<Item> = group.iter().map(|&j| claimed[j].clone()).collect();
        // The merged notification speaks for the latest message.
        items.sort_by_key(|i| (i.n("msg_time").unwrap_or(0), i.n("created_at").unwrap_or(0)));
        let outcome = perform(app, kind, &items).await;
        let ids = items.iter().map(|i| outbox::id_of(i).to_owned());
        match outcome {
            Ok(Delivery::Done) => {}
            Ok(Delivery::Retry { after_secs }) => {
                let attempts = outbox::attempts(&items);
                let pause_ms = backoff_ms(app, attempts, after_secs);
                let wait = (after_secs as i64)
                    .max(pause_ms.div_ceil(1000) as i64)
                    .max(1);
                retry.extend(ids.map(|id| Retry {
                    id,
                    pause_ms,
                    not_before: now + wait,
                }));
            }
            Err(e) => {
                // The store failed mid-way: the claim stays, and is retaken once it is stale.
                warn!(decision = "retry_later", reason = %e, "store failure while dispatching");
                retry.extend(ids.map(|id| Retry {
                    id,
                    pause_ms: backoff_ms(app, 1, 0),
                    not_before: now + CLAIM_SECS + 1,
                }));
            }
        }
    }
    retry
}

fn store_retry(app: &App, id: &str, now: i64) -> Retry {
    Retry {
        id: id.to_owned(),
        pause_ms: backoff_ms(app, 1, 0),
        not_before: now + 60,
    }
}

/// Why a claim was refused, and whether the item must come back.
async fn refused(app: &App, id: &str, now: i64) -> Option<Retry> {
    let item = match outbox::get(&*app.store, id).await {
        Ok(Some(item)) => item,
        Ok(None) => {
            info!(outbox_id = %id, decision = "gone", "no such outbox item (expired)");
            return None;
        }
        Err(e) => {
            warn!(outbox_id = %id, decision = "retry_later", reason = %e);
            return Some(store_retry(app, id, now));
        }
    };
    let status = item.s("status").unwrap_or("");
    if !Status::is_open(status) {
        info!(outbox_id = %id, decision = "already_handled", status);
        return None;
    }
    let attempts = item.n("attempts").unwrap_or(1);
    let base = backoff_ms(app, attempts, 0);
    if status == Status::Queued.as_str() {
        if let Some(until) = item.n("not_before").filter(|t| *t > now) {
            info!(outbox_id = %id, decision = "deferred", until, "parked; the sweep re-drives it");
            return None;
        }
        // Released between the claim and this read: simply try again.
        return Some(Retry {
            id: id.to_owned(),
            pause_ms: base,
            not_before: now + 1,
        });
    }
    let retake_at = item.n("claimed_at").unwrap_or(now) + CLAIM_SECS + 1;
    // At production pacing, wait (within the invocation's limit) for the claim to expire;
    // shortened pacing (tests, local runs) keeps the usual backoff.
    let pause_ms = if app.config.dispatch_backoff_ms >= 1000 {
        base.max(((retake_at - now).max(0) as u64).saturating_mul(1000))
            .min(MAX_PAUSE_MS)
    } else {
        base
    };
    info!(outbox_id = %id, decision = "in_flight", retake_at, "claimed by another dispatcher; retried until it ends or the claim can be retaken");
    Some(Retry {
        id: id.to_owned(),
        pause_ms,
        not_before: retake_at.max(now + 1),
    })
}

/// Exponential backoff from the configured base, at least what WeChat asked for when that is
/// short, and never beyond 20 s so a Lambda invocation always returns in time.
fn backoff_ms(app: &App, attempts: i64, after_secs: u64) -> u64 {
    let base = app.config.dispatch_backoff_ms;
    let exp = base.saturating_mul(1u64 << attempts.clamp(1, 10).saturating_sub(1));
    // A WeChat hint (45011: wait a minute) only applies at production pacing; a shortened base
    // (tests, local runs) shortens everything.
    let hinted = if base >= 1000 { after_secs * 1000 } else { 0 };
    exp.max(hinted).min(MAX_PAUSE_MS)
}

async fn perform(app: &App, kind: Option<Kind>, items: &[Item]) -> Result<Delivery, StoreError> {
    let Some(first) = items.first() else {
        return Ok(Delivery::Done);
    };
    match kind {
        Some(Kind::Notify) => {
            let recipient = first.s("recipient").unwrap_or_default().to_owned();
            deliver::deliver(app, &recipient, items).await
        }
        Some(k) => crate::flows::jobs::perform(app, k, first).await,
        None => {
            let w = outbox::finish(
                outbox::id_of(first),
                Status::Failed,
                Some("unknown_kind"),
                vec![],
                app.now(),
            );
            app.store.write(w).await?;
            Ok(Delivery::Done)
        }
    }
}

/// Runs the queue until nothing is left to do now: what the stream does in Lambda, for the local
/// runner. Retries follow the same attempt limit; `rounds` bounds the loop.
pub async fn drain(app: &App, rounds: usize) -> Result<usize, StoreError> {
    let mut handled = 0;
    for _ in 0..rounds {
        let queued = outbox::queued(&*app.store, app.now()).await?;
        if queued.is_empty() {
            break;
        }
        let ids: Vec<String> = queued
            .iter()
            .take(10)
            .map(|i| outbox::id_of(i).to_owned())
            .collect();
        let retry = run(app, &ids).await;
        pause(&retry).await;
        handled += ids.len().saturating_sub(retry.len());
    }
    Ok(handled)
}
