//! The mini program's customer service, end to end: a user who taps `<button
//! open-type="contact">` enters the session (`user_enter_tempsession`, with `SessionFrom`) and
//! writes to the mini program's push URL; their agent (`IM_AGENT_ACCOUNTS_MP`) reads it in IM from
//! the IM account that speaks for them (their bound IM user, else their openid, imported), and
//! the agent's reply goes back through `custom/send` with the mini program's token.

use common::config::AppKind;
use common::protocol::wechat::push::Delivery;
use common::records::keys;
use serde_json::json;
use wxim_tests::BACKENDS;
use wxim_tests::harness::{CUSTOMER, MP_OPENID, Options, World};

use super::oa::{CUSTOM, SENDMSG, T0, agent_types};

const MP_APPID: &str = "wx1234567890abcdef";

fn world(b: wxim_tests::Backend) -> Options<'static> {
    Options::new(b)
        .at(T0)
        .set("IM_AGENT_ACCOUNTS_MP", "agent_bob")
}

async fn mp_push(w: &World, body: serde_json::Value) -> String {
    let r = w.push(AppKind::Mp, &body.to_string(), Delivery::Safe).await;
    assert_eq!(r.status, 200, "{}", r.body_str());
    r.body_str().to_owned()
}

fn base(w: &World, openid: &str) -> serde_json::Value {
    json!({"ToUserName": "gh_123456789abc", "FromUserName": openid, "CreateTime": w.now()})
}

async fn enter(w: &World, openid: &str, from: &str) -> String {
    let mut b = base(w, openid);
    b["MsgType"] = json!("event");
    b["Event"] = json!("user_enter_tempsession");
    b["SessionFrom"] = json!(from);
    mp_push(w, b).await
}

async fn write(w: &World, openid: &str, id: u64, text: &str) -> String {
    let mut b = base(w, openid);
    b["MsgType"] = json!("text");
    b["Content"] = json!(text);
    b["MsgId"] = json!(id);
    mp_push(w, b).await
}

/// The messages forwarded to agents: (from, to, text).
fn forwards(w: &World) -> Vec<(String, String, String)> {
    w.im.requests(SENDMSG)
        .iter()
        .filter_map(|r| {
            Some((
                r.body.get("From_Account")?.as_str()?.to_owned(),
                r.body["To_Account"].as_str()?.to_owned(),
                r.body["MsgBody"][0]["MsgContent"]["Text"]
                    .as_str()?
                    .to_owned(),
            ))
        })
        .collect()
}

async fn agent_replies(w: &World, to: &str, text: &str) {
    let mut m = w.c2c("agent_bob", to, text);
    m["From_Account"] = json!("agent_bob");
    assert_eq!(w.im("C2C.CallbackAfterSendMsg", m).await.status, 200);
}

async fn conv(w: &World, im_user: &str) -> common::store::Item {
    w.state_item(&keys::conversation_of(AppKind::Mp, im_user), keys::ONE)
        .await
        .expect("a mini-program conversation")
}

