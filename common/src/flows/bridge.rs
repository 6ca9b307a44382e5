//! The official-account customer-service bridge: followers talk to human agents who sit in IM.
//! A follower's IM user id is their openid. Every outbound call is an outbox job written in the
//! same transaction as the push's dedupe marker, so WeChat's and IM's retries never repeat one.

use tracing::warn;

use crate::app::App;
use crate::config::AppKind;
use crate::flows::plan::{Decision, Plan};
use crate::obs;
use crate::protocol::im::callback::{C2cMessage, Element, Recall};
use crate::protocol::im::rest::OnlineStatus;
use crate::protocol::wechat::allowance::{Opening, describe_secs};
use crate::protocol::wechat::message::{Message, MessageKind};
use crate::records::conversation::{
    self, Allowance, Chat, Conversation, Status as ConvStatus, Touch,
};
use crate::records::outbox::{self, Enqueue, Job, Status};
use crate::records::presence::{self, Presence};
use crate::records::{binding, kf_burst};
use crate::store::{StoreError, Txn, TxnError, Write};

/// The text an agent sees for a follower's message: the text itself, or a readable summary with
/// the media id or URL for the other kinds.
pub fn summary(kind: &MessageKind) -> Option<String> {
    Some(match kind {
        MessageKind::Text { content } => content.clone(),
        MessageKind::Image { pic_url, media_id } => {
            format!("[图片] {pic_url} (media_id {media_id})")
        }
        MessageKind::Voice {
            media_id,
            recognition,
            ..
        } => match recognition {
            Some(r) => format!("[语音] {r} (media_id {media_id})"),
            None => format!("[语音] (media_id {media_id})"),
        },
        MessageKind::Video { media_id, .. } => format!("[视频] (media_id {media_id})"),
        MessageKind::ShortVideo { media_id, .. } => format!("[小视频] (media_id {media_id})"),
        MessageKind::Location { x, y, label, .. } => format!("[位置] {label} ({x}, {y})"),
        MessageKind::Link { title, url, .. } => format!("[链接] {title} {url}"),
        MessageKind::MiniProgramPage {
            title, page_path, ..
        } => format!("[小程序] {title} {page_path}"),
        MessageKind::Event(_) | MessageKind::Unknown { .. } => return None,
    })
}

/// Whether `user` is one of `kind`'s agents.
pub fn is_agent(app: &App, kind: AppKind, user: &str) -> bool {
    agents(app, kind).iter().any(|a| a == user)
}

fn agents(app: &App, kind: AppKind) -> &[String] {
    app.config.im.as_ref().map_or(&[], |im| im.agents_of(kind))
}

/// Whether `kind`'s users are bridged to agents: the official account always (without agents its
/// followers' messages are kept and nobody is promised an agent), the mini program when it has
/// agents of its own (`IM_AGENT_ACCOUNTS_MP`).
pub fn bridged(app: &App, kind: AppKind) -> bool {
    match kind {
        AppKind::Oa => true,
        AppKind::Mp => !agents(app, kind).is_empty(),
    }
}

/// The IM account that speaks for a user: an official-account follower's openid; a mini-program
/// user's bound IM user when `/bind` bound one, else their openid, imported like a follower's.
pub async fn speaker(app: &App, kind: AppKind, openid: &str) -> Result<String, StoreError> {
    Ok(match kind {
        AppKind::Oa => openid.to_owned(),
        AppKind::Mp => binding::by_openid(&*app.store, kind, openid)
            .await?
            .unwrap_or_else(|| openid.to_owned()),
    })
}

/// How a user is named to an agent.
pub fn who(kind: AppKind, openid: &str) -> String {
    match kind {
        AppKind::Oa => format!("follower {openid}"),
        AppKind::Mp => format!("mini-program user {openid}"),
    }
}

/// How many times an assignment is tried against concurrent writers before the push fails (503,
/// and WeChat retries it).
const ASSIGN_ATTEMPTS: usize = 6;

