//! The IM side of offline notifications: from a one-to-one message, decide whether to queue a
//! subscribe message for its recipient. The decision is cheap enough for IM's 2 s limit (a few
//! reads and one conditional put); the slow parts (token, WeChat) happen in the dispatcher.

use crate::app::App;
use crate::obs;
use crate::protocol::im::callback::C2cMessage;
use crate::records::binding;
use crate::records::outbox::{self, Job, Notice};
use crate::records::presence::{self, Presence};
use crate::records::subscription;
use crate::store::StoreError;

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
    let notice = Notice {
        recipient: msg.to.clone(),
        sender: msg.from.clone(),
        preview: obs::preview(&msg.preview(), 40),
        msg_time: if msg.msg_time > 0 { msg.msg_time } else { now },
        app: n.app,
        openid: binding.openid.clone(),
        template_id: n.template_id.clone(),
        msg_key: Some(msg.msg_key.clone()),
        // Unknown presence is settled by query_online_status at dispatch time.
        presence: Some(p.as_str().to_owned()),
        followup: false,
    };
    let w = outbox::enqueue(&id, &Job::Notify(notice), app.queueing());
    // The watch record rides in the same request: the sweep re-drives the item if the stream
    // never delivers it.
    match store.transact(w.writes().into()).await {
        Ok(()) => Ok(Decision::Queued { id }),
        Err(StoreError::ConditionFailed { .. }) => Ok(Decision::Skipped(Skip::DuplicateCallback)),
        Err(e) => Err(e),
    }
}

#[cfg(all(test, feature = "embedded"))]
mod tests {
    use super::*;
    use crate::flows::testing::{bench, c2c};
    use crate::records::outbox::{Job, Kind};

    #[tokio::test]
    async fn an_offline_bound_user_with_a_credit_gets_one_job_per_message() {
        let b = bench(&[]);
        b.bind("u1", "o1").await;
        b.credits("o1", 1).await;
        let m = c2c("seller", "u1", "where is my order", 5);
        let Decision::Queued { id } = on_message(&b.app, &m).await.unwrap() else {
            panic!("queued expected");
        };
        assert_eq!(
            on_message(&b.app, &m).await.unwrap(),
            Decision::Skipped(Skip::DuplicateCallback)
        );
        let item = b.item(&id).await;
        assert_eq!(item.kind(), Some(Kind::Notify));
        let Job::Notify(n) = &item.job else { panic!() };
        assert_eq!((n.recipient.as_str(), n.openid.as_str()), ("u1", "o1"));
        assert_eq!(n.preview, "where is my order");
        assert_eq!(b.outbox().await.len(), 1);
    }

    #[tokio::test]
    async fn nothing_is_queued_without_binding_credit_or_for_online_only_messages() {
        let b = bench(&[]);
        let m = c2c("seller", "u1", "x", 1);
        assert_eq!(
            on_message(&b.app, &m).await.unwrap(),
            Decision::Skipped(Skip::RecipientNotBound)
        );
        b.bind("u1", "o1").await;
        assert_eq!(
            on_message(&b.app, &m).await.unwrap(),
            Decision::Skipped(Skip::NoCredit)
        );
        b.credits("o1", 1).await;
        let typing = crate::protocol::im::callback::C2cMessage {
            online_only: true,
            ..c2c("seller", "u1", "typing", 2)
        };
        assert_eq!(
            on_message(&b.app, &typing).await.unwrap(),
            Decision::Skipped(Skip::OnlineOnlyMessage)
        );
        assert!(b.outbox().await.is_empty());
    }
}
