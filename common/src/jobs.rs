//! The outbox jobs other than merged notifications: admin subscribe sends, and the official
//! account bridge's IM imports/deletions, forwards to agents, customer-service replies (with the
//! subscribe-message fallback) and notices to agents. Each is one outbound call, classified:
//! retryable failures go back to the queue until the attempt limit, permanent ones are recorded.

use serde_json::Value;
use tracing::{info, warn};

use crate::app::App;
use crate::config::AppKind;
use crate::im::rest::{Deletion, ImError, ImErrorClass};
use crate::notify::deliver::format_time;
use crate::notify::render;
use crate::notify::send::{self, SendOutcome};
use crate::obs;
use crate::outbox::{self, Delivery, Kind, Status};
use crate::store::{Attr, Item, StoreError, Write};
use crate::wechat::api::ErrorClass;

fn s<'a>(item: &'a Item, k: &str) -> &'a str {
    item.s(k).unwrap_or("")
}

/// A stable 32-bit `MsgRandom` for an IM send, derived from the job id: a retried job sends the
/// same value, which IM uses to recognise the duplicate.
pub fn msg_random(id: &str) -> u32 {
    u32::from_str_radix(id.get(..8).unwrap_or("0"), 16).unwrap_or(0)
}

async fn end(
    app: &App,
    item: &Item,
    status: Status,
    reason: Option<&str>,
    extra: Vec<(&str, Attr)>,
) -> Result<Delivery, StoreError> {
    app.store
        .write(outbox::finish(
            outbox::id_of(item),
            status,
            reason,
            extra,
            app.now(),
        ))
        .await?;
    let kind = s(item, "kind");
    info!(outbox_id = %outbox::id_of(item), kind, decision = status.as_str(), reason = reason.unwrap_or(""));
    if status == Status::Failed {
        obs::metric(
            "JobsFailed",
            &[("Kind", kind), ("Reason", reason.unwrap_or(""))],
            1.0,
        );
    }
    Ok(Delivery::Done)
}

/// Retries until the attempt limit, then records the failure.
async fn retry_or_fail(
    app: &App,
    item: &Item,
    reason: &str,
    after_secs: u64,
) -> Result<Delivery, StoreError> {
    if item.n("attempts").unwrap_or(1) >= app.config.dispatch_max_attempts {
        let r = format!("retries_exhausted: {reason}");
        return end(app, item, Status::Failed, Some(&r), vec![]).await;
    }
    app.store
        .write(outbox::release(outbox::id_of(item), reason, app.now()))
        .await?;
    warn!(outbox_id = %outbox::id_of(item), kind = s(item, "kind"), decision = "retry", reason);
    Ok(Delivery::Retry { after_secs })
}

async fn im_failure(app: &App, item: &Item, e: &ImError) -> Result<Delivery, StoreError> {
    match e.class() {
        ImErrorClass::Retryable | ImErrorClass::Resign | ImErrorClass::NeedsImport => {
            retry_or_fail(app, item, &e.reason(), 2).await
        }
        ImErrorClass::Permanent => end(app, item, Status::Failed, Some(&e.reason()), vec![]).await,
    }
}

pub async fn perform(app: &App, kind: Kind, item: &Item) -> Result<Delivery, StoreError> {
    match kind {
        Kind::Send => admin_send(app, item).await,
        Kind::CustomerService => customer_service(app, item).await,
        Kind::Import | Kind::Delete | Kind::Forward | Kind::AgentNotice => {
            im_job(app, kind, item).await
        }
        Kind::Notify => Err(StoreError::Invalid(
            "notifications are delivered in groups".into(),
        )),
    }
}

async fn admin_send(app: &App, item: &Item) -> Result<Delivery, StoreError> {
    let kind = AppKind::parse(s(item, "app")).unwrap_or(AppKind::Mp);
    let data: Value = serde_json::from_str(s(item, "data")).unwrap_or(Value::Null);
    let body = send::body(
        s(item, "openid"),
        s(item, "template_id"),
        &data,
        item.s("page"),
        item.s("miniprogram_state"),
        item.s("lang"),
    );
    subscribe_outcome(app, item, kind, &body, None).await
}