/// The agent for a follower: the one they were given while that agent is still listed, else the
/// next in a round-robin shared by all instances. The choice is written conditionally (only if
/// the conversation has no agent, or still the one found unlisted), so deliveries racing for a
/// new follower agree on one agent; the cursor moves in the same transaction, so only an
/// assignment that took moves it, never a duplicate delivery.
async fn assign_agent(
    app: &App,
    chat: Chat<'_>,
    conv: Option<&Conversation>,
) -> Result<Option<String>, StoreError> {
    let agents = agents(app, chat.app);
    if agents.is_empty() {
        return Ok(None);
    }
    let mut held: Option<String> = conv.and_then(|c| c.agent.clone());
    let mut online: Option<Vec<bool>> = None;
    for attempt in 0..ASSIGN_ATTEMPTS {
        if let Some(a) = &held
            && agents.iter().any(|x| x == a)
        {
            return Ok(Some(a.clone()));
        }
        let online = match &online {
            Some(o) => o,
            None => online.insert(online_agents(app, agents).await?),
        };
        let cursor = conversation::agent_cursor(&*app.store, chat.app).await?;
        let n = agents.len();
        let start = cursor.unwrap_or(0).rem_euclid(n as i64) as usize;
        // The next agent in the round that is online, else the next agent in the round: the
        // user's message is never left without one.
        let pick = &agents[(0..n)
            .map(|k| (start + k) % n)
            .find(|&i| online[i])
            .unwrap_or(start)];
        // Holding the cursor to the value read spreads simultaneous new followers evenly; after
        // a few collisions a plain increment guarantees progress at the cost of evenness.
        let held_cursor = (attempt < ASSIGN_ATTEMPTS / 2).then_some(cursor);
        let ws = vec![
            conversation::assign(chat, pick, held.as_deref(), app.now()),
            conversation::advance_cursor(chat.app, held_cursor),
        ];
        match app.store.transact(ws).await {
            Ok(()) => return Ok(Some(pick.clone())),
            Err(StoreError::ConditionFailed { .. }) => {
                held = conversation::get(&*app.store, chat)
                    .await?
                    .and_then(|c| c.agent);
            }
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Unavailable(
        "agent assignment kept colliding with concurrent writes".into(),
    ))
}

/// Which of `agents` are online in IM now: their presence from the state callbacks, and for
/// those the callbacks cannot tell about (no record, or a Login older than
/// `PRESENCE_STALE_SECS`: web and mini-program clients never report leaving), one
/// `query_online_status` for all of them. When IM cannot be asked, they count as not online.
async fn online_agents(app: &App, agents: &[String]) -> Result<Vec<bool>, StoreError> {
    let now = app.now();
    let mut known = Vec::with_capacity(agents.len());
    for a in agents {
        known.push(presence::of(&*app.store, a, now, app.config.presence_stale_secs).await?);
    }
    let unsure: Vec<&str> = agents
        .iter()
        .zip(&known)
        .filter(|(_, p)| **p == Presence::Unknown)
        .map(|(a, _)| a.as_str())
        .collect();
    let mut asked: Vec<(String, OnlineStatus)> = vec![];
    if let (false, Some(im)) = (unsure.is_empty(), &app.im) {
        match im.query_online_status(&unsure, &*app.clock).await {
            Ok(list) => asked = list,
            Err(e) => {
                warn!(decision = "agents_presence_unknown", reason = %e.reason(), "query_online_status failed; assigning in turn");
            }
        }
    }
    Ok(agents
        .iter()
        .zip(known)
        .map(|(a, p)| match p {
            Presence::Online => true,
            Presence::Offline => false,
            Presence::Unknown => asked
                .iter()
                .any(|(u, st)| u == a && *st == OnlineStatus::Online),
        })
        .collect())
}

fn job(app: &App, id_parts: &[&str], job: Job) -> [Write; 2] {
    outbox::enqueue(&outbox::id_for(id_parts), &job, app.queueing()).writes()
}

fn import(app: &App, delivery: &str, openid: &str) -> [Write; 2] {
    job(
        app,
        &["import", delivery],
        Job::Import {
            user_id: openid.to_owned(),
            nick: None,
        },
    )
}

/// The reply allowance `msg` opens (see [`Conversation::opening`]).
fn opening(
    app: &App,
    conv: Option<&Conversation>,
    by: Opening,
    msg: &Message,
) -> Option<(Opening, i64)> {
    conv.cloned()
        .unwrap_or_default()
        .opening(by, msg.create_time, app.now())
}

/// The writes of a follow or an unfollow: the conversation, the follower's binding both ways,
/// and the IM account job (import or deletion) when IM is configured.
fn follower_writes(
    app: &App,
    openid: &str,
    touch: Touch<'_>,
    opens: Option<(Opening, i64)>,
    im_job: [Write; 2],
) -> Vec<Write> {
    let now = app.now();
    let status = match touch {
        Touch::Unfollowed => ConvStatus::Ended,
        _ => ConvStatus::Active,
    };
    let mut writes = vec![conversation::touch(Chat::oa(openid), touch, opens, now)];
    writes.extend(binding::follower_writes(openid, status.as_str(), now));
    if app.config.im.is_some() {
        writes.extend(im_job);
    }
    writes
}

/// `subscribe` (follow): import into IM, assign an agent, welcome as the passive reply.
pub async fn on_follow(app: &App, msg: &Message, delivery: &str) -> Result<Plan, StoreError> {
    let openid = msg.from_user.as_str();
    let conv = conversation::get(&*app.store, Chat::oa(openid)).await?;
    assign_agent(app, Chat::oa(openid), conv.as_ref()).await?;
    let opens = opening(app, conv.as_ref(), Opening::OaFollow, msg);
    Ok(Plan {
        writes: follower_writes(
            app,
            openid,
            Touch::Followed,
            opens,
            import(app, delivery, openid),
        ),
        reply: Some(app.config.oa_bridge.welcome_text.clone()),
        decision: Decision::FollowerWelcomed,
    })
}

/// `unsubscribe`: the conversation and binding end; the IM account is deleted where the edition
/// allows it (otherwise kept, marked inactive here).
pub async fn on_unfollow(app: &App, msg: &Message, delivery: &str) -> Result<Plan, StoreError> {
    let openid = msg.from_user.as_str();
    let delete = job(
        app,
        &["delete", delivery],
        Job::Delete {
            user_id: openid.to_owned(),
        },
    );
    Ok(Plan {
        writes: follower_writes(app, openid, Touch::Unfollowed, None, delete),
        reply: None,
        decision: Decision::FollowerLeft,
    })
}

/// A user's message (an official-account follower's, or a mini-program user's in the
/// customer-service session): forwarded to their agent from the IM account that speaks for them.
/// An official-account follower is answered "connecting you" (the passive reply) once per
/// conversation window; the mini program has no passive text reply, so its users are not. The
/// mini program's `SessionFrom`, kept since the user entered the session, goes with the first
/// message. With no agent configured it is kept (an ended job) and answered with nothing.
pub async fn on_user_message(
    app: &App,
    kind: AppKind,
    msg: &Message,
    delivery: &str,
) -> Result<Plan, StoreError> {
    let Some(text) = summary(&msg.kind) else {
        return Ok(Plan::nothing(Decision::IgnoredUnknown));
    };
    let openid = msg.from_user.as_str();
    let im_user = speaker(app, kind, openid).await?;
    let chat = Chat {
        app: kind,
        im_user: &im_user,
        openid: Some(openid),
    };
    let now = app.now();
    let conv = conversation::get(&*app.store, chat).await?;
    let agent = assign_agent(app, chat, conv.as_ref()).await?;
    // A conversation window lasts while the follower keeps writing: "connecting you" opens a
    // new one only after they have been quiet for the whole window, however long the current
    // conversation has been going on.
    let window = app.config.oa_bridge.conversation_window_secs;
    let greet = kind == AppKind::Oa
        && agent.is_some()
        && conv
            .as_ref()
            .and_then(|c| c.last_user_msg_at)
            .is_none_or(|t| now - t >= window);
    let by = match kind {
        AppKind::Oa => Opening::OaMessage,
        AppKind::Mp => Opening::MpMessage,
    };
    let opens = opening(app, conv.as_ref(), by, msg);
    let text = match conv.as_ref().and_then(|c| c.session_from.as_deref()) {
        Some(from) => format!("[SessionFrom: {from}] {text}"),
        None => text,
    };
    let mut writes = vec![conversation::touch(
        chat,
        Touch::Wrote { greeted: greet },
        opens,
        now,
    )];
    // No status means no push of theirs was ever recorded (the assignment alone may have been):
    // a follower from before the bridge existed, or a new mini-program user, who must be made to
    // exist in IM (a bound mini-program user exists already).
    if conv.as_ref().and_then(|c| c.status).is_none() {
        if kind == AppKind::Oa {
            writes.extend(binding::follower_writes(
                openid,
                ConvStatus::Active.as_str(),
                now,
            ));
        }
        if app.config.im.is_some() && im_user == openid {
            writes.extend(import(app, delivery, openid));
        }
    }
    let image_url = match &msg.kind {
        MessageKind::Image { pic_url, .. } if !pic_url.is_empty() => Some(pic_url.clone()),
        _ => None,
    };
    let forward = Job::Forward {
        from: im_user.clone(),
        to: agent.clone(),
        text,
        image_url,
    };
    let decision = match &agent {
        Some(_) => {
            writes.extend(job(app, &["forward", delivery], forward));
            Decision::ForwardedToAgent
        }
        None => {
            // No agent to forward to (see Config::oa_bridge): the message is kept as an ended
            // job with the reason, and the follower is promised nothing.
            writes.push(outbox::ended(
                &outbox::id_for(&["forward", delivery]),
                &forward,
                Status::Skipped,
                "no_agent_configured",
                app.queueing(),
            ));
            Decision::KeptNoAgentConfigured
        }
    };
    Ok(Plan {
        writes,
        reply: greet.then(|| app.config.oa_bridge.connecting_text.clone()),
        decision,
    })
}

/// A mini-program user entered the customer-service session (`user_enter_tempsession`, from
/// `<button open-type="contact">`): the conversation starts (an agent assigned, the IM account
/// imported for an unbound user), WeChat opens its allowance (2 replies for 1 minute), and the
/// page's `SessionFrom` is kept for the agent until the user's first message.
pub async fn on_enter_session(
    app: &App,
    msg: &Message,
    session_from: Option<&str>,
    delivery: &str,
) -> Result<Plan, StoreError> {
    let openid = msg.from_user.as_str();
    let im_user = speaker(app, AppKind::Mp, openid).await?;
    let chat = Chat {
        app: AppKind::Mp,
        im_user: &im_user,
        openid: Some(openid),
    };
    let conv = conversation::get(&*app.store, chat).await?;
    assign_agent(app, chat, conv.as_ref()).await?;
    let opens = opening(app, conv.as_ref(), Opening::MpSession, msg);
    let mut writes = vec![conversation::touch(
        chat,
        Touch::EnteredSession { session_from },
        opens,
        app.now(),
    )];
    if conv.as_ref().and_then(|c| c.status).is_none()
        && app.config.im.is_some()
        && im_user == openid
    {
        writes.extend(import(app, delivery, openid));
    }
    Ok(Plan::writes(writes, Decision::SessionEntered))
}

/// A follower's menu click (`click`, `scancode_push`, `scancode_waitmsg`) or parametric QR scan
/// (`SCAN`): nothing is forwarded, but WeChat opens a reply allowance (3 for 1 minute), which
/// replaces the one in force.
pub async fn on_action(app: &App, msg: &Message, by: Opening) -> Result<Plan, StoreError> {
    let openid = msg.from_user.as_str();
    let conv = conversation::get(&*app.store, Chat::oa(openid)).await?;
    Ok(match opening(app, conv.as_ref(), by, msg) {
        Some((by, at)) => Plan::writes(
            vec![conversation::opened(Chat::oa(openid), by, at, app.now())],
            Decision::AllowanceOpened,
        ),
        None => Plan::nothing(Decision::IgnoredEvent),
    })
}

/// What became of an agent's IM message to a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyDecision {
    AgentReplyQueued,
    AgentReplyFollowerLeft,
    AgentReplyNoActiveConversation,
    AgentMessageNotDeliveredInIm,
    /// The agent's typing indicator: WeChat's typing state is queued for the follower.
    TypingQueued,
    /// Not asked for: no message was exchanged with the follower in the last 30 s (45080).
    TypingNoRecentExchange,
    /// Not asked for: the follower already sees the typing state (45081, it lasts 15 s).
    TypingAlreadyShown,
    /// Any other online-only message (including the end of typing): never forwarded.
    OnlineOnlyNotForwarded,
    /// IM's retry of a callback already applied.
    DuplicateCallback,
    /// An agent's recalled message, not yet sent: it will not be.
    RecallWithdrawn,
    /// An agent's recalled message, already sent to WeChat (which cannot recall it): told.
    RecallTooLate,
    /// An agent's recalled message that never reached WeChat anyway.
    RecallNothingSent,
}

