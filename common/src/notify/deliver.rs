//! Dispatch of queued offline notifications for one recipient. All items for the recipient in a
//! stream batch become at most one subscribe message, and while the recipient stays offline at
//! most one is sent per debounce window: the ones held back are counted in `notify#<user>` and
//! the next notification says how many messages are waiting.

use tracing::info;

use super::render;
use super::send::{self, SendOutcome};
use crate::app::App;
use crate::config::{AppKind, NotifyConfig};
use crate::keys;
use crate::obs;
use crate::outbox::{self, Delivery, Status};
use crate::presence::{self, Presence};
use crate::store::{Attr, Item, StoreError, Table, Update, Write};

fn notify_state_update(user: &str, updates: Vec<Update>) -> Write {
    Write::update(Table::State, &keys::notify_state(user), keys::ONE, updates)
}

/// An applied Login: the user has seen what was waiting, and their next offline period starts
/// with a fresh debounce window (a notification right away, not one held back by the last).
pub fn login_reset(user: &str, now: i64) -> Write {
    notify_state_update(
        user,
        vec![
            Update::set("pending", 0),
            Update::remove("last_sent_at"),
            Update::set("updated_at", now),
        ],
    )
}

/// Ends every item of the group the same way, and counts them as waiting for the next
/// notification unless the user has seen them.
async fn end_all(
    app: &App,
    recipient: &str,
    items: &[Item],
    status: Status,
    reason: &str,
    pending: bool,
) -> Result<Delivery, StoreError> {
    let now = app.now();
    let mut ws: Vec<Write> = items
        .iter()
        .map(|i| outbox::finish(outbox::id_of(i), status, Some(reason), vec![], now))
        .collect();
    ws.push(notify_state_update(
        recipient,
        vec![
            if pending {
                Update::add("pending", items.len() as i64)
            } else {
                Update::set("pending", 0)
            },
            Update::set("updated_at", now),
        ],
    ));
    app.store.transact(ws).await?;
    let metric = if status == Status::Failed {
        "NotificationsFailed"
    } else {
        "NotificationsSkipped"
    };
    let dim = if status == Status::Failed {
        "ErrCode"
    } else {
        "Reason"
    };
    obs::metric(
        metric,
        &[(dim, reason.split(':').next().unwrap_or(reason))],
        items.len() as f64,
    );
    info!(
        recipient,
        decision = status.as_str(),
        reason,
        count = items.len(),
        "notification not sent"
    );
    Ok(Delivery::Done)
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
                Some(crate::im::rest::OnlineStatus::Online) => Presence::Online,
                _ => Presence::Offline,
            },
        ),
        Err(e) => {
            tracing::warn!(user, decision = "presence_unknown", reason = %e.reason(), "query_online_status failed; notifying");
            Ok(Presence::Unknown)
        }
    }
}

fn in_quiet_hours(n: &NotifyConfig, now: i64) -> bool {
    let Some((start, end)) = n.quiet_hours else {
        return false;
    };
    let Ok(ts) = jiff::Timestamp::from_second(now) else {
        return false;
    };
    let z = ts.to_zoned(n.timezone.clone());
    let m = z.hour() as u32 * 60 + z.minute() as u32;
    if start < end {
        (start..end).contains(&m)
    } else {
        m >= start || m < end
    }
}

