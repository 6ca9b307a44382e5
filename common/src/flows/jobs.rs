//! The outbox jobs other than merged notifications: admin subscribe sends, and the official
//! account bridge's IM imports/deletions, forwards to agents, customer-service replies (with the
//! subscribe-message fallback) and notices to agents. Each is one outbound call, classified:
//! retryable failures go back to the queue until the attempt limit, permanent ones are recorded.
//!
//! **At most once.** A customer-service reply whose request may have reached WeChat without an
//! answer coming back (a timeout after sending, a broken connection, a gateway's 504) is not
//! retried: WeChat has no idempotency key, and a retry could show the follower the reply twice.
//! It ends `failed` with `maybe_sent: …`, and the agent is told it may not have arrived. The same
//! holds for every job whose claim had to be taken over ([`crate::flows::dispatch`]).

use serde_json::Value;
use tracing::{info, warn};

use crate::app::App;
use crate::config::AppKind;
use crate::flows::bridge::{self, Closed, Fallback, NotForwarded, NotSent};
use crate::flows::outcome::{self, end, out_of_attempts, release, retry_or_fail};
use crate::flows::send::{self, SendOutcome};
use crate::obs;
use crate::protocol::im::rest::{Deletion, ImApi, ImError, ImErrorClass};
use crate::protocol::wechat::api::ErrorClass;
use crate::protocol::wechat::{media, render};
use crate::records::conversation::{self, Chat, Status as ConvStatus};
use crate::records::outbox::{self, AdminSend, Delivery, Job, OutboxItem, Results, Status};
use crate::records::{delivery, kf_burst};
use crate::store::StoreError;

/// A stable 32-bit `MsgRandom` for an IM send, derived from the job id: a job retried after a
/// lost answer sends the same value, which IM recognises as a duplicate within the same second.
/// Beyond that second only our own state protects: a webhook retry writes no new job (the
/// deterministic id), and a job that ended is never claimed again.
pub fn msg_random(id: &str) -> u32 {
    u32::from_str_radix(id.get(..8).unwrap_or("0"), 16).unwrap_or(0)
}

async fn im_failure(app: &App, item: &OutboxItem, e: &ImError) -> Result<Delivery, StoreError> {
    match e.class() {
        ImErrorClass::Retryable | ImErrorClass::Resign | ImErrorClass::NeedsImport => {
            retry_or_fail(app, item, &e.reason(), 2).await
        }
        ImErrorClass::Permanent => {
            end(
                app,
                item,
                Status::Failed,
                Some(&e.reason()),
                Results::default(),
            )
            .await
        }
    }
}

pub async fn perform(app: &App, item: &OutboxItem) -> Result<Delivery, StoreError> {
    match &item.job {
        Job::Send(s) => admin_send(app, item, s).await,
        Job::CustomerService { .. } => replies(app, std::slice::from_ref(item)).await,
        Job::Typing {
            app: kind,
            im_user,
            openid,
            ..
        } => typing(app, item, Chat::of(*kind, im_user), openid).await,
        Job::LateReply {
            app: kind,
            openid,
            text,
        } => late_reply(app, item, *kind, openid, text).await,
        Job::Import { .. } | Job::Delete { .. } | Job::Forward { .. } | Job::AgentNotice { .. } => {
            im_job(app, item).await
        }
        Job::Notify(_) | Job::Unreadable(_) => Err(StoreError::Invalid(
            "notifications are delivered in groups, unreadable items ended by the dispatcher"
                .into(),
        )),
    }
}

async fn admin_send(app: &App, item: &OutboxItem, s: &AdminSend) -> Result<Delivery, StoreError> {
    let data: Value = serde_json::from_str(&s.data).unwrap_or(Value::Null);
    let body = send::body(
        &s.openid,
        &s.template_id,
        &data,
        s.page.as_deref(),
        s.miniprogram_state.as_deref(),
        s.lang.as_deref(),
    );
    match send::send(app, s.app, &s.openid, &s.template_id, &body).await? {
        SendOutcome::Sent { msgid } => {
            subscribe_sent(
                app,
                item,
                (s.app, &s.openid, &s.template_id),
                &msgid,
                None,
                vec![],
            )
            .await
        }
        SendOutcome::NoCredit => {
            end(
                app,
                item,
                Status::Skipped,
                Some("no_credit"),
                Results::default(),
            )
            .await
        }
        SendOutcome::Failed { reason } | SendOutcome::MaybeSent { reason } => {
            end(app, item, Status::Failed, Some(&reason), Results::default()).await
        }
        SendOutcome::Retry { reason, after_secs } => {
            retry_or_fail(app, item, &reason, after_secs).await
        }
        SendOutcome::Parked { reason, until } => {
            outcome::park(app, std::slice::from_ref(item), &reason, until).await
        }
    }
}

