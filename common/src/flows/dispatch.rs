//! The dispatcher: takes outbox items (from the DynamoDB Stream in Lambda, from the store locally,
//! from due records in the sweep), claims each, performs it, and reports which must be retried.
//! Notifications for the same recipient in one batch are delivered together, as one merged
//! message.
//!
//! A claim taken over from a dispatcher that went silent is never performed again when the job
//! reaches someone (a notification, a subscribe or customer-service message, an IM message):
//! that dispatcher's call may have arrived, so the job ends `maybe_sent` (see [`retaken`]). IM
//! messages (forwards to agents, notices) are the exception: IM's history tells whether the
//! earlier call arrived, so they are performed, and sent only if it did not
//! ([`crate::flows::jobs::resends_safely`]).
//!
//! A claim that is refused says nothing by itself, so the item is read: an ended item was
//! handled already; a parked one (`not_before` ahead) belongs to the sweep now; anything else is
//! still being sent by another dispatcher — or by one that crashed or timed out, whose claim
//! becomes retakable after [`outbox::CLAIM_SECS`]. That last case is a retry, never a drop: the
//! stream redelivers the record (after a pause) until the claim can be retaken or the item ends.

use std::time::Duration;

use tracing::{info, warn};

use crate::app::App;
use crate::flows::{deliver, outcome};
use crate::obs;
use crate::records::outbox::{self, CLAIM_SECS, Delivery, Job, Kind, OutboxItem, Results, Status};
use crate::store::StoreError;

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
    let mut claimed: Vec<OutboxItem> = vec![];
    let mut retry: Vec<Retry> = vec![];
    for id in ids {
        match outbox::claim(&*app.store, id, now).await {
            Ok(Some(c))
                if c.retaken
                    && c.item.kind().is_some_and(Kind::reaches_someone)
                    && !crate::flows::jobs::resends_safely(&c.item.job) =>
            {
                if let Err(e) = retaken(app, &c.item).await {
                    warn!(outbox_id = %id, decision = "retry_later", reason = %e);
                    retry.push(store_retry(app, id, now));
                }
            }
            Ok(Some(c)) => claimed.push(c.item),
            Ok(None) => retry.extend(refused(app, id, now).await),
            // An item whose very header cannot be read: retrying cannot fix it.
            Err(StoreError::Corrupt(why)) => {
                warn!(outbox_id = %id, decision = "unreadable", reason = %why, "not dispatched");
            }
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
        // Group every notification for the same recipient in this batch with this one, and
        // every reply of one agent to one follower (a burst).
        let group: Vec<usize> = match merge_key(app, &claimed[i]) {
            Some(r) => (i..claimed.len())
                .filter(|&j| !done[j] && merge_key(app, &claimed[j]).as_ref() == Some(&r))
                .collect(),
            None => vec![i],
        };
        for &j in &group {
            done[j] = true;
        }
        let mut items: Vec<OutboxItem> = group.iter().map(|&j| claimed[j].clone()).collect();
        // The merged notification speaks for the latest message.
        items.sort_by_key(|i| {
            let msg_time = match &i.job {
                Job::Notify(n) => n.msg_time,
                _ => 0,
            };
            (msg_time, i.created_at)
        });
        let outcome = perform(app, &items).await;
        let ids = items.iter().map(|i| i.id.clone());
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

/// What this dispatcher sends together: a recipient's notifications; an agent's burst only while
/// bursts are merged (`KF_MERGE_SECS` above 0: at 0 each reply is its own message).
fn merge_key(app: &App, item: &OutboxItem) -> Option<String> {
    match item.job {
        Job::CustomerService { .. } if app.config.oa_bridge.merge_secs == 0 => None,
        _ => item.merge_key(),
    }
}

/// A job taken over from a dispatcher whose claim went stale. That dispatcher died, or is still
/// waiting for an answer, after its call may have reached WeChat or IM: performing the job again
/// could deliver it twice, so it ends `failed` with `maybe_sent: claim_retaken` (a customer-service
/// reply's agent is told it may not have arrived) and is never resent.
async fn retaken(app: &App, item: &OutboxItem) -> Result<(), StoreError> {
    match &item.job {
        Job::CustomerService { .. } => {
            crate::flows::jobs::maybe_sent(app, item, MAYBE_SENT_RETAKEN).await?;
        }
        _ => {
            outcome::end(
                app,
                item,
                Status::Failed,
                Some(MAYBE_SENT_RETAKEN),
                Results::default(),
            )
            .await?;
        }
    }
    obs::metric("ClaimsRetaken", &[("Kind", item.kind_str())], 1.0);
    warn!(outbox_id = %item.id, kind = item.kind_str(), decision = "maybe_sent", "a stale claim was taken over; not sent again");
    Ok(())
}

/// The reason recorded on a job whose stale claim was taken over.
pub const MAYBE_SENT_RETAKEN: &str = "maybe_sent: claim_retaken";

fn store_retry(app: &App, id: &str, now: i64) -> Retry {
    Retry {
        id: id.to_owned(),
        pause_ms: backoff_ms(app, 1, 0),
        not_before: now + 60,
    }
}

/// Why a claim was refused, and whether the item must come back.
async fn refused(app: &App, id: &str, now: i64) -> Option<Retry> {
    let item = match outbox::read(&*app.store, id).await {
        Ok(Some(item)) => item,
        Ok(None) => {
            info!(outbox_id = %id, decision = "gone", "no such outbox item (expired)");
            return None;
        }
        Err(StoreError::Corrupt(why)) => {
            warn!(outbox_id = %id, decision = "unreadable", reason = %why, "not dispatched");
            return None;
        }
        Err(e) => {
            warn!(outbox_id = %id, decision = "retry_later", reason = %e);
            return Some(store_retry(app, id, now));
        }
    };
    if !item.status.is_open() {
        info!(outbox_id = %id, decision = "already_handled", status = item.status.as_str());
        return None;
    }
    let base = backoff_ms(app, item.attempts.max(1), 0);
    if item.status == Status::Queued {
        if let Some(until) = item.parked_at(now) {
            // Held for a few seconds (an agent's reply waiting for the rest of its burst): the
            // stream's redelivery after the pause claims it; anything longer is the sweep's.
            if (until - now) * 1000 <= MAX_PAUSE_MS as i64 {
                info!(outbox_id = %id, decision = "held", until);
                return Some(Retry {
                    id: id.to_owned(),
                    pause_ms: (until - now) as u64 * 1000,
                    not_before: until,
                });
            }
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
    let retake_at = item.claimed_at.unwrap_or(now) + CLAIM_SECS + 1;
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

async fn perform(app: &App, items: &[OutboxItem]) -> Result<Delivery, StoreError> {
    let Some(first) = items.first() else {
        return Ok(Delivery::Done);
    };
    match &first.job {
        Job::Notify(n) => deliver::deliver(app, &n.recipient.clone(), items).await,
        Job::Unreadable(why) => {
            let reason = format!("unreadable: {why}");
            outcome::end(
                app,
                first,
                Status::Failed,
                Some(&reason),
                Results::default(),
            )
            .await
        }
        Job::CustomerService { .. } => crate::flows::jobs::replies(app, items).await,
        _ => crate::flows::jobs::perform(app, first).await,
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
        let ids: Vec<String> = queued.iter().take(10).map(|i| i.id.clone()).collect();
        let retry = run(app, &ids).await;
        pause(&retry).await;
        handled += ids.len().saturating_sub(retry.len());
    }
    Ok(handled)
}

#[cfg(all(test, feature = "embedded"))]
mod tests {
    use super::*;
    use crate::flows::testing::{bench, c2c};
    use crate::store::Table;

    #[tokio::test]
    async fn a_retaken_claim_ends_possibly_sent_and_is_not_performed_again() {
        let b = bench(&[]);
        b.bind("u1", "o1").await;
        b.credits("o1", 1).await;
        let crate::flows::policy::Decision::Queued { id } =
            crate::flows::policy::on_message(&b.app, &c2c("s", "u1", "x", 1))
                .await
                .unwrap()
        else {
            panic!("queued expected")
        };
        // A dispatcher claimed it and went silent.
        let first = outbox::claim(&*b.app.store, &id, b.app.now())
            .await
            .unwrap();
        assert!(first.is_some_and(|c| !c.retaken));
        b.clock.advance(CLAIM_SECS + 1);
        assert!(run(&b.app, std::slice::from_ref(&id)).await.is_empty());
        let item = b.item(&id).await;
        assert_eq!(item.status, Status::Failed);
        assert_eq!(item.reason.as_deref(), Some(MAYBE_SENT_RETAKEN));
        // The credit was not spent again: nothing was sent.
        let credits = crate::records::subscription::credits(
            &*b.app.store,
            crate::config::AppKind::Mp,
            "o1",
            crate::flows::testing::TEMPLATE,
        )
        .await
        .unwrap();
        assert_eq!(credits, 1);
    }

    #[tokio::test]
    async fn an_unreadable_item_ends_failed_with_why() {
        let b = bench(&[]);
        // Written by a newer version, with a kind this one does not know.
        let item = outbox::queued_of_unknown_kind("abc", "carrier_pigeon");
        b.app
            .store
            .write(crate::store::Write::put(Table::Outbox, item))
            .await
            .unwrap();
        assert!(run(&b.app, &["abc".to_owned()]).await.is_empty());
        let it = b.item("abc").await;
        assert_eq!(it.status, Status::Failed);
        assert_eq!(it.reason.as_deref(), Some("unreadable: unknown_kind"));
    }

    #[tokio::test]
    async fn an_item_without_a_status_is_passed_over_not_retried_forever() {
        let b = bench(&[]);
        let mut item = outbox::queued_of_unknown_kind("nostatus", "notify");
        item.attrs.clear();
        b.app
            .store
            .write(crate::store::Write::put(Table::Outbox, item))
            .await
            .unwrap();
        assert!(run(&b.app, &["nostatus".to_owned()]).await.is_empty());
        assert!(
            outbox::queued(&*b.app.store, b.app.now())
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried_with_backoff() {
        // The WeChat base URL is a closed port: nothing was sent, so a retry is safe.
        let b = bench(&[]);
        b.bind("u1", "o1").await;
        b.credits("o1", 1).await;
        crate::flows::policy::on_message(&b.app, &c2c("s", "u1", "x", 1))
            .await
            .unwrap();
        let id = b.outbox().await[0].id.clone();
        let retry = run(&b.app, std::slice::from_ref(&id)).await;
        assert_eq!(retry.len(), 1);
        assert_eq!(b.item(&id).await.status, Status::Queued);
    }

    #[tokio::test]
    async fn a_held_reply_comes_back_when_its_burst_is_over_and_a_parked_item_does_not() {
        let b = bench(&[("KF_MERGE_SECS", "3")]);
        let job = Job::CustomerService {
            app: crate::config::AppKind::Oa,
            im_user: "oH".into(),
            openid: "oH".into(),
            agent: "agent_alice".into(),
            text: "hi".into(),
            image_url: None,
        };
        let now = b.app.now();
        b.commit(outbox::enqueue_held("held", &job, b.app.queueing(), now + 3).writes())
            .await;
        let retry = run(&b.app, &["held".to_owned()]).await;
        assert_eq!(
            retry,
            vec![Retry {
                id: "held".into(),
                pause_ms: 3000,
                not_before: now + 3
            }]
        );
        assert_eq!(b.item("held").await.status, Status::Queued);
        // Held for longer than an invocation may wait (WeChat's daily quota): the sweep's.
        b.commit(outbox::enqueue_held("parked", &job, b.app.queueing(), now + 3600).writes())
            .await;
        assert!(run(&b.app, &["parked".to_owned()]).await.is_empty());
    }
}
