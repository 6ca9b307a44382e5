//! Nothing lost when the store fails: verified WeChat pushes and IM callbacks that arrive while
//! the store is throttled or unreachable are spooled (moto's SQS on the Dynamo backend, the
//! embedded spool on the other), answered as accepted, and applied once the store is back,
//! through the same handlers: every effect exactly once, every outbox item ended.

use common::config::AppKind;
use common::handlers::spool::{Replayed, replay};
use common::protocol::wechat::message::{MessageKind, parse_envelope, parse_message};
use common::protocol::wechat::push::Delivery;
use common::records::keys;
use common::records::presence::{self, Presence};
use local::routes;
use serde_json::{Value, json};
use wxim_tests::harness::{CUSTOMER, MP_OPENID, OA_GH, Options, SELLER, TEMPLATE, World};
use wxim_tests::outage::Failure;
use wxim_tests::{BACKENDS, Backend};

const CUSTOM: &str = "/cgi-bin/message/custom/send";
const SENDMSG: &str = "/v4/openim/sendmsg";
const WELCOME: &str = "Welcome! Send us a message and one of our agents will answer you here.";
const CONNECTING: &str = "Connecting you to an agent, please wait a moment.";
const OK: &str = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#;
const FOLLOWER_A: &str = "oSPOOL_follower_a";
const FOLLOWER_B: &str = "oSPOOL_follower_b";

fn popup(openid: &str, t: i64) -> String {
    json!({"ToUserName": "gh_123456789abc", "FromUserName": openid, "CreateTime": t,
        "MsgType": "event", "Event": "subscribe_msg_popup_event",
        "List": {"TemplateId": TEMPLATE, "SubscribeStatusString": "accept", "PopupScene": "0"}})
    .to_string()
}

fn follow(openid: &str, t: i64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{OA_GH}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{t}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>"
    )
}

