//! The official-account customer-service bridge, end to end: signed pushes from followers and
//! signed IM callbacks from agents, through the public handlers, against the stand-ins.

use common::config::AppKind;
use common::protocol::wechat::message::{MessageKind, parse_envelope, parse_message};
use common::protocol::wechat::push::Delivery;
use common::records::keys;
use common::store::Table;
use local::standin::Scripted;
use serde_json::json;
use wxim_tests::harness::{OA_GH, Options, World};
use wxim_tests::{BACKENDS, Backend};

pub(super) const T0: i64 = 1_700_000_000;
pub(super) const CUSTOM: &str = "/cgi-bin/message/custom/send";
pub(super) const BIZSEND: &str = "/cgi-bin/message/subscribe/bizsend";
pub(super) const SENDMSG: &str = "/v4/openim/sendmsg";
const WELCOME: &str = "Welcome! Send us a message and one of our agents will answer you here.";
const CONNECTING: &str = "Connecting you to an agent, please wait a moment.";

pub(super) fn xml(from: &str, ts: i64, inner: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{OA_GH}]]></ToUserName><FromUserName><![CDATA[{from}]]></FromUserName><CreateTime>{ts}</CreateTime>{inner}</xml>"
    )
}

/// A follower's event (`subscribe`, `unsubscribe`) pushed in safe mode; its passive reply.
pub(super) async fn push_event(w: &World, who: &str, name: &str) -> String {
    let r = w
        .push(AppKind::Oa, &event(who, w.now(), name), Delivery::Safe)
        .await;
    assert_eq!(r.status, 200);
    reply(w, r.body_str())
}

pub(super) async fn follow(w: &World, who: &str) -> String {
    push_event(w, who, "subscribe").await
}

pub(super) async fn say(w: &World, who: &str, msg_id: u64, text: &str) -> String {
    let r = w
        .push(
            AppKind::Oa,
            &xml(who, w.now(), &format!("<MsgType>text</MsgType><Content><![CDATA[{text}]]></Content><MsgId>{msg_id}</MsgId>")),
            Delivery::Safe,
        )
        .await;
    assert_eq!(r.status, 200);
    reply(w, r.body_str())
}

/// The passive reply's text, decrypted ("success" when there is none).
pub(super) fn reply(w: &World, body: &str) -> String {
    let Ok(env) = parse_envelope(body.as_bytes()) else {
        return body.to_owned();
    };
    let Some(enc) = env.encrypt else {
        return body.to_owned();
    };
    let oa = w.app.config.app(AppKind::Oa).unwrap();
    let plain = oa.crypto.as_ref().unwrap().decrypt(&enc).unwrap();
    match parse_message(&plain).unwrap().kind {
        MessageKind::Text { content } => content,
        k => panic!("{k:?}"),
    }
}

pub(super) async fn agent_replies(
    w: &World,
    agent: &str,
    to: &str,
    text: &str,
) -> serde_json::Value {
    let m = {
        let mut m = w.c2c(agent, to, text);
        m["From_Account"] = json!(agent);
        m
    };
    let r = w.im("C2C.CallbackAfterSendMsg", m.clone()).await;
    assert_eq!(r.status, 200);
    m
}

/// An agent's message with any `MsgBody`, as IM's after-send callback reports it.
async fn agent_sends(
    w: &World,
    agent: &str,
    to: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let mut m = w.c2c(agent, to, "");
    m["MsgBody"] = body;
    let r = w.im("C2C.CallbackAfterSendMsg", m.clone()).await;
    assert_eq!(r.status, 200);
    m
}

pub(super) fn custom_texts(w: &World) -> Vec<String> {
    w.wechat
        .requests(CUSTOM)
        .iter()
        .map(|r| r.body["text"]["content"].as_str().unwrap().to_owned())
        .collect()
}

