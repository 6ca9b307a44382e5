//! The IM side of offline notifications: from a one-to-one message, decide whether to queue a
//! subscribe message for its recipient. The decision is cheap enough for IM's 2 s limit (a few
//! reads and one conditional put); the slow parts (token, WeChat) happen in the dispatcher.

use crate::app::App;
use crate::obs;
use crate::protocol::im::callback::C2cMessage;
use crate::records::binding;
use crate::records::outbox::{self, Kind};
use crate::records::presence::{self, Presence};
use crate::records::subscription;
use crate::store::{Attr, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Queued { id: String },
    Skipped(Skip),
}

/// Why a message queued no notification, logged and counted by [`Skip::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    NotificationsNotConfigured,
    NotDeliveredInIm,
    OnlineOnlyMessage,
    RecipientNotBound,
    RecipientOnline,
    NoCredit,
    /// IM's retry of a callback already applied: a dedupe hit, not a skipped notification.
    DuplicateCallback,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NotificationsNotConfigured => "notifications_not_configured",
            Skip::NotDeliveredInIm => "not_delivered_in_im",
            Skip::OnlineOnlyMessage => "online_only_message",
            Skip::RecipientNotBound => "recipient_not_bound",
            Skip::RecipientOnline => "recipient_online",
            Skip::NoCredit => "no_credit",
            Skip::DuplicateCallback => "duplicate_callback",
        }
    }
}

/// Decides for one message and, when the recipient should be notified, writes the outbox item
/// (idempotent on IM's MsgKey, so a retried callback queues nothing new).
pub async fn on_message(app: &App, msg: &C2cMessage) -> Result<Decision, StoreError> {
    let decision = decide(app, msg).await?;
    match &decision {
        Decision::Queued { .. } => obs::metric("NotificationsQueued", &[], 1.0),
        Decision::Skipped(Skip::DuplicateCallback) => {
            obs::metric("DedupeHits", &[("Source", "im")], 1.0)
        }
        Decision::Skipped(reason) => {
            obs::metric("NotificationsSkipped", &[("Reason", reason.as_str())], 1.0)
        }
    }
    Ok(decision)
}

async fn decide(app: &App, msg: &C2cMessage) -> Result<Decision, StoreError> {
    let Some(n) = &app.config.notify else {
        return Ok(Decision::Skipped(Skip::NotificationsNotConfigured));
    };
    if msg.send_result.is_some_and(|r| r != 0) {
        return Ok(Decision::Skipped(Skip::NotDeliveredInIm));
    }
    if msg.online_only {
        return Ok(Decision::Skipped(Skip::OnlineOnlyMessage));
    }
    let store = &*app.store;
    let now = app.now();
    let Some(binding) = binding::by_user(store, &msg.to, n.app).await? else {
        return Ok(Decision::Skipped(Skip::RecipientNotBound));
    };
    let p = presence::of(store, &msg.to, now, app.config.presence_stale_secs).await?;
    if p == Presence::Online {
        return Ok(Decision::Skipped(Skip::RecipientOnline));
    }
    if subscription::credits(store, n.app, &binding.openid, &n.template_id).await? < 1 {
        return Ok(Decision::Skipped(Skip::NoCredit));
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
        app.queueing(),
    );
    // The watch record rides in the same request: the sweep re-drives the item if the stream
    // never delivers it.
    match store.transact(w.writes().into()).await {
        Ok(()) => Ok(Decision::Queued { id }),
        Err(StoreError::ConditionFailed { .. }) => Ok(Decision::Skipped(Skip::DuplicateCallback)),
        Err(e) => Err(e),
    }
}