/// Sends a subscribe message for a job and ends the job by the outcome.
async fn subscribe_outcome(
    app: &App,
    item: &Item,
    kind: AppKind,
    body: &Value,
    sent_reason: Option<&str>,
) -> Result<Delivery, StoreError> {
    let openid = s(item, "openid");
    let template_id = body["template_id"].as_str().unwrap_or("");
    match send::send(app, kind, openid, template_id, body).await? {
        SendOutcome::Sent { msgid } => {
            let now = app.now();
            let id = outbox::id_of(item);
            let mut ws = vec![outbox::finish(
                id,
                Status::Sent,
                sent_reason,
                vec![("msgid", Attr::from(msgid.as_str()))],
                now,
            )];
            if !msgid.is_empty() {
                ws.push(send::msg_record(
                    kind,
                    &msgid,
                    id,
                    openid,
                    template_id,
                    now,
                    app.config.outbox_retention_secs,
                ));
            }
            app.store.transact(ws).await?;
            obs::metric("SubscribeSent", &[("App", kind.as_str())], 1.0);
            Ok(Delivery::Done)
        }
        SendOutcome::NoCredit => end(app, item, Status::Skipped, Some("no_credit"), vec![]).await,
        SendOutcome::Failed { reason } => {
            end(app, item, Status::Failed, Some(&reason), vec![]).await
        }
        SendOutcome::Retry { reason, after_secs } => {
            retry_or_fail(app, item, &reason, after_secs).await
        }
        SendOutcome::Parked { reason, until } => {
            crate::due::park(app, std::slice::from_ref(item), &reason, until).await
        }
        SendOutcome::MaybeSent { reason } => {
            end(app, item, Status::Failed, Some(&reason), vec![]).await
        }
    }
}

async fn im_job(app: &App, kind: Kind, item: &Item) -> Result<Delivery, StoreError> {
    let Some(im) = &app.im else {
        return end(app, item, Status::Failed, Some("im_not_configured"), vec![]).await;
    };
    let clock = &*app.clock;
    let id = outbox::id_of(item);
    match kind {
        Kind::Import => match im
            .account_import(s(item, "user_id"), item.s("nick"), clock)
            .await
        {
            Ok(()) => end(app, item, Status::Sent, None, vec![]).await,
            Err(e) => im_failure(app, item, &e).await,
        },
        Kind::Delete => match im.account_delete(s(item, "user_id"), clock).await {
            Ok(Deletion::Deleted) => end(app, item, Status::Sent, Some("deleted"), vec![]).await,
            Ok(Deletion::NotFound) => {
                end(app, item, Status::Sent, Some("account_not_found"), vec![]).await
            }
            // Only the Trial edition may delete accounts; the account stays, marked inactive by
            // the unsubscribe that queued this job.
            Ok(Deletion::NotAllowed) => {
                end(
                    app,
                    item,
                    Status::Skipped,
                    Some("kept_inactive_71000"),
                    vec![],
                )
                .await
            }
            Err(e) => im_failure(app, item, &e).await,
        },
        Kind::Forward => {
            let (from, to, text) = (s(item, "from"), s(item, "to"), s(item, "text"));
            let random = msg_random(id);
            let mut result = im.send_text(Some(from), to, text, random, clock).await;
            if let Err(e) = &result
                && e.class() == ImErrorClass::NeedsImport
            {
                // The follow's import has not run yet (or failed): do it now, then send.
                if let Err(e) = im.account_import(from, None, clock).await {
                    return im_failure(app, item, &e).await;
                }
                result = im.send_text(Some(from), to, text, random, clock).await;
            }
            match result {
                Ok(key) => {
                    end(
                        app,
                        item,
                        Status::Sent,
                        None,
                        vec![("msg_key", Attr::from(key))],
                    )
                    .await
                }
                Err(e) => im_failure(app, item, &e).await,
            }
        }
        Kind::AgentNotice => match im
            .send_text(None, s(item, "to"), s(item, "text"), msg_random(id), clock)
            .await
        {
            Ok(key) => {
                end(
                    app,
                    item,
                    Status::Sent,
                    None,
                    vec![("msg_key", Attr::from(key))],
                )
                .await
            }
            Err(e) => im_failure(app, item, &e).await,
        },
        _ => Err(StoreError::Invalid("not an IM job".into())),
    }
}

/// An agent's reply to an official-account follower. Outside the 48-hour window (45015) or over
/// its message count (45047) it falls back to a subscribe message when the follower has a
/// credit; otherwise it is recorded undeliverable and the agent is told in IM.
async fn customer_service(app: &App, item: &Item) -> Result<Delivery, StoreError> {
    let openid = s(item, "openid");
    let text = s(item, "text");
    let body =
        serde_json::json!({ "touser": openid, "msgtype": "text", "text": { "content": text } });
    let api = &app.wechat;
    let body_ref = &body;
    let result = app
        .wechat_call(AppKind::Oa, |token| async move {
            api.send_custom(&token, body_ref).await
        })
        .await;
    let e = match result {
        Ok(()) => {
            obs::metric("CustomerServiceSent", &[], 1.0);
            return end(app, item, Status::Sent, None, vec![]).await;
        }
        Err(e) => e,
    };
    let reason = e.reason();
    if let ErrorClass::Retryable { after_secs } = e.class() {
        return retry_or_fail(app, item, &reason, after_secs).await;
    }
    if matches!(e.errcode(), Some(45015) | Some(45047))
        && let Some(outcome) = fallback(app, item, &reason).await?
    {
        return Ok(outcome);
    }
    undeliverable(app, item, &reason).await
}