/// The IM notices the admin account sent: (recipient, text).
pub(super) fn notices(w: &World) -> Vec<(String, String)> {
    w.im.requests(SENDMSG)
        .iter()
        .filter(|r| r.body.get("From_Account").is_none())
        .map(|r| {
            (
                r.body["To_Account"].as_str().unwrap().to_owned(),
                r.body["MsgBody"][0]["MsgContent"]["Text"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect()
}

pub(super) async fn conv(w: &World, openid: &str) -> common::store::Item {
    w.state_item(&keys::conversation(openid), keys::ONE)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_follow_imports_assigns_and_welcomes_once() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        assert_eq!(follow(&w, "oFollower1").await, WELCOME, "{b:?}");
        assert!(
            w.im.has_account("oFollower1"),
            "{b:?}: imported, IM user id = openid"
        );
        let c = conv(&w, "oFollower1").await;
        assert_eq!(
            (c.s("status"), c.s("agent")),
            (Some("active"), Some("agent_alice"))
        );
        // WeChat's retry of the follow gets the same welcome and imports nothing more.
        let again = w
            .push(
                AppKind::Oa,
                &xml(
                    "oFollower1",
                    T0,
                    "<MsgType>event</MsgType><Event>subscribe</Event>",
                ),
                Delivery::Safe,
            )
            .await;
        assert_eq!(reply(&w, again.body_str()), WELCOME, "{b:?}");
        assert_eq!(
            w.im.count("/v4/im_open_login_svc/account_import"),
            1,
            "{b:?}"
        );
        // Importing an account that already exists is not an error.
        w.advance(10);
        follow(&w, "oFollower1").await;
        assert_eq!(
            w.outbox_of("im_import")
                .await
                .iter()
                .filter(|i| i.s("status") == Some("sent"))
                .count(),
            2
        );
    }
}

#[tokio::test]
async fn new_followers_are_spread_and_keep_their_agent() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    for who in ["oA", "oB", "oC"] {
        follow(&w, who).await;
    }
    let agents: Vec<_> = [
        conv(&w, "oA").await,
        conv(&w, "oB").await,
        conv(&w, "oC").await,
    ]
    .iter()
    .map(|c| c.s("agent").unwrap().to_owned())
    .collect();
    assert_eq!(agents, ["agent_alice", "agent_bob", "agent_alice"]);
    say(&w, "oB", 1, "hi").await;
    say(&w, "oB", 2, "again").await;
    assert_eq!(
        conv(&w, "oB").await.s("agent"),
        Some("agent_bob"),
        "a follower keeps their agent"
    );
    let to: Vec<_> =
        w.im.requests(SENDMSG)
            .iter()
            .map(|r| r.body["To_Account"].as_str().unwrap().to_owned())
            .collect();
    assert_eq!(to, ["agent_bob", "agent_bob"]);
    assert!(
        w.im.requests(SENDMSG)
            .iter()
            .all(|r| r.body["From_Account"] == "oB"),
        "sent from the follower's own account"
    );
}

#[tokio::test]
async fn a_removed_agent_hands_over_to_the_remaining_ones() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    follow(&w, "oA").await;
    assert_eq!(conv(&w, "oA").await.s("agent"), Some("agent_alice"));
    // The same store, with agent_alice no longer on duty.
    let app2 = common::App::new(
        wxim_tests::config(&[
            ("IM_AGENT_ACCOUNTS", "agent_bob"),
            ("WECHAT_API_BASE", &w.wechat.base),
            ("IM_API_BASE", &w.im.base),
        ]),
        w.app.store.clone(),
        w.app.clock.clone(),
    );
    let oa = app2.config.app(AppKind::Oa).unwrap();
    let signed = common::protocol::wechat::push::seal(
        oa,
        xml(
            "oA",
            T0 + 5,
            "<MsgType>text</MsgType><Content>hi</Content><MsgId>9</MsgId>",
        )
        .as_bytes(),
        Delivery::Safe,
        "1700000005",
        "1",
    )
    .unwrap();
    let req = common::http::Request::new("POST", &format!("/wechat/oa?{}", signed.query_string()))
        .with_body(signed.body);
    local::routes::call(local::routes::Function::WechatEvent, &req, &app2).await;
    assert_eq!(conv(&w, "oA").await.s("agent"), Some("agent_bob"));
}

#[tokio::test]
async fn connecting_you_is_said_once_per_conversation_window() {
    let w = World::new(
        Options::new(Backend::Embedded)
            .at(T0)
            .set("OA_CONVERSATION_WINDOW_SECS", "1800"),
    )
    .await;
    follow(&w, "oA").await;
    assert_eq!(say(&w, "oA", 1, "first").await, CONNECTING);
    w.advance(60);
    assert_eq!(say(&w, "oA", 2, "second").await, "success");
    w.advance(1800);
    assert_eq!(say(&w, "oA", 3, "much later").await, CONNECTING);
    assert_eq!(w.im.delivered(), 3, "every message was forwarded");
    // Custom texts from configuration.
    let w = World::new(
        Options::new(Backend::Embedded)
            .at(T0)
            .set("OA_CONNECTING_TEXT", "稍等，客服马上来")
            .set("OA_WELCOME_TEXT", "欢迎关注"),
    )
    .await;
    assert_eq!(follow(&w, "oA").await, "欢迎关注");
    assert_eq!(say(&w, "oA", 1, "hi").await, "稍等，客服马上来");
}

#[tokio::test]
async fn non_text_messages_reach_the_agent_as_images_or_readable_summaries() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    follow(&w, "oA").await;
    let kinds = [
        "<MsgType>image</MsgType><PicUrl>https://p/x.jpg</PicUrl><MediaId>m1</MediaId><MsgId>1</MsgId>",
        "<MsgType>voice</MsgType><MediaId>m2</MediaId><Format>amr</Format><Recognition>你好</Recognition><MsgId>2</MsgId>",
        "<MsgType>video</MsgType><MediaId>m3</MediaId><ThumbMediaId>t</ThumbMediaId><MsgId>3</MsgId>",
        "<MsgType>location</MsgType><Location_X>23.1</Location_X><Location_Y>113.3</Location_Y><Scale>20</Scale><Label>广州</Label><MsgId>4</MsgId>",
        "<MsgType>link</MsgType><Title>Docs</Title><Description>d</Description><Url>https://e/d</Url><MsgId>5</MsgId>",
    ];
    for (i, k) in kinds.iter().enumerate() {
        w.push(AppKind::Oa, &xml("oA", T0 + i as i64, k), Delivery::Safe)
            .await;
    }
    let texts: Vec<String> =
        w.im.requests(SENDMSG)
            .iter()
            .map(|r| {
                let e = &r.body["MsgBody"][0];
                match e["MsgType"].as_str() {
                    Some("TIMImageElem") => format!(
                        "image {}",
                        e["MsgContent"]["ImageInfoArray"][0]["URL"]
                            .as_str()
                            .unwrap()
                    ),
                    _ => e["MsgContent"]["Text"].as_str().unwrap().to_owned(),
                }
            })
            .collect();
    assert_eq!(
        texts,
        [
            "image https://p/x.jpg",
            "[语音] 你好 (media_id m2)",
            "[视频] (media_id m3)",
            "[位置] 广州 (23.1, 113.3)",
            "[链接] Docs https://e/d",
        ]
    );
}

#[tokio::test]
async fn a_forward_whose_answer_was_lost_is_resent_once_with_the_same_random() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    follow(&w, "oA").await;
    // IM takes the message but the answer never arrives in time: the job is retried, within
    // the same second here, where IM recognises the MsgRandom (a retry in a later second would
    // be a second message: IM's deduplication does not reach further, reference §3.2).
    w.im.script(
        SENDMSG,
        vec![Scripted::Delay(std::time::Duration::from_millis(800), None)],
    );
    say(&w, "oA", 1, "hello").await;
    let sends = w.im.requests(SENDMSG);
    assert_eq!(sends.len(), 2, "sent, timed out, sent again");
    assert_eq!(sends[0].body["MsgRandom"], sends[1].body["MsgRandom"]);
    assert_eq!(w.im.delivered(), 1, "IM sees one message");
    assert_eq!(w.outbox_of("forward").await[0].s("status"), Some("sent"));
}

#[tokio::test]
async fn a_forward_whose_answer_was_lost_and_that_is_retried_later_reaches_the_agent_once() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        follow(&w, "oA").await;
        // The follower's message queues a forward; IM takes it but the answer is lost.
        let r = w
            .push_only(
                AppKind::Oa,
                &xml(
                    "oA",
                    w.now(),
                    "<MsgType>text</MsgType><Content>hello</Content><MsgId>1</MsgId>",
                ),
                Delivery::Safe,
            )
            .await;
        assert_eq!(r.status, 200);
        let id = job_id(&w, "forward").await;
        w.im.script(
            SENDMSG,
            vec![Scripted::Delay(std::time::Duration::from_millis(800), None)],
        );
        let retry = common::flows::dispatch::run(&w.app, std::slice::from_ref(&id)).await;
        assert_eq!(retry.len(), 1, "{b:?}: timed out, to be retried");
        // The stand-in applies the call once its delay is over, after the client gave up.
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        assert_eq!(w.im.delivered(), 1, "{b:?}: yet IM has it");
        // The retry comes seconds later, beyond IM's own same-second deduplication: only the
        // history check keeps it from being a second message.
        w.advance(30);
        assert!(
            common::flows::dispatch::run(&w.app, std::slice::from_ref(&id))
                .await
                .is_empty()
        );
        assert_eq!(
            w.im.delivered(),
            1,
            "{b:?}: the agent sees the message once"
        );
        assert_eq!(w.im.requests(SENDMSG).len(), 1, "{b:?}: not sent again");
        assert_eq!(w.im.count("/v4/openim/admin_getroammsg"), 1, "{b:?}");
        let f = &w.outbox_of("forward").await[0];
        assert_eq!(f.s("status"), Some("sent"), "{b:?}");
        assert!(
            f.s("msg_key").is_some_and(|k| k.ends_with(&T0.to_string())),
            "{b:?}: {f:?}"
        );
    }
}

