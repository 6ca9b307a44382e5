//! Dispatch of queued offline notifications for one recipient. All items for the recipient in a
//! batch become at most one subscribe message, and while the recipient stays offline at most one
//! is sent per debounce window. The recipient's merge state is one record
//! ([`crate::records::notify_window`]): how many messages wait, and when the window began.
//!
//! **The window is reserved before sending.** Reading `last_sent_at` and then sending would let
//! two dispatchers for one recipient (two stream shards, the stream and the sweep) both see a free
//! window and both send. So the sender first takes the window with one conditional update: it
//! succeeds only while the window is free and `pending` is still the value the count was
//! computed from, and it moves `pending` into the reservation in the same write (so messages held
//! meanwhile by another dispatcher are counted for the *next* notification, not lost). A
//! dispatcher that loses the race holds its messages like any other inside the window. When the
//! send does not happen (no credit, retry later, a permanent error, the daily quota), the
//! reservation is rolled back: the window reopens and the moved count is restored, unless an
//! applied Login has reset the state meanwhile.
//!
//! **Held messages get a follow-up.** Messages held by the window or by quiet hours are ended
//! `skipped` (counted in `pending`), and the same transaction writes a follow-up due record for
//! the moment the hold ends (see [`crate::flows::sweep`]). The sweep then queues one follow-up
//! notification for the recipient, which goes through this same function: sent if they are still
//! offline with something pending and a credit, or skipped with the reason.
//!
//! **What the user saw elsewhere is not told.** An item whose message was read on another device
//! or recalled before its claim ([`crate::flows::withdraw`]) is ended `skipped` with that reason
//! and left out of the group. A held (or credit-less) message's waiting record says in which
//! window it was counted and which follow-up speaks for it, so that a later withdrawal can take it
//! out of the count; a told message's record is removed with its ending.

use serde_json::Value;
use tracing::{info, warn};

use crate::app::App;
use crate::config::{AppKind, NotifyConfig};
use crate::flows::outcome;
use crate::flows::send::{self, SendOutcome};
use crate::obs;
use crate::protocol::im::rest::OnlineStatus;
use crate::protocol::wechat::render;
use crate::records::delivery;
use crate::records::due;
use crate::records::notify_window::{self, Pending, Reservation};
use crate::records::outbox::{self, Delivery, Job, Notice, OutboxItem, Results, Status};
use crate::records::presence::{self, Presence};
use crate::records::waiting;
use crate::store::{StoreError, Write};

/// How often a dispatcher retries a reservation that lost to a concurrent change of `pending`.
const RESERVE_TRIES: usize = 3;

/// The dimension value for a failure metric: the underlying errcode, not the wrapper a reason
/// may carry (`retries_exhausted: http_503` counts as `http_503`).
fn errcode_dimension(reason: &str) -> &str {
    let r = ["retries_exhausted: ", "maybe_sent: "]
        .iter()
        .find_map(|p| reason.strip_prefix(p))
        .unwrap_or(reason);
    r.split(':').next().unwrap_or(r).trim()
}

fn notice(item: &OutboxItem) -> Option<&Notice> {
    match &item.job {
        Job::Notify(n) => Some(n),
        _ => None,
    }
}

/// Presence at send time: stored callbacks first, `query_online_status` when they cannot tell.
/// When even that fails the user is treated as offline: a notification too many costs less
/// than a message never noticed.
async fn presence_now(app: &App, n: &NotifyConfig, user: &str) -> Result<Presence, StoreError> {
    let p = presence::of(&*app.store, user, app.now(), app.config.presence_stale_secs).await?;
    if p != Presence::Unknown {
        return Ok(p);
    }
    let Some(im) = &app.im else {
        return Ok(Presence::Unknown);
    };
    match im.query_online_status(&[user], &*app.clock).await {
        Ok(list) => Ok(
            match list.iter().find(|(u, _)| u == user).map(|(_, s)| *s) {
                Some(OnlineStatus::Online) => Presence::Online,
                // A native app the vendor push channel reaches: IM's own offline push tells
                // them, unless NOTIFY_PUSH_ONLINE=offline asks for WeChat's notification too.
                Some(OnlineStatus::PushOnline) if n.push_online_is_online => Presence::Online,
                _ => Presence::Offline,
            },
        ),
        Err(e) => {
            warn!(user, decision = "presence_unknown", reason = %e.reason(), "query_online_status failed; notifying");
            Ok(Presence::Unknown)
        }
    }
}