/// The subscribe-message fallback; `None` when it cannot be tried (no template configured, no
/// credit) and the message is undeliverable.
async fn fallback(app: &App, item: &Item, why: &str) -> Result<Option<Delivery>, StoreError> {
    let b = &app.config.oa_bridge;
    let Some(template_id) = &b.fallback_template_id else {
        return Ok(None);
    };
    let openid = s(item, "openid");
    if crate::ledger::credits(&*app.store, AppKind::Oa, openid, template_id).await? < 1 {
        return Ok(None);
    }
    let time = app
        .config
        .notify
        .as_ref()
        .map(|n| format_time(n, app.now()))
        .unwrap_or_else(|| fallback_time(app));
    let vars = [
        ("sender", s(item, "agent")),
        ("preview", s(item, "text")),
        ("time", time.as_str()),
        ("count", "1"),
    ];
    let data = match render::render(&b.fallback_data, &vars) {
        Ok(d) => d,
        Err(e) => {
            let r = format!("{why}; fallback template_data: {e}");
            return undeliverable(app, item, &r).await.map(Some);
        }
    };
    let body = send::body(
        openid,
        template_id,
        &data,
        b.fallback_page.as_deref(),
        None,
        None,
    );
    let reason = format!("fallback_subscribe after {why}");
    match subscribe_outcome(app, item, AppKind::Oa, &body, Some(&reason)).await? {
        Delivery::Done => {
            // The fallback itself may have ended skipped/failed: tell the agent in that case
            // (a fallback parked until the daily quota resets has not ended).
            let now = outbox::get(&*app.store, outbox::id_of(item)).await?;
            let status = now.as_ref().and_then(|i| i.s("status")).unwrap_or("");
            if status != Status::Sent.as_str() && !Status::is_open(status) {
                queue_notice(app, item, why).await?;
            }
            Ok(Some(Delivery::Done))
        }
        retry => Ok(Some(retry)),
    }
}

fn fallback_time(app: &App) -> String {
    jiff::Timestamp::from_second(app.now())
        .map(|t| {
            t.to_zoned(jiff::tz::TimeZone::UTC)
                .strftime("%Y年%-m月%-d日 %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

/// Records the reply as undeliverable and, in the same transaction, queues the IM notice to the
/// agent who wrote it.
async fn undeliverable(app: &App, item: &Item, why: &str) -> Result<Delivery, StoreError> {
    let now = app.now();
    let reason = format!("undeliverable: {why}");
    let mut ws = vec![outbox::finish(
        outbox::id_of(item),
        Status::Failed,
        Some(&reason),
        vec![],
        now,
    )];
    ws.extend(notice_write(app, item, why));
    crate::due::watch_new(app, &mut ws);
    app.store.transact(ws).await?;
    obs::metric("CustomerServiceUndeliverable", &[("Reason", why)], 1.0);
    info!(outbox_id = %outbox::id_of(item), decision = "undeliverable", reason = %why);
    Ok(Delivery::Done)
}

async fn queue_notice(app: &App, item: &Item, why: &str) -> Result<(), StoreError> {
    if let Some(w) = notice_write(app, item, why) {
        match app.store.transact(crate::due::with_watch(app, w)).await {
            Ok(_) | Err(StoreError::ConditionFailed { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn notice_write(app: &App, item: &Item, why: &str) -> Option<Write> {
    let agent = item.s("agent").filter(|a| !a.is_empty())?;
    let explain = match why {
        w if w.starts_with("45015") => "the follower has not written in the last 48 hours",
        w if w.starts_with("45047") => {
            "the customer-service message limit for this conversation is used up"
        }
        _ => "WeChat refused it",
    };
    let text = format!(
        "Your reply to {} could not be delivered: {explain} (errcode {why}), and no subscribe-message credit was available. It will reach them when they write again.",
        s(item, "openid")
    );
    let id = outbox::id_for(&["agent_notice", outbox::id_of(item)]);
    Some(outbox::enqueue(
        &id,
        Kind::AgentNotice,
        vec![("to", Attr::from(agent)), ("text", Attr::from(text))],
        app.now(),
        app.config.outbox_retention_secs,
    ))
}
