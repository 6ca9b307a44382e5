//! Dispatch of queued offline notifications for one recipient. All items for the recipient in a
//! batch become at most one subscribe message, and while the recipient stays offline at most one
//! is sent per debounce window. The recipient's merge state is one item, `notify#<user>`:
//!
//! - `pending`: messages the user has not been told about (held back, or not notified for lack
//!   of a credit); the next notification's `{count}` includes them.
//! - `last_sent_at`: when the current debounce window began.
//! - `reserved_by`, `reserved_pending`, `prev_sent_at`: the latest reservation (see below).
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

use tracing::{info, warn};

use super::send::{self, SendOutcome};
use crate::app::App;
use crate::config::AppKind;
use crate::obs;
use crate::protocol::wechat::render;
use crate::records::due;
use crate::records::keys;
use crate::records::notify_window::{notify_state_update, window_end};
use crate::records::outbox::{self, Delivery, Status};
use crate::records::presence::{self, Presence};
use crate::store::{Attr, Cond, Item, StoreError, Table, Update, Write};

/// An outbox item that is a follow-up (queued by the sweep when a hold ended), not a message.
pub const FOLLOWUP_ATTR: &str = "followup";

/// How often a dispatcher retries a reservation that lost to a concurrent change of `pending`.
const RESERVE_TRIES: usize = 3;

pub fn is_followup(item: &Item) -> bool {
    item.bool(FOLLOWUP_ATTR) == Some(true)
}

/// What an ending does to the recipient's count of messages waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// Count these (held, or not notified for lack of a credit).
    Add(i64),
    /// The user has seen everything (online), or the messages are given up.
    Reset,
    Keep,
}

/// The dimension value for a failure metric: the underlying errcode, not the wrapper a reason
/// may carry (`retries_exhausted: http_503` counts as `http_503`).
fn errcode_dimension(reason: &str) -> &str {
    let r = ["retries_exhausted: ", "maybe_sent: "]
        .iter()
        .find_map(|p| reason.strip_prefix(p))
        .unwrap_or(reason);
    r.split(':').next().unwrap_or(r).trim()
}

/// Ends every item of the group the same way, with `extra` writes in the same transaction.
async fn end_all(
    app: &App,
    recipient: &str,
    items: &[Item],
    status: Status,
    reason: &str,
    pending: Pending,
    extra: Vec<Write>,
) -> Result<Delivery, StoreError> {
    let now = app.now();
    let mut ws: Vec<Write> = items
        .iter()
        .map(|i| outbox::finish(outbox::id_of(i), status, Some(reason), vec![], now))
        .collect();
    let mut u = vec![Update::set("updated_at", now)];
    match pending {
        Pending::Add(n) => u.push(Update::add("pending", n)),
        Pending::Reset => u.push(Update::set("pending", 0)),
        Pending::Keep => {}
    }
    ws.push(notify_state_update(recipient, u));
    ws.extend(extra);
    app.store.transact(ws).await?;
    if status == Status::Failed {
        obs::metric(
            "NotificationsFailed",
            &[("ErrCode", errcode_dimension(reason))],
            items.len() as f64,
        );
    } else {
        obs::metric(
            "NotificationsSkipped",
            &[("Reason", reason.split(':').next().unwrap_or(reason))],
            items.len() as f64,
        );
    }
    info!(
        recipient,
        decision = status.as_str(),
        reason,
        count = items.len(),
        "notification not sent"
    );
    Ok(Delivery::Done)
}

/// Holds the group until `until` (the window's or the quiet hours' end): the messages are counted
/// as waiting and a follow-up is scheduled for then, when there is anything to tell.
#[allow(clippy::too_many_arguments)]
async fn hold(
    app: &App,
    recipient: &str,
    items: &[Item],
    latest: &Item,
    messages: i64,
    pending: i64,
    reason: &str,
    until: i64,
) -> Result<Delivery, StoreError> {
    let mut extra = vec![];
    if pending + messages > 0 {
        extra.push(due::followup(
            recipient,
            until,
            latest,
            app.config.outbox_retention_secs,
        ));
    }
    info!(
        recipient,
        decision = "held",
        reason,
        until,
        "follow-up scheduled"
    );
    end_all(
        app,
        recipient,
        items,
        Status::Skipped,
        reason,
        Pending::Add(messages),
        extra,
    )
    .await
}