#[tokio::test]
async fn a_forward_that_never_arrived_is_sent_on_its_retry_and_a_stale_claim_is_checked_not_dropped()
 {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        follow(&w, "oA").await;
        w.push_only(
            AppKind::Oa,
            &xml(
                "oA",
                w.now(),
                "<MsgType>text</MsgType><Content>one</Content><MsgId>1</MsgId>",
            ),
            Delivery::Safe,
        )
        .await;
        let id = job_id(&w, "forward").await;
        // IM refuses with a 5xx before taking it: the retry finds nothing and sends.
        w.im.script(SENDMSG, vec![Scripted::Status(502)]);
        assert_eq!(
            common::flows::dispatch::run(&w.app, std::slice::from_ref(&id))
                .await
                .len(),
            1
        );
        w.advance(30);
        assert!(
            common::flows::dispatch::run(&w.app, std::slice::from_ref(&id))
                .await
                .is_empty()
        );
        assert_eq!(w.im.delivered(), 1, "{b:?}");
        assert_eq!(w.outbox_of("forward").await[0].s("status"), Some("sent"));

        // A dispatcher that claimed the next forward went silent after IM took it: the claim
        // is taken over, the history says it arrived, and it ends sent, not maybe_sent.
        w.push_only(
            AppKind::Oa,
            &xml(
                "oA",
                w.now(),
                "<MsgType>text</MsgType><Content>two</Content><MsgId>2</MsgId>",
            ),
            Delivery::Safe,
        )
        .await;
        let second = w
            .outbox_of("forward")
            .await
            .iter()
            .find(|i| i.s("status") == Some("queued"))
            .map(|i| common::records::outbox::id_of(i).to_owned())
            .expect("a second forward");
        let claim = common::records::outbox::claim(&*w.app.store, &second, w.now())
            .await
            .unwrap()
            .unwrap();
        let im = w.app.im.as_ref().unwrap();
        let common::records::outbox::Job::Forward { from, to, text, .. } = &claim.item.job else {
            panic!("a forward");
        };
        let random = common::flows::jobs::msg_random(&second);
        im.send_text(
            Some(from),
            to.as_deref().unwrap(),
            text,
            random,
            &*w.app.clock,
        )
        .await
        .unwrap();
        w.advance(common::records::outbox::CLAIM_SECS + 1);
        assert!(
            common::flows::dispatch::run(&w.app, std::slice::from_ref(&second))
                .await
                .is_empty()
        );
        assert_eq!(w.im.delivered(), 2, "{b:?}: two messages, each once");
        let items = w.outbox_of("forward").await;
        assert!(
            items.iter().all(|i| i.s("status") == Some("sent")),
            "{b:?}: {items:?}"
        );
    }
}

#[tokio::test]
async fn a_forward_before_the_import_imports_first() {
    let w = World::new(
        Options::new(Backend::Embedded)
            .at(T0)
            .set("DISPATCH_MAX_ATTEMPTS", "2"),
    )
    .await;
    // IM is down during the follow: the import fails for good.
    w.im.script(
        "/v4/im_open_login_svc/account_import",
        vec![Scripted::Status(502), Scripted::Status(502)],
    );
    follow(&w, "oA").await;
    assert_eq!(
        w.outbox_of("im_import").await[0].s("status"),
        Some("failed")
    );
    assert!(!w.im.has_account("oA"));
    // The first message finds the account missing (90012), imports it, and is delivered.
    say(&w, "oA", 1, "hello").await;
    assert!(w.im.has_account("oA"));
    assert_eq!(w.outbox_of("forward").await[0].s("status"), Some("sent"));
    assert_eq!(w.im.delivered(), 1);
}

#[tokio::test]
async fn an_agent_reply_becomes_a_customer_service_message_once() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        follow(&w, "oA").await;
        say(&w, "oA", 1, "where is my order?").await;
        let m = agent_replies(&w, "agent_alice", "oA", "它今天发货").await;
        let sent = w.wechat.requests(CUSTOM);
        assert_eq!(sent.len(), 1, "{b:?}");
        assert_eq!(
            sent[0].body,
            json!({"touser": "oA", "msgtype": "text", "text": {"content": "它今天发货"}})
        );
        // IM's retry of the same callback does nothing more.
        w.im("C2C.CallbackAfterSendMsg", m).await;
        assert_eq!(w.wechat.count(CUSTOM), 1, "{b:?}");
        assert_eq!(w.outbox_of("kf").await.len(), 1);
    }
}

#[tokio::test]
async fn outside_the_window_the_reply_falls_back_to_a_subscribe_message_with_a_credit() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    follow(&w, "oA").await;
    let popup = xml(
        "oA",
        T0 + 1,
        "<MsgType>event</MsgType><Event>subscribe_msg_popup_event</Event><SubscribeMsgPopupEvent><List><TemplateId>oa_reply_waiting_T0001</TemplateId><SubscribeStatusString>accept</SubscribeStatusString><PopupScene>2</PopupScene></List></SubscribeMsgPopupEvent>",
    );
    w.push(AppKind::Oa, &popup, Delivery::Safe).await;
    w.wechat.script(CUSTOM, vec![Scripted::Json(json!({"errcode": 45015, "errmsg": "response out of time limit or subscription is canceled"}))]);
    agent_replies(&w, "agent_alice", "oA", "包裹已签收").await;
    let biz = w.wechat.requests(BIZSEND);
    assert_eq!(biz.len(), 1);
    assert_eq!(biz[0].body["template_id"], "oa_reply_waiting_T0001");
    assert_eq!(biz[0].body["data"]["thing1"]["value"], "agent_alice");
    assert_eq!(biz[0].body["data"]["thing2"]["value"], "包裹已签收");
    let kf = &w.outbox_of("kf").await[0];
    assert_eq!(
        (kf.s("status"), kf.s("reason")),
        (Some("sent"), Some("fallback_subscribe after 45015"))
    );
    let credits = common::records::subscription::credits(
        &*w.app.store,
        AppKind::Oa,
        "oA",
        "oa_reply_waiting_T0001",
    )
    .await
    .unwrap();
    assert_eq!(credits, 0);
    // The agent hears that the reply went as a notification, not as a message.
    let told = notices(&w);
    assert_eq!(told.len(), 1);
    assert!(
        told[0].0 == "agent_alice"
            && told[0].1.contains("errcode 45015")
            && told[0].1.contains("sent a subscribe notification"),
        "{told:?}"
    );
}