impl ReplyDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyDecision::AgentReplyQueued => "agent_reply_queued",
            ReplyDecision::AgentReplyFollowerLeft => "agent_reply_follower_left",
            ReplyDecision::AgentReplyNoActiveConversation => "agent_reply_no_active_conversation",
            ReplyDecision::AgentMessageNotDeliveredInIm => "agent_message_not_delivered_in_im",
            ReplyDecision::TypingQueued => "typing_queued",
            ReplyDecision::TypingNoRecentExchange => "typing_no_recent_exchange",
            ReplyDecision::TypingAlreadyShown => "typing_already_shown",
            ReplyDecision::OnlineOnlyNotForwarded => "online_only_not_forwarded",
            ReplyDecision::DuplicateCallback => "duplicate_callback",
            ReplyDecision::RecallWithdrawn => "recall_withdrawn",
            ReplyDecision::RecallTooLate => "recall_too_late",
            ReplyDecision::RecallNothingSent => "recall_nothing_sent",
        }
    }
}

/// The conversation an IM message from `from` to `to` belongs to, if `from` is an agent of an app
/// with a conversation of `to`'s. The official account's conversations first: a follower's IM
/// account is their openid, which never names a mini-program user's.
async fn bridged_chat(
    app: &App,
    from: &str,
    to: &str,
) -> Result<Option<(AppKind, Conversation)>, StoreError> {
    for kind in [AppKind::Oa, AppKind::Mp] {
        if app.config.app(kind).is_none() || !is_agent(app, kind, from) {
            continue;
        }
        if let Some(c) = conversation::get(&*app.store, Chat::of(kind, to)).await? {
            return Ok(Some((kind, c)));
        }
    }
    Ok(None)
}

