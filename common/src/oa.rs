//! The official-account customer-service bridge: followers talk to human agents who sit in IM.
//! A follower's IM user id is their openid. Every outbound call is an outbox job written in the
//! same transaction as the push's dedupe marker, so WeChat's and IM's retries never repeat one.

use crate::app::App;
use crate::config::AppKind;
use crate::handlers::wechat::Plan;
use crate::im::callback::C2cMessage;
use crate::keys;
use crate::obs;
use crate::outbox::{self, Kind};
use crate::store::{Attr, Item, StoreError, Table, Update, Write};
use crate::wechat::message::{Message, MessageKind};

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

pub fn is_agent(app: &App, user: &str) -> bool {
    app.config
        .im
        .as_ref()
        .is_some_and(|im| im.agents.iter().any(|a| a == user))
}

/// The agent for a follower: the one they were given while that agent is still listed, else
/// the next in a round-robin shared by all instances (an atomic counter in the store).
async fn assign_agent(app: &App, conv: Option<&Item>) -> Result<Option<String>, StoreError> {
    let Some(im) = &app.config.im else {
        return Ok(None);
    };
    if let Some(a) = conv.and_then(|c| c.s("agent"))
        && im.agents.iter().any(|x| x == a)
    {
        return Ok(Some(a.to_owned()));
    }
    if im.agents.is_empty() {
        return Ok(None);
    }
    let cursor = app
        .store
        .write(Write::update(
            Table::State,
            keys::AGENT_CURSOR,
            keys::ONE,
            vec![Update::add("next", 1)],
        ))
        .await?
        .and_then(|i| i.n("next"))
        .unwrap_or(1);
    Ok(Some(
        im.agents[((cursor - 1).rem_euclid(im.agents.len() as i64)) as usize].clone(),
    ))
}

fn conversation_writes(openid: &str, agent: Option<&str>, status: &str, now: i64) -> Vec<Write> {
    let mut u = vec![
        Update::set("openid", openid),
        Update::set("status", status),
        Update::set("updated_at", now),
        Update::set_if_absent("created_at", now),
    ];
    if let Some(a) = agent {
        u.push(Update::set("agent", a));
    }
    vec![Write::update(
        Table::State,
        &keys::conversation(openid),
        keys::ONE,
        u,
    )]
}

/// The follower's IM identity is their openid: record it as the binding in both directions.
fn binding_writes(openid: &str, status: &str, now: i64) -> Vec<Write> {
    let app = AppKind::Oa;
    vec![
        Write::update(
            Table::State,
            &keys::binding_by_user(openid),
            app.as_str(),
            vec![
                Update::set("user_id", openid),
                Update::set("app", app.as_str()),
                Update::set("openid", openid),
                Update::set("status", status),
                Update::set_if_absent("bound_at", now),
            ],
        ),
        Write::update(
            Table::State,
            &keys::binding_by_openid(app, openid),
            keys::ONE,
            vec![
                Update::set("user_id", openid),
                Update::set("app", app.as_str()),
                Update::set("openid", openid),
                Update::set("status", status),
                Update::set_if_absent("bound_at", now),
            ],
        ),
    ]
}

fn job(app: &App, id_parts: &[&str], kind: Kind, attrs: Vec<(&str, Attr)>) -> Write {
    let id = outbox::id_for(id_parts);
    outbox::enqueue(
        &id,
        kind,
        attrs,
        app.now(),
        app.config.outbox_retention_secs,
    )
}

/// `subscribe` (follow): import into IM, assign an agent, welcome as the passive reply.
pub async fn on_follow(app: &App, msg: &Message, delivery: &str) -> Result<Plan, StoreError> {
    let openid = msg.from_user.as_str();
    let now = app.now();
    let conv = app
        .store
        .get(Table::State, &keys::conversation(openid), keys::ONE)
        .await?;
    let agent = assign_agent(app, conv.as_ref()).await?;
    let mut writes = conversation_writes(openid, agent.as_deref(), "active", now);
    if let Some(Write::Update { updates, .. }) = writes.first_mut() {
        updates.push(Update::set("followed_at", now));
        updates.push(Update::remove("ended_at"));
    }
    writes.extend(binding_writes(openid, "active", now));
    if app.config.im.is_some() {
        writes.push(job(
            app,
            &["import", delivery],
            Kind::Import,
            vec![("user_id", Attr::from(openid))],
        ));
    }
    Ok(Plan {
        writes,
        reply: Some(app.config.oa_bridge.welcome_text.clone()),
        decision: "follower_welcomed",
    })
}

