//! The IM side of offline notifications: from a one-to-one message (or a group message, for
//! each member it @-mentions), decide whether to queue a subscribe message for its recipient. The decision is cheap enough for IM's 2 s limit (a few
//! reads and one conditional put); the slow parts (token, WeChat) happen in the dispatcher.

use tracing::{info, warn};

use crate::app::App;
use crate::config::NotifyConfig;
use crate::obs;
use crate::protocol::im::callback::{C2cMessage, GroupMessage, OfflinePush};
use crate::records::outbox::{self, Job, Notice};
use crate::records::presence::{self, Presence};
use crate::records::subscription;
use crate::records::waiting;
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
    /// The sender's `OfflinePushInfo.PushFlag` is 1: no offline push for this message.
    PushDisabledBySender,
    /// A group message that @-mentions nobody (group messages notify only those they mention).
    NoMention,
    /// A group message that @-mentions everyone, with `NOTIFY_GROUP_AT_ALL` off.
    AtAllOff,
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
            Skip::PushDisabledBySender => "push_disabled_by_sender",
            Skip::NoMention => "no_mention",
            Skip::AtAllOff => "at_all_off",
            Skip::RecipientNotBound => "recipient_not_bound",
            Skip::RecipientOnline => "recipient_online",
            Skip::NoCredit => "no_credit",
            Skip::DuplicateCallback => "duplicate_callback",
        }
    }
}

fn count(decision: &Decision) {
    match decision {
        Decision::Queued { .. } => obs::metric("NotificationsQueued", &[], 1.0),
        Decision::Skipped(Skip::DuplicateCallback) => {
            obs::metric("DedupeHits", &[("Source", "im")], 1.0)
        }
        Decision::Skipped(reason) => {
            obs::metric("NotificationsSkipped", &[("Reason", reason.as_str())], 1.0)
        }
    }
}

/// What the notification of one message to one recipient says, and the key that makes its
/// outbox item idempotent.
struct Candidate<'a> {
    recipient: &'a str,
    sender: String,
    preview: String,
    msg_time: i64,
    msg_key: Option<String>,
    group: Option<String>,
    key: String,
}

/// The preview a notification shows: the sender's own offline-push text (`Desc`) when it gave
/// one, else the message itself. `CloudCustomData` is the sender app's data and never shown.
/// Either way the keyword rules apply when the data is rendered.
fn preview_of(push: &OfflinePush, message: String) -> String {
    obs::preview(push.desc.as_deref().unwrap_or(&message), 40)
}

/// Decides for one message and, when the recipient should be notified, writes the outbox item
/// (idempotent on IM's MsgKey, so a retried callback queues nothing new).
pub async fn on_message(app: &App, msg: &C2cMessage) -> Result<Decision, StoreError> {
    let decision = decide(app, msg).await?;
    count(&decision);
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
    if msg.push.no_push {
        return Ok(Decision::Skipped(Skip::PushDisabledBySender));
    }
    let c = Candidate {
        recipient: &msg.to,
        sender: msg.from.clone(),
        preview: preview_of(&msg.push, msg.preview()),
        msg_time: msg.msg_time,
        msg_key: Some(msg.msg_key.clone()),
        group: None,
        key: msg.idempotency_key(),
    };
    queue_for(app, n, &c).await
}

/// The rules every recipient goes through: bound, not online, a credit; then the outbox item
/// with its watch and its waiting record, in one transaction.
async fn queue_for(app: &App, n: &NotifyConfig, c: &Candidate<'_>) -> Result<Decision, StoreError> {
    let store = &*app.store;
    let now = app.now();
    let stale = app.config.presence_stale_secs;
    let (binding, p) = presence::with_binding(store, c.recipient, n.app, now, stale).await?;
    let Some(binding) = binding else {
        return Ok(Decision::Skipped(Skip::RecipientNotBound));
    };
    if p == Presence::Online {
        return Ok(Decision::Skipped(Skip::RecipientOnline));
    }
    if subscription::credits(store, n.app, &binding.openid, &n.template_id).await? < 1 {
        return Ok(Decision::Skipped(Skip::NoCredit));
    }
    let id = outbox::id_for(&["notify", &c.key]);
    let notice = Notice {
        recipient: c.recipient.to_owned(),
        sender: c.sender.clone(),
        preview: c.preview.clone(),
        msg_time: if c.msg_time > 0 { c.msg_time } else { now },
        app: n.app,
        openid: binding.openid.clone(),
        template_id: n.template_id.clone(),
        msg_key: c.msg_key.clone(),
        // Unknown presence is settled by query_online_status at dispatch time.
        presence: Some(p.as_str().to_owned()),
        followup: false,
        group: c.group.clone(),
    };
    let q = app.queueing();
    let w = outbox::enqueue(&id, &Job::Notify(notice.clone()), q);
    // The watch record rides in the same request (the sweep re-drives the item if the stream
    // never delivers it), and so does the waiting record a read report or a recall finds.
    let mut ws: Vec<_> = w.writes().into();
    ws.push(waiting::queued(&notice, &id, q.retention_secs, now));
    match store.transact(ws).await {
        Ok(()) => Ok(Decision::Queued { id }),
        Err(StoreError::ConditionFailed { .. }) => Ok(Decision::Skipped(Skip::DuplicateCallback)),
        Err(e) => Err(e),
    }
}

