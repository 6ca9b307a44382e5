//! Ingest a verified WeChat push: decide its effect (the subscription ledger, the official
//! account bridge), and commit the effect together with the delivery's dedupe marker, so that a
//! retry after a failure is applied and a retry after success replays the first answer.

use tracing::info;

use crate::app::App;
use crate::config::AppKind;
use crate::flows::bridge;
pub use crate::flows::plan::{Decision, Plan};
use crate::obs;
use crate::protocol::wechat::allowance::Opening;
use crate::protocol::wechat::message::{Event, Message, MessageKind};
use crate::records::outbox::{self, Job};
use crate::records::{dedupe, subscription};
use crate::store::{StoreError, Txn, TxnError};

/// What the handler answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    pub decision: Decision,
    /// The passive reply text (for a duplicate, the one the first delivery answered with).
    pub reply: Option<String>,
}

/// The one named write of a push's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DedupeMarker;

/// How the push's passive reply, if it has one, reaches the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// In the answer to WeChat's request (a first delivery).
    Passive,
    /// WeChat was answered long ago (the push was spooled while the store was down): the reply
    /// is queued as a customer-service message, in the same transaction as the push's effect.
    Late,
}

/// Decides and applies one verified push from `kind`'s push URL.
pub async fn ingest(app: &App, kind: AppKind, msg: &Message) -> Result<Ingested, StoreError> {
    ingest_as(app, kind, msg, Answer::Passive).await
}

/// [`ingest`], with the reply given as `answer` says.
pub async fn ingest_as(
    app: &App,
    kind: AppKind,
    msg: &Message,
    answer: Answer,
) -> Result<Ingested, StoreError> {
    let key = dedupe::delivery_key(msg);
    let plan = plan(kind, msg, &key, app).await?;
    let mut reply = None;
    if plan.writes.is_empty() && plan.reply.is_none() {
        return Ok(Ingested {
            decision: plan.decision,
            reply: None,
        });
    }
    let now = app.now();
    // A late reply is not recorded on the marker: a WeChat retry that still arrives is answered
    // without it, so the user never gets the reply twice.
    let late = match (answer, plan.reply) {
        (Answer::Late, Some(text)) => Some(text),
        (_, passive) => {
            reply = passive;
            None
        }
    };
    let mut txn = Txn::new();
    txn.named(
        DedupeMarker,
        dedupe::marker(
            kind.as_str(),
            &key,
            now,
            app.config.dedupe_ttl_secs,
            reply.as_deref(),
        ),
    );
    txn.extend(plan.writes);
    if let Some(text) = late {
        let job = Job::LateReply {
            app: kind,
            openid: msg.from_user.clone(),
            text,
        };
        let id = outbox::id_for(&["late_reply", kind.as_str(), &key]);
        txn.extend(outbox::enqueue(&id, &job, app.queueing()).writes());
    }
    match txn.commit(&*app.store).await {
        Ok(()) => Ok(Ingested {
            decision: plan.decision,
            reply,
        }),
        Err(TxnError::Condition(Some(DedupeMarker))) => {
            obs::metric("DedupeHits", &[("Source", "wechat")], 1.0);
            // The first delivery's answer may never have reached WeChat: answer it again.
            let reply = dedupe::recorded_reply(&*app.store, kind.as_str(), &key)
                .await
                .ok()
                .flatten();
            info!(
                app = kind.as_str(),
                decision = "duplicate",
                "retry already applied"
            );
            Ok(Ingested {
                decision: Decision::Duplicate,
                reply,
            })
        }
        Err(e) => Err(e.into_store_error()),
    }
}