/// `unsubscribe`: the conversation and binding end; the IM account is deleted where the edition
/// allows it (otherwise kept, marked inactive here).
pub async fn on_unfollow(app: &App, msg: &Message, delivery: &str) -> Result<Plan, StoreError> {
    let openid = msg.from_user.as_str();
    let now = app.now();
    let mut writes = conversation_writes(openid, None, "ended", now);
    if let Some(Write::Update { updates, .. }) = writes.first_mut() {
        updates.push(Update::set("ended_at", now));
    }
    writes.extend(binding_writes(openid, "ended", now));
    if app.config.im.is_some() {
        writes.push(job(
            app,
            &["delete", delivery],
            Kind::Delete,
            vec![("user_id", Attr::from(openid))],
        ));
    }
    Ok(Plan {
        writes,
        reply: None,
        decision: "follower_left",
    })
}

/// A follower's message: forwarded to their agent from their own IM account; the passive reply
/// says "connecting you" once per conversation window, not on every message.
pub async fn on_user_message(app: &App, msg: &Message, delivery: &str) -> Result<Plan, StoreError> {
    let Some(text) = summary(&msg.kind) else {
        return Ok(Plan {
            decision: "ignored_unknown",
            ..Default::default()
        });
    };
    let openid = msg.from_user.as_str();
    let now = app.now();
    let conv = app
        .store
        .get(Table::State, &keys::conversation(openid), keys::ONE)
        .await?;
    let agent = assign_agent(app, conv.as_ref()).await?;
    let mut writes = conversation_writes(openid, agent.as_deref(), "active", now);
    let window = app.config.oa_bridge.conversation_window_secs;
    let greet = conv
        .as_ref()
        .and_then(|c| c.n("connecting_sent_at"))
        .is_none_or(|t| now - t >= window);
    if let Some(Write::Update { updates, .. }) = writes.first_mut() {
        // The customer-service window (48 h) opens with each message the follower sends.
        updates.push(Update::set("last_user_msg_at", now));
        if greet {
            updates.push(Update::set("connecting_sent_at", now));
        }
    }
    if conv.is_none() {
        // A follower from before the bridge existed: make sure they exist in IM.
        writes.extend(binding_writes(openid, "active", now));
        if app.config.im.is_some() {
            writes.push(job(
                app,
                &["import", delivery],
                Kind::Import,
                vec![("user_id", Attr::from(openid))],
            ));
        }
    }
    let decision = match &agent {
        Some(a) => {
            writes.push(job(
                app,
                &["forward", delivery],
                Kind::Forward,
                vec![
                    ("from", Attr::from(openid)),
                    ("to", Attr::from(a.as_str())),
                    ("text", Attr::from(text)),
                ],
            ));
            "forwarded_to_agent"
        }
        None => "no_agent_configured",
    };
    Ok(Plan {
        writes,
        reply: greet.then(|| app.config.oa_bridge.connecting_text.clone()),
        decision,
    })
}

/// An IM message from an agent to a follower becomes a customer-service message; returns the
/// decision when the message was the bridge's to handle.
pub async fn on_im_message(
    app: &App,
    msg: &C2cMessage,
) -> Result<Option<&'static str>, StoreError> {
    if !is_agent(app, &msg.from) || app.config.oa.is_none() {
        return Ok(None);
    }
    let conv = app
        .store
        .get(Table::State, &keys::conversation(&msg.to), keys::ONE)
        .await?;
    if conv.is_none() {
        return Ok(None);
    }
    if msg.send_result.is_some_and(|r| r != 0) {
        return Ok(Some("agent_message_not_delivered_in_im"));
    }
    let text = msg.text_summary();
    let w = job(
        app,
        &["kf", &msg.idempotency_key()],
        Kind::CustomerService,
        vec![
            ("openid", Attr::from(msg.to.as_str())),
            ("agent", Attr::from(msg.from.as_str())),
            ("text", Attr::from(text)),
        ],
    );
    match app.store.transact(crate::due::with_watch(app, w)).await {
        Ok(_) => {
            obs::metric("AgentRepliesQueued", &[], 1.0);
            Ok(Some("agent_reply_queued"))
        }
        Err(StoreError::ConditionFailed { .. }) => Ok(Some("duplicate_callback")),
        Err(e) => Err(e),
    }
}
