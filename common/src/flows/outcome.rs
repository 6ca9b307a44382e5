//! How a dispatch attempt ends when it cannot end where it is: parked for the daily quota.

use tracing::{info, warn};

use crate::app::App;
use crate::obs;
use crate::records::due;
use crate::records::outbox::{self, Delivery, Status};
use crate::store::{Item, StoreError, Write};

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
        ws.push(due::due(id, until, due::PARKED, retention));
    }
    app.store.transact(ws).await?;
    obs::metric("SendsParked", &[("ErrCode", reason)], items.len() as f64);
    for i in items {
        warn!(outbox_id = %outbox::id_of(i), decision = "parked", reason, until, "waiting for WeChat's daily quota to reset");
    }
    Ok(Delivery::Done)
}
