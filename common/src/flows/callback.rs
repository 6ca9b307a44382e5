//! Ingest a verified IM callback: presence from state changes, a one-to-one message either to
//! the official-account bridge (an agent's reply to a follower) or to the offline notification
//! policy, a group message to the policy for the members it @-mentions, and read reports and
//! recalls to [`crate::flows::withdraw`].

use crate::app::App;
use crate::config::NotifyTrigger;
use crate::flows::bridge::{self, ReplyDecision};
use crate::flows::policy::{self, Decision as Notification, GroupDecision};
use crate::flows::withdraw::{self, Withdrawn};
use crate::obs;
use crate::protocol::im::callback::{C2cMessage, GroupMessage, ReadReport, Recall, StateChange};
use crate::records::{notify_window, presence};
use crate::store::StoreError;

/// What a callback came to, logged by [`Decision::as_str`] (and the notification's details).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    PresenceRecorded,
    /// Older than the state stored for that platform.
    PresenceStaleIgnored,
    Reply(ReplyDecision),
    Notification(Notification),
    /// Notifications are queued by the before-send callback in this configuration.
    TriggerIsBeforeSend,
    /// A before-send callback that queues nothing: the message is allowed.
    Allowed,
    /// A read report or a recall: what became of the notifications it withdrew.
    Withdrawn(Withdrawn),
    /// A group message: the notifications of the members it @-mentions.
    Group(GroupDecision),
}

impl Decision {
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::PresenceRecorded => "presence_recorded",
            Decision::PresenceStaleIgnored => "presence_stale_ignored",
            Decision::Reply(r) => r.as_str(),
            Decision::Notification(Notification::Queued { .. }) => "notification_queued",
            Decision::Notification(Notification::Skipped(_)) => "notification_skipped",
            Decision::TriggerIsBeforeSend => "trigger_is_before_send",
            Decision::Allowed => "allowed",
            Decision::Withdrawn(_) => "notifications_withdrawn",
            Decision::Group(g) if g.queued() > 0 => "notification_queued",
            Decision::Group(_) => "notification_skipped",
        }
    }
}

/// `State.StateChange`: the newer state of one platform; an applied Login also resets the
/// user's notification window (whatever was waiting has now been seen).
pub async fn state_change(
    app: &App,
    sc: &StateChange,
    platform: Option<&str>,
) -> Result<Decision, StoreError> {
    let reset = (sc.action == "Login").then(|| notify_window::login_reset(&sc.user, app.now()));
    if !presence::record(&*app.store, sc, platform, app.now(), reset).await? {
        return Ok(Decision::PresenceStaleIgnored);
    }
    Ok(Decision::PresenceRecorded)
}

fn trigger(app: &App) -> Option<NotifyTrigger> {
    app.config.notify.as_ref().map(|n| n.trigger)
}

/// `C2C.CallbackAfterSendMsg`: an agent's reply to a follower, or a message that may notify an
/// offline recipient.
pub async fn after_send(app: &App, m: &C2cMessage) -> Result<Decision, StoreError> {
    if let Some(d) = bridge::on_im_message(app, m).await? {
        if d == ReplyDecision::DuplicateCallback {
            obs::metric("DedupeHits", &[("Source", "im")], 1.0);
        }
        return Ok(Decision::Reply(d));
    }
    if trigger(app) == Some(NotifyTrigger::BeforeSend) {
        return Ok(Decision::TriggerIsBeforeSend);
    }
    Ok(Decision::Notification(policy::on_message(app, m).await?))
}

/// `C2C.CallbackAfterMsgWithDraw`: an agent's recalled reply to a bridged user (see
/// [`bridge::on_recall`]); any other recalled message's notification is withdrawn.
pub async fn recall(app: &App, r: &Recall) -> Result<Decision, StoreError> {
    if let Some(d) = bridge::on_recall(app, r).await? {
        if d == ReplyDecision::DuplicateCallback {
            obs::metric("DedupeHits", &[("Source", "im")], 1.0);
        }
        return Ok(Decision::Reply(d));
    }
    Ok(Decision::Withdrawn(withdraw::recall(app, r).await?))
}

/// `C2C.CallbackAfterMsgReport`: the notifications of the messages the user has read.
pub async fn read_report(app: &App, r: &ReadReport) -> Result<Decision, StoreError> {
    Ok(Decision::Withdrawn(withdraw::read(app, r).await?))
}