/// Ends a job whose subscribe message WeChat took, linking the msgid to it for the delivery
/// result event.
async fn subscribe_sent(
    app: &App,
    item: &OutboxItem,
    (kind, openid, template_id): (AppKind, &str, &str),
    msgid: &str,
    reason: Option<&str>,
    also: Vec<crate::store::Write>,
) -> Result<Delivery, StoreError> {
    let now = app.now();
    let mut ws = also;
    ws.push(outbox::finish(
        &item.id,
        Status::Sent,
        reason,
        Results::msgid(msgid),
        now,
    ));
    if !msgid.is_empty() {
        ws.push(delivery::sent(
            kind,
            msgid,
            &item.id,
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

async fn im_job(app: &App, item: &OutboxItem) -> Result<Delivery, StoreError> {
    let Some(im) = &app.im else {
        return end(
            app,
            item,
            Status::Failed,
            Some("im_not_configured"),
            Results::default(),
        )
        .await;
    };
    let clock = &*app.clock;
    let random = msg_random(&item.id);
    match &item.job {
        Job::Import { user_id, nick } => {
            // An unfollow recorded since this job was queued has its own deletion job, which
            // may already have run: importing now would bring back an account nobody uses.
            if follower_status(app, user_id).await? == Some(ConvStatus::Ended) {
                return end(
                    app,
                    item,
                    Status::Skipped,
                    Some("follower_left"),
                    Results::default(),
                )
                .await;
            }
            match im.account_import(user_id, nick.as_deref(), clock).await {
                Ok(()) => end(app, item, Status::Sent, None, Results::default()).await,
                Err(e) => im_failure(app, item, &e).await,
            }
        }
        Job::Delete { user_id } => delete_account(app, item, user_id, im).await,
        Job::Forward {
            from,
            to,
            text,
            image_url,
        } => {
            let Some(to) = to else {
                return end(
                    app,
                    item,
                    Status::Skipped,
                    Some("no_agent_configured"),
                    Results::default(),
                )
                .await;
            };
            match sent_before(item, im, Some(from), to, clock).await {
                Ok(Some(key)) => return resend_avoided(app, item, &key).await,
                Ok(None) => {}
                Err(e) => return forward_failure(app, item, from, to, text, &e).await,
            }
            let send = || async {
                match image_url {
                    Some(url) => im.send_image(Some(from), to, url, random, clock).await,
                    None => im.send_text(Some(from), to, text, random, clock).await,
                }
            };
            let mut result = send().await;
            if let Err(e) = &result
                && e.class() == ImErrorClass::NeedsImport
            {
                // The follow's import has not run yet (or failed): do it now, then send.
                if let Err(e) = im.account_import(from, None, clock).await {
                    return forward_failure(app, item, from, to, text, &e).await;
                }
                result = send().await;
            }
            match result {
                Ok(key) => end(app, item, Status::Sent, None, Results::msg_key(&key)).await,
                Err(e) => forward_failure(app, item, from, to, text, &e).await,
            }
        }
        Job::AgentNotice { to, text } => {
            match sent_before(item, im, None, to, clock).await {
                Ok(Some(key)) => return resend_avoided(app, item, &key).await,
                Ok(None) => {}
                Err(e) => return im_failure(app, item, &e).await,
            }
            match im.send_text(None, to, text, random, clock).await {
                Ok(key) => end(app, item, Status::Sent, None, Results::msg_key(&key)).await,
                Err(e) => im_failure(app, item, &e).await,
            }
        }
        _ => Err(StoreError::Invalid("not an IM job".into())),
    }
}

/// Whether an earlier attempt of this IM send arrived although its answer was lost (a timeout,
/// a broken connection, a 5xx, a claim taken over from a dispatcher that went silent): IM's
/// history is read before every attempt after the first, so that a late retry, which IM itself
/// would deliver again, is not a second message. First attempts send straight away.
async fn sent_before(
    item: &OutboxItem,
    im: &ImApi,
    from: Option<&str>,
    to: &str,
    clock: &dyn crate::clock::Clock,
) -> Result<Option<String>, ImError> {
    if item.attempts <= 1 {
        return Ok(None);
    }
    let since = item.created_at - crate::protocol::im::rest::HISTORY_SLACK_SECS;
    im.find_message(from, to, msg_random(&item.id), since, clock)
        .await
}

async fn resend_avoided(app: &App, item: &OutboxItem, key: &str) -> Result<Delivery, StoreError> {
    obs::metric("ResendsAvoided", &[("Kind", item.kind_str())], 1.0);
    info!(outbox_id = %item.id, kind = item.kind_str(), decision = "sent", "an earlier attempt arrived: found in IM's history, not sent again");
    end(app, item, Status::Sent, None, Results::msg_key(key)).await
}

/// IM sends whose retry checks IM's history first ([`sent_before`]), so that even a job taken
/// over from a stale claim can be performed instead of ending `maybe_sent`.
pub fn resends_safely(job: &Job) -> bool {
    matches!(job, Job::Forward { .. } | Job::AgentNotice { .. })
}

/// A forward that failed: retried while attempts remain, else recorded failed and, in the same
/// transaction, the agent it was for is told, so that a follower's message is never lost
/// silently.
async fn forward_failure(
    app: &App,
    item: &OutboxItem,
    from: &str,
    to: &str,
    text: &str,
    e: &ImError,
) -> Result<Delivery, StoreError> {
    let why = match e.class() {
        ImErrorClass::Permanent => NotForwarded::Refused {
            code: e.code(),
            reason: e.reason(),
        },
        _ if out_of_attempts(app, item) => NotForwarded::RetriesExhausted {
            attempts: item.attempts.max(1),
            reason: e.reason(),
        },
        _ => return release(app, item, &e.reason(), 2).await,
    };
    let reason = why.reason();
    let mut ws = vec![outbox::finish(
        &item.id,
        Status::Failed,
        Some(&reason),
        Results::default(),
        app.now(),
    )];
    ws.extend(bridge::forward_notice(app, &item.id, to, from, text, &why).writes());
    app.store.transact(ws).await?;
    obs::metric("ForwardsFailed", &[("Reason", why.label())], 1.0);
    warn!(outbox_id = %item.id, kind = item.kind_str(), decision = "failed", reason = %reason, "agent told");
    Ok(Delivery::Done)
}

/// The status of an official-account follower's conversation, if any.
async fn follower_status(app: &App, openid: &str) -> Result<Option<ConvStatus>, StoreError> {
    Ok(conversation::get(&*app.store, Chat::oa(openid))
        .await?
        .and_then(|c| c.status))
}

/// The IM account of a follower who unfollowed. They may have followed again since: then their
/// new import may already have run, and the deletion must not take the account away.
async fn delete_account(
    app: &App,
    item: &OutboxItem,
    user: &str,
    im: &ImApi,
) -> Result<Delivery, StoreError> {
    let skipped = |reason| end(app, item, Status::Skipped, Some(reason), Results::default());
    if follower_status(app, user).await? == Some(ConvStatus::Active) {
        return skipped("follower_active_again").await;
    }
    match im.account_delete(user, &*app.clock).await {
        Ok(Deletion::Deleted) => {
            // A follow recorded while the deletion was in flight: its import may have run just
            // before, so import once more rather than leave the follower without an account.
            if follower_status(app, user).await? == Some(ConvStatus::Active) {
                let now = app.now();
                let mut ws = vec![outbox::finish(
                    &item.id,
                    Status::Sent,
                    Some("deleted_then_reimport_queued"),
                    Results::default(),
                    now,
                )];
                let reimport = Job::Import {
                    user_id: user.to_owned(),
                    nick: None,
                };
                ws.extend(
                    outbox::enqueue(
                        &outbox::id_for(&["reimport", &item.id]),
                        &reimport,
                        app.queueing(),
                    )
                    .writes(),
                );
                app.store.transact(ws).await?;
                warn!(outbox_id = %item.id, decision = "reimport_queued", reason = "follower_active_again");
                return Ok(Delivery::Done);
            }
            end(app, item, Status::Sent, Some("deleted"), Results::default()).await
        }
        Ok(Deletion::NotFound) => {
            end(
                app,
                item,
                Status::Sent,
                Some("account_not_found"),
                Results::default(),
            )
            .await
        }
        // Only the Trial edition may delete accounts; the account stays, marked inactive by
        // the unsubscribe that queued this job.
        Ok(Deletion::NotAllowed) => skipped("kept_inactive_71000").await,
        Err(e) => im_failure(app, item, &e).await,
    }
}

/// Who a customer-service reply is for, and from.
#[derive(Debug, Clone, Copy)]
struct Reply<'a> {
    kind: AppKind,
    im_user: &'a str,
    openid: &'a str,
    agent: &'a str,
}

impl<'a> Reply<'a> {
    fn of(job: &'a Job) -> Option<Reply<'a>> {
        match job {
            Job::CustomerService {
                app,
                im_user,
                openid,
                agent,
                ..
            } => Some(Reply {
                kind: *app,
                im_user,
                openid,
                agent,
            }),
            _ => None,
        }
    }

    fn image(job: &Job) -> Option<&str> {
        match job {
            Job::CustomerService {
                image_url: Some(u), ..
            } => Some(u),
            _ => None,
        }
    }

    fn chat(&self) -> Chat<'a> {
        Chat::of(self.kind, self.im_user)
    }

    fn who(&self) -> String {
        bridge::who(self.kind, self.openid)
    }
}

/// WeChat's limit on a customer-service text (2048 bytes, as the official account's doc gives
/// it): a burst is merged only up to it, and the replies beyond go in the next message.
const MERGED_TEXT_MAX_BYTES: usize = 2048;

/// An agent's reply, with the other replies of its burst still waiting (see `KF_MERGE_SECS`):
/// taken into this one's send, in the order the agent wrote them, as one customer-service
/// message that spends one reply of WeChat's allowance. Each merged reply then ends as this one
/// did, naming it (`merged_into`); the agent hears of a failure once, for the burst.
///
/// `claimed` are replies of one agent to one follower that this dispatcher holds already (one
/// stream batch can carry several of a burst); the first speaks for them all.
pub async fn replies(app: &App, claimed: &[OutboxItem]) -> Result<Delivery, StoreError> {
    let Some(item) = claimed.first() else {
        return Ok(Delivery::Done);
    };
    let (Some(r), Job::CustomerService { text, .. }) = (Reply::of(&item.job), &item.job) else {
        return Err(StoreError::Invalid("not a customer-service reply".into()));
    };
    let agent = r.agent;
    if Reply::image(&item.job).is_some() {
        return customer_service(app, item, r, text).await;
    }
    let text_of = |i: &OutboxItem| match &i.job {
        Job::CustomerService { text, .. } => text.clone(),
        _ => String::new(),
    };
    let now = app.now();
    let waiting = if app.config.oa_bridge.merge_secs > 0 {
        kf_burst::waiting(&*app.store, r.kind, r.im_user).await?
    } else {
        vec![]
    };
    let order = |i: &OutboxItem| {
        waiting
            .iter()
            .find(|e| e.id == i.id)
            .map_or((i.created_at, 0), |e| e.order)
    };
    let mut parts: Vec<((i64, u64), String)> = vec![(order(item), text.clone())];
    let mut taken: Vec<OutboxItem> = vec![];
    let mut bytes = text.len();
    for c in &claimed[1..] {
        bytes += 1 + text_of(c).len();
        parts.push((order(c), text_of(c)));
        taken.push(c.clone());
    }
    let held: Vec<&str> = claimed.iter().map(|c| c.id.as_str()).collect();
    for e in waiting
        .iter()
        .filter(|e| !held.contains(&e.id.as_str()) && e.agent == agent)
    {
        // Peeked first so that a reply too long to fit is left queued for its own send.
        let Some(peek) = outbox::read(&*app.store, &e.id).await? else {
            continue;
        };
        // A picture goes as a message of its own.
        let Job::CustomerService {
            text: t,
            image_url: None,
            ..
        } = &peek.job
        else {
            continue;
        };
        if peek.status != Status::Queued || bytes + 1 + t.len() > MERGED_TEXT_MAX_BYTES {
            continue;
        }
        if let Some(part) = outbox::take_for_merge(&*app.store, &e.id, now).await? {
            bytes += 1 + t.len();
            parts.push((e.order, t.clone()));
            taken.push(part);
        }
    }
    if taken.is_empty() {
        return customer_service(app, item, r, text).await;
    }
    parts.sort_by_key(|p| p.0);
    let merged: Vec<&str> = parts.iter().map(|p| p.1.as_str()).collect();
    let delivery = customer_service(app, item, r, &merged.join("\n")).await?;
    obs::metric("AgentRepliesMerged", &[], taken.len() as f64);
    follow(app, item, &taken).await?;
    Ok(delivery)
}

/// The replies merged into `head` end as it did (or go back to the queue with it).
async fn follow(app: &App, head: &OutboxItem, taken: &[OutboxItem]) -> Result<(), StoreError> {
    let Some(h) = outbox::read(&*app.store, &head.id).await? else {
        return Ok(());
    };
    let now = app.now();
    let error = h.last_error.clone().unwrap_or_default();
    let ws: Vec<_> = taken
        .iter()
        .filter_map(|p| match h.status {
            Status::Sent | Status::Skipped | Status::Failed => Some(outbox::finish(
                &p.id,
                h.status,
                h.reason.as_deref(),
                Results {
                    merged_into: Some(head.id.clone()),
                    ..Results::default()
                },
                now,
            )),
            Status::Queued => Some(match h.not_before {
                Some(until) => outbox::park(&p.id, &error, until, now),
                None => outbox::release(&p.id, &error, now),
            }),
            // The head's own end was not recorded (the store failed): the merged replies' claims
            // go stale like its own, and are reported as possibly sent.
            Status::Sending => None,
        })
        .collect();
    if !ws.is_empty() {
        app.store.transact(ws).await?;
    }
    for p in taken {
        info!(outbox_id = %p.id, kind = p.kind_str(), decision = h.status.as_str(), merged_into = %head.id);
    }
    Ok(())
}

/// An agent's reply to an official-account follower. It spends one reply of WeChat's allowance
/// before it is sent (a conditional decrement); when the allowance is used up or expired it is
/// not sent to WeChat, which would only refuse it, but goes to the subscribe-message fallback.
/// WeChat's own refusals (45015/45047) correct the stored allowance and fall back the same way;
/// whatever stops a reply is recorded on the job and told to the agent in IM.
async fn customer_service(
    app: &App,
    item: &OutboxItem,
    r: Reply<'_>,
    text: &str,
) -> Result<Delivery, StoreError> {
    let (openid, agent) = (r.openid, r.agent);
    // Queued while the follower was there; if they have left since, WeChat would only refuse
    // it, and a fallback notification would go to someone who left.
    let conv = conversation::get(&*app.store, r.chat()).await?;
    match conv.as_ref().and_then(|c| c.status) {
        Some(ConvStatus::Active) => {}
        Some(ConvStatus::Ended) => return not_sent(app, item, NotSent::Unfollowed).await,
        None => return not_sent(app, item, NotSent::NotActive).await,
    }
    let now = app.now();
    // An allowance nobody recorded (a conversation from before it was tracked): WeChat decides.
    let seen = conv.and_then(|c| c.allowance);
    let spent = match seen {
        None => None,
        Some(mut current) => {
            let mut after = None;
            // Twice: a concurrent reply may take the last one between the read and the spend,
            // or a new action of the follower's open a new allowance.
            for _ in 0..2 {
                if !current.open(now) {
                    return closed(app, item, r, text, Closed::Known(current)).await;
                }
                after = conversation::spend(&*app.store, r.chat(), now).await?;
                if after.is_some() {
                    break;
                }
                current = conversation::get(&*app.store, r.chat())
                    .await?
                    .and_then(|c| c.allowance)
                    .unwrap_or(conversation::Allowance { left: 0, ..current });
            }
            match after {
                Some(a) => Some(a),
                None => {
                    let c = Closed::Known(conversation::Allowance { left: 0, ..current });
                    return closed(app, item, r, text, c).await;
                }
            }
        }
    };
    // An agent's picture goes as a picture when it can; otherwise its summary (with the link).
    let image = match Reply::image(&item.job) {
        Some(url) => image_media(app, r.kind, url).await,
        None => Err("not_an_image"),
    };
    let (body, degraded) = match image {
        Ok(media_id) => (
            serde_json::json!({ "touser": openid, "msgtype": "image", "image": { "media_id": media_id } }),
            None,
        ),
        Err(why) => (
            serde_json::json!({ "touser": openid, "msgtype": "text", "text": { "content": text } }),
            Reply::image(&item.job).map(|_| format!("image_sent_as_link: {why}")),
        ),
    };
    let api = &app.wechat;
    let body_ref = &body;
    let result = app
        .wechat_call(r.kind, |token| async move {
            api.send_custom(&token, body_ref).await
        })
        .await;
    let e = match result {
        Ok(()) => {
            obs::metric("CustomerServiceSent", &[], 1.0);
            let now = app.now();
            // The exchange the typing state needs (45080 without one in the last 30 s).
            let mut ws = vec![
                outbox::finish(
                    &item.id,
                    Status::Sent,
                    degraded.as_deref(),
                    Results::default(),
                    now,
                ),
                conversation::replied(r.chat(), now),
            ];
            if let Some(a) = spent.filter(|a| a.left < 1)
                && !agent.is_empty()
            {
                ws.extend(bridge::last_reply_notice(app, &item.id, agent, &r.who(), &a).writes());
            }
            app.store.transact(ws).await?;
            info!(outbox_id = %item.id, kind = item.kind_str(), decision = "sent");
            return Ok(Delivery::Done);
        }
        Err(e) => e,
    };
    let reason = e.reason();
    if e.may_have_been_delivered() {
        // WeChat may have counted it: the reply stays spent.
        return not_sent(app, item, NotSent::MaybeSent { reason }).await;
    }
    let window_closed = matches!(e.errcode(), Some(45015 | 45047));
    if let Some(a) = spent.filter(|_| !window_closed) {
        // WeChat did not take it, so it did not count it either.
        give_back(app, r.chat(), &a).await?;
    }
    if let ErrorClass::Retryable { after_secs } = e.class() {
        if out_of_attempts(app, item) {
            let attempts = item.attempts.max(1);
            return not_sent(app, item, NotSent::RetriesExhausted { attempts, reason }).await;
        }
        return release(app, item, &reason, after_secs).await;
    }
    match e.errcode() {
        Some(errcode @ (45015 | 45047)) => {
            // What WeChat says wins over what was counted here.
            if let Err(e) = app
                .store
                .write(conversation::refused(
                    r.chat(),
                    seen.as_ref(),
                    errcode,
                    app.now(),
                ))
                .await
                && !e.is_condition_failed()
            {
                return Err(e);
            }
            let window = seen.map_or(0, |a| a.at);
            let c = Closed::Refused { errcode, window };
            closed(app, item, r, text, c).await
        }
        _ => not_sent(app, item, NotSent::Refused { reason }).await,
    }
}

/// The `media_id` of an agent's picture for `kind`: downloaded only from a host of IM's image
/// storage (`IM_MEDIA_URL_HOSTS`), at most WeChat's size limit, checked to be a PNG, JPEG or GIF
/// served as an image, then uploaded as temporary media. Why not, as a short reason.
async fn image_media(app: &App, kind: AppKind, url: &str) -> Result<String, &'static str> {
    if !app.config.oa_bridge.media_host_allowed(url) {
        return Err("host_not_allowed");
    }
    let max = media::max_image_bytes(kind);
    let allowed = |u: &str| app.config.oa_bridge.media_host_allowed(u);
    let (bytes, content_type) = match app.wechat.fetch_media(url, max, allowed).await {
        Ok(Some(got)) => got,
        Ok(None) => return Err("too_large"),
        Err(_) => return Err("download_failed"),
    };
    let format = media::check(kind, &bytes, content_type.as_deref()).map_err(|e| match e {
        media::ImageRefused::Empty => "empty",
        media::ImageRefused::TooLarge => "too_large",
        media::ImageRefused::NotAnImage => "not_an_image",
        media::ImageRefused::Unsupported => "unsupported_format",
    })?;
    let api = &app.wechat;
    let bytes = &bytes;
    app.wechat_call(kind, |token| async move {
        api.upload_image(&token, bytes, format).await
    })
    .await
    .map_err(|e| {
        warn!(reason = %e.reason(), "image upload refused; the picture goes as a link");
        "upload_failed"
    })
}

/// Returns a spent reply to the allowance it came from (a newer allowance is left alone).
async fn give_back(
    app: &App,
    chat: Chat<'_>,
    a: &conversation::Allowance,
) -> Result<(), StoreError> {
    match app.store.write(conversation::give_back(chat, a)).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_condition_failed() => Ok(()),
        Err(e) => Err(e),
    }
}

/// WeChat's typing state for a follower. It means something only for the 15 s it lasts, so it is
/// tried once: a job that waited longer is skipped, and any failure is recorded, never retried
/// (no agent notice: nothing the agent wrote was lost).
async fn typing(
    app: &App,
    item: &OutboxItem,
    chat: Chat<'_>,
    openid: &str,
) -> Result<Delivery, StoreError> {
    let quiet = |status, reason: String| async move {
        end(app, item, status, Some(&reason), Results::default()).await
    };
    if app.now() - item.created_at >= conversation::TYPING_SECS {
        return quiet(Status::Skipped, "stale".into()).await;
    }
    let status = conversation::get(&*app.store, chat)
        .await?
        .and_then(|c| c.status);
    if status != Some(ConvStatus::Active) {
        return quiet(Status::Skipped, "conversation_not_active".into()).await;
    }
    let api = &app.wechat;
    let kind = chat.app;
    let result = app
        .wechat_call(kind, |token| async move {
            api.typing(&token, kind, openid, "Typing").await
        })
        .await;
    match result {
        Ok(()) => {
            obs::metric("TypingShown", &[], 1.0);
            end(app, item, Status::Sent, None, Results::default()).await
        }
        Err(e) => quiet(Status::Failed, e.reason()).await,
    }
}

/// A passive reply that could not be given when its push arrived (the store was down and the
/// push was spooled), sent as a customer-service message once the push is applied. Nobody waits
/// on it in IM, so nobody is told of a failure: it is recorded on the item. At most once, like
/// every message that reaches someone: a send that may have reached WeChat is not retried.
async fn late_reply(
    app: &App,
    item: &OutboxItem,
    kind: AppKind,
    openid: &str,
    text: &str,
) -> Result<Delivery, StoreError> {
    // A passive reply spends nothing; sent late as a customer-service message it spends one
    // reply of the allowance the same push opened, like an agent's reply. A follower's
    // conversation is keyed by the openid; a mini-program user's by their IM account, which a
    // late reply does not carry, so there WeChat alone decides.
    let chat = (kind == AppKind::Oa).then(|| conversation::Chat::oa(openid));
    let mut spent = None;
    if let Some(chat) = chat
        && let Some(current) = conversation::get(&*app.store, chat)
            .await?
            .and_then(|c| c.allowance)
    {
        match conversation::spend(&*app.store, chat, app.now()).await? {
            Some(_) => spent = Some(current),
            None => {
                return end(
                    app,
                    item,
                    Status::Skipped,
                    Some("allowance_closed"),
                    Results::default(),
                )
                .await;
            }
        }
    }
    let body =
        serde_json::json!({ "touser": openid, "msgtype": "text", "text": { "content": text } });
    let api = &app.wechat;
    let body_ref = &body;
    let result = app
        .wechat_call(kind, |token| async move {
            api.send_custom(&token, body_ref).await
        })
        .await;
    let e = match result {
        Ok(()) => {
            obs::metric("LateRepliesSent", &[("App", kind.as_str())], 1.0);
            return end(app, item, Status::Sent, None, Results::default()).await;
        }
        Err(e) => e,
    };
    let reason = e.reason();
    if e.may_have_been_delivered() {
        let reason = format!("maybe_sent: {reason}");
        return end(app, item, Status::Failed, Some(&reason), Results::default()).await;
    }
    if let (Some(chat), Some(a)) = (chat, &spent) {
        // WeChat certainly did not take it: the reply goes back to the allowance it came from.
        match app.store.write(conversation::give_back(chat, a)).await {
            Ok(_) | Err(StoreError::ConditionFailed { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    match e.class() {
        ErrorClass::Retryable { after_secs } => retry_or_fail(app, item, &reason, after_secs).await,
        _ => end(app, item, Status::Failed, Some(&reason), Results::default()).await,
    }
}

/// Ends a reply whose outcome is unknown (see the module docs) and tells the agent.
pub async fn maybe_sent(
    app: &App,
    item: &OutboxItem,
    reason: &str,
) -> Result<Delivery, StoreError> {
    let reason = reason
        .strip_prefix("maybe_sent: ")
        .unwrap_or(reason)
        .to_owned();
    not_sent(app, item, NotSent::MaybeSent { reason }).await
}

/// The subscribe-message fallback for a reply WeChat's allowance has no room for: one per closed
/// allowance (the first reply that finds it closed takes it), sent where the follower has a
/// credit; the agent is told either way.
async fn closed(
    app: &App,
    item: &OutboxItem,
    r: Reply<'_>,
    text: &str,
    closed: Closed,
) -> Result<Delivery, StoreError> {
    let (openid, agent) = (r.openid, r.agent);
    let fb = |fallback| NotSent::WindowClosed { closed, fallback };
    let b = &app.config.oa_bridge;
    // The fallback is the official account's subscribe notification (订阅通知); the mini
    // program has none configured here.
    let Some(template_id) = b
        .fallback_template_id
        .as_ref()
        .filter(|_| r.kind == AppKind::Oa)
    else {
        return not_sent(app, item, fb(Fallback::NotConfigured)).await;
    };
    if crate::records::subscription::credits(&*app.store, AppKind::Oa, openid, template_id).await?
        < 1
    {
        return not_sent(app, item, fb(Fallback::NoCredit)).await;
    }
    let time = app
        .config
        .notify
        .as_ref()
        .map(|n| n.format_time(app.now()))
        .unwrap_or_else(|| fallback_time(app));
    let vars = [
        ("sender", agent),
        ("preview", text),
        ("time", time.as_str()),
        ("count", "1"),
    ];
    let data = match render::render(&b.fallback_data, &vars) {
        Ok(d) => d,
        Err(e) => {
            return not_sent(app, item, fb(Fallback::InvalidData(e.to_string()))).await;
        }
    };
    match app
        .store
        .write(conversation::take_fallback(
            r.chat(),
            closed.window(),
            &item.id,
        ))
        .await
    {
        Ok(_) => {}
        Err(e) if e.is_condition_failed() => {
            return not_sent(app, item, fb(Fallback::AlreadySent)).await;
        }
        Err(e) => return Err(e),
    }
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
            let reason = format!("fallback_subscribe after {}", closed.code());
            let told = if agent.is_empty() {
                vec![]
            } else {
                bridge::fallback_notice(app, &item.id, agent, &r.who(), &closed)
                    .writes()
                    .into()
            };
            subscribe_sent(
                app,
                item,
                (AppKind::Oa, openid, template_id),
                &msgid,
                Some(&reason),
                told,
            )
            .await
        }
        // Spent by another send since the check above.
        SendOutcome::NoCredit => not_sent(app, item, fb(Fallback::NoCredit)).await,
        // A send WeChat may have taken is not retried; the agent hears it may not have arrived.
        SendOutcome::Failed { reason } | SendOutcome::MaybeSent { reason } => {
            not_sent(app, item, fb(Fallback::Failed(reason))).await
        }
        // The daily quota: the reply waits for its reset; nothing has ended, so no notice yet.
        SendOutcome::Parked { reason, until } => {
            outcome::park(app, std::slice::from_ref(item), &reason, until).await
        }
        SendOutcome::Retry { reason, after_secs } => {
            if out_of_attempts(app, item) {
                let r = format!("retries_exhausted: {reason}");
                return not_sent(app, item, fb(Fallback::Failed(r))).await;
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
async fn not_sent(app: &App, item: &OutboxItem, why: NotSent) -> Result<Delivery, StoreError> {
    let reason = why.reason();
    let mut ws = vec![outbox::finish(
        &item.id,
        why.status(),
        Some(&reason),
        Results::default(),
        app.now(),
    )];
    if let Some(r) = Reply::of(&item.job)
        && !r.agent.is_empty()
    {
        ws.extend(bridge::reply_notice(app, &item.id, r.agent, &r.who(), &why).writes());
    }
    app.store.transact(ws).await?;
    obs::metric(
        "CustomerServiceUndeliverable",
        &[("Reason", why.label())],
        1.0,
    );
    info!(outbox_id = %item.id, kind = item.kind_str(), decision = why.status().as_str(), reason = %reason);
    Ok(Delivery::Done)
}

#[cfg(all(test, feature = "embedded"))]
mod tests {
    use super::*;
    use crate::flows::testing::bench;

    #[tokio::test]
    async fn a_reply_to_a_follower_without_a_conversation_is_skipped_and_the_agent_told() {
        let b = bench(&[]);
        let job = Job::CustomerService {
            app: AppKind::Oa,
            im_user: "oZ".into(),
            openid: "oZ".into(),
            agent: "agent_bob".into(),
            text: "hello".into(),
            image_url: None,
        };
        b.commit(outbox::enqueue("kf1", &job, b.app.queueing()).writes())
            .await;
        let c = outbox::claim(&*b.app.store, "kf1", b.app.now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(perform(&b.app, &c.item).await.unwrap(), Delivery::Done);
        let item = b.item("kf1").await;
        assert_eq!(item.status, Status::Skipped);
        assert_eq!(item.reason.as_deref(), Some("conversation_not_active"));
        let told = b
            .outbox()
            .await
            .into_iter()
            .any(|i| matches!(&i.job, Job::AgentNotice { to, .. } if to == "agent_bob"));
        assert!(told);
    }

    #[tokio::test]
    async fn a_retaken_reply_is_reported_to_its_agent_as_uncertain() {
        let b = bench(&[]);
        let job = Job::CustomerService {
            app: AppKind::Oa,
            im_user: "oZ".into(),
            openid: "oZ".into(),
            agent: "agent_bob".into(),
            text: "hello".into(),
            image_url: None,
        };
        b.commit(outbox::enqueue("kf2", &job, b.app.queueing()).writes())
            .await;
        let c = outbox::claim(&*b.app.store, "kf2", b.app.now())
            .await
            .unwrap()
            .unwrap();
        maybe_sent(&b.app, &c.item, "maybe_sent: claim_retaken")
            .await
            .unwrap();
        let item = b.item("kf2").await;
        assert_eq!(item.status, Status::Failed);
        assert_eq!(item.reason.as_deref(), Some("maybe_sent: claim_retaken"));
        let notice = b
            .outbox()
            .await
            .into_iter()
            .find_map(|i| match i.job {
                Job::AgentNotice { text, .. } => Some(text),
                _ => None,
            })
            .unwrap();
        assert!(notice.contains("may not have been delivered"), "{notice}");
    }

    #[test]
    fn msg_random_is_stable_per_job() {
        assert_eq!(msg_random("0000002a-rest"), 42);
        assert_eq!(msg_random("zz"), 0);
    }
}