fn text(openid: &str, t: i64, msg_id: u64, text: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{OA_GH}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{t}</CreateTime><MsgType>text</MsgType><Content><![CDATA[{text}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )
}

/// The passive reply's text, decrypted ("success" when there is none).
fn reply(w: &World, body: &str) -> String {
    let Some(enc) = parse_envelope(body.as_bytes()).ok().and_then(|e| e.encrypt) else {
        return body.to_owned();
    };
    let oa = w.app.config.app(AppKind::Oa).unwrap();
    let plain = oa.crypto.as_ref().unwrap().decrypt(&enc).unwrap();
    match parse_message(&plain).unwrap().kind {
        MessageKind::Text { content } => content,
        k => panic!("{k:?}"),
    }
}

/// The customer-service messages WeChat took, as (to, text), sorted.
fn custom_sends(w: &World) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = w
        .wechat
        .requests(CUSTOM)
        .iter()
        .map(|r| {
            (
                r.body["touser"].as_str().unwrap().to_owned(),
                r.body["text"]["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Outbox items per kind, and whether every one has ended.
async fn outbox_summary(w: &World) -> (Vec<(String, usize)>, Vec<String>) {
    let items = w.outbox().await;
    let mut kinds: Vec<(String, usize)> = vec![];
    let mut open = vec![];
    for i in &items {
        let kind = i.s("kind").unwrap_or("?").to_owned();
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((kind.clone(), 1)),
        }
        let status = i.s("status").unwrap_or("?");
        if !matches!(status, "sent" | "skipped" | "failed") {
            open.push(format!("{kind} {status}"));
        }
    }
    kinds.sort();
    (kinds, open)
}

/// Everything the store's recovery must have brought about, once.
async fn effects(w: &World) -> Value {
    let (kinds, open) = outbox_summary(w).await;
    let forwards =
        w.im.requests(SENDMSG)
            .iter()
            .filter(|r| r.body["From_Account"] == FOLLOWER_B)
            .count();
    let seller = presence::of(&*w.app.store, SELLER, w.now(), 600)
        .await
        .unwrap();
    json!({
        "credits": w.credits(MP_OPENID, TEMPLATE).await,
        "subscribe_sends": w.sends().len(),
        "custom": custom_sends(w),
        "outbox": kinds,
        "open": open,
        "forwards": forwards,
        "seller_offline": seller == Presence::Offline,
    })
}

#[tokio::test]
async fn every_webhook_taken_during_a_store_outage_is_applied_once_after_it() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).spooled()).await;
        w.ready_offline(1).await;
        let t = w.now();
        // B follows while the store is up: the welcome is the passive reply, as always.
        let r = w
            .push(AppKind::Oa, &follow(FOLLOWER_B, t), Delivery::Safe)
            .await;
        assert_eq!(reply(&w, r.body_str()), WELCOME, "{b:?}");
        let agent = w
            .state_item(&keys::conversation(FOLLOWER_B), keys::ONE)
            .await
            .unwrap()
            .s("agent")
            .unwrap()
            .to_owned();
        let custom_before = w.wechat.count(CUSTOM);
        let outage = w.outage.clone().unwrap();
        let spool = w.spool.clone().unwrap();

        outage.set(Some(Failure::Throttled));
        let r = w
            .push_only(AppKind::Mp, &popup(MP_OPENID, t + 101), Delivery::Safe)
            .await;
        assert_eq!((r.status, r.body_str()), (200, "success"), "{b:?}");
        // A's welcome cannot be a passive reply: the push is only spooled.
        let r = w
            .push_only(AppKind::Oa, &follow(FOLLOWER_A, t + 2), Delivery::Safe)
            .await;
        assert_eq!((r.status, r.body_str()), (200, "success"), "{b:?}");
        outage.set(Some(Failure::Unreachable));
        let r = w
            .push_only(
                AppKind::Oa,
                &text(FOLLOWER_B, t + 3, 77, "where is my order?"),
                Delivery::Safe,
            )
            .await;
        assert_eq!((r.status, r.body_str()), (200, "success"), "{b:?}");
        // IM never retries these: an offline notification, an agent's reply, a state change.
        let offline = w.c2c(SELLER, CUSTOMER, "your parcel has shipped");
        let r = w.im_only("C2C.CallbackAfterSendMsg", offline).await;
        assert_eq!((r.status, r.body_str()), (200, OK), "{b:?}");
        let mut answer = w.c2c(&agent, FOLLOWER_B, "It left the warehouse today.");
        answer["From_Account"] = json!(agent);
        let r = w.im_only("C2C.CallbackAfterSendMsg", answer).await;
        assert_eq!((r.status, r.body_str()), (200, OK), "{b:?}");
        let r = w
            .im_only(
                "State.StateChange",
                json!({"CallbackCommand": "State.StateChange", "EventTime": (t + 4) * 1000,
                       "Info": {"Action": "Logout", "To_Account": SELLER, "Reason": "test"}}),
            )
            .await;
        assert_eq!((r.status, r.body_str()), (200, OK), "{b:?}");
        assert_eq!(spool.kept().len(), 6, "{b:?}");
        assert_eq!(
            w.wechat.count(CUSTOM),
            custom_before,
            "{b:?}: nothing sent yet"
        );

        outage.set(None);
        let drained = routes::drain_spool(&w.app).await.unwrap();
        assert_eq!((drained.applied, drained.retried), (6, 0), "{b:?}");
        let expected = json!({
            // One accept before, one during the outage, one spent by the notification.
            "credits": 1,
            "subscribe_sends": 1,
            "custom": [
                [FOLLOWER_A, WELCOME],
                [FOLLOWER_B, CONNECTING],
                [FOLLOWER_B, "It left the warehouse today."],
            ],
            "outbox": [["forward", 1], ["im_import", 2], ["kf", 1], ["late_reply", 2], ["notify", 1]],
            "open": [],
            "forwards": 1,
            "seller_offline": true,
        });
        assert_eq!(effects(&w).await, expected, "{b:?}");
        // A's late welcome went as a customer-service message: it spent one of the 3 replies
        // the follow opened, as an agent's reply would.
        let a = w
            .state_item(&keys::conversation(FOLLOWER_A), keys::ONE)
            .await
            .unwrap();
        assert_eq!(
            (a.s("allowance_by"), a.n("allowance_left")),
            (Some("follow"), Some(2)),
            "{b:?}: {a:?}"
        );

        // SQS delivers at least once: every message again changes nothing.
        for body in spool.kept() {
            assert_eq!(replay(&w.app, &body).await, Replayed::Applied, "{b:?}");
        }
        w.stream().await;
        assert_eq!(effects(&w).await, expected, "{b:?}: replayed twice");
        let again = routes::drain_spool(&w.app).await.unwrap();
        assert_eq!(again.received(), 0, "{b:?}: the spool is empty");
    }
}

