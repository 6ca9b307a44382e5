//! The IM side of offline notifications: from a one-to-one message, decide whether to queue a
//! subscribe message for its recipient. The decision is cheap enough for IM's 2 s limit (a few
//! reads and one conditional put); the slow parts (token, WeChat) happen in the dispatcher.

use crate::app::App;
use crate::bindings;
use crate::due;
use crate::im::callback::C2cMessage;
use crate::ledger;
use crate::obs;
use crate::outbox::{self, Kind};
use crate::presence::{self, Presence};
use crate::store::{Attr, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Queued { id: String },
    Skipped(&'static str),
}

/// Decides for one message and, when the recipient should be notified, writes the outbox item
/// (idempotent on IM's MsgKey, so a retried callback queues nothing new).
pub async fn on_message(app: &App, msg: &C2cMessage) -> Result<Decision, StoreError> {
    let decision = decide(app, msg).await?;
    match &decision {
        Decision::Queued { .. } => obs::metric("NotificationsQueued", &[], 1.0),
        // IM's retry of a callback already applied: a dedupe hit, not a skipped notification.
        Decision::Skipped("duplicate_callback") => {
            obs::metric("DedupeHits", &[("Source", "im")], 1.0)
        }
        Decision::Skipped(reason) => {
            obs::metric("NotificationsSkipped", &[("Reason", reason)], 1.0)
        }
    }
    Ok(decision)
}

async fn decide(app: &App, msg: &C2cMessage) -> Result<Decision, StoreError> {
    let Some(n) = &app.config.notify else {
        return Ok(Decision::Skipped("notifications_not_configured"));
    };
    if msg.send_result.is_some_and(|r| r != 0) {
        return Ok(Decision::Skipped("not_delivered_in_im"));
    }
    if msg.online_only {
        return Ok(Decision::Skipped("online_only_message"));
    }
    let store = &*app.store;
    let now = app.now();
    let Some(binding) = bindings::by_user(store, &msg.to, n.app).await? else {
        return Ok(Decision::Skipped("recipient_not_bound"));
    };
    let p = presence::of(store, &msg.to, now, app.config.presence_stale_secs).await?;
    if p == Presence::Online {
        return Ok(Decision::Skipped("recipient_online"));
    }
    if ledger::credits(store, n.app, &binding.openid, &n.template_id).await? < 1 {
        return Ok(Decision::Skipped("no_credit"));
    }
    let id = outbox::id_for(&["notify", &msg.idempotency_key()]);
    let w = outbox::enqueue(
        &id,
        Kind::Notify,
        vec![
            ("recipient", Attr::from(msg.to.as_str())),
            ("sender", Attr::from(msg.from.as_str())),
            ("preview", Attr::from(obs::preview(&msg.preview(), 40))),
            (
                "msg_time",
                Attr::N(if msg.msg_time > 0 { msg.msg_time } else { now }),
            ),
            ("msg_key", Attr::from(msg.msg_key.as_str())),
            ("app", Attr::from(n.app.as_str())),
            ("openid", Attr::from(binding.openid.as_str())),
            ("template_id", Attr::from(n.template_id.as_str())),
            // Unknown presence is settled by query_online_status at dispatch time.
            ("presence", Attr::from(p.as_str())),
        ],
        now,
        app.config.outbox_retention_secs,
    );
    // The watch record rides in the same request: the sweep re-drives the item if the stream
    // never delivers it.
    match store.transact(due::with_watch(app, w)).await {
        Ok(()) => Ok(Decision::Queued { id }),
        Err(StoreError::ConditionFailed { .. }) => Ok(Decision::Skipped("duplicate_callback")),
        Err(e) => Err(e),
    }
}