/// An agent recalled a message in IM (`C2C.CallbackAfterMsgWithDraw`). Before it was sent to
/// WeChat (held for its burst, or waiting for a retry) it is not sent: the reply ends `skipped`
/// (`recalled_before_sent`), and a recall that comes before the message's own callback leaves it
/// recorded so, so that the message is never sent when its callback comes. A message already
/// sent (or being sent) cannot be recalled in WeChat, which has no recall for customer-service
/// messages: the agent is told so, once.
pub async fn on_recall(app: &App, r: &Recall) -> Result<Option<ReplyDecision>, StoreError> {
    let Some((kind, conv)) = bridged_chat(app, &r.from, &r.to).await? else {
        return Ok(None);
    };
    let id = outbox::id_for(&["kf", &r.idempotency_key()]);
    let openid = conv.openid.clone().unwrap_or_else(|| r.to.clone());
    let now = app.now();
    // Twice: the message's callback, or a dispatcher, may act between the read and the write.
    for _ in 0..2 {
        let item = outbox::read(&*app.store, &id).await?;
        let attempt = match &item {
            None => {
                let job = Job::CustomerService {
                    app: kind,
                    im_user: r.to.clone(),
                    openid: openid.clone(),
                    agent: r.from.clone(),
                    text: String::new(),
                    image_url: None,
                };
                outbox::ended(&id, &job, Status::Skipped, RECALLED, app.queueing())
            }
            Some(i) if i.status == Status::Queued => outbox::call_off(&id, RECALLED, now),
            Some(i) if i.reason.as_deref() == Some(RECALLED) => {
                return Ok(Some(ReplyDecision::DuplicateCallback));
            }
            Some(i) if matches!(i.status, Status::Sending | Status::Sent) => {
                return recall_too_late(app, &id, &r.from, &who(kind, &openid), i).await;
            }
            // It never reached WeChat (skipped or failed), and its agent heard why.
            Some(_) => return Ok(Some(ReplyDecision::RecallNothingSent)),
        };
        match app.store.write(attempt).await {
            Ok(_) => {
                obs::metric("AgentRepliesRecalled", &[], 1.0);
                return Ok(Some(ReplyDecision::RecallWithdrawn));
            }
            Err(e) if e.is_condition_failed() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Unavailable(
        "the recalled reply kept changing under the recall".into(),
    ))
}

/// Why a reply ends when its agent recalled it before it was sent.
pub const RECALLED: &str = "recalled_before_sent";

async fn recall_too_late(
    app: &App,
    id: &str,
    agent: &str,
    who: &str,
    item: &outbox::OutboxItem,
) -> Result<Option<ReplyDecision>, StoreError> {
    let when = match item.status {
        Status::Sent => "was already delivered to WeChat",
        _ => "was already being sent to WeChat",
    };
    let text = format!(
        "Your recalled message to {who} {when}: WeChat cannot recall a customer-service message, so they still see it."
    );
    let notice = outbox::enqueue(
        &outbox::id_for(&["agent_notice", "recall", id]),
        &Job::AgentNotice {
            to: agent.to_owned(),
            text,
        },
        app.queueing(),
    );
    match app.store.transact(notice.writes().into()).await {
        Ok(()) => Ok(Some(ReplyDecision::RecallTooLate)),
        Err(e) if e.is_condition_failed() => Ok(Some(ReplyDecision::DuplicateCallback)),
        Err(e) => Err(e),
    }
}

/// An IM message from an agent to a follower becomes a customer-service message; returns the
/// decision when the message was the bridge's to handle (a recipient with no conversation is
/// left to the notification policy).
pub async fn on_im_message(
    app: &App,
    msg: &C2cMessage,
) -> Result<Option<ReplyDecision>, StoreError> {
    let Some((kind, conv)) = bridged_chat(app, &msg.from, &msg.to).await? else {
        return Ok(None);
    };
    if msg.send_result.is_some_and(|r| r != 0) {
        return Ok(Some(ReplyDecision::AgentMessageNotDeliveredInIm));
    }
    if msg.online_only {
        return on_online_only(app, kind, msg, &conv).await.map(Some);
    }
    let id = outbox::id_for(&["kf", &msg.idempotency_key()]);
    let openid = conv.openid.clone().unwrap_or_else(|| msg.to.clone());
    let reply = Job::CustomerService {
        app: kind,
        im_user: msg.to.clone(),
        openid: openid.clone(),
        agent: msg.from.clone(),
        text: msg.text_summary(),
        // A picture on its own goes as a picture (see `jobs`), its summary if it cannot.
        image_url: match msg.body.as_slice() {
            [Element::Image { url: Some(u) }] => Some(u.clone()),
            _ => None,
        },
    };
    let q = app.queueing();
    if conv.status != Some(ConvStatus::Active) {
        // Not sent: WeChat would refuse it, and the agent would otherwise wait for an answer
        // from someone who is gone. The reply is recorded and the agent told, atomically.
        let (why, decision) = match conv.status {
            Some(ConvStatus::Ended) => (NotSent::Unfollowed, ReplyDecision::AgentReplyFollowerLeft),
            _ => (
                NotSent::NotActive,
                ReplyDecision::AgentReplyNoActiveConversation,
            ),
        };
        let mut ws = vec![outbox::ended(&id, &reply, why.status(), &why.reason(), q)];
        ws.extend(reply_notice(app, &id, &msg.from, &who(kind, &openid), &why).writes());
        return match app.store.transact(ws).await {
            Ok(()) => {
                obs::metric(
                    "CustomerServiceUndeliverable",
                    &[("Reason", why.label())],
                    1.0,
                );
                Ok(Some(decision))
            }
            Err(StoreError::ConditionFailed { .. }) => Ok(Some(ReplyDecision::DuplicateCallback)),
            Err(e) => Err(e),
        };
    }
    // Held for the rest of the agent's burst (see `KF_MERGE_SECS`): the first of the burst's
    // replies to be dispatched takes the others into one customer-service message.
    let merge = app.config.oa_bridge.merge_secs;
    let ws: Vec<Write> = if merge > 0 {
        let mut ws: Vec<Write> = outbox::enqueue_held(&id, &reply, q, q.now + merge)
            .writes()
            .into();
        ws.push(kf_burst::entry(
            kind,
            &msg.to,
            &id,
            &msg.from,
            msg.msg_time,
            msg.msg_seq,
            q.now,
        ));
        ws
    } else {
        outbox::enqueue(&id, &reply, q).writes().into()
    };
    match app.store.transact(ws).await {
        Ok(_) => {
            obs::metric("AgentRepliesQueued", &[], 1.0);
            Ok(Some(ReplyDecision::AgentReplyQueued))
        }
        Err(StoreError::ConditionFailed { .. }) => Ok(Some(ReplyDecision::DuplicateCallback)),
        Err(e) => Err(e),
    }
}

/// An online-only message from an agent (IM never stores it): never a customer-service message.
/// TUIKit's typing indicator becomes WeChat's typing state, asked for only when WeChat would
/// grant it (a message exchanged within 30 s, not already typing within 15 s), and never
/// retried; everything else online-only is dropped.
async fn on_online_only(
    app: &App,
    kind: AppKind,
    msg: &C2cMessage,
    conv: &Conversation,
) -> Result<ReplyDecision, StoreError> {
    if msg.typing() != Some(true) || conv.status != Some(ConvStatus::Active) {
        obs::metric("OnlineOnlyNotForwarded", &[], 1.0);
        return Ok(ReplyDecision::OnlineOnlyNotForwarded);
    }
    let now = app.now();
    let exchanged = conv
        .last_exchange_at()
        .is_some_and(|t| now - t <= conversation::TYPING_EXCHANGE_SECS);
    if !exchanged {
        return Ok(ReplyDecision::TypingNoRecentExchange);
    }
    if conv
        .typing_at
        .is_some_and(|t| now - t < conversation::TYPING_SECS)
    {
        return Ok(ReplyDecision::TypingAlreadyShown);
    }
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Guard {
        Typing,
        Job,
    }
    let mut txn = Txn::new();
    txn.named(
        Guard::Typing,
        conversation::typing(Chat::of(kind, &msg.to), now),
    );
    let job = Job::Typing {
        app: kind,
        im_user: msg.to.clone(),
        openid: conv.openid.clone().unwrap_or_else(|| msg.to.clone()),
        agent: msg.from.clone(),
    };
    let id = outbox::id_for(&["typing", &msg.idempotency_key()]);
    for w in outbox::enqueue(&id, &job, app.queueing()).writes() {
        txn.named(Guard::Job, w);
    }
    match txn.commit(&*app.store).await {
        Ok(()) => Ok(ReplyDecision::TypingQueued),
        Err(TxnError::Condition(Some(Guard::Job))) => Ok(ReplyDecision::DuplicateCallback),
        // Another typing callback took it since the read (or the exchange aged out).
        Err(TxnError::Condition(_)) => Ok(ReplyDecision::TypingAlreadyShown),
        Err(TxnError::Store(e)) => Err(e),
    }
}

/// What the subscribe-message fallback came to, when it could not stand in for a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// No fallback template is configured (`OA_FALLBACK_TEMPLATE_ID`).
    NotConfigured,
    /// The follower has no credit for the fallback template.
    NoCredit,
    /// `OA_FALLBACK_DATA` did not render for this reply.
    InvalidData(String),
    /// WeChat refused the subscribe message (its errcode or transport failure).
    Failed(String),
    /// An earlier reply of the same closed allowance already had its fallback: one notification
    /// per closed allowance, not one per reply.
    AlreadySent,
}