#[tokio::test]
async fn a_login_whose_store_fails_mid_way_still_resets_the_window_when_replayed() {
    for b in BACKENDS {
        // The store fails from the Login's first request on, or from its second: were the
        // presence and the window's reset two writes, the second case would record the
        // presence, lose the reset, and the replay would find the Login already applied.
        for ok in [0, 1] {
            let w = World::new(Options::new(b).spooled()).await;
            let t = w.now();
            let outage = w.outage.clone().unwrap();
            outage.set_after(ok, Failure::Unreachable);
            let r = w
                .im_only(
                    "State.StateChange",
                    json!({"CallbackCommand": "State.StateChange", "EventTime": t * 1000,
                           "Info": {"Action": "Login", "To_Account": CUSTOMER, "Reason": "Register"}}),
                )
                .await;
            assert_eq!((r.status, r.body_str()), (200, OK), "{b:?} {ok}");
            outage.set(None);
            let drained = routes::drain_spool(&w.app).await.unwrap();
            assert_eq!(drained.applied, usize::from(ok == 0), "{b:?} {ok}");
            let window = w
                .state_item(&keys::notify_state(CUSTOMER), keys::ONE)
                .await
                .expect("the Login reset the notification window");
            assert_eq!(window.n("reset_at"), Some(t), "{b:?} {ok}");
            assert_eq!(
                presence::of(&*w.app.store, CUSTOMER, t, 600).await.unwrap(),
                Presence::Online,
                "{b:?} {ok}"
            );
        }
    }
}

#[tokio::test]
async fn when_the_spool_fails_too_the_answer_is_503_and_nothing_is_applied() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).spooled()).await;
        w.ready_offline(1).await;
        let outage = w.outage.clone().unwrap();
        let spool = w.spool.clone().unwrap();
        outage.set(Some(Failure::Unreachable));
        spool.fail(true);
        let r = w
            .push_only(
                AppKind::Mp,
                &popup(MP_OPENID, w.now() + 101),
                Delivery::Safe,
            )
            .await;
        assert_eq!(r.status, 503, "{b:?}");
        assert!(r.body_str().contains("store_unavailable"), "{b:?}");
        let r = w
            .im_only("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "hi"))
            .await;
        assert_eq!(r.status, 503, "{b:?}");
        // A before-send callback never blocks a message, spool or not.
        let mut before = w.c2c(SELLER, CUSTOMER, "hi");
        before["CallbackCommand"] = json!("C2C.CallbackBeforeSendMsg");
        let r = w.im_only("C2C.CallbackBeforeSendMsg", before).await;
        assert_eq!(r.status, 200, "{b:?}");
        outage.set(None);
        spool.fail(false);
        assert_eq!(routes::drain_spool(&w.app).await.unwrap().received(), 0);
        assert_eq!(w.credits(MP_OPENID, TEMPLATE).await, 1, "{b:?}");
        assert!(w.outbox_of("notify").await.is_empty(), "{b:?}");
    }
}