#[tokio::test]
async fn a_users_session_reaches_the_agent_with_its_session_from_and_the_reply_comes_back() {
    for b in BACKENDS {
        let w = World::new(world(b)).await;
        let user = "oMpUser00000000000000000001";
        assert_eq!(enter(&w, user, "order:20240511-17").await, "success");
        let c = conv(&w, user).await;
        assert_eq!(
            (
                c.s("allowance_by"),
                c.n("allowance_left"),
                c.n("allowance_until")
            ),
            (Some("mp_session"), Some(2), Some(T0 + 60)),
            "{b:?}"
        );
        assert_eq!(c.s("agent"), Some("agent_bob"));
        // The unbound user's IM account is their openid, imported like a follower's.
        assert!(w.im.has_account(user), "{b:?}");
        w.advance(1);
        assert_eq!(write(&w, user, 1, "我的订单还没到").await, "success");
        w.advance(1);
        write(&w, user, 2, "能帮我查一下吗").await;
        assert_eq!(
            forwards(&w),
            vec![
                (
                    user.to_owned(),
                    "agent_bob".to_owned(),
                    "[SessionFrom: order:20240511-17] 我的订单还没到".to_owned()
                ),
                (
                    user.to_owned(),
                    "agent_bob".to_owned(),
                    "能帮我查一下吗".to_owned()
                ),
            ],
            "{b:?}: SessionFrom with the first message only"
        );
        assert_eq!(conv(&w, user).await.s("allowance_by"), Some("mp_message"));
        agent_replies(&w, user, "已经在路上了").await;
        let sent = w.wechat.requests(CUSTOM);
        assert_eq!(sent.len(), 1, "{b:?}");
        assert_eq!(
            sent[0].body,
            json!({"touser": user, "msgtype": "text", "text": {"content": "已经在路上了"}})
        );
        let token = sent[0]
            .query
            .iter()
            .find(|(k, _)| k == "access_token")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        assert!(
            token.starts_with(&format!("ACCESS_TOKEN_{MP_APPID}")),
            "{b:?}: the mini program's token"
        );
        assert_eq!(conv(&w, user).await.n("allowance_left"), Some(4));
    }
}

#[tokio::test]
async fn a_bound_user_speaks_through_their_own_im_account() {
    for b in BACKENDS {
        let w = World::new(world(b)).await;
        w.bind(CUSTOMER, MP_OPENID).await;
        enter(&w, MP_OPENID, "").await;
        w.advance(1);
        write(&w, MP_OPENID, 7, "hello").await;
        assert_eq!(
            forwards(&w),
            vec![(
                CUSTOMER.to_owned(),
                "agent_bob".to_owned(),
                "hello".to_owned()
            )],
            "{b:?}"
        );
        assert!(!w.im.has_account(MP_OPENID), "{b:?}: no account imported");
        agent_replies(&w, CUSTOMER, "hi!").await;
        let sent = w.wechat.requests(CUSTOM);
        assert_eq!(sent.len(), 1, "{b:?}");
        assert_eq!(sent[0].body["touser"], MP_OPENID);
        // Not an official-account follower: the agents of the official account do not reach
        // the user through the mini program.
        let mut m = w.c2c("agent_alice", CUSTOMER, "not mine");
        m["From_Account"] = json!("agent_alice");
        w.im("C2C.CallbackAfterSendMsg", m).await;
        assert_eq!(w.wechat.count(CUSTOM), 1, "{b:?}");
    }
}

#[tokio::test]
async fn without_mini_program_agents_its_messages_are_only_acknowledged() {
    let w = World::new(Options::new(wxim_tests::Backend::Embedded).at(T0)).await;
    enter(&w, "oMpUser00000000000000000002", "x").await;
    write(&w, "oMpUser00000000000000000002", 1, "hello").await;
    assert!(forwards(&w).is_empty());
    assert!(w.outbox().await.is_empty());
}

#[tokio::test]
async fn an_agent_typing_shows_the_mini_programs_typing_state() {
    for b in BACKENDS {
        let w = World::new(world(b)).await;
        w.bind(CUSTOMER, MP_OPENID).await;
        enter(&w, MP_OPENID, "").await;
        write(&w, MP_OPENID, 1, "在吗").await;
        // The stand-in grants typing only within 30 s of an exchange, as WeChat does.
        w.wechat.user_wrote(MP_OPENID);
        agent_types(&w, "agent_bob", CUSTOMER).await;
        let typing = w.wechat.requests("/cgi-bin/message/custom/business/typing");
        assert_eq!(typing.len(), 1, "{b:?}");
        assert_eq!(
            typing[0].body,
            json!({"touser": MP_OPENID, "command": "Typing"})
        );
        assert_eq!(w.wechat.count("/cgi-bin/message/custom/typing"), 0, "{b:?}");
        assert_eq!(w.outbox_of("kf_typing").await[0].s("status"), Some("sent"));
        assert_eq!(w.wechat.count(CUSTOM), 0, "{b:?}: never a message");
    }
}