/// One recipient's claimed notifications (oldest first), delivered as one.
struct Group<'a> {
    app: &'a App,
    recipient: &'a str,
    items: &'a [OutboxItem],
    /// The notification speaks for the latest message.
    latest: &'a Notice,
}

/// What was sent, for the records.
struct Sent<'a> {
    kind: AppKind,
    count: i64,
    data: &'a Value,
}

impl Group<'_> {
    /// Messages in the group (follow-ups speak for messages counted before).
    fn messages(&self) -> i64 {
        self.items
            .iter()
            .filter(|i| notice(i).is_some_and(|n| !n.followup))
            .count() as i64
    }

    /// The messages of the group (follow-ups speak for none of their own), with their notices.
    fn own(&self) -> impl Iterator<Item = (&OutboxItem, &Notice)> {
        self.items
            .iter()
            .filter_map(|i| notice(i).filter(|n| !n.followup).map(|n| (i, n)))
    }

    /// Nothing of the group waits any more (told, seen, or given up).
    fn waiting_done(&self) -> Vec<Write> {
        self.own().map(|(i, n)| waiting::told(n, &i.id)).collect()
    }

    /// The group's messages are counted in `pending`, in the window whose `last_sent_at` is
    /// `window`, waiting for the follow-up at `followup_at`.
    fn waiting_counted(&self, window: Option<i64>, followup_at: Option<i64>) -> Vec<Write> {
        let now = self.app.now();
        let keep = self.app.config.outbox_retention_secs;
        self.own()
            .map(|(i, n)| waiting::counted(n, &i.id, window, followup_at, keep, now))
            .collect()
    }

    /// Ends every item of the group the same way, with `extra` writes in the same transaction.
    async fn end_all(
        &self,
        status: Status,
        reason: &str,
        pending: Pending,
        extra: Vec<Write>,
    ) -> Result<Delivery, StoreError> {
        let now = self.app.now();
        let mut ws: Vec<Write> = self
            .items
            .iter()
            .map(|i| outbox::finish(&i.id, status, Some(reason), Results::default(), now))
            .collect();
        ws.push(notify_window::count(self.recipient, pending, now));
        ws.extend(extra);
        self.app.store.transact(ws).await?;
        let n = self.items.len() as f64;
        if status == Status::Failed {
            obs::metric(
                "NotificationsFailed",
                &[("ErrCode", errcode_dimension(reason))],
                n,
            );
        } else {
            let label = reason.split(':').next().unwrap_or(reason);
            obs::metric("NotificationsSkipped", &[("Reason", label)], n);
        }
        info!(
            recipient = self.recipient,
            decision = status.as_str(),
            reason,
            count = self.items.len(),
            "notification not sent"
        );
        Ok(Delivery::Done)
    }

    /// Holds the group until `until` (the window's or the quiet hours' end): the messages are
    /// counted as waiting and a follow-up is scheduled for then, when there is anything to tell.
    async fn hold(
        &self,
        window: &notify_window::Window,
        reason: &str,
        until: i64,
    ) -> Result<Delivery, StoreError> {
        let messages = self.messages();
        let mut extra = vec![];
        let followup = window.pending + messages > 0;
        if followup {
            // The follow-up speaks for the latest held message, and knows which one it is.
            let about = self
                .items
                .last()
                .filter(|_| !self.latest.followup)
                .map(|i| i.id.as_str());
            extra.push(due::followup(
                self.recipient,
                until,
                self.latest,
                about,
                self.app.config.outbox_retention_secs,
            ));
        }
        extra.extend(self.waiting_counted(window.last_sent_at, followup.then_some(until)));
        info!(
            recipient = self.recipient,
            decision = "held",
            reason,
            until,
            "follow-up scheduled"
        );
        self.end_all(Status::Skipped, reason, Pending::Add(messages), extra)
            .await
    }

    /// Gives the window back (nothing was sent) and restores `restore` to the count.
    async fn unreserve(&self, r: &Reservation, restore: i64) {
        let w = notify_window::unreserve(self.recipient, r, restore, self.app.now());
        match self.app.store.write(w).await {
            Ok(_) | Err(StoreError::ConditionFailed { .. }) => {}
            // The items are settled already; a window left reserved only delays the next
            // notification to the window's end (the follow-up then speaks for what was held).
            Err(e) => {
                warn!(recipient = self.recipient, decision = "window_not_released", reason = %e, "the debounce window stays reserved")
            }
        }
    }

    /// The writes that end the group as told: the latest item with `status`, `reason` and the
    /// results, the others merged into it, and the window settled.
    fn told(&self, status: Status, reason: Option<&str>, results: Results) -> Vec<Write> {
        let now = self.app.now();
        let Some(primary) = self.items.last() else {
            return vec![];
        };
        let mut ws = vec![outbox::finish(&primary.id, status, reason, results, now)];
        ws.extend(self.waiting_done());
        for i in &self.items[..self.items.len() - 1] {
            ws.push(outbox::finish(
                &i.id,
                Status::Skipped,
                Some("merged"),
                Results {
                    merged_into: Some(primary.id.clone()),
                    ..Default::default()
                },
                now,
            ));
        }
        ws.push(notify_window::settled(self.recipient, &primary.id, now));
        ws
    }

    /// Records a send's outcome on the items and the window.
    async fn settle(
        &self,
        r: Reservation,
        outcome: SendOutcome,
        sent: Sent<'_>,
    ) -> Result<Delivery, StoreError> {
        let app = self.app;
        let now = app.now();
        let attempts = outbox::attempts(self.items);
        let told = |msgid: Option<String>| Results {
            msgid,
            merged_count: Some(sent.count),
            data: Some(sent.data.to_string()),
            ..Default::default()
        };
        match outcome {
            SendOutcome::Sent { msgid } => {
                let mut ws = self.told(Status::Sent, None, told(Some(msgid.clone())));
                if !msgid.is_empty()
                    && let Some(primary) = self.items.last()
                {
                    ws.push(delivery::sent(
                        sent.kind,
                        &msgid,
                        &primary.id,
                        &self.latest.openid,
                        &self.latest.template_id,
                        now,
                        app.config.outbox_retention_secs,
                    ));
                }
                app.store.transact(ws).await?;
                obs::metric("NotificationsSent", &[("App", sent.kind.as_str())], 1.0);
                info!(
                    recipient = self.recipient,
                    decision = "notification_sent",
                    merged = self.items.len(),
                    count = sent.count
                );
                Ok(Delivery::Done)
            }
            // WeChat may have delivered it: the window stays taken and the count told, as if
            // sent, and nothing is sent again (see `send` for why).
            SendOutcome::MaybeSent { reason } => {
                let ws = self.told(Status::Failed, Some(&reason), told(None));
                app.store.transact(ws).await?;
                obs::metric(
                    "NotificationsUncertain",
                    &[("Reason", errcode_dimension(&reason))],
                    1.0,
                );
                warn!(recipient = self.recipient, decision = "maybe_sent", reason = %reason, "not retried: WeChat may have delivered it");
                Ok(Delivery::Done)
            }
            SendOutcome::NoCredit => {
                // Counted for the next notification, in the window the rollback gives back.
                let counted = self.waiting_counted(r.prev_sent_at, None);
                let d = self
                    .end_all(
                        Status::Skipped,
                        "no_credit",
                        Pending::Add(self.messages()),
                        counted,
                    )
                    .await?;
                self.unreserve(&r, r.pending).await;
                Ok(d)
            }
            SendOutcome::Failed { reason } => self.give_up(&r, &reason).await,
            SendOutcome::Retry { reason, after_secs } => {
                if attempts >= app.config.dispatch_max_attempts {
                    let reason = format!("retries_exhausted: {reason}");
                    return self.give_up(&r, &reason).await;
                }
                let ws: Vec<Write> = self
                    .items
                    .iter()
                    .map(|i| outbox::release(&i.id, &reason, now))
                    .collect();
                app.store.transact(ws).await?;
                self.unreserve(&r, r.pending).await;
                obs::metric("SendRetries", &[("Reason", &reason)], 1.0);
                Ok(Delivery::Retry { after_secs })
            }
            SendOutcome::Parked { reason, until } => {
                self.unreserve(&r, r.pending).await;
                if attempts >= app.config.dispatch_max_attempts {
                    let reason = format!("retries_exhausted: {reason}");
                    return self
                        .end_all(Status::Failed, &reason, Pending::Keep, self.waiting_done())
                        .await;
                }
                outcome::park(app, self.items, &reason, until).await
            }
        }
    }

    /// Ends the group failed. What the reservation took from `pending` stays taken: a permanent
    /// failure resets the count, as it always did.
    async fn give_up(&self, r: &Reservation, reason: &str) -> Result<Delivery, StoreError> {
        let d = self
            .end_all(Status::Failed, reason, Pending::Keep, self.waiting_done())
            .await?;
        self.unreserve(r, 0).await;
        Ok(d)
    }

    /// One try at the window: `None` when `pending` changed under us (the caller tries again).
    async fn try_once(&self, n: &NotifyConfig) -> Result<Option<Delivery>, StoreError> {
        let app = self.app;
        let now = app.now();
        let window = notify_window::get(&*app.store, self.recipient).await?;
        if let Some(until) = window.end(n.debounce_secs, now) {
            return self
                .hold(&window, "merged_within_debounce_window", until)
                .await
                .map(Some);
        }
        if let Some(until) = n.quiet_end(now) {
            return self.hold(&window, "quiet_hours", until).await.map(Some);
        }
        let count = window.pending + self.messages();
        if count == 0 {
            // A follow-up with nothing left to tell: someone else told them, or they came back.
            return self
                .end_all(
                    Status::Skipped,
                    "nothing_pending",
                    Pending::Keep,
                    self.waiting_done(),
                )
                .await
                .map(Some);
        }
        let count_s = count.to_string();
        let time = n.format_time(if self.latest.msg_time > 0 {
            self.latest.msg_time
        } else {
            now
        });
        let vars = [
            ("sender", self.latest.sender.as_str()),
            ("preview", self.latest.preview.as_str()),
            ("time", time.as_str()),
            ("count", count_s.as_str()),
        ];
        let data = match render::render(&n.data, &vars) {
            Ok(d) => d,
            Err(e) => {
                let reason = format!("template_data: {e}");
                return self
                    .end_all(Status::Failed, &reason, Pending::Reset, self.waiting_done())
                    .await
                    .map(Some);
            }
        };
        let (r, w) = notify_window::reserve(self.recipient, &window, now, n.debounce_secs);
        match app.store.write(w).await {
            Ok(_) => {}
            Err(StoreError::ConditionFailed { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
        let l = self.latest;
        let body = send::body(
            &l.openid,
            &l.template_id,
            &data,
            n.page.as_deref(),
            n.miniprogram_state.as_deref(),
            n.lang.as_deref(),
        );
        let outcome = match send::send(app, l.app, &l.openid, &l.template_id, &body).await {
            Ok(o) => o,
            Err(e) => {
                self.unreserve(&r, r.pending).await;
                return Err(e);
            }
        };
        let sent = Sent {
            kind: l.app,
            count,
            data: &data,
        };
        self.settle(r, outcome, sent).await.map(Some)
    }
}

/// Ends the items whose messages were withdrawn (recalled, read elsewhere) before their
/// claim: nothing is told of them.
async fn end_withdrawn(app: &App, items: &[OutboxItem]) -> Result<(), StoreError> {
    let now = app.now();
    let mut ws = vec![];
    for i in items {
        let reason = i.cancelled.as_deref().unwrap_or("withdrawn");
        ws.push(outbox::finish(
            &i.id,
            Status::Skipped,
            Some(reason),
            Results::default(),
            now,
        ));
        if let Some(n) = notice(i) {
            ws.push(waiting::told(n, &i.id));
        }
        obs::metric("NotificationsSkipped", &[("Reason", reason)], 1.0);
        info!(outbox_id = %i.id, decision = "skipped", reason, "message withdrawn before dispatch");
    }
    if !ws.is_empty() {
        app.store.transact(ws).await?;
    }
    Ok(())
}

/// Delivers the claimed items (all `notify`, all for `recipient`, oldest first).
pub async fn deliver(
    app: &App,
    recipient: &str,
    claimed: &[OutboxItem],
) -> Result<Delivery, StoreError> {
    let (withdrawn, live): (Vec<OutboxItem>, Vec<OutboxItem>) =
        claimed.iter().cloned().partition(|i| i.cancelled.is_some());
    end_withdrawn(app, &withdrawn).await?;
    let items = live.as_slice();
    let Some(latest) = items.last().and_then(notice) else {
        return Ok(Delivery::Done);
    };
    let g = Group {
        app,
        recipient,
        items,
        latest,
    };
    let Some(n) = &app.config.notify else {
        return g
            .end_all(
                Status::Failed,
                "notifications_not_configured",
                Pending::Reset,
                g.waiting_done(),
            )
            .await;
    };
    if presence_now(app, n, recipient).await? == Presence::Online {
        return g
            .end_all(
                Status::Skipped,
                "recipient_online",
                Pending::Reset,
                g.waiting_done(),
            )
            .await;
    }
    for _ in 0..RESERVE_TRIES {
        if let Some(d) = g.try_once(n).await? {
            return Ok(d);
        }
    }
    // `pending` kept changing under us: let the batch come back in a moment.
    info!(
        recipient,
        decision = "retry",
        reason = "window_contended",
        "the debounce window kept changing"
    );
    let now = app.now();
    let ws: Vec<Write> = items
        .iter()
        .map(|i| outbox::release(&i.id, "window_contended", now))
        .collect();
    app.store.transact(ws).await?;
    Ok(Delivery::Retry { after_secs: 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failure_metric_names_the_underlying_code() {
        assert_eq!(errcode_dimension("retries_exhausted: http_503"), "http_503");
        assert_eq!(errcode_dimension("43101"), "43101");
        assert_eq!(
            errcode_dimension("template_data: number2 …"),
            "template_data"
        );
        assert_eq!(errcode_dimension("maybe_sent: timeout"), "timeout");
    }
}

#[cfg(all(test, feature = "embedded"))]
mod window_tests {
    use super::*;
    use crate::flows::testing::{T0, TEMPLATE, bench};
    use crate::records::outbox::Kind;
    use crate::store::Table;

    fn notice(msg: &str) -> Job {
        Job::Notify(Notice {
            recipient: "u1".into(),
            sender: "seller".into(),
            preview: msg.into(),
            msg_time: T0,
            app: AppKind::Mp,
            openid: "o1".into(),
            template_id: TEMPLATE.into(),
            msg_key: None,
            presence: Some("offline".into()),
            followup: false,
            group: None,
        })
    }

    #[tokio::test]
    async fn messages_inside_an_open_window_are_held_with_a_follow_up() {
        let b = bench(&[]);
        // A notification went out a minute ago: the window is taken.
        let (_, w) = notify_window::reserve("u1", &Default::default(), T0 - 60, 300);
        b.app.store.write(w).await.unwrap();
        let e = outbox::enqueue("n1", &notice("hello"), b.app.queueing());
        b.commit(e.writes()).await;
        let claim = outbox::claim(&*b.app.store, "n1", T0)
            .await
            .unwrap()
            .unwrap();
        let d = deliver(&b.app, "u1", std::slice::from_ref(&claim.item))
            .await
            .unwrap();
        assert_eq!(d, Delivery::Done);
        let item = b.item("n1").await;
        assert_eq!(item.status, Status::Skipped);
        assert_eq!(
            item.reason.as_deref(),
            Some("merged_within_debounce_window")
        );
        assert_eq!(
            notify_window::get(&*b.app.store, "u1")
                .await
                .unwrap()
                .pending,
            1
        );
        // The follow-up is due when the window ends.
        let minute = due::minute_of(T0 + 240);
        let recs = due::in_span(&b.app.store, minute, minute).await.unwrap();
        assert!(recs.iter().any(|r| r.why == due::Why::Followup), "{recs:?}");
        assert_eq!(b.app.store.scan(Table::Outbox).await.unwrap().len(), 1);
        assert_eq!(item.kind(), Some(Kind::Notify));
    }

    #[tokio::test]
    async fn a_message_withdrawn_before_its_claim_is_ended_not_told() {
        let b = bench(&[]);
        let e = outbox::enqueue("n3", &notice("recalled one"), b.app.queueing());
        b.commit(e.writes()).await;
        // The recall marked it; the dispatcher claimed it before the recall could end it.
        b.app
            .store
            .write(outbox::withdraw("n3", "recalled", T0))
            .await
            .unwrap();
        let claim = outbox::claim(&*b.app.store, "n3", T0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claim.item.cancelled.as_deref(), Some("recalled"));
        let d = deliver(&b.app, "u1", std::slice::from_ref(&claim.item))
            .await
            .unwrap();
        assert_eq!(d, Delivery::Done);
        let item = b.item("n3").await;
        assert_eq!(
            (item.status, item.reason.as_deref()),
            (Status::Skipped, Some("recalled"))
        );
        // A second mark is refused: a duplicate recall changes nothing.
        assert!(matches!(
            b.app.store.write(outbox::withdraw("n3", "read", T0)).await,
            Err(StoreError::ConditionFailed { .. })
        ));
    }

    #[tokio::test]
    async fn without_a_template_the_group_fails_and_the_count_resets() {
        let b = bench(&[("NOTIFY_TEMPLATE_ID", ""), ("NOTIFY_DATA", "")]);
        let e = outbox::enqueue("n2", &notice("x"), b.app.queueing());
        b.commit(e.writes()).await;
        let claim = outbox::claim(&*b.app.store, "n2", T0)
            .await
            .unwrap()
            .unwrap();
        deliver(&b.app, "u1", std::slice::from_ref(&claim.item))
            .await
            .unwrap();
        let item = b.item("n2").await;
        assert_eq!(item.status, Status::Failed);
        assert_eq!(item.reason.as_deref(), Some("notifications_not_configured"));
    }
}