#[tokio::test]
async fn with_no_credit_the_reply_is_undeliverable_and_the_agent_is_told() {
    for code in [45015, 45047] {
        let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
        follow(&w, "oA").await;
        w.wechat.script(
            CUSTOM,
            vec![Scripted::Json(
                json!({"errcode": code, "errmsg": "out of limit"}),
            )],
        );
        agent_replies(&w, "agent_bob", "oA", "还在吗").await;
        assert!(w.wechat.requests(BIZSEND).is_empty());
        let kf = &w.outbox_of("kf").await[0];
        assert_eq!(kf.s("status"), Some("failed"));
        assert_eq!(
            kf.s("reason"),
            Some(format!("undeliverable: {code}; no_fallback_credit").as_str())
        );
        let notice =
            w.im.requests(SENDMSG)
                .into_iter()
                .find(|r| r.body["To_Account"] == "agent_bob")
                .unwrap();
        assert!(
            notice.body.get("From_Account").is_none(),
            "{code}: from the admin account"
        );
        let text = notice.body["MsgBody"][0]["MsgContent"]["Text"]
            .as_str()
            .unwrap();
        assert!(
            text.contains("oA")
                && text.contains(&code.to_string())
                && text.contains("no subscribe-message credit for the fallback"),
            "{text}"
        );
        assert!(!text.contains("when they write again"), "{text}");
        assert_eq!(
            w.outbox_of("agent_notice").await[0].s("status"),
            Some("sent")
        );
    }
}

#[tokio::test]
async fn wechat_and_im_failures_mid_way_are_retried_and_recorded() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    follow(&w, "oA").await;
    w.wechat.script(
        CUSTOM,
        vec![
            Scripted::Status(502),
            Scripted::Json(json!({"errcode": -1, "errmsg": "system busy"})),
        ],
    );
    agent_replies(&w, "agent_alice", "oA", "retry me").await;
    assert_eq!(w.wechat.count(CUSTOM), 3);
    assert_eq!(w.outbox_of("kf").await[0].s("status"), Some("sent"));
    // A permanent refusal from IM is recorded, not retried.
    w.im.script(
        SENDMSG,
        vec![Scripted::Json(
            json!({"ActionStatus": "FAIL", "ErrorCode": 80001, "ErrorInfo": "sensitive words"}),
        )],
    );
    say(&w, "oA", 7, "something sensitive").await;
    let f = &w.outbox_of("forward").await[0];
    assert_eq!(
        (f.s("status"), f.s("reason")),
        (Some("failed"), Some("im_80001"))
    );
    assert_eq!(forwards(&w).len(), 1, "not retried");
    assert_eq!(notices(&w).len(), 1, "the agent is told");
}

/// The forwards attempted: sendmsg requests from a follower's own account.
fn forwards(w: &World) -> Vec<local::standin::Recorded> {
    w.im.requests(SENDMSG)
        .into_iter()
        .filter(|r| r.body.get("From_Account").is_some())
        .collect()
}

#[tokio::test]
async fn an_unfollow_ends_the_conversation_and_deletes_where_allowed() {
    for allowed in [false, true] {
        let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
        w.im.allow_delete(allowed);
        follow(&w, "oA").await;
        w.push(
            AppKind::Oa,
            &xml(
                "oA",
                T0 + 9,
                "<MsgType>event</MsgType><Event>unsubscribe</Event>",
            ),
            Delivery::Safe,
        )
        .await;
        let c = conv(&w, "oA").await;
        assert_eq!(c.s("status"), Some("ended"));
        let bind = w
            .state_item(&keys::binding_by_openid(AppKind::Oa, "oA"), keys::ONE)
            .await
            .unwrap();
        assert_eq!(bind.s("status"), Some("ended"));
        let del = &w.outbox_of("im_delete").await[0];
        if allowed {
            assert_eq!(
                (del.s("status"), del.s("reason")),
                (Some("sent"), Some("deleted"))
            );
            assert!(!w.im.has_account("oA"));
        } else {
            assert_eq!(
                (del.s("status"), del.s("reason")),
                (Some("skipped"), Some("kept_inactive_71000"))
            );
            assert!(w.im.has_account("oA"));
        }
    }
}

#[tokio::test]
async fn messages_from_non_agents_are_not_bridged() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    follow(&w, "oA").await;
    agent_replies(&w, "someone_else", "oA", "hi").await;
    assert_eq!(w.wechat.count(CUSTOM), 0);
    assert!(w.outbox_of("kf").await.is_empty());
    assert!(
        w.app
            .store
            .scan(Table::Outbox)
            .await
            .unwrap()
            .iter()
            .all(|i| i.s("kind") != Some("kf"))
    );
}

#[tokio::test]
async fn agent_media_replies_reach_the_follower_as_summaries_with_their_urls() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        follow(&w, "oA").await;
        say(&w, "oA", 1, "can you show me?").await;
        agent_sends(
            &w,
            "agent_alice",
            "oA",
            json!([{"MsgType": "TIMImageElem", "MsgContent": {"UUID": "i1", "ImageFormat": 1,
                "ImageInfoArray": [{"Type": 3, "URL": "https://im.example/thumb.jpg"},
                                   {"Type": 1, "URL": "https://im.example/orig.jpg"}]}}]),
        )
        .await;
        agent_sends(
            &w,
            "agent_alice",
            "oA",
            json!([{"MsgType": "TIMSoundElem", "MsgContent": {"Url": "https://im.example/v.silk",
                "UUID": "s1", "Size": 4096, "Second": 7, "Download_Flag": 2}}]),
        )
        .await;
        agent_sends(
            &w,
            "agent_alice",
            "oA",
            json!([{"MsgType": "TIMFileElem", "MsgContent": {"Url": "https://im.example/a.pdf",
                "UUID": "f1", "FileSize": 10, "FileName": "invoice.pdf", "Download_Flag": 2}}]),
        )
        .await;
        assert_eq!(
            custom_texts(&w),
            [
                "[图片] https://im.example/orig.jpg",
                "[语音] 7\" https://im.example/v.silk",
                "[文件] invoice.pdf https://im.example/a.pdf",
            ],
            "{b:?}"
        );
    }
}

async fn unfollow(w: &World, who: &str) {
    push_event(w, who, "unsubscribe").await;
}

#[tokio::test]
async fn an_account_delete_refused_per_item_is_a_failure_not_a_deletion() {
    const DELETE: &str = "/v4/im_open_login_svc/account_delete";
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        w.im.allow_delete(true);
        follow(&w, "oA").await;
        // The call succeeds as a whole, but the item says no.
        w.im.script(
            DELETE,
            vec![Scripted::Json(json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "",
                "ResultItem": [{"ResultCode": 70402, "ResultInfo": "invalid parameter", "UserID": "oA"}]}))],
        );
        w.advance(5);
        unfollow(&w, "oA").await;
        let del = &w.outbox_of("im_delete").await[0];
        assert_eq!(
            (del.s("status"), del.s("reason")),
            (Some("failed"), Some("im_70402")),
            "{b:?}"
        );
        assert!(w.im.has_account("oA"), "{b:?}: nothing was deleted");
        assert_eq!(
            w.im.count(DELETE),
            1,
            "{b:?}: a permanent refusal is not retried"
        );
    }
    // A retryable per-item error is retried, and the retry deletes the account.
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    w.im.allow_delete(true);
    follow(&w, "oB").await;
    w.im.script(
        DELETE,
        vec![Scripted::Json(
            json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "",
            "ResultItem": [{"ResultCode": 70500, "ResultInfo": "internal error", "UserID": "oB"}]}),
        )],
    );
    w.advance(5);
    unfollow(&w, "oB").await;
    let del = &w.outbox_of("im_delete").await[0];
    assert_eq!(
        (del.s("status"), del.s("reason")),
        (Some("sent"), Some("deleted"))
    );
    assert_eq!(w.im.count(DELETE), 2);
    assert!(!w.im.has_account("oB"));
}