#[tokio::test]
async fn a_spooled_event_the_store_still_cannot_take_is_retried_with_backoff() {
    let w = World::new(Options::new(Backend::Embedded).at(1_700_000_000).spooled()).await;
    w.ready_offline(1).await;
    let outage = w.outage.clone().unwrap();
    outage.set(Some(Failure::Throttled));
    let r = w
        .im_only("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "hi"))
        .await;
    assert_eq!(r.status, 200);
    // Still down: tried, and hidden for SPOOL_RETRY_SECS (30), then 60.
    for pause in [30, 60] {
        let d = routes::drain_spool(&w.app).await.unwrap();
        assert_eq!((d.applied, d.retried), (0, 1));
        w.advance(pause - 1);
        assert_eq!(routes::drain_spool(&w.app).await.unwrap().received(), 0);
        w.advance(1);
    }
    outage.set(None);
    let d = routes::drain_spool(&w.app).await.unwrap();
    assert_eq!(d.applied, 1);
    assert_eq!(w.sends().len(), 1, "the notification, once");
    let (_, open) = outbox_summary(&w).await;
    assert!(open.is_empty(), "{open:?}");
}

#[tokio::test]
async fn the_lambda_consumer_reports_what_the_store_still_cannot_take() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).spooled()).await;
        w.ready_offline(1).await;
        let outage = w.outage.clone().unwrap();
        outage.set(Some(Failure::Throttled));
        let r = w
            .im_only("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "hi"))
            .await;
        assert_eq!(r.status, 200);
        let body = w.spool.clone().unwrap().kept().pop().unwrap();
        // As the SQS event source hands it to notify-dispatch.
        let event = json!({"Records": [{
            "messageId": "m-1", "receiptHandle": "not-a-handle-of-this-queue", "body": body,
            "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
            "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:wxim-spool",
            "awsRegion": "us-east-1"}]});
        let resp = common::handlers::dispatch::handle(&event, &w.app, "t").await;
        assert_eq!(
            resp,
            json!({"batchItemFailures": [{"itemIdentifier": "m-1"}]}),
            "{b:?}"
        );
        outage.set(None);
        let resp = common::handlers::dispatch::handle(&event, &w.app, "t").await;
        assert_eq!(resp, json!({"batchItemFailures": []}), "{b:?}");
        w.stream().await;
        assert_eq!(w.sends().len(), 1, "{b:?}");
        assert_eq!(w.outbox_of("notify").await.len(), 1, "{b:?}");
    }
}

#[tokio::test]
async fn a_spooled_message_that_fails_its_checks_is_dropped() {
    let w = World::new(Options::new(Backend::Embedded).spooled()).await;
    let outage = w.outage.clone().unwrap();
    outage.set(Some(Failure::Throttled));
    let r = w
        .push_only(AppKind::Mp, &popup(MP_OPENID, w.now()), Delivery::Safe)
        .await;
    assert_eq!(r.status, 200);
    outage.set(None);
    let body = w.spool.clone().unwrap().kept().pop().unwrap();
    // Altered in the queue: the signature no longer holds.
    let mut v: Value = serde_json::from_str(&body).unwrap();
    for pair in v["query"].as_array_mut().unwrap() {
        if pair[0] == "msg_signature" {
            pair[1] = json!("0000000000000000000000000000000000000000");
        }
    }
    let altered = v.to_string();
    assert!(matches!(
        replay(&w.app, &altered).await,
        Replayed::Refused(_)
    ));
    assert!(matches!(replay(&w.app, "{}").await, Replayed::Refused(_)));
    assert_eq!(w.credits(MP_OPENID, TEMPLATE).await, 0);
    assert_eq!(replay(&w.app, &body).await, Replayed::Applied);
    assert_eq!(w.credits(MP_OPENID, TEMPLATE).await, 1);
}

#[tokio::test]
async fn the_sqs_spool_hides_reschedules_and_dead_letters_as_its_queue_declares() {
    use common::store::Spool;
    use common::store::spool::{MAX_RECEIVES, SqsSpool};
    let (spool, dlq) = wxim_tests::dynamo::fresh_spool().await;
    spool.send("never applies").await.unwrap();
    let mut got = spool.receive(10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].body.as_str(), got[0].receive_count),
        ("never applies", 1)
    );
    assert!(
        spool.receive(10).await.unwrap().is_empty(),
        "hidden while received"
    );
    for n in 2..=MAX_RECEIVES {
        // A backoff of 0 s makes it due at once (the test waits for nothing).
        spool.retry_after(&got[0].handle, 0).await.unwrap();
        got = spool.receive(10).await.unwrap();
        assert_eq!(got.len(), 1, "receive {n}");
        assert_eq!(got[0].receive_count, n);
    }
    spool.retry_after(&got[0].handle, 0).await.unwrap();
    assert!(spool.receive(10).await.unwrap().is_empty(), "redriven");
    let dead = SqsSpool::new(wxim_tests::dynamo::sqs_client(), dlq);
    let d = dead.receive(10).await.unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].body, "never applies");
}
