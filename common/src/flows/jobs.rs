//! The outbox jobs other than merged notifications: admin subscribe sends, and the official
//! account bridge's IM imports/deletions, forwards to agents, customer-service replies (with the
//! subscribe-message fallback) and notices to agents. Each is one outbound call, classified:
//! retryable failures go back to the queue until the attempt limit, permanent ones are recorded.

use serde_json::Value;
use tracing::{info, warn};

use crate::app::App;
use crate::config::AppKind;
use crate::flows::bridge::{self, Fallback, NotForwarded, NotSent};
use crate::flows::send::{self, SendOutcome};
use crate::obs;
use crate::protocol::im::rest::{Deletion, ImApi, ImError, ImErrorClass};
use crate::protocol::wechat::api::ErrorClass;
use crate::protocol::wechat::render;
use crate::records::keys;
use crate::records::outbox::{self, Delivery, Kind, Status};
use crate::store::{Attr, Item, StoreError, Table};

fn s<'a>(item: &'a Item, k: &str) -> &'a str {
    item.s(k).unwrap_or("")
}

/// A stable 32-bit `MsgRandom` for an IM send, derived from the job id: a job retried after a
/// lost answer sends the same value, which IM recognises as a duplicate within the same second.
/// Beyond that second only our own state protects: a webhook retry writes no new job (the
/// deterministic id), and a job that ended is never claimed again.
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

/// Whether the attempt that just failed was the last one allowed.
fn out_of_attempts(app: &App, item: &Item) -> bool {
    item.n("attempts").unwrap_or(1) >= app.config.dispatch_max_attempts
}

/// Puts the job back in the queue for another attempt.
async fn release(
    app: &App,
    item: &Item,
    reason: &str,
    after_secs: u64,
) -> Result<Delivery, StoreError> {
    app.store
        .write(outbox::release(outbox::id_of(item), reason, app.now()))
        .await?;
    warn!(outbox_id = %outbox::id_of(item), kind = s(item, "kind"), decision = "retry", reason);
    Ok(Delivery::Retry { after_secs })
}

/// Retries until the attempt limit, then records the failure.
async fn retry_or_fail(
    app: &App,
    item: &Item,
    reason: &str,
    after_secs: u64,
) -> Result<Delivery, StoreError> {
    if out_of_attempts(app, item) {
        let r = format!("retries_exhausted: {reason}");
        return end(app, item, Status::Failed, Some(&r), vec![]).await;
    }
    release(app, item, reason, after_secs).await
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
            subscribe_sent(app, item, kind, template_id, &msgid, sent_reason).await
        }
        SendOutcome::NoCredit => end(app, item, Status::Skipped, Some("no_credit"), vec![]).await,
        SendOutcome::Failed { reason } => {
            end(app, item, Status::Failed, Some(&reason), vec![]).await
        }
        SendOutcome::Retry { reason, after_secs } => {
            retry_or_fail(app, item, &reason, after_secs).await
        }
        SendOutcome::Parked { reason, until } => {
            crate::flows::outcome::park(app, std::slice::from_ref(item), &reason, until).await
        }
        SendOutcome::MaybeSent { reason } => {
            end(app, item, Status::Failed, Some(&reason), vec![]).await
        }
    }
}

/// Ends a job whose subscribe message WeChat took, linking the msgid to it for the delivery
/// result event.
async fn subscribe_sent(
    app: &App,
    item: &Item,
    kind: AppKind,
    template_id: &str,
    msgid: &str,
    reason: Option<&str>,
) -> Result<Delivery, StoreError> {
    let now = app.now();
    let id = outbox::id_of(item);
    let mut ws = vec![outbox::finish(
        id,
        Status::Sent,
        reason,
        vec![("msgid", Attr::from(msgid))],
        now,
    )];
    if !msgid.is_empty() {
        ws.push(send::msg_record(
            kind,
            msgid,
            id,
            s(item, "openid"),
            template_id,
            now,
            app.config.outbox_retention_secs,
        ));
    }
    app.store.transact(ws).await?;
    obs::metric("SubscribeSent", &[("App", kind.as_str())], 1.0);
    Ok(Delivery::Done)
}