#[tokio::test]
async fn the_im_stand_in_deduplicates_a_resend_only_within_the_same_second() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    let im = w.app.im.as_ref().unwrap();
    let clock = &*w.app.clock;
    let first = im
        .send_text(None, "agent_alice", "hi", 42, clock)
        .await
        .unwrap();
    let again = im
        .send_text(None, "agent_alice", "hi", 42, clock)
        .await
        .unwrap();
    assert_eq!(first, again, "the same message, the same MsgKey");
    assert_eq!(w.im.delivered(), 1);
    // IM only recognises a resend within the same second: a late one is a new message.
    w.advance(1);
    im.send_text(None, "agent_alice", "hi", 42, clock)
        .await
        .unwrap();
    assert_eq!(w.im.delivered(), 2);
}

#[tokio::test]
async fn a_retried_push_or_stream_record_never_forwards_twice() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        follow(&w, "oA").await;
        let msg = xml(
            "oA",
            T0,
            "<MsgType>text</MsgType><Content>where is it?</Content><MsgId>77</MsgId>",
        );
        let r = w.push(AppKind::Oa, &msg, Delivery::Safe).await;
        assert_eq!(reply(&w, r.body_str()), CONNECTING, "{b:?}");
        assert_eq!(w.im.count(SENDMSG), 1, "{b:?}");
        // Seconds later (past IM's own same-second deduplication) WeChat retries the push,
        // and the stream delivers the forward's record again: neither sends anything.
        w.advance(4);
        let r = w.push(AppKind::Oa, &msg, Delivery::Safe).await;
        assert_eq!(
            reply(&w, r.body_str()),
            CONNECTING,
            "{b:?}: the reply is replayed"
        );
        let id = common::records::outbox::id_of(&w.outbox_of("forward").await[0]).to_owned();
        assert!(common::flows::dispatch::run(&w.app, &[id]).await.is_empty());
        assert_eq!(w.im.count(SENDMSG), 1, "{b:?}");
        assert_eq!(w.im.delivered(), 1, "{b:?}");
        assert_eq!(w.outbox_of("forward").await.len(), 1, "{b:?}");
    }
}

#[tokio::test]
async fn connecting_you_waits_for_a_whole_window_of_silence() {
    for b in BACKENDS {
        let w = World::new(
            Options::new(b)
                .at(T0)
                .set("OA_CONVERSATION_WINDOW_SECS", "1800"),
        )
        .await;
        follow(&w, "oA").await;
        assert_eq!(say(&w, "oA", 1, "first").await, CONNECTING, "{b:?}");
        // A follower who keeps writing every 20 minutes for two hours is in one conversation.
        for i in 2..=7 {
            w.advance(1200);
            assert_eq!(say(&w, "oA", i, "still here").await, "success", "{b:?} {i}");
        }
        // Quiet for just under the window: still the same conversation.
        w.advance(1799);
        assert_eq!(say(&w, "oA", 8, "hello?").await, "success", "{b:?}");
        // Quiet for the whole window: a new one.
        w.advance(1800);
        assert_eq!(say(&w, "oA", 9, "new question").await, CONNECTING, "{b:?}");
        assert_eq!(w.im.delivered(), 9, "{b:?}: every message was forwarded");
    }
}

#[tokio::test]
async fn racing_first_messages_agree_on_one_agent_and_duplicates_do_not_move_the_cursor() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        // A follower from before the bridge writes several messages at once; WeChat also
        // retries one of them while the first delivery is still in flight.
        let msg = |id: u64| {
            xml(
                "oNew",
                T0,
                &format!("<MsgType>text</MsgType><Content>m{id}</Content><MsgId>{id}</MsgId>"),
            )
        };
        let (m1, m2, m3) = (msg(1), msg(2), msg(3));
        let (r1, r2, r3, r4) = tokio::join!(
            w.push(AppKind::Oa, &m1, Delivery::Safe),
            w.push(AppKind::Oa, &m2, Delivery::Safe),
            w.push(AppKind::Oa, &m3, Delivery::Safe),
            w.push(AppKind::Oa, &m1, Delivery::Safe),
        );
        for r in [r1, r2, r3, r4] {
            assert_eq!(r.status, 200, "{b:?}: {}", r.body_str());
        }
        // And once more afterwards.
        w.push(AppKind::Oa, &m2, Delivery::Safe).await;
        let agent = conv(&w, "oNew").await.s("agent").unwrap().to_owned();
        let to: Vec<String> =
            w.im.requests(SENDMSG)
                .iter()
                .map(|r| r.body["To_Account"].as_str().unwrap().to_owned())
                .collect();
        assert!(
            to.iter().all(|t| *t == agent),
            "{b:?}: one agent for the whole conversation: {to:?}"
        );
        assert_eq!(w.im.delivered(), 3, "{b:?}: each message once");
        let cursor = w.state_item(keys::AGENT_CURSOR, keys::ONE).await.unwrap();
        assert_eq!(cursor.n("next"), Some(1), "{b:?}: one assignment, one step");
        // The next new follower gets the other agent.
        follow(&w, "oOther").await;
        let other = conv(&w, "oOther").await.s("agent").unwrap().to_owned();
        assert_ne!(other, agent, "{b:?}");
    }
}

#[tokio::test]
async fn a_retried_follow_does_not_move_the_cursor() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        let sub = xml("oA", T0, "<MsgType>event</MsgType><Event>subscribe</Event>");
        let (r1, r2) = tokio::join!(
            w.push(AppKind::Oa, &sub, Delivery::Safe),
            w.push(AppKind::Oa, &sub, Delivery::Safe),
        );
        assert_eq!((r1.status, r2.status), (200, 200), "{b:?}");
        w.push(AppKind::Oa, &sub, Delivery::Safe).await;
        assert_eq!(
            conv(&w, "oA").await.s("agent"),
            Some("agent_alice"),
            "{b:?}"
        );
        let cursor = w.state_item(keys::AGENT_CURSOR, keys::ONE).await.unwrap();
        assert_eq!(cursor.n("next"), Some(1), "{b:?}");
        follow(&w, "oB").await;
        assert_eq!(conv(&w, "oB").await.s("agent"), Some("agent_bob"), "{b:?}");
    }
}

const DELETE: &str = "/v4/im_open_login_svc/account_delete";

pub(super) fn event(who: &str, ts: i64, name: &str) -> String {
    xml(
        who,
        ts,
        &format!("<MsgType>event</MsgType><Event>{name}</Event>"),
    )
}

async fn job_id(w: &World, kind: &str) -> String {
    let items = w.outbox_of(kind).await;
    assert_eq!(items.len(), 1, "one {kind} job");
    common::records::outbox::id_of(&items[0]).to_owned()
}