/// What a group message came to, per recipient it mentions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupDecision {
    pub decisions: Vec<(String, Decision)>,
    /// Why nobody was considered at all (no mention, @all off, …).
    pub none: Option<Skip>,
}

impl GroupDecision {
    fn only(skip: Skip) -> GroupDecision {
        obs::metric("NotificationsSkipped", &[("Reason", skip.as_str())], 1.0);
        GroupDecision {
            decisions: vec![],
            none: Some(skip),
        }
    }

    pub fn queued(&self) -> usize {
        self.decisions
            .iter()
            .filter(|(_, d)| matches!(d, Decision::Queued { .. }))
            .count()
    }
}

/// `Group.CallbackAfterSendMsg`: the members the message @-mentions (IM's `GroupAtInfo`, never
/// the text) are notified as if the message had been sent to each of them, under the same
/// rules. @all reaches the members IM lists (`group_get_member_info`, in pages, at most
/// `NOTIFY_GROUP_AT_ALL_MAX`) only with `NOTIFY_GROUP_AT_ALL=true`. The sender is never
/// notified of their own message.
pub async fn on_group_message(app: &App, g: &GroupMessage) -> Result<GroupDecision, StoreError> {
    let Some(n) = &app.config.notify else {
        return Ok(GroupDecision::only(Skip::NotificationsNotConfigured));
    };
    if g.online_only {
        return Ok(GroupDecision::only(Skip::OnlineOnlyMessage));
    }
    if g.push.no_push {
        return Ok(GroupDecision::only(Skip::PushDisabledBySender));
    }
    let mut recipients: Vec<String> = g.at_accounts.clone();
    if g.at_all {
        if n.group_at_all {
            recipients.extend(members(app, n, g).await);
        } else if recipients.is_empty() {
            return Ok(GroupDecision::only(Skip::AtAllOff));
        }
    }
    let mut seen = std::collections::HashSet::new();
    recipients.retain(|r| *r != g.from && seen.insert(r.clone()));
    if recipients.is_empty() {
        return Ok(GroupDecision::only(Skip::NoMention));
    }
    let name = match &g.group_name {
        Some(n) => Some(n.clone()),
        None => group_name(app, g).await,
    };
    let sender = match name {
        Some(name) => format!("{}（{name}）", g.from),
        None => g.from.clone(),
    };
    let preview = preview_of(&g.push, g.preview());
    let mut out = GroupDecision::default();
    for r in &recipients {
        let c = Candidate {
            recipient: r,
            sender: sender.clone(),
            preview: preview.clone(),
            msg_time: g.msg_time,
            msg_key: None,
            group: Some(g.group_id.clone()),
            key: format!("{}|{r}", g.idempotency_key()),
        };
        let d = queue_for(app, n, &c).await?;
        count(&d);
        out.decisions.push((r.clone(), d));
    }
    Ok(out)
}

/// The group's name as IM knows it (the callback carries none); `None` when IM cannot say, and
/// the notification then names the sender alone.
async fn group_name(app: &App, g: &GroupMessage) -> Option<String> {
    let im = app.im.as_ref()?;
    match im.group_name(&g.group_id, &*app.clock).await {
        Ok(n) => n,
        Err(e) => {
            warn!(group = %g.group_id, decision = "group_name_unavailable", reason = %e.reason(), "get_group_info failed; the notification names the sender alone");
            None
        }
    }
}

/// The members an @all reaches, as IM lists them; none when IM cannot say (the named mentions
/// are still notified).
async fn members(app: &App, n: &NotifyConfig, g: &GroupMessage) -> Vec<String> {
    let Some(im) = &app.im else {
        return vec![];
    };
    let community = g.group_type == "Community";
    match im
        .group_members(
            &g.group_id,
            community,
            n.group_at_all_max as usize,
            &*app.clock,
        )
        .await
    {
        Ok(m) => {
            info!(group = %g.group_id, members = m.len(), decision = "at_all_members_listed");
            m
        }
        Err(e) => {
            warn!(group = %g.group_id, decision = "at_all_members_unavailable", reason = %e.reason(), "group_get_member_info failed; only the named mentions are notified");
            vec![]
        }
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