async fn im_job(app: &App, kind: Kind, item: &Item) -> Result<Delivery, StoreError> {
    let Some(im) = &app.im else {
        return end(app, item, Status::Failed, Some("im_not_configured"), vec![]).await;
    };
    let clock = &*app.clock;
    let id = outbox::id_of(item);
    match kind {
        Kind::Import => {
            let user = s(item, "user_id");
            // An unfollow recorded since this job was queued has its own deletion job, which
            // may already have run: importing now would bring back an account nobody uses.
            if follower_status(app, user).await?.as_deref() == Some("ended") {
                return end(app, item, Status::Skipped, Some("follower_left"), vec![]).await;
            }
            match im.account_import(user, item.s("nick"), clock).await {
                Ok(()) => end(app, item, Status::Sent, None, vec![]).await,
                Err(e) => im_failure(app, item, &e).await,
            }
        }
        Kind::Delete => delete_account(app, item, im).await,
        Kind::Forward => {
            let (from, to, text) = (s(item, "from"), s(item, "to"), s(item, "text"));
            let random = msg_random(id);
            let mut result = im.send_text(Some(from), to, text, random, clock).await;
            if let Err(e) = &result
                && e.class() == ImErrorClass::NeedsImport
            {
                // The follow's import has not run yet (or failed): do it now, then send.
                if let Err(e) = im.account_import(from, None, clock).await {
                    return forward_failure(app, item, &e).await;
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
                Err(e) => forward_failure(app, item, &e).await,
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

/// A forward that failed: retried while attempts remain, else recorded failed and, in the same
/// transaction, the agent it was for is told, so that a follower's message is never lost
/// silently.
async fn forward_failure(app: &App, item: &Item, e: &ImError) -> Result<Delivery, StoreError> {
    let why = match e.class() {
        ImErrorClass::Permanent => NotForwarded::Refused {
            code: e.code(),
            reason: e.reason(),
        },
        _ if out_of_attempts(app, item) => NotForwarded::RetriesExhausted {
            attempts: item.n("attempts").unwrap_or(1),
            reason: e.reason(),
        },
        _ => return release(app, item, &e.reason(), 2).await,
    };
    let id = outbox::id_of(item);
    let reason = why.reason();
    let (from, to) = (s(item, "from"), s(item, "to"));
    let mut ws = vec![outbox::finish(
        id,
        Status::Failed,
        Some(&reason),
        vec![],
        app.now(),
    )];
    ws.extend(bridge::forward_notice(app, id, to, from, s(item, "text"), &why).writes());
    app.store.transact(ws).await?;
    obs::metric("ForwardsFailed", &[("Reason", why.label())], 1.0);
    warn!(outbox_id = %id, kind = s(item, "kind"), decision = "failed", reason = %reason, "agent told");
    Ok(Delivery::Done)
}

/// The status of an official-account follower's conversation (`active`, `ended`), if any.
async fn follower_status(app: &App, openid: &str) -> Result<Option<String>, StoreError> {
    Ok(app
        .store
        .get(Table::State, &keys::conversation(openid), keys::ONE)
        .await?
        .and_then(|c| c.s("status").map(str::to_owned)))
}

/// The IM account of a follower who unfollowed. They may have followed again since: then their
/// new import may already have run, and the deletion must not take the account away.
async fn delete_account(app: &App, item: &Item, im: &ImApi) -> Result<Delivery, StoreError> {
    let user = s(item, "user_id");
    if follower_status(app, user).await?.as_deref() == Some("active") {
        return end(
            app,
            item,
            Status::Skipped,
            Some("follower_active_again"),
            vec![],
        )
        .await;
    }
    match im.account_delete(user, &*app.clock).await {
        Ok(Deletion::Deleted) => {
            // A follow recorded while the deletion was in flight: its import may have run just
            // before, so import once more rather than leave the follower without an account.
            if follower_status(app, user).await?.as_deref() == Some("active") {
                let id = outbox::id_of(item);
                let now = app.now();
                let mut ws = vec![outbox::finish(
                    id,
                    Status::Sent,
                    Some("deleted_then_reimport_queued"),
                    vec![],
                    now,
                )];
                ws.extend(
                    outbox::enqueue(
                        &outbox::id_for(&["reimport", id]),
                        Kind::Import,
                        vec![("user_id", Attr::from(user))],
                        app.queueing(),
                    )
                    .writes(),
                );
                app.store.transact(ws).await?;
                warn!(outbox_id = %id, decision = "reimport_queued", reason = "follower_active_again");
                return Ok(Delivery::Done);
            }
            end(app, item, Status::Sent, Some("deleted"), vec![]).await
        }
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
    }
}

/// An agent's reply to an official-account follower. Outside the 48-hour window (45015) or over
/// its message count (45047) it falls back to a subscribe message when the follower has a
/// credit; whatever stops it is recorded on the job and told to the agent in IM.
async fn customer_service(app: &App, item: &Item) -> Result<Delivery, StoreError> {
    let openid = s(item, "openid");
    // Queued while the follower was there; if they have left since, WeChat would only refuse
    // it, and a fallback notification would go to someone who left.
    match follower_status(app, openid).await?.as_deref() {
        Some("active") => {}
        Some("ended") => return not_sent(app, item, NotSent::Unfollowed).await,
        _ => return not_sent(app, item, NotSent::NotActive).await,
    }
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
        if out_of_attempts(app, item) {
            let attempts = item.n("attempts").unwrap_or(1);
            return not_sent(app, item, NotSent::RetriesExhausted { attempts, reason }).await;
        }
        return release(app, item, &reason, after_secs).await;
    }
    match e.errcode() {
        Some(errcode @ (45015 | 45047)) => fallback(app, item, errcode).await,
        _ => not_sent(app, item, NotSent::Refused { reason }).await,
    }
}

/// The subscribe-message fallback for a reply WeChat's window refused.
async fn fallback(app: &App, item: &Item, errcode: i64) -> Result<Delivery, StoreError> {
    let closed = |fallback| NotSent::WindowClosed { errcode, fallback };
    let b = &app.config.oa_bridge;
    let Some(template_id) = &b.fallback_template_id else {
        return not_sent(app, item, closed(Fallback::NotConfigured)).await;
    };
    let openid = s(item, "openid");
    if crate::records::subscription::credits(&*app.store, AppKind::Oa, openid, template_id).await?
        < 1
    {
        return not_sent(app, item, closed(Fallback::NoCredit)).await;
    }
    let time = app
        .config
        .notify
        .as_ref()
        .map(|n| n.format_time(app.now()))
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
            return not_sent(app, item, closed(Fallback::InvalidData(e.to_string()))).await;
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
    match send::send(app, AppKind::Oa, openid, template_id, &body).await? {
        SendOutcome::Sent { msgid } => {
            let reason = format!("fallback_subscribe after {errcode}");
            subscribe_sent(app, item, AppKind::Oa, template_id, &msgid, Some(&reason)).await
        }
        // Spent by another send since the check above.
        SendOutcome::NoCredit => not_sent(app, item, closed(Fallback::NoCredit)).await,
        // A send WeChat may have taken is not retried; the agent hears it may not have arrived.
        SendOutcome::Failed { reason } | SendOutcome::MaybeSent { reason } => {
            not_sent(app, item, closed(Fallback::Failed(reason))).await
        }
        // The daily quota: the reply waits for its reset; nothing has ended, so no notice yet.
        SendOutcome::Parked { reason, until } => {
            crate::flows::outcome::park(app, std::slice::from_ref(item), &reason, until).await
        }
        SendOutcome::Retry { reason, after_secs } => {
            if out_of_attempts(app, item) {
                let r = format!("retries_exhausted: {reason}");
                return not_sent(app, item, closed(Fallback::Failed(r))).await;
            }
            release(app, item, &reason, after_secs).await
        }
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

/// Ends a reply that did not reach the follower and, in the same transaction, queues the IM
/// notice telling the agent who wrote it (a notice's own failure tells no one: no loops).
async fn not_sent(app: &App, item: &Item, why: NotSent) -> Result<Delivery, StoreError> {
    let id = outbox::id_of(item);
    let reason = why.reason();
    let mut ws = vec![outbox::finish(
        id,
        why.status(),
        Some(&reason),
        vec![],
        app.now(),
    )];
    if let Some(agent) = item.s("agent").filter(|a| !a.is_empty()) {
        ws.extend(bridge::reply_notice(app, id, agent, s(item, "openid"), &why).writes());
    }
    app.store.transact(ws).await?;
    obs::metric(
        "CustomerServiceUndeliverable",
        &[("Reason", why.label())],
        1.0,
    );
    info!(outbox_id = %id, kind = s(item, "kind"), decision = why.status().as_str(), reason = %reason);
    Ok(Delivery::Done)
}
