//! The dispatcher: takes outbox items (from the DynamoDB Stream in Lambda, from the store locally),
//! claims each, performs it, and reports which must be retried. Notifications for the same
//! recipient in one batch are delivered together, as one merged message.

use std::time::Duration;

use serde_json::{Value, json};
use tracing::{Instrument, info, warn};

use crate::app::App;
use crate::notify::deliver;
use crate::outbox::{self, Delivery, Kind, Status};
use crate::store::{Item, StoreError};

/// A stream record pointing at an outbox item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub sequence: String,
}

/// Reads the outbox ids of the INSERT records of a DynamoDB Stream event (the event source
/// mapping filters on INSERT too; the check here keeps a misconfigured mapping harmless).
pub fn records(event: &Value) -> Vec<Record> {
    event["Records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["eventName"].as_str() == Some("INSERT"))
        .filter_map(|r| {
            let pk = r["dynamodb"]["Keys"]["pk"]["S"].as_str()?;
            Some(Record {
                id: pk.strip_prefix("out#")?.to_owned(),
                sequence: r["dynamodb"]["SequenceNumber"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            })
        })
        .collect()
}

/// The partial-batch response: Lambda retries from the earliest failed record.
pub fn batch_response(failed: &[Record]) -> Value {
    json!({
        "batchItemFailures": failed
            .iter()
            .map(|r| json!({ "itemIdentifier": r.sequence }))
            .collect::<Vec<_>>()
    })
}

/// Handles one stream event; the handler the notify-dispatch function runs.
pub async fn stream(event: &Value, app: &App, request_id: &str) -> Value {
    let span =
        tracing::info_span!("request", request_id = %request_id, function = "notify-dispatch");
    async {
        let recs = records(event);
        let ids: Vec<String> = recs.iter().map(|r| r.id.clone()).collect();
        let retry = run(app, &ids).await;
        let failed: Vec<Record> = recs.into_iter().filter(|r| retry.contains(&r.id)).collect();
        batch_response(&failed)
    }
    .instrument(span)
    .await
}

/// Performs the given items; returns the ids to retry. Pauses before returning when a retry is
/// due, so that the stream's immediate redelivery comes after a backoff.
pub async fn run(app: &App, ids: &[String]) -> Vec<String> {
    let mut claimed: Vec<Item> = vec![];
    let mut retry: Vec<String> = vec![];
    for id in ids {
        match outbox::claim(&*app.store, id, app.now()).await {
            Ok(Some(item)) => claimed.push(item),
            Ok(None) => info!(outbox_id = %id, decision = "already_handled"),
            Err(e) => {
                warn!(outbox_id = %id, decision = "retry_later", reason = %e);
                retry.push(id.clone());
            }
        }
    }
    let mut pause = 0u64;
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
                let attempts = items
                    .iter()
                    .filter_map(|i| i.n("attempts"))
                    .max()
                    .unwrap_or(1);
                pause = pause.max(backoff_ms(app, attempts, after_secs));
                retry.extend(ids);
            }
            Err(e) => {
                // The store failed mid-way: the claim stays and is retaken after CLAIM_SECS.
                warn!(decision = "retry_later", reason = %e, "store failure while dispatching");
                retry.extend(ids);
            }
        }
    }
    if pause > 0 {
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    retry
}

/// Exponential backoff from the configured base, at least what WeChat asked for when that is
/// short, and never beyond 20 s so a Lambda invocation always returns in time.
fn backoff_ms(app: &App, attempts: i64, after_secs: u64) -> u64 {
    let base = app.config.dispatch_backoff_ms;
    let exp = base.saturating_mul(1u64 << attempts.clamp(1, 10).saturating_sub(1));
    // A WeChat hint (45011: wait a minute) only applies at production pacing; a shortened base
    // (tests, local runs) shortens everything.
    let hinted = if base >= 1000 { after_secs * 1000 } else { 0 };
    exp.max(hinted).min(20_000)
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
        Some(k) => crate::jobs::perform(app, k, first).await,
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
        let queued = outbox::queued(&*app.store).await?;
        if queued.is_empty() {
            break;
        }
        let ids: Vec<String> = queued
            .iter()
            .take(10)
            .map(|i| outbox::id_of(i).to_owned())
            .collect();
        let retry = run(app, &ids).await;
        handled += ids.len() - retry.len();
    }
    Ok(handled)
}
