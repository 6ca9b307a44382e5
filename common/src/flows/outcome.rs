//! How a claimed job ends: recorded `sent`, `skipped` or `failed` with its reason, put back for
//! another attempt (until the attempt limit), or parked until WeChat's daily quota resets. The
//! merged notifications ([`crate::flows::deliver`]) and the other jobs ([`crate::flows::jobs`])
//! end the same way.

use tracing::{info, warn};

use crate::app::App;
use crate::obs;
use crate::records::due;
use crate::records::outbox::{self, Delivery, OutboxItem, Results, Status};
use crate::store::{StoreError, Write};

/// Records the end of one job.
pub async fn end(
    app: &App,
    item: &OutboxItem,
    status: Status,
    reason: Option<&str>,
    results: Results,
) -> Result<Delivery, StoreError> {
    app.store
        .write(outbox::finish(&item.id, status, reason, results, app.now()))
        .await?;
    let kind = item.kind_str();
    info!(outbox_id = %item.id, kind, decision = status.as_str(), reason = reason.unwrap_or(""));
    if status == Status::Failed {
        obs::metric(
            "JobsFailed",
            &[("Kind", kind), ("Reason", reason.unwrap_or(""))],
            1.0,
        );
    }
    Ok(Delivery::Done)
}

/// Whether the attempt that just failed was the last one allowed.
pub fn out_of_attempts(app: &App, item: &OutboxItem) -> bool {
    item.attempts.max(1) >= app.config.dispatch_max_attempts
}

/// Puts the job back in the queue for another attempt.
pub async fn release(
    app: &App,
    item: &OutboxItem,
    reason: &str,
    after_secs: u64,
) -> Result<Delivery, StoreError> {
    app.store
        .write(outbox::release(&item.id, reason, app.now()))
        .await?;
    warn!(outbox_id = %item.id, kind = item.kind_str(), decision = "retry", reason);
    Ok(Delivery::Retry { after_secs })
}

/// Retries until the attempt limit, then records the failure.
pub async fn retry_or_fail(
    app: &App,
    item: &OutboxItem,
    reason: &str,
    after_secs: u64,
) -> Result<Delivery, StoreError> {
    if out_of_attempts(app, item) {
        let r = format!("retries_exhausted: {reason}");
        return end(app, item, Status::Failed, Some(&r), Results::default()).await;
    }
    release(app, item, reason, after_secs).await
}

/// Parks claimed items until `until` (the daily quota is used up): back to `queued` with
/// `not_before`, and a due record for each, in one transaction. The stream is done with them;
/// the sweep re-drives them. Items that have used all their attempts fail instead, so nothing
/// is parked forever.
pub async fn park(
    app: &App,
    items: &[OutboxItem],
    reason: &str,
    until: i64,
) -> Result<Delivery, StoreError> {
    let now = app.now();
    let retention = app.config.outbox_retention_secs;
    if outbox::attempts(items) >= app.config.dispatch_max_attempts {
        let r = format!("retries_exhausted: {reason}");
        let ws: Vec<Write> = items
            .iter()
            .map(|i| outbox::finish(&i.id, Status::Failed, Some(&r), Results::default(), now))
            .collect();
        app.store.transact(ws).await?;
        for i in items {
            let kind = i.kind_str();
            obs::metric("JobsFailed", &[("Kind", kind), ("Reason", reason)], 1.0);
            info!(outbox_id = %i.id, kind, decision = "failed", reason = %r);
        }
        return Ok(Delivery::Done);
    }
    let mut ws = vec![];
    for i in items {
        ws.push(outbox::park(&i.id, reason, until, now));
        ws.push(due::due(&i.id, until, due::Why::Parked, retention));
    }
    app.store.transact(ws).await?;
    obs::metric("SendsParked", &[("ErrCode", reason)], items.len() as f64);
    for i in items {
        warn!(outbox_id = %i.id, decision = "parked", reason, until, "waiting for WeChat's daily quota to reset");
    }
    Ok(Delivery::Done)
}