/// How the bridge knows that WeChat's reply allowance had no room for a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// WeChat refused the reply: 45015 (expired, or the follower unfollowed) or 45047 (used up).
    /// `window` is the opening time of the allowance it was refused in (0 when none was known).
    Refused { errcode: i64, window: i64 },
    /// The stored allowance was used up or expired: the reply was not sent to WeChat at all.
    Known(Allowance),
}

impl Closed {
    /// The allowance this refers to (its opening time): one fallback each.
    pub fn window(&self) -> i64 {
        match self {
            Closed::Refused { window, .. } => *window,
            Closed::Known(a) => a.at,
        }
    }

    /// How it is recorded on the reply: the errcode, or why the bridge did not send it.
    pub fn code(&self) -> String {
        match self {
            Closed::Refused { errcode, .. } => errcode.to_string(),
            Closed::Known(a) if a.left < 1 => "allowance_used_up".into(),
            Closed::Known(_) => "allowance_expired".into(),
        }
    }

    fn explain(&self, app: &App) -> String {
        match self {
            Closed::Refused { errcode: 45047, .. } => "WeChat's limit on customer-service messages since they last wrote is used up (errcode 45047)".to_owned(),
            Closed::Refused { errcode: 45015, .. } => "WeChat no longer accepts customer-service messages to them (errcode 45015: more than 48 hours since they last wrote, or they unfollowed)".to_owned(),
            Closed::Refused { errcode, .. } => {
                format!("WeChat's customer-service window is closed (errcode {errcode})")
            }
            Closed::Known(a) => {
                let opened = match a.by {
                    Some(by) => format!(
                        "{} at {} opened {} for {}",
                        by.describe(),
                        local_time(app, a.at),
                        replies(by.replies()),
                        describe_secs(by.valid_secs())
                    ),
                    None => "WeChat refused an earlier reply".to_owned(),
                };
                let state = if a.left < 1 {
                    "none of them is left".to_owned()
                } else {
                    format!(
                        "that allowance ended at {} with {} unused",
                        local_time(app, a.until),
                        replies(a.left)
                    )
                };
                format!(
                    "WeChat allows no customer-service message to them now ({opened}, and {state})"
                )
            }
        }
    }
}