/// `2024年1月2日 15:04`: the `time` keyword's documented form, in the configured time zone.
pub fn format_time(n: &NotifyConfig, secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|ts| {
            ts.to_zoned(n.timezone.clone())
                .strftime("%Y年%-m月%-d日 %H:%M")
                .to_string()
        })
        .unwrap_or_default()
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
            false,
        )
        .await;
    };
    let Some(latest) = items.last() else {
        return Ok(Delivery::Done);
    };
    let now = app.now();
    if presence_now(app, recipient).await? == Presence::Online {
        return end_all(
            app,
            recipient,
            items,
            Status::Skipped,
            "recipient_online",
            false,
        )
        .await;
    }
    let state = app
        .store
        .get(Table::State, &keys::notify_state(recipient), keys::ONE)
        .await?;
    let pending = state.as_ref().and_then(|s| s.n("pending")).unwrap_or(0);
    if let Some(last) = state.as_ref().and_then(|s| s.n("last_sent_at"))
        && now - last < n.debounce_secs
    {
        return end_all(
            app,
            recipient,
            items,
            Status::Skipped,
            "merged_within_debounce_window",
            true,
        )
        .await;
    }
    if in_quiet_hours(n, now) {
        return end_all(app, recipient, items, Status::Skipped, "quiet_hours", true).await;
    }
    let kind = latest.s("app").and_then(AppKind::parse).unwrap_or(n.app);
    let openid = latest.s("openid").unwrap_or_default();
    let template_id = latest.s("template_id").unwrap_or(&n.template_id);
    let count = (pending + items.len() as i64).to_string();
    let time = format_time(n, latest.n("msg_time").unwrap_or(now));
    let vars = [
        ("sender", latest.s("sender").unwrap_or("")),
        ("preview", latest.s("preview").unwrap_or("")),
        ("time", time.as_str()),
        ("count", count.as_str()),
    ];
    let data = match render::render(&n.data, &vars) {
        Ok(d) => d,
        Err(e) => {
            let reason = format!("template_data: {e}");
            return end_all(app, recipient, items, Status::Failed, &reason, false).await;
        }
    };
    let body = send::body(
        openid,
        template_id,
        &data,
        n.page.as_deref(),
        n.miniprogram_state.as_deref(),
        n.lang.as_deref(),
    );
    let attempts = items
        .iter()
        .filter_map(|i| i.n("attempts"))
        .max()
        .unwrap_or(1);
    match send::send(app, kind, openid, template_id, &body).await? {
        SendOutcome::Sent { msgid } => {
            let primary = outbox::id_of(latest).to_owned();
            let mut ws = vec![outbox::finish(
                &primary,
                Status::Sent,
                None,
                vec![
                    ("msgid", Attr::from(msgid.as_str())),
                    ("merged_count", Attr::N(pending + items.len() as i64)),
                    ("data", Attr::from(data.to_string())),
                ],
                now,
            )];
            for i in &items[..items.len() - 1] {
                ws.push(outbox::finish(
                    outbox::id_of(i),
                    Status::Skipped,
                    Some("merged"),
                    vec![("merged_into", Attr::from(primary.as_str()))],
                    now,
                ));
            }
            ws.push(notify_state_update(
                recipient,
                vec![
                    Update::set("pending", 0),
                    Update::set("last_sent_at", now),
                    Update::set("last_outbox", primary.as_str()),
                    Update::set("updated_at", now),
                ],
            ));
            if !msgid.is_empty() {
                ws.push(send::msg_record(
                    kind,
                    &msgid,
                    &primary,
                    openid,
                    template_id,
                    now,
                    app.config.outbox_retention_secs,
                ));
            }
            app.store.transact(ws).await?;
            obs::metric("NotificationsSent", &[("App", kind.as_str())], 1.0);
            info!(recipient, decision = "notification_sent", merged = items.len(), count = %count);
            Ok(Delivery::Done)
        }
        SendOutcome::NoCredit => {
            end_all(app, recipient, items, Status::Skipped, "no_credit", true).await
        }
        SendOutcome::Failed { reason } => {
            end_all(app, recipient, items, Status::Failed, &reason, false).await
        }
        SendOutcome::Retry { reason, after_secs } => {
            if attempts >= app.config.dispatch_max_attempts {
                let reason = format!("retries_exhausted: {reason}");
                return end_all(app, recipient, items, Status::Failed, &reason, false).await;
            }
            let ws: Vec<Write> = items
                .iter()
                .map(|i| outbox::release(outbox::id_of(i), &reason, now))
                .collect();
            app.store.transact(ws).await?;
            obs::metric("SendRetries", &[("Reason", &reason)], 1.0);
            Ok(Delivery::Retry { after_secs })
        }
    }
}