/// Presence at send time: stored callbacks first, `query_online_status` when they cannot tell.
/// When even that fails the user is treated as offline: a notification too many costs less
/// than a message never noticed.
async fn presence_now(app: &App, user: &str) -> Result<Presence, StoreError> {
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
                Some(crate::protocol::im::rest::OnlineStatus::Online) => Presence::Online,
                _ => Presence::Offline,
            },
        ),
        Err(e) => {
            tracing::warn!(user, decision = "presence_unknown", reason = %e.reason(), "query_online_status failed; notifying");
            Ok(Presence::Unknown)
        }
    }
}

/// A window taken by this dispatcher, and what is needed to give it back.
struct Reservation {
    token: String,
    prev_sent_at: Option<i64>,
    /// The count moved out of `pending` into this notification.
    pending: i64,
}

/// Takes the debounce window for one send; `None` when another dispatcher took it or `pending`
/// changed since it was read (the caller reads again).
async fn reserve(
    app: &App,
    recipient: &str,
    state: Option<&Item>,
    pending: i64,
    now: i64,
    debounce_secs: i64,
) -> Result<Option<Reservation>, StoreError> {
    let token = outbox::random_id();
    let prev_sent_at = state.and_then(|s| s.n("last_sent_at"));
    let window_free = Cond::Or(vec![
        Cond::lacks("last_sent_at"),
        Cond::le("last_sent_at", now.saturating_sub(debounce_secs)),
    ]);
    // Negative counts (from before counts were clamped) read as zero.
    let pending_unchanged = if pending == 0 {
        Cond::Or(vec![Cond::lacks("pending"), Cond::le("pending", 0)])
    } else {
        Cond::eq("pending", pending)
    };
    let mut u = vec![
        Update::set("last_sent_at", now),
        Update::set("pending", 0),
        Update::set("reserved_by", token.as_str()),
        Update::set("reserved_pending", pending),
        Update::set("updated_at", now),
    ];
    u.push(match prev_sent_at {
        Some(p) => Update::set("prev_sent_at", p),
        None => Update::remove("prev_sent_at"),
    });
    let w = notify_state_update(recipient, u).when(Cond::And(vec![window_free, pending_unchanged]));
    match app.store.write(w).await {
        Ok(_) => Ok(Some(Reservation {
            token,
            prev_sent_at,
            pending,
        })),
        Err(StoreError::ConditionFailed { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Gives the window back (nothing was sent) and restores `restore` to the count, unless the
/// reservation is no longer ours (a Login reset the state, or the window was taken anew).
async fn unreserve(app: &App, recipient: &str, r: &Reservation, restore: i64) {
    let mut u = vec![
        Update::remove("reserved_by"),
        Update::remove("reserved_pending"),
        Update::remove("prev_sent_at"),
        Update::set("updated_at", app.now()),
    ];
    u.push(match r.prev_sent_at {
        Some(p) => Update::set("last_sent_at", p),
        None => Update::remove("last_sent_at"),
    });
    if restore != 0 {
        u.push(Update::add("pending", restore));
    }
    let w = notify_state_update(recipient, u).when(Cond::eq("reserved_by", r.token.as_str()));
    match app.store.write(w).await {
        Ok(_) | Err(StoreError::ConditionFailed { .. }) => {}
        // The items are settled already; a window left reserved only delays the next
        // notification to the window's end (the follow-up then speaks for what was held).
        Err(e) => {
            warn!(recipient, decision = "window_not_released", reason = %e, "the debounce window stays reserved")
        }
    }
}

/// The record of a settled send. `last_sent_at` and `pending` stay as the reservation set them
/// (a Login meanwhile may have reset them, which must stand), and so do the reservation markers:
/// they only matter to a rollback, which checks its own token, and removing them here could
/// remove a newer dispatcher's.
fn settled(recipient: &str, primary: &str, now: i64) -> Write {
    notify_state_update(
        recipient,
        vec![
            Update::set("last_outbox", primary),
            Update::set("updated_at", now),
        ],
    )
}

/// Delivers the claimed items (all `notify`, all for `recipient`, oldest first).
pub async fn deliver(app: &App, recipient: &str, items: &[Item]) -> Result<Delivery, StoreError> {
    let Some(n) = &app.config.notify else {
        return end_all(
            app,
            recipient,
            items,
            Status::Failed,
            "notifications_not_configured",
            Pending::Reset,
            vec![],
        )
        .await;
    };
    let Some(latest) = items.last() else {
        return Ok(Delivery::Done);
    };
    let messages = items.iter().filter(|i| !is_followup(i)).count() as i64;
    let now = app.now();
    if presence_now(app, recipient).await? == Presence::Online {
        return end_all(
            app,
            recipient,
            items,
            Status::Skipped,
            "recipient_online",
            Pending::Reset,
            vec![],
        )
        .await;
    }
    let kind = latest.s("app").and_then(AppKind::parse).unwrap_or(n.app);
    let openid = latest.s("openid").unwrap_or_default();
    let template_id = latest.s("template_id").unwrap_or(&n.template_id);
    for _ in 0..RESERVE_TRIES {
        let state = app
            .store
            .get(Table::State, &keys::notify_state(recipient), keys::ONE)
            .await?;
        let pending = state
            .as_ref()
            .and_then(|s| s.n("pending"))
            .unwrap_or(0)
            .max(0);
        if let Some(until) = window_end(state.as_ref(), n, now) {
            return hold(
                app,
                recipient,
                items,
                latest,
                messages,
                pending,
                "merged_within_debounce_window",
                until,
            )
            .await;
        }
        if let Some(until) = n.quiet_end(now) {
            return hold(
                app,
                recipient,
                items,
                latest,
                messages,
                pending,
                "quiet_hours",
                until,
            )
            .await;
        }
        let count = pending + messages;
        if count == 0 {
            // A follow-up with nothing left to tell: someone else told them, or they came back.
            return end_all(
                app,
                recipient,
                items,
                Status::Skipped,
                "nothing_pending",
                Pending::Keep,
                vec![],
            )
            .await;
        }
        let count_s = count.to_string();
        let time = n.format_time(latest.n("msg_time").unwrap_or(now));
        let vars = [
            ("sender", latest.s("sender").unwrap_or("")),
            ("preview", latest.s("preview").unwrap_or("")),
            ("time", time.as_str()),
            ("count", count_s.as_str()),
        ];
        let data = match render::render(&n.data, &vars) {
            Ok(d) => d,
            Err(e) => {
                let reason = format!("template_data: {e}");
                return end_all(
                    app,
                    recipient,
                    items,
                    Status::Failed,
                    &reason,
                    Pending::Reset,
                    vec![],
                )
                .await;
            }
        };
        let Some(r) = reserve(
            app,
            recipient,
            state.as_ref(),
            pending,
            now,
            n.debounce_secs,
        )
        .await?
        else {
            continue;
        };
        let body = send::body(
            openid,
            template_id,
            &data,
            n.page.as_deref(),
            n.miniprogram_state.as_deref(),
            n.lang.as_deref(),
        );
        let outcome = match send::send(app, kind, openid, template_id, &body).await {
            Ok(o) => o,
            Err(e) => {
                unreserve(app, recipient, &r, r.pending).await;
                return Err(e);
            }
        };
        let sent = Sent {
            kind,
            openid,
            template_id,
            count,
            data: &data,
        };
        return settle(app, recipient, items, r, outcome, sent).await;
    }
    // `pending` kept changing under us: let the batch come back in a moment.
    info!(
        recipient,
        decision = "retry",
        reason = "window_contended",
        "the debounce window kept changing"
    );
    let ws: Vec<Write> = items
        .iter()
        .map(|i| outbox::release(outbox::id_of(i), "window_contended", now))
        .collect();
    app.store.transact(ws).await?;
    Ok(Delivery::Retry { after_secs: 1 })
}

/// What was sent, for the records.
struct Sent<'a> {
    kind: AppKind,
    openid: &'a str,
    template_id: &'a str,
    count: i64,
    data: &'a serde_json::Value,
}

/// Records a send's outcome on the items and the window.
async fn settle(
    app: &App,
    recipient: &str,
    items: &[Item],
    r: Reservation,
    outcome: SendOutcome,
    sent: Sent<'_>,
) -> Result<Delivery, StoreError> {
    let now = app.now();
    let attempts = outbox::attempts(items);
    let Some(latest) = items.last() else {
        return Ok(Delivery::Done);
    };
    let primary = outbox::id_of(latest).to_owned();
    match outcome {
        SendOutcome::Sent { msgid } => {
            let mut ws = vec![outbox::finish(
                &primary,
                Status::Sent,
                None,
                vec![
                    ("msgid", Attr::from(msgid.as_str())),
                    ("merged_count", Attr::N(sent.count)),
                    ("data", Attr::from(sent.data.to_string())),
                ],
                now,
            )];
            ws.extend(merged_into(items, &primary, now));
            ws.push(settled(recipient, &primary, now));
            if !msgid.is_empty() {
                ws.push(send::msg_record(
                    sent.kind,
                    &msgid,
                    &primary,
                    sent.openid,
                    sent.template_id,
                    now,
                    app.config.outbox_retention_secs,
                ));
            }
            app.store.transact(ws).await?;
            obs::metric("NotificationsSent", &[("App", sent.kind.as_str())], 1.0);
            info!(
                recipient,
                decision = "notification_sent",
                merged = items.len(),
                count = sent.count
            );
            Ok(Delivery::Done)
        }
        // WeChat may have delivered it: the window stays taken and the count told, as if sent,
        // and nothing is sent again (see `send` for why).
        SendOutcome::MaybeSent { reason } => {
            let mut ws = vec![outbox::finish(
                &primary,
                Status::Failed,
                Some(&reason),
                vec![
                    ("merged_count", Attr::N(sent.count)),
                    ("data", Attr::from(sent.data.to_string())),
                ],
                now,
            )];
            ws.extend(merged_into(items, &primary, now));
            ws.push(settled(recipient, &primary, now));
            app.store.transact(ws).await?;
            obs::metric(
                "NotificationsUncertain",
                &[("Reason", errcode_dimension(&reason))],
                1.0,
            );
            warn!(recipient, decision = "maybe_sent", reason = %reason, "not retried: WeChat may have delivered it");
            Ok(Delivery::Done)
        }
        SendOutcome::NoCredit => {
            let d = end_all(
                app,
                recipient,
                items,
                Status::Skipped,
                "no_credit",
                Pending::Add(count_messages(items)),
                vec![],
            )
            .await?;
            unreserve(app, recipient, &r, r.pending).await;
            Ok(d)
        }
        SendOutcome::Failed { reason } => give_up(app, recipient, items, &r, &reason).await,
        SendOutcome::Retry { reason, after_secs } => {
            if attempts >= app.config.dispatch_max_attempts {
                let reason = format!("retries_exhausted: {reason}");
                return give_up(app, recipient, items, &r, &reason).await;
            }
            let ws: Vec<Write> = items
                .iter()
                .map(|i| outbox::release(outbox::id_of(i), &reason, now))
                .collect();
            app.store.transact(ws).await?;
            unreserve(app, recipient, &r, r.pending).await;
            obs::metric("SendRetries", &[("Reason", &reason)], 1.0);
            Ok(Delivery::Retry { after_secs })
        }
        SendOutcome::Parked { reason, until } => {
            unreserve(app, recipient, &r, r.pending).await;
            if attempts >= app.config.dispatch_max_attempts {
                let reason = format!("retries_exhausted: {reason}");
                return end_all(
                    app,
                    recipient,
                    items,
                    Status::Failed,
                    &reason,
                    Pending::Keep,
                    vec![],
                )
                .await;
            }
            crate::flows::outcome::park(app, items, &reason, until).await
        }
    }
}

/// Ends the group failed. What the reservation took from `pending` stays taken: a permanent
/// failure resets the count, as it always did.
async fn give_up(
    app: &App,
    recipient: &str,
    items: &[Item],
    r: &Reservation,
    reason: &str,
) -> Result<Delivery, StoreError> {
    let d = end_all(
        app,
        recipient,
        items,
        Status::Failed,
        reason,
        Pending::Keep,
        vec![],
    )
    .await?;
    unreserve(app, recipient, r, 0).await;
    Ok(d)
}

fn count_messages(items: &[Item]) -> i64 {
    items.iter().filter(|i| !is_followup(i)).count() as i64
}

/// The other items of a group, ended as merged into the one that was sent.
fn merged_into<'a>(
    items: &'a [Item],
    primary: &'a str,
    now: i64,
) -> impl Iterator<Item = Write> + 'a {
    items[..items.len().saturating_sub(1)].iter().map(move |i| {
        outbox::finish(
            outbox::id_of(i),
            Status::Skipped,
            Some("merged"),
            vec![("merged_into", Attr::from(primary))],
            now,
        )
    })
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