fn replies(n: i64) -> String {
    if n == 1 {
        "1 reply".into()
    } else {
        format!("{n} replies")
    }
}

/// When the agent can answer again: WeChat's rule for the app's next user message.
fn next_window() -> String {
    let by = Opening::OaMessage;
    format!(
        "When they next write, WeChat allows {} within {}.",
        replies(by.replies()),
        describe_secs(by.valid_secs())
    )
}

/// A time in the notifications' time zone (`NOTIFY_TIMEZONE`), else UTC.
pub fn local_time(app: &App, secs: i64) -> String {
    match &app.config.notify {
        Some(n) => n.format_time(secs),
        None => jiff::Timestamp::from_second(secs)
            .map(|t| {
                t.to_zoned(jiff::tz::TimeZone::UTC)
                    .strftime("%Y年%-m月%-d日 %H:%M UTC")
                    .to_string()
            })
            .unwrap_or_default(),
    }
}

/// Why an agent's reply did not reach the follower: recorded on the job and told to the agent,
/// saying what happened and promising nothing the bridge does not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotSent {
    /// The follower unfollowed the official account.
    Unfollowed,
    /// The follower has no active conversation with the official account.
    NotActive,
    /// WeChat's allowance is closed (see [`Closed`]) and the fallback could not stand in.
    WindowClosed { closed: Closed, fallback: Fallback },
    /// WeChat refused the message for another reason (its errcode, or the transport failure).
    Refused { reason: String },
    /// WeChat could not be reached within the attempt limit.
    RetriesExhausted { attempts: i64, reason: String },
    /// The request may have reached WeChat but no answer came back (or the dispatcher sending it
    /// went silent): it may or may not have arrived, and it is not resent, so it never arrives
    /// twice.
    MaybeSent { reason: String },
}

impl NotSent {
    /// Skipped when the bridge did not try (the follower is gone, or the allowance is known to
    /// be closed), failed when WeChat said no.
    pub fn status(&self) -> Status {
        match self {
            NotSent::Unfollowed
            | NotSent::NotActive
            | NotSent::WindowClosed {
                closed: Closed::Known(_),
                ..
            } => Status::Skipped,
            _ => Status::Failed,
        }
    }

    /// The reason recorded on the reply's outbox item.
    pub fn reason(&self) -> String {
        match self {
            NotSent::Unfollowed => "follower_unfollowed".into(),
            NotSent::NotActive => "conversation_not_active".into(),
            NotSent::WindowClosed { closed, fallback } => {
                let f = match fallback {
                    Fallback::NotConfigured => "no_fallback_template".into(),
                    Fallback::NoCredit => "no_fallback_credit".into(),
                    Fallback::InvalidData(e) => format!("fallback_data_invalid: {e}"),
                    Fallback::Failed(r) => format!("fallback_failed: {r}"),
                    Fallback::AlreadySent => "fallback_already_sent".into(),
                };
                format!("undeliverable: {}; {f}", closed.code())
            }
            NotSent::Refused { reason } => format!("undeliverable: {reason}"),
            NotSent::RetriesExhausted { reason, .. } => {
                format!("undeliverable: retries_exhausted: {reason}")
            }
            NotSent::MaybeSent { reason } => format!("maybe_sent: {reason}"),
        }
    }

    /// A bounded label for metrics (reasons may carry free text).
    pub fn label(&self) -> &'static str {
        match self {
            NotSent::Unfollowed => "follower_unfollowed",
            NotSent::NotActive => "conversation_not_active",
            NotSent::WindowClosed { fallback, .. } => match fallback {
                Fallback::NotConfigured => "window_closed_no_fallback",
                Fallback::NoCredit => "window_closed_no_credit",
                Fallback::InvalidData(_) => "window_closed_fallback_invalid",
                Fallback::Failed(_) => "window_closed_fallback_failed",
                Fallback::AlreadySent => "window_closed_fallback_already_sent",
            },
            NotSent::Refused { .. } => "refused",
            NotSent::RetriesExhausted { .. } => "retries_exhausted",
            NotSent::MaybeSent { .. } => "maybe_sent",
        }
    }

    fn explain(&self, app: &App) -> String {
        match self {
            NotSent::Unfollowed => {
                "the follower has left (they unfollowed the official account)".into()
            }
            NotSent::NotActive => {
                "the follower has no active conversation with the official account".into()
            }
            NotSent::WindowClosed { closed, fallback } => {
                let fallback = match fallback {
                    Fallback::NotConfigured => {
                        "no subscribe-message fallback is configured".to_owned()
                    }
                    Fallback::NoCredit => {
                        "they have no subscribe-message credit for the fallback notification"
                            .to_owned()
                    }
                    Fallback::InvalidData(e) => format!(
                        "the fallback notification could not be built from OA_FALLBACK_DATA ({e})"
                    ),
                    Fallback::Failed(r) => {
                        format!(
                            "the fallback notification failed too ({})",
                            wechat_reason(r)
                        )
                    }
                    Fallback::AlreadySent => "they were already sent a subscribe notification for an earlier reply since WeChat's allowance closed, and get no second one".to_owned(),
                };
                format!("{}, and {fallback}. {}", closed.explain(app), next_window())
            }
            NotSent::Refused { reason } => match reason.as_str() {
                "43004" => "they do not follow the official account (errcode 43004)".into(),
                "40003" => "WeChat does not recognise their openid (errcode 40003)".into(),
                "45002" => "the message is too long for WeChat (errcode 45002)".into(),
                "48001" => {
                    "this official account may not send customer-service messages (errcode 48001)"
                        .into()
                }
                r => format!("WeChat refused it ({})", wechat_reason(r)),
            },
            NotSent::RetriesExhausted { attempts, reason } => format!(
                "WeChat could not be reached in {attempts} attempts (last: {})",
                wechat_reason(reason)
            ),
            NotSent::MaybeSent { reason } => format!(
                "no answer came back from WeChat ({}), so it may or may not have arrived; it is not resent, to avoid sending it twice",
                wechat_reason(reason)
            ),
        }
    }
}