#[tokio::test]
async fn a_deletion_that_runs_after_a_quick_refollow_keeps_the_account() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        w.im.allow_delete(true);
        follow(&w, "oA").await;
        // Unfollow, then follow again a moment later; the stream runs the new import before
        // the deletion.
        w.advance(5);
        let r = w
            .push_only(
                AppKind::Oa,
                &event("oA", w.now(), "unsubscribe"),
                Delivery::Safe,
            )
            .await;
        assert_eq!(r.status, 200);
        let delete = job_id(&w, "im_delete").await;
        w.advance(2);
        let r = w
            .push_only(
                AppKind::Oa,
                &event("oA", w.now(), "subscribe"),
                Delivery::Safe,
            )
            .await;
        assert_eq!(r.status, 200);
        let import = w
            .outbox_of("im_import")
            .await
            .iter()
            .find(|i| i.s("status") == Some("queued"))
            .map(|i| common::records::outbox::id_of(i).to_owned())
            .unwrap();
        assert!(
            common::flows::dispatch::run(&w.app, &[import])
                .await
                .is_empty()
        );
        assert!(
            common::flows::dispatch::run(&w.app, &[delete])
                .await
                .is_empty()
        );
        let del = &w.outbox_of("im_delete").await[0];
        assert_eq!(
            (del.s("status"), del.s("reason")),
            (Some("skipped"), Some("follower_active_again")),
            "{b:?}"
        );
        assert_eq!(w.im.count(DELETE), 0, "{b:?}");
        assert!(w.im.has_account("oA"), "{b:?}");
        assert_eq!(conv(&w, "oA").await.s("status"), Some("active"));
    }
}

#[tokio::test]
async fn a_refollow_during_the_deletion_call_is_imported_again() {
    let w = World::new(
        Options::new(Backend::Embedded)
            .at(T0)
            .set("HTTP_TIMEOUT_MS", "3000"),
    )
    .await;
    w.im.allow_delete(true);
    follow(&w, "oA").await;
    w.advance(5);
    w.push_only(
        AppKind::Oa,
        &event("oA", w.now(), "unsubscribe"),
        Delivery::Safe,
    )
    .await;
    let delete = job_id(&w, "im_delete").await;
    // IM takes its time over the deletion; meanwhile the follower comes back and their import
    // runs, before IM deletes the account.
    w.im.script(
        DELETE,
        vec![Scripted::Delay(std::time::Duration::from_millis(800), None)],
    );
    let refollow = async {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        w.push(
            AppKind::Oa,
            &event("oA", T0 + 7, "subscribe"),
            Delivery::Safe,
        )
        .await
    };
    let ids = [delete];
    let (retry, r) = tokio::join!(common::flows::dispatch::run(&w.app, &ids), refollow);
    assert!(retry.is_empty());
    assert_eq!(r.status, 200);
    let del = &w.outbox_of("im_delete").await[0];
    assert_eq!(
        (del.s("status"), del.s("reason")),
        (Some("sent"), Some("deleted_then_reimport_queued"))
    );
    w.stream().await;
    assert!(
        w.im.has_account("oA"),
        "the follower has their account back"
    );
    let imports = w.outbox_of("im_import").await;
    assert_eq!(imports.len(), 3, "follow, re-follow, and the re-import");
    assert!(imports.iter().all(|i| i.s("status") == Some("sent")));
}

#[tokio::test]
async fn an_import_that_runs_after_the_unfollow_is_skipped() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        w.push_only(AppKind::Oa, &event("oA", T0, "subscribe"), Delivery::Safe)
            .await;
        w.advance(3);
        w.push_only(
            AppKind::Oa,
            &event("oA", T0 + 3, "unsubscribe"),
            Delivery::Safe,
        )
        .await;
        w.stream().await;
        let import = &w.outbox_of("im_import").await[0];
        assert_eq!(
            (import.s("status"), import.s("reason")),
            (Some("skipped"), Some("follower_left")),
            "{b:?}"
        );
        assert!(
            !w.im.has_account("oA"),
            "{b:?}: no account for someone who left"
        );
    }
}

/// One agent reply that WeChat refuses as scripted; returns the job and the agent's notice.
async fn refused_reply(
    opts: Options<'_>,
    custom: Vec<Scripted>,
    bizsend: Vec<Scripted>,
    with_credit: bool,
) -> (common::store::Item, String) {
    let w = World::new(opts).await;
    follow(&w, "oA").await;
    if with_credit {
        let popup = xml(
            "oA",
            T0 + 1,
            "<MsgType>event</MsgType><Event>subscribe_msg_popup_event</Event><SubscribeMsgPopupEvent><List><TemplateId>oa_reply_waiting_T0001</TemplateId><SubscribeStatusString>accept</SubscribeStatusString><PopupScene>2</PopupScene></List></SubscribeMsgPopupEvent>",
        );
        w.push(AppKind::Oa, &popup, Delivery::Safe).await;
    }
    w.wechat.script(CUSTOM, custom);
    w.wechat.script(BIZSEND, bizsend);
    agent_replies(&w, "agent_alice", "oA", "请查收").await;
    let kf = w.outbox_of("kf").await.remove(0);
    let n = notices(&w);
    assert_eq!(n.len(), 1, "one notice: {n:?}");
    assert_eq!(n[0].0, "agent_alice");
    assert_eq!(
        w.outbox_of("agent_notice").await[0].s("status"),
        Some("sent")
    );
    (kf, n[0].1.clone())
}

fn wx(code: i64) -> Scripted {
    Scripted::Json(json!({"errcode": code, "errmsg": "scripted"}))
}

#[tokio::test]
async fn the_agent_notice_says_what_actually_happened() {
    let base = || Options::new(Backend::Embedded).at(T0);
    let mut texts = vec![];
    // No fallback template configured.
    let (kf, text) = refused_reply(
        base().set("OA_FALLBACK_TEMPLATE_ID", ""),
        vec![wx(45015)],
        vec![],
        false,
    )
    .await;
    assert_eq!(
        kf.s("reason"),
        Some("undeliverable: 45015; no_fallback_template")
    );
    assert!(
        text.contains("errcode 45015")
            && text.contains("no subscribe-message fallback is configured"),
        "{text}"
    );
    texts.push(text);
    // A credit, but the fallback itself is refused.
    let (kf, text) = refused_reply(base(), vec![wx(45047)], vec![wx(43101)], true).await;
    assert_eq!(kf.s("status"), Some("failed"));
    assert_eq!(
        kf.s("reason"),
        Some("undeliverable: 45047; fallback_failed: 43101")
    );
    assert!(
        text.contains("errcode 45047")
            && text.contains("the fallback notification failed too (errcode 43101)"),
        "{text}"
    );
    texts.push(text);
    // Another refusal: no fallback is tried, the errcode is named.
    let (kf, text) = refused_reply(base(), vec![wx(48001)], vec![], true).await;
    assert_eq!(kf.s("reason"), Some("undeliverable: 48001"));
    assert!(
        text.contains("errcode 48001") && !text.contains("credit"),
        "{text}"
    );
    texts.push(text);
    // None promises a delivery that nothing will make.
    for t in &texts {
        assert!(
            t.starts_with("Your reply to follower oA was not delivered: "),
            "{t}"
        );
        assert!(t.ends_with("It will not be resent automatically."), "{t}");
        assert!(!t.contains("when they write again"), "{t}");
    }
}