/// Decides the effect of a verified push. Reads happen here; writes are returned so that they
/// commit atomically with the dedupe marker.
async fn plan(
    app_kind: AppKind,
    msg: &Message,
    delivery: &str,
    app: &App,
) -> Result<Plan, StoreError> {
    let now = app.now();
    let openid = msg.from_user.as_str();
    Ok(match &msg.kind {
        MessageKind::Event(Event::SubscribeMsgPopup(items)) => Plan::writes(
            subscription::popup_writes(app_kind, openid, items, now),
            Decision::LedgerPopup,
        ),
        MessageKind::Event(Event::SubscribeMsgChange(items)) => Plan::writes(
            subscription::change_writes(app_kind, openid, items, now),
            Decision::LedgerChange,
        ),
        MessageKind::Event(Event::SubscribeMsgSent(items)) => Plan::writes(
            subscription::sent_writes(
                app_kind,
                openid,
                items,
                now,
                app.config.outbox_retention_secs,
            ),
            Decision::DeliveryRecorded,
        ),
        MessageKind::Event(Event::Subscribe { .. }) if app_kind == AppKind::Oa => {
            bridge::on_follow(app, msg, delivery).await?
        }
        MessageKind::Event(Event::Unsubscribe) if app_kind == AppKind::Oa => {
            bridge::on_unfollow(app, msg, delivery).await?
        }
        MessageKind::Event(Event::Scan { .. }) if app_kind == AppKind::Oa => {
            bridge::on_action(app, msg, Opening::OaScan).await?
        }
        MessageKind::Event(Event::Other { event })
            if app_kind == AppKind::Oa && Opening::oa_menu_event(event) =>
        {
            bridge::on_action(app, msg, Opening::OaMenu).await?
        }
        MessageKind::Event(Event::UserEnterTempSession { session_from })
            if app_kind == AppKind::Mp && bridge::bridged(app, app_kind) =>
        {
            bridge::on_enter_session(app, msg, session_from.as_deref(), delivery).await?
        }
        MessageKind::Event(_) => Plan::nothing(Decision::IgnoredEvent),
        _ if bridge::bridged(app, app_kind) => {
            bridge::on_user_message(app, app_kind, msg, delivery).await?
        }
        MessageKind::Unknown { .. } => Plan::nothing(Decision::IgnoredUnknown),
        _ => Plan::nothing(Decision::Accepted),
    })
}

#[cfg(all(test, feature = "embedded"))]
mod tests {
    use super::*;
    use crate::flows::testing::{T0, bench, event};
    use crate::protocol::wechat::message::parse_message;
    use crate::records::subscription;

    #[tokio::test]
    async fn a_popup_applied_once_and_its_retry_is_a_duplicate() {
        let b = bench(&[]);
        let msg = parse_message(format!(r#"{{"ToUserName":"gh","FromUserName":"o1","CreateTime":{T0},"MsgType":"event","Event":"subscribe_msg_popup_event","List":{{"TemplateId":"tpl_notify","SubscribeStatusString":"accept","PopupScene":"0"}}}}"#).as_bytes()).unwrap();
        let first = ingest(&b.app, AppKind::Mp, &msg).await.unwrap();
        assert_eq!(first.decision, Decision::LedgerPopup);
        let again = ingest(&b.app, AppKind::Mp, &msg).await.unwrap();
        assert_eq!(again.decision, Decision::Duplicate);
        let credits = subscription::credits(&*b.app.store, AppKind::Mp, "o1", "tpl_notify")
            .await
            .unwrap();
        assert_eq!(credits, 1);
    }

    #[tokio::test]
    async fn a_retried_follow_replays_the_welcome_without_a_second_import() {
        let b = bench(&[]);
        let follow = event("oF1", "subscribe", T0);
        let first = ingest(&b.app, AppKind::Oa, &follow).await.unwrap();
        assert_eq!(first.decision, Decision::FollowerWelcomed);
        let welcome = first.reply.clone().expect("a welcome");
        let again = ingest(&b.app, AppKind::Oa, &follow).await.unwrap();
        assert_eq!(again.decision, Decision::Duplicate);
        assert_eq!(again.reply.as_deref(), Some(welcome.as_str()));
        let imports: Vec<_> = b
            .outbox()
            .await
            .into_iter()
            .filter(|i| i.kind() == Some(crate::records::outbox::Kind::Import))
            .collect();
        assert_eq!(imports.len(), 1);
    }

    #[tokio::test]
    async fn a_follow_on_the_mini_program_url_is_only_accepted() {
        let b = bench(&[]);
        let d = ingest(&b.app, AppKind::Mp, &event("o2", "subscribe", T0))
            .await
            .unwrap();
        assert_eq!(d.decision, Decision::IgnoredEvent);
        assert!(b.outbox().await.is_empty());
    }
}