/// A WeChat reason as recorded (an errcode, or a transport failure) in words.
fn wechat_reason(r: &str) -> String {
    if r.parse::<i64>().is_ok() {
        format!("errcode {r}")
    } else {
        r.to_owned()
    }
}

/// The IM notice, from the admin account, telling an agent that their reply did not reach the
/// follower and why. Its id follows from the reply's, so the same outcome recorded twice (a
/// retried callback, a re-run job) queues one notice.
pub fn reply_notice(app: &App, reply_id: &str, agent: &str, who: &str, why: &NotSent) -> Enqueue {
    let verb = match why {
        NotSent::MaybeSent { .. } => "may not have been delivered",
        _ if why.status() == Status::Skipped => "was not sent",
        _ => "was not delivered",
    };
    let explain = why.explain(app);
    let stop = if explain.ends_with('.') { "" } else { "." };
    let text =
        format!("Your reply to {who} {verb}: {explain}{stop} It will not be resent automatically.");
    agent_notice(app, reply_id, agent, &text)
}

/// The IM notice telling an agent that their reply could not be a customer-service message and
/// the follower was sent the subscribe-message fallback instead.
pub fn fallback_notice(
    app: &App,
    reply_id: &str,
    agent: &str,
    who: &str,
    closed: &Closed,
) -> Enqueue {
    let text = format!(
        "Your reply to {who} was not delivered as a message: {}. They were sent a subscribe notification that a reply is waiting instead. {}",
        closed.explain(app),
        next_window()
    );
    agent_notice(app, reply_id, agent, &text)
}

/// The IM notice telling an agent that the reply just delivered used the last one WeChat
/// allows until the follower acts again.
pub fn last_reply_notice(
    app: &App,
    reply_id: &str,
    agent: &str,
    who: &str,
    a: &Allowance,
) -> Enqueue {
    let by = a.by.map_or(String::new(), |by| {
        format!(
            " ({} at {} opened {} for {})",
            by.describe(),
            local_time(app, a.at),
            replies(by.replies()),
            describe_secs(by.valid_secs())
        )
    });
    let text = format!(
        "Your reply to {who} was delivered, and it was the last one WeChat allows for now{by}. Further replies are not sent to WeChat; they go to the subscribe-message fallback where one is configured and they have a credit. {}",
        next_window()
    );
    agent_notice(app, reply_id, agent, &text)
}

fn agent_notice(app: &App, source_id: &str, agent: &str, text: &str) -> Enqueue {
    outbox::enqueue(
        &outbox::id_for(&["agent_notice", source_id]),
        &Job::AgentNotice {
            to: agent.to_owned(),
            text: text.to_owned(),
        },
        app.queueing(),
    )
}

/// Why a follower's message did not reach their agent in IM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotForwarded {
    /// IM refused it for good (its error code, or the HTTP failure).
    Refused { code: Option<i64>, reason: String },
    /// IM could not be reached within the attempt limit.
    RetriesExhausted { attempts: i64, reason: String },
}

impl NotForwarded {
    /// The reason recorded on the forward's outbox item.
    pub fn reason(&self) -> String {
        match self {
            NotForwarded::Refused { reason, .. } => reason.clone(),
            NotForwarded::RetriesExhausted { reason, .. } => {
                format!("retries_exhausted: {reason}")
            }
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            NotForwarded::Refused { .. } => "refused",
            NotForwarded::RetriesExhausted { .. } => "retries_exhausted",
        }
    }

    /// IM refused the text itself: quoting it in the notice would be refused the same way.
    fn content_refused(&self) -> bool {
        matches!(
            self,
            NotForwarded::Refused {
                code: Some(80001 | 80002 | 80004 | 93000),
                ..
            }
        )
    }

    fn explain(&self) -> String {
        match self {
            NotForwarded::Refused { code: Some(c), .. } => match c {
                80001 | 80004 => format!("IM's content check refused it (IM error {c})"),
                80002 | 93000 => format!("it is too long for IM (IM error {c})"),
                20003 | 70107 | 90012 | 90048 => {
                    format!("an IM account it needs does not exist (IM error {c})")
                }
                c => format!("IM refused it (IM error {c})"),
            },
            NotForwarded::Refused { reason, .. } => format!("IM refused it ({reason})"),
            NotForwarded::RetriesExhausted { attempts, reason } => {
                format!("IM could not be reached in {attempts} attempts (last: {reason})")
            }
        }
    }
}

/// The IM notice, from the admin account, telling an agent that a follower's message did not
/// reach them. Sent to the agent the message was for; if that notice fails too, it is recorded
/// and nothing more is sent (a notice never queues another).
pub fn forward_notice(
    app: &App,
    forward_id: &str,
    agent: &str,
    follower: &str,
    text: &str,
    why: &NotForwarded,
) -> Enqueue {
    let quote = if why.content_refused() {
        String::new()
    } else {
        format!(" It read: \u{201c}{}\u{201d}.", obs::preview(text, 60))
    };
    let notice = format!(
        "A message from follower {follower} could not be forwarded to you: {}.{quote} It will not be resent automatically.",
        why.explain()
    );
    agent_notice(app, forward_id, agent, &notice)
}