#[tokio::test]
async fn a_reply_wechat_cannot_take_within_the_attempt_limit_is_told_to_the_agent() {
    for b in BACKENDS {
        let (kf, text) = refused_reply(
            Options::new(b).at(T0).set("DISPATCH_MAX_ATTEMPTS", "3"),
            vec![Scripted::Status(502), wx(-1), Scripted::Status(503)],
            vec![],
            false,
        )
        .await;
        assert_eq!(
            (kf.s("status"), kf.s("reason")),
            (
                Some("failed"),
                Some("undeliverable: retries_exhausted: http_503")
            ),
            "{b:?}"
        );
        assert!(
            text.contains("WeChat could not be reached in 3 attempts (last: http_503)"),
            "{b:?}: {text}"
        );
    }
}

#[tokio::test]
async fn a_reply_to_a_follower_who_left_before_it_was_sent_is_not_sent() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        follow(&w, "oA").await;
        // The reply is queued while the follower is there...
        let m = w.c2c("agent_bob", "oA", "还需要帮助吗？");
        let r = w.im_only("C2C.CallbackAfterSendMsg", m).await;
        assert_eq!(r.status, 200);
        // ...who unfollows before the dispatcher gets to it.
        w.advance(1);
        w.push_only(
            AppKind::Oa,
            &event("oA", w.now(), "unsubscribe"),
            Delivery::Safe,
        )
        .await;
        w.stream().await;
        assert_eq!(w.wechat.count(CUSTOM), 0, "{b:?}");
        assert!(w.wechat.requests(BIZSEND).is_empty(), "{b:?}");
        let kf = &w.outbox_of("kf").await[0];
        assert_eq!(
            (kf.s("status"), kf.s("reason")),
            (Some("skipped"), Some("follower_unfollowed")),
            "{b:?}"
        );
        let n = notices(&w);
        assert_eq!(n.len(), 1, "{b:?}");
        assert_eq!(n[0].0, "agent_bob");
        assert!(
            n[0].1.contains("oA") && n[0].1.contains("the follower has left"),
            "{}",
            n[0].1
        );
    }
}

#[tokio::test]
async fn an_agent_reply_to_a_follower_who_unfollowed_is_not_sent_and_the_agent_is_told() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        follow(&w, "oA").await;
        say(&w, "oA", 1, "thanks, bye").await;
        w.advance(2);
        unfollow(&w, "oA").await;
        w.advance(60);
        let m = agent_replies(&w, "agent_alice", "oA", "还有其他问题吗？").await;
        assert_eq!(w.wechat.count(CUSTOM), 0, "{b:?}: nothing sent to WeChat");
        assert!(w.wechat.requests(BIZSEND).is_empty(), "{b:?}");
        let kf = w.outbox_of("kf").await;
        assert_eq!(kf.len(), 1, "{b:?}");
        assert_eq!(
            (kf[0].s("status"), kf[0].s("reason"), kf[0].s("agent")),
            (
                Some("skipped"),
                Some("follower_unfollowed"),
                Some("agent_alice")
            ),
            "{b:?}: recorded with why"
        );
        let n = notices(&w);
        assert_eq!(n.len(), 1, "{b:?}");
        assert_eq!(n[0].0, "agent_alice");
        assert_eq!(
            n[0].1,
            "Your reply to follower oA was not sent: the follower has left (they unfollowed the official account). It will not be resent automatically."
        );
        // IM retries the callback seconds later (beyond its own same-second deduplication):
        // nothing more is recorded or sent.
        w.advance(5);
        let before = w.outbox().await;
        let r = w.im("C2C.CallbackAfterSendMsg", m).await;
        assert_eq!(r.status, 200);
        assert_eq!(w.outbox().await, before, "{b:?}");
        assert_eq!(notices(&w).len(), 1, "{b:?}: one notice");
        assert_eq!(w.im.delivered(), 2, "{b:?}: the forward and the notice");
    }
}

#[tokio::test]
async fn an_agent_message_to_someone_not_bridged_goes_to_the_notification_policy() {
    use wxim_tests::harness::{CUSTOMER, MP_OPENID, TEMPLATE};
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        // customer_lin is a mini-program user, bound, offline, with a credit: not a follower.
        w.bind(CUSTOMER, MP_OPENID).await;
        w.accept(MP_OPENID, TEMPLATE).await;
        w.state_change(CUSTOMER, "Disconnect", T0 * 1000).await;
        agent_replies(&w, "agent_alice", CUSTOMER, "您的工单已处理").await;
        assert!(w.outbox_of("kf").await.is_empty(), "{b:?}");
        assert!(notices(&w).is_empty(), "{b:?}");
        let n = w.outbox_of("notify").await;
        assert_eq!(n.len(), 1, "{b:?}");
        assert_eq!(n[0].s("status"), Some("sent"), "{b:?}");
        assert_eq!(w.sends().len(), 1, "{b:?}");
    }
}

#[tokio::test]
async fn a_forward_im_refuses_is_recorded_and_the_agent_is_told() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        follow(&w, "oA").await;
        w.im.script(
            SENDMSG,
            vec![Scripted::Json(
                json!({"ActionStatus": "FAIL", "ErrorCode": 80001, "ErrorInfo": "sensitive words"}),
            )],
        );
        say(&w, "oA", 1, "something sensitive").await;
        let f = &w.outbox_of("forward").await[0];
        assert_eq!(
            (f.s("status"), f.s("reason")),
            (Some("failed"), Some("im_80001")),
            "{b:?}"
        );
        let n = notices(&w);
        assert_eq!(n.len(), 1, "{b:?}");
        assert_eq!(n[0].0, "agent_alice");
        assert_eq!(
            n[0].1,
            "A message from follower oA could not be forwarded to you: IM's content check refused it (IM error 80001). It will not be resent automatically.",
            "{b:?}: the refused text is not quoted back"
        );
        assert_eq!(
            w.outbox_of("agent_notice").await[0].s("status"),
            Some("sent")
        );
    }
}

#[tokio::test]
async fn a_forward_that_exhausts_its_attempts_is_told_to_the_agent() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0).set("DISPATCH_MAX_ATTEMPTS", "2")).await;
        follow(&w, "oA").await;
        w.im.script(SENDMSG, vec![Scripted::Status(502), Scripted::Status(502)]);
        say(&w, "oA", 1, "where is my parcel?").await;
        let f = &w.outbox_of("forward").await[0];
        assert_eq!(
            (f.s("status"), f.s("reason")),
            (Some("failed"), Some("retries_exhausted: http_502")),
            "{b:?}"
        );
        assert_eq!(forwards(&w).len(), 2, "{b:?}");
        let n = notices(&w);
        assert_eq!(n.len(), 1, "{b:?}");
        assert_eq!(
            n[0].1,
            "A message from follower oA could not be forwarded to you: IM could not be reached in 2 attempts (last: http_502). It read: \u{201c}where is my parcel?\u{201d}. It will not be resent automatically."
        );
    }
}