/// `Group.CallbackAfterSendMsg`: the members the message @-mentions may be notified.
pub async fn group_after_send(app: &App, g: &GroupMessage) -> Result<Decision, StoreError> {
    Ok(Decision::Group(policy::on_group_message(app, g).await?))
}

/// `C2C.CallbackBeforeSendMsg`: queues the notification when that is the configured trigger.
/// The caller allows the message whatever this returns (an error included).
pub async fn before_send(app: &App, m: &C2cMessage) -> Result<Decision, StoreError> {
    if trigger(app) != Some(NotifyTrigger::BeforeSend) {
        return Ok(Decision::Allowed);
    }
    Ok(Decision::Notification(policy::on_message(app, m).await?))
}

#[cfg(all(test, feature = "embedded"))]
mod tests {
    use super::*;
    use crate::flows::policy::Skip;
    use crate::flows::testing::{T0, bench, c2c};
    use crate::records::presence::Presence;

    fn sc(action: &str, ms: i64) -> StateChange {
        StateChange {
            user: "u1".into(),
            action: action.into(),
            reason: String::new(),
            event_time_ms: ms,
            kicked: vec![],
        }
    }

    #[tokio::test]
    async fn an_older_state_change_never_overwrites_a_newer_one() {
        let b = bench(&[]);
        let t = T0 * 1000;
        assert_eq!(
            state_change(&b.app, &sc("Logout", t), Some("iOS"))
                .await
                .unwrap(),
            Decision::PresenceRecorded
        );
        assert_eq!(
            state_change(&b.app, &sc("Login", t - 5_000), Some("iOS"))
                .await
                .unwrap(),
            Decision::PresenceStaleIgnored
        );
        let p = presence::of(&*b.app.store, "u1", T0, 600).await.unwrap();
        assert_eq!(p, Presence::Offline);
    }

    #[tokio::test]
    async fn one_read_of_the_users_partition_tells_binding_and_presence_apart() {
        use crate::config::AppKind;
        let b = bench(&[]);
        let store = &*b.app.store;
        let read = |user: &'static str, app| presence::with_binding(store, user, app, T0, 600);
        b.bind("u1", "o1").await;
        // A binding alone is no presence report: unknown, not offline.
        let (bound, p) = read("u1", AppKind::Mp).await.unwrap();
        assert_eq!(bound.map(|b| b.openid), Some("o1".to_owned()));
        assert_eq!(p, Presence::Unknown);
        assert_eq!(
            presence::of(store, "u1", T0, 600).await.unwrap(),
            Presence::Unknown
        );

        state_change(&b.app, &sc("Login", T0 * 1000), Some("Web"))
            .await
            .unwrap();
        let (bound, p) = read("u1", AppKind::Mp).await.unwrap();
        assert_eq!(bound.map(|b| b.openid), Some("o1".to_owned()));
        assert_eq!(p, Presence::Online);
        // The mini-program binding is not the official account's.
        assert_eq!(
            read("u1", AppKind::Oa).await.unwrap(),
            (None, Presence::Online)
        );
        assert_eq!(
            presence::of(store, "u1", T0, 600).await.unwrap(),
            Presence::Online
        );

        state_change(&b.app, &sc("Logout", T0 * 1000 + 1), Some("Web"))
            .await
            .unwrap();
        assert_eq!(read("u1", AppKind::Mp).await.unwrap().1, Presence::Offline);
        assert_eq!(
            read("u2", AppKind::Mp).await.unwrap(),
            (None, Presence::Unknown)
        );
    }

    #[tokio::test]
    async fn an_agent_message_to_someone_without_a_conversation_goes_to_the_policy() {
        let b = bench(&[]);
        let d = after_send(&b.app, &c2c("agent_alice", "u9", "hi", 1))
            .await
            .unwrap();
        assert_eq!(
            d,
            Decision::Notification(Notification::Skipped(Skip::RecipientNotBound))
        );
    }

    #[tokio::test]
    async fn the_before_send_trigger_leaves_after_send_alone() {
        let b = bench(&[("NOTIFY_TRIGGER", "before")]);
        b.bind("u1", "o1").await;
        b.credits("o1", 1).await;
        let m = c2c("seller", "u1", "hi", 2);
        assert_eq!(
            after_send(&b.app, &m).await.unwrap(),
            Decision::TriggerIsBeforeSend
        );
        assert!(matches!(
            before_send(&b.app, &m).await.unwrap(),
            Decision::Notification(Notification::Queued { .. })
        ));
    }
}
