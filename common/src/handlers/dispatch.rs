//! The notify-dispatch function's three kinds of invocation: a batch of the outbox table's
//! DynamoDB Stream (answered with a partial-batch response, so that only what must be retried
//! comes back), a batch of the spool's SQS queue (webhooks the store could not take, replayed
//! through their handlers; partial-batch response too), and the scheduled sweep of deferred work
//! (EventBridge). All are typed with `aws_lambda_events`; the work is [`crate::flows::dispatch`],
//! [`super::spool`] and [`crate::flows::sweep`].

use aws_lambda_events::event::dynamodb;
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{Instrument, warn};

use crate::app::App;
use crate::flows::{dispatch, sweep};
use crate::records::outbox;

/// What the function can be invoked with.
#[derive(Debug)]
pub enum Invocation {
    Stream(dynamodb::Event),
    /// The spool's queue (the SQS event source).
    Spool(SqsEvent),
    /// EventBridge's scheduled event, or the input the template's schedule sends
    /// (`{"action":"sweep"}`).
    Sweep,
    Unknown,
}

#[derive(Deserialize)]
struct SweepInput {
    action: String,
}

impl Invocation {
    pub fn parse(event: &Value) -> Invocation {
        let source = event["Records"][0]["eventSource"].as_str();
        if source == Some("aws:sqs") {
            return match SqsEvent::deserialize(event) {
                Ok(e) => Invocation::Spool(e),
                Err(e) => {
                    warn!(decision = "ignored", reason = "malformed_sqs_event", "{e}");
                    Invocation::Unknown
                }
            };
        }
        if event.get("Records").is_some() {
            return match dynamodb::Event::deserialize(event) {
                Ok(e) => Invocation::Stream(e),
                Err(e) => {
                    warn!(
                        decision = "ignored",
                        reason = "malformed_stream_event",
                        "{e}"
                    );
                    Invocation::Unknown
                }
            };
        }
        if let Ok(s) = SweepInput::deserialize(event)
            && s.action == "sweep"
        {
            return Invocation::Sweep;
        }
        match EventBridgeEvent::<Value>::deserialize(event) {
            Ok(e) if e.detail_type == "Scheduled Event" => Invocation::Sweep,
            _ => Invocation::Unknown,
        }
    }
}

/// A stream record pointing at an outbox item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub sequence: String,
}

/// The outbox ids of the INSERT records (the event source mapping filters on INSERT too; the
/// check here keeps a misconfigured mapping harmless).
pub fn records(event: &dynamodb::Event) -> Vec<Record> {
    event
        .records
        .iter()
        .filter(|r| r.event_name == "INSERT")
        .filter_map(|r| {
            let pk = match r.change.keys.get("pk")? {
                serde_dynamo::AttributeValue::S(s) => s,
                _ => return None,
            };
            Some(Record {
                id: outbox::id_from_pk(pk)?.to_owned(),
                sequence: r.change.sequence_number.clone().unwrap_or_default(),
            })
        })
        .collect()
}

/// The partial-batch response: Lambda retries from the earliest failed record.
pub fn batch_response(failed: &[Record]) -> Value {
    let mut resp = DynamoDbEventResponse::default();
    resp.batch_item_failures = failed
        .iter()
        .map(|r| {
            let mut f = DynamoDbBatchItemFailure::default();
            f.item_identifier = Some(r.sequence.clone());
            f
        })
        .collect();
    serde_json::to_value(resp).unwrap_or_else(|_| json!({ "batchItemFailures": [] }))
}

/// The notify-dispatch function: a stream batch, or the scheduled sweep.
pub async fn handle(event: &Value, app: &App, request_id: &str) -> Value {
    let span =
        tracing::info_span!("request", request_id = %request_id, function = "notify-dispatch");
    async {
        match Invocation::parse(event) {
            Invocation::Stream(e) => stream(&e, app).await,
            Invocation::Spool(e) => spooled(&e, app).await,
            Invocation::Sweep => match sweep::sweep(app).await {
                Ok(report) => report.to_json(),
                // The next scheduled run starts where this one stopped.
                Err(e) => {
                    warn!(decision = "sweep_incomplete", reason = %e, "store failure during the sweep");
                    json!({ "error": "store_unavailable" })
                }
            },
            Invocation::Unknown => {
                warn!(
                    decision = "ignored",
                    reason = "unknown_event",
                    "neither a stream batch nor the scheduled sweep"
                );
                json!({ "error": "unknown_event" })
            }
        }
    }
    .instrument(span)
    .await
}

/// Handles one stream batch.
async fn stream(event: &dynamodb::Event, app: &App) -> Value {
    let recs = records(event);
    let ids: Vec<String> = recs.iter().map(|r| r.id.clone()).collect();
    let retry = dispatch::run(app, &ids).await;
    dispatch::pause(&retry).await;
    let failed: Vec<Record> = recs
        .into_iter()
        .filter(|r| retry.iter().any(|x| x.id == r.id))
        .collect();
    batch_response(&failed)
}

/// Handles one batch of the spool's queue: each message replayed through its handler. Lambda
/// deletes what is not reported failed; a message the store still cannot take is reported
/// failed and hidden for its backoff (`ChangeMessageVisibility`), and the queue's redrive policy
/// moves it to the dead-letter queue after its last receive.
async fn spooled(event: &SqsEvent, app: &App) -> Value {
    let mut resp = SqsBatchResponse::default();
    for m in &event.records {
        let (Some(id), Some(body)) = (&m.message_id, &m.body) else {
            continue;
        };
        let outcome = super::spool::replay(app, body).await;
        if !matches!(outcome, super::spool::Replayed::Retry(_)) {
            continue;
        }
        if let (Some(spool), Some(handle)) = (&app.spool, &m.receipt_handle) {
            let received = crate::store::spool::Received {
                handle: handle.clone(),
                body: String::new(),
                receive_count: m
                    .attributes
                    .get("ApproximateReceiveCount")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1),
            };
            super::spool::settle(app, &**spool, &received, &outcome).await;
        }
        let mut f = BatchItemFailure::default();
        f.item_identifier = id.clone();
        resp.batch_item_failures.push(f);
    }
    serde_json::to_value(resp).unwrap_or_else(|_| json!({ "batchItemFailures": [] }))
}