#[tokio::test]
async fn a_notice_that_fails_tells_no_one() {
    let w = World::new(
        Options::new(Backend::Embedded)
            .at(T0)
            .set("DISPATCH_MAX_ATTEMPTS", "2"),
    )
    .await;
    follow(&w, "oA").await;
    // The forward is refused, and so is every notice about it.
    w.im.script(
        SENDMSG,
        vec![
            Scripted::Json(json!({"ActionStatus": "FAIL", "ErrorCode": 80001, "ErrorInfo": "x"})),
            Scripted::Status(502),
            Scripted::Status(502),
            Scripted::Status(502),
        ],
    );
    say(&w, "oA", 1, "hello").await;
    w.stream().await;
    let mut kinds: Vec<(String, String)> = w
        .outbox()
        .await
        .iter()
        .filter(|i| i.s("kind") != Some("im_import"))
        .map(|i| {
            (
                i.s("kind").unwrap().to_owned(),
                i.s("status").unwrap().to_owned(),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("agent_notice".to_owned(), "failed".to_owned()),
            ("forward".to_owned(), "failed".to_owned()),
        ]
    );
    assert_eq!(w.im.count(SENDMSG), 3, "the forward, and the notice twice");
}

#[tokio::test]
async fn without_agents_a_followers_message_is_kept_and_nothing_is_promised() {
    let no_agents = [("IM_AGENT_ACCOUNTS", "")];
    let no_im = [("IM_SDKAPPID", ""), ("IM_SECRET_KEY", "")];
    for (b, overrides) in [
        (Backend::Embedded, &no_agents[..]),
        (Backend::Dynamo, &no_agents[..]),
        (Backend::Embedded, &no_im[..]),
    ] {
        let mut opts = Options::new(b).at(T0);
        for (k, v) in overrides {
            opts = opts.set(k, v);
        }
        let w = World::new(opts).await;
        assert_eq!(follow(&w, "oA").await, "Thanks for following!", "{b:?}");
        w.advance(1);
        assert_eq!(
            say(&w, "oA", 1, "is anyone there?").await,
            "success",
            "{b:?} {overrides:?}: no \"connecting you\""
        );
        assert_eq!(w.im.count(SENDMSG), 0);
        let kept = w.outbox_of("forward").await;
        assert_eq!(kept.len(), 1, "{b:?} {overrides:?}");
        assert_eq!(
            (
                kept[0].s("status"),
                kept[0].s("reason"),
                kept[0].s("from"),
                kept[0].s("text")
            ),
            (
                Some("skipped"),
                Some("no_agent_configured"),
                Some("oA"),
                Some("is anyone there?")
            ),
            "{b:?} {overrides:?}: the message is kept with why"
        );
        let c = conv(&w, "oA").await;
        assert_eq!((c.s("status"), c.s("agent")), (Some("active"), None));
        // A retried push keeps nothing more.
        w.advance(3);
        let r = w
            .push(
                AppKind::Oa,
                &xml(
                    "oA",
                    T0 + 1,
                    "<MsgType>text</MsgType><Content><![CDATA[is anyone there?]]></Content><MsgId>1</MsgId>",
                ),
                Delivery::Safe,
            )
            .await;
        assert_eq!(r.body_str(), "success");
        assert_eq!(w.outbox_of("forward").await.len(), 1);
    }
}

const TYPING: &str = "/cgi-bin/message/custom/typing";

/// TUIKit's typing indicator from an agent, as IM's after-send callback reports it.
pub(super) async fn agent_types(w: &World, agent: &str, to: &str) -> serde_json::Value {
    let mut m = w.c2c(agent, to, "");
    m["OnlineOnlyFlag"] = json!(1);
    m["MsgBody"] = json!([{"MsgType": "TIMCustomElem", "MsgContent": {"Data": "{\"businessID\":\"user_typing_status\",\"typingStatus\":1,\"version\":1,\"userAction\":14,\"actionParam\":\"EIMAMSG_InputStatus_Ing\"}", "Desc": "", "Ext": ""}}]);
    let r = w.im("C2C.CallbackAfterSendMsg", m.clone()).await;
    assert_eq!(r.status, 200);
    m
}

#[tokio::test]
async fn an_agent_typing_shows_wechat_typing_and_is_never_sent_as_a_message() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        follow(&w, "oA").await;
        say(&w, "oA", 1, "where is my order?").await;
        w.wechat.user_wrote("oA");
        let m = agent_types(&w, "agent_alice", "oA").await;
        let typing = w.wechat.requests(TYPING);
        assert_eq!(typing.len(), 1, "{b:?}");
        assert_eq!(typing[0].body, json!({"touser": "oA", "command": "Typing"}));
        // A retried callback, and more typing within 15 s, ask WeChat nothing more.
        w.im("C2C.CallbackAfterSendMsg", m).await;
        w.advance(3);
        agent_types(&w, "agent_alice", "oA").await;
        assert_eq!(w.wechat.count(TYPING), 1, "{b:?}");
        // Another online-only message is not forwarded at all.
        let mut other = w.c2c("agent_alice", "oA", "");
        other["OnlineOnlyFlag"] = json!(1);
        other["MsgBody"] = json!([{"MsgType": "TIMTextElem", "MsgContent": {"Text": "ping"}}]);
        w.im("C2C.CallbackAfterSendMsg", other).await;
        assert_eq!(w.wechat.count(CUSTOM), 0, "{b:?}");
        assert_eq!(w.wechat.count(BIZSEND), 0, "{b:?}");
        // Half a minute after the last exchange, WeChat would refuse it (45080): not asked.
        w.advance(30);
        agent_types(&w, "agent_alice", "oA").await;
        assert_eq!(w.wechat.count(TYPING), 1, "{b:?}");
    }
}

#[tokio::test]
async fn a_refused_typing_state_is_recorded_and_never_retried() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    follow(&w, "oA").await;
    say(&w, "oA", 1, "hello").await;
    // The stand-in has not seen the follower write: it answers 45080, as WeChat would.
    agent_types(&w, "agent_alice", "oA").await;
    assert_eq!(w.wechat.count(TYPING), 1);
    let job = &w.outbox_of("kf_typing").await[0];
    assert_eq!(
        (job.s("status"), job.s("reason")),
        (Some("failed"), Some("45080"))
    );
    w.wechat.script(TYPING, vec![Scripted::Status(502)]);
    w.advance(15);
    w.wechat.user_wrote("oA");
    say(&w, "oA", 2, "still there?").await;
    agent_types(&w, "agent_alice", "oA").await;
    assert_eq!(
        w.wechat.count(TYPING),
        2,
        "a failed typing state is not retried"
    );
    assert_eq!(
        w.im.delivered(),
        2,
        "only the two forwards; the agent is not told"
    );
}