#[cfg(all(test, feature = "embedded"))]
mod tests {
    use super::*;
    use crate::flows::testing::{bench, oa_text};

    #[tokio::test]
    async fn followers_are_spread_across_agents_and_keep_theirs() {
        let b = bench(&[]);
        let mut agents = vec![];
        for (n, f) in ["oA", "oB", "oA"].iter().enumerate() {
            let plan = on_user_message(
                &b.app,
                AppKind::Oa,
                &oa_text(f, "hi", n as u64),
                &format!("d{n}"),
            )
            .await
            .unwrap();
            assert_eq!(plan.decision, Decision::ForwardedToAgent);
            b.commit(plan.writes).await;
            agents.push(
                conversation::get(&*b.app.store, Chat::oa(f))
                    .await
                    .unwrap()
                    .unwrap()
                    .agent,
            );
        }
        assert_ne!(agents[0], agents[1], "round robin");
        assert_eq!(agents[0], agents[2], "sticky");
    }

    #[tokio::test]
    async fn without_agents_the_message_is_kept_and_nothing_promised() {
        let b = bench(&[("IM_AGENT_ACCOUNTS", "")]);
        let plan = on_user_message(&b.app, AppKind::Oa, &oa_text("oC", "hello", 1), "d1")
            .await
            .unwrap();
        assert_eq!(plan.decision, Decision::KeptNoAgentConfigured);
        assert!(plan.reply.is_none());
        b.commit(plan.writes).await;
        let kept: Vec<_> = b
            .outbox()
            .await
            .into_iter()
            .filter(|i| matches!(i.job, Job::Forward { .. }))
            .collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].status, Status::Skipped);
        assert_eq!(kept[0].reason.as_deref(), Some("no_agent_configured"));
    }

    #[tokio::test]
    async fn an_agent_reply_to_a_follower_who_left_is_not_sent_and_the_agent_told() {
        let b = bench(&[]);
        let m = crate::flows::testing::event("oD", "unsubscribe", crate::flows::testing::T0);
        b.commit(on_unfollow(&b.app, &m, "u1").await.unwrap().writes)
            .await;
        let reply = crate::flows::testing::c2c("agent_alice", "oD", "thanks", 3);
        assert_eq!(
            on_im_message(&b.app, &reply).await.unwrap(),
            Some(ReplyDecision::AgentReplyFollowerLeft)
        );
        assert_eq!(
            on_im_message(&b.app, &reply).await.unwrap(),
            Some(ReplyDecision::DuplicateCallback)
        );
        let notices: Vec<_> = b
            .outbox()
            .await
            .into_iter()
            .filter(|i| matches!(&i.job, Job::AgentNotice { to, .. } if to == "agent_alice"))
            .collect();
        assert_eq!(notices.len(), 1);
    }

    fn online_only(from: &str, to: &str, data: &str, seq: u64) -> C2cMessage {
        let mut m = crate::flows::testing::c2c(from, to, "", seq);
        m.online_only = true;
        m.body = vec![crate::protocol::im::callback::Element::Custom {
            desc: String::new(),
            data: data.into(),
        }];
        m
    }

    const TYPING: &str = r#"{"businessID":"user_typing_status","typingStatus":1,"version":1,"userAction":14,"actionParam":"EIMAMSG_InputStatus_Ing"}"#;

    async fn follower_wrote(b: &crate::flows::testing::Bench, f: &str, n: u64) {
        let plan = on_user_message(&b.app, AppKind::Oa, &oa_text(f, "hi", n), &format!("w{n}"))
            .await
            .unwrap();
        b.commit(plan.writes).await;
    }

    #[tokio::test]
    async fn an_agent_typing_becomes_wechat_typing_within_its_rules_and_never_a_message() {
        let b = bench(&[]);
        follower_wrote(&b, "oT", 1).await;
        let agent = conversation::get(&*b.app.store, Chat::oa("oT"))
            .await
            .unwrap()
            .unwrap()
            .agent
            .unwrap();
        let on = |seq| {
            let m = online_only(&agent, "oT", TYPING, seq);
            let app = &b.app;
            async move { on_im_message(app, &m).await }
        };
        assert_eq!(on(1).await.unwrap(), Some(ReplyDecision::TypingQueued));
        // Still typing within 15 s: WeChat would answer 45081.
        b.clock.advance(5);
        assert_eq!(
            on(2).await.unwrap(),
            Some(ReplyDecision::TypingAlreadyShown)
        );
        // 15 s on, but 30 s after the last exchange: WeChat would answer 45080.
        b.clock.advance(26);
        assert_eq!(
            on(3).await.unwrap(),
            Some(ReplyDecision::TypingNoRecentExchange)
        );
        follower_wrote(&b, "oT", 2).await;
        assert_eq!(on(4).await.unwrap(), Some(ReplyDecision::TypingQueued));
        let stop = TYPING.replace("\"typingStatus\":1", "\"typingStatus\":0");
        let other = r#"{"businessID":"something_else"}"#;
        for (n, data) in [stop.as_str(), other].iter().enumerate() {
            let m = online_only(&agent, "oT", data, 10 + n as u64);
            assert_eq!(
                on_im_message(&b.app, &m).await.unwrap(),
                Some(ReplyDecision::OnlineOnlyNotForwarded)
            );
        }
        let items = b.outbox().await;
        let typing = items
            .iter()
            .filter(|i| matches!(&i.job, Job::Typing { openid, .. } if openid == "oT"))
            .count();
        assert_eq!(typing, 2);
        assert!(
            !items
                .iter()
                .any(|i| matches!(i.job, Job::CustomerService { .. })),
            "an online-only message never becomes a customer-service message"
        );
    }
}
