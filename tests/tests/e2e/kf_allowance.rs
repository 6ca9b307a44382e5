//! WeChat's customer-service reply allowance, end to end: what opens it (a message 5 / 48 h; a
//! follow, a menu click or a QR scan 3 / 1 min; a newer action resets it), how replies spend it,
//! and what happens to a reply it has no room for (not sent to WeChat; one subscribe-message
//! fallback per closed allowance; the agent told in IM).

use common::config::AppKind;
use common::protocol::wechat::push::Delivery;
use local::standin::Scripted;
use serde_json::json;
use wxim_tests::BACKENDS;
use wxim_tests::harness::{Options, World};

use super::oa::{
    BIZSEND, CUSTOM, T0, agent_replies, conv, custom_texts, event, follow, notices, say, xml,
};

const FALLBACK_TPL: &str = "oa_reply_waiting_T0001";

/// The allowance as stored: (opened by, replies left, valid until).
async fn allowance(w: &World, openid: &str) -> (String, i64, i64) {
    let c = conv(w, openid).await;
    (
        c.s("allowance_by").unwrap_or("").to_owned(),
        c.n("allowance_left").unwrap_or(-1),
        c.n("allowance_until").unwrap_or(-1),
    )
}

/// The follower accepts the fallback template once (one credit).
async fn accept_fallback(w: &World, openid: &str) {
    let popup = xml(
        openid,
        w.now(),
        &format!(
            "<MsgType>event</MsgType><Event>subscribe_msg_popup_event</Event><SubscribeMsgPopupEvent><List><TemplateId>{FALLBACK_TPL}</TemplateId><SubscribeStatusString>accept</SubscribeStatusString><PopupScene>2</PopupScene></List></SubscribeMsgPopupEvent>"
        ),
    );
    assert_eq!(
        w.push(AppKind::Oa, &popup, Delivery::Safe).await.status,
        200
    );
}

async fn push(w: &World, body: &str) {
    let r = w.push(AppKind::Oa, body, Delivery::Safe).await;
    assert_eq!(r.status, 200, "{}", r.body_str());
}

/// The kf items' (status, reason), oldest first.
async fn replies(w: &World) -> Vec<(String, String)> {
    w.outbox_of("kf")
        .await
        .iter()
        .map(|i| {
            (
                i.s("status").unwrap_or("").to_owned(),
                i.s("reason").unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_message_opens_five_replies_and_the_sixth_goes_to_one_fallback() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        follow(&w, "oQ").await;
        accept_fallback(&w, "oQ").await;
        say(&w, "oQ", 1, "我的订单呢").await;
        assert_eq!(
            allowance(&w, "oQ").await,
            ("message".into(), 5, T0 + 48 * 3600),
            "{b:?}"
        );
        for n in 1..=5 {
            w.advance(1);
            agent_replies(&w, "agent_alice", "oQ", &format!("answer {n}")).await;
        }
        assert_eq!(w.wechat.count(CUSTOM), 5, "{b:?}");
        assert_eq!(allowance(&w, "oQ").await.1, 0);
        // The fifth reply used the last one: its agent hears so.
        let told = notices(&w);
        assert_eq!(told.len(), 1, "{b:?}: {told:?}");
        assert!(
            told[0].1.contains("the last one WeChat allows")
                && told[0].1.contains("5 replies within 48 hours"),
            "{}",
            told[0].1
        );
        // The sixth is not sent to WeChat to be refused: the follower's one credit brings them
        // a subscribe notification instead, and the agent is told.
        w.advance(1);
        agent_replies(&w, "agent_alice", "oQ", "answer 6").await;
        assert_eq!(w.wechat.count(CUSTOM), 5, "{b:?}: not sent to WeChat");
        let biz = w.wechat.requests(BIZSEND);
        assert_eq!(biz.len(), 1);
        assert_eq!(biz[0].body["data"]["thing2"]["value"], "answer 6");
        // The seventh finds the fallback already used for this allowance: no second one.
        accept_fallback(&w, "oQ").await;
        w.advance(1);
        agent_replies(&w, "agent_alice", "oQ", "answer 7").await;
        assert_eq!(
            w.wechat.count(BIZSEND),
            1,
            "{b:?}: one fallback per closed allowance"
        );
        let r = replies(&w).await;
        assert_eq!(
            r[5],
            (
                "sent".into(),
                "fallback_subscribe after allowance_used_up".into()
            )
        );
        assert_eq!(
            r[6],
            (
                "skipped".into(),
                "undeliverable: allowance_used_up; fallback_already_sent".into()
            )
        );
        let told = notices(&w);
        assert_eq!(told.len(), 3, "{b:?}");
        assert!(
            told[1].1.contains("sent a subscribe notification")
                && told[1].1.contains("none of them is left"),
            "{}",
            told[1].1
        );
        assert!(
            told[2].1.contains("was not sent")
                && told[2].1.contains("already sent a subscribe notification")
                && told[2]
                    .1
                    .contains("When they next write, WeChat allows 5 replies within 48 hours"),
            "{}",
            told[2].1
        );
        // They write again: a new allowance of five, and the replies flow.
        say(&w, "oQ", 2, "还在吗").await;
        assert_eq!(allowance(&w, "oQ").await.1, 5);
        agent_replies(&w, "agent_alice", "oQ", "在的").await;
        assert_eq!(custom_texts(&w).last().map(String::as_str), Some("在的"));
    }
}

#[tokio::test]
async fn a_follow_opens_three_for_a_minute_and_a_newer_action_resets_it() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        follow(&w, "oR").await;
        assert_eq!(
            allowance(&w, "oR").await,
            ("follow".into(), 3, T0 + 60),
            "{b:?}"
        );
        w.advance(61);
        agent_replies(&w, "agent_alice", "oR", "welcome!").await;
        assert_eq!(w.wechat.count(CUSTOM), 0, "{b:?}: expired, not sent");
        assert_eq!(
            replies(&w).await[0],
            (
                "skipped".into(),
                "undeliverable: allowance_expired; no_fallback_credit".into()
            )
        );
        let told = notices(&w);
        assert!(
            told[0].1.contains("their follow at")
                && told[0].1.contains("opened 3 replies for 1 minute")
                && told[0].1.contains("with 3 replies unused"),
            "{}",
            told[0].1
        );
        // A menu click opens 3 for a minute again; a QR scan after it resets to its own 3.
        push(&w, &event("oR", w.now(), "CLICK")).await;
        assert_eq!(allowance(&w, "oR").await, ("menu".into(), 3, w.now() + 60));
        agent_replies(&w, "agent_alice", "oR", "menu answer").await;
        assert_eq!(allowance(&w, "oR").await.1, 2);
        w.advance(2);
        push(
            &w,
            &xml(
                "oR",
                w.now(),
                "<MsgType>event</MsgType><Event>SCAN</Event><EventKey>42</EventKey>",
            ),
        )
        .await;
        assert_eq!(
            allowance(&w, "oR").await,
            ("scan".into(), 3, w.now() + 60),
            "reset, not added"
        );
        // A message resets it to five for 48 hours (not 3 + 5); a late delivery of an older
        // action changes nothing.
        w.advance(1);
        say(&w, "oR", 3, "hi").await;
        let t = w.now();
        assert_eq!(
            allowance(&w, "oR").await,
            ("message".into(), 5, t + 48 * 3600)
        );
        push(&w, &event("oR", t - 10, "scancode_push")).await;
        assert_eq!(
            allowance(&w, "oR").await,
            ("message".into(), 5, t + 48 * 3600)
        );
        // A link in the menu (VIEW) opens nothing.
        push(&w, &event("oR", t + 1, "VIEW")).await;
        assert_eq!(allowance(&w, "oR").await.0, "message");
    }
}

#[tokio::test]
async fn wechats_refusals_correct_the_stored_allowance() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        follow(&w, "oS").await;
        say(&w, "oS", 1, "hello").await;
        w.wechat.script(
            CUSTOM,
            vec![Scripted::Json(
                json!({"errcode": 45047, "errmsg": "out of response count limit"}),
            )],
        );
        agent_replies(&w, "agent_bob", "oS", "first").await;
        assert_eq!(allowance(&w, "oS").await.1, 0, "{b:?}: WeChat's count wins");
        assert_eq!(
            replies(&w).await[0],
            (
                "failed".into(),
                "undeliverable: 45047; no_fallback_credit".into()
            )
        );
        // Known closed now: the next reply is not sent to WeChat.
        w.advance(1);
        agent_replies(&w, "agent_bob", "oS", "second").await;
        assert_eq!(w.wechat.count(CUSTOM), 1, "{b:?}");
        assert_eq!(
            replies(&w).await[1],
            (
                "skipped".into(),
                "undeliverable: allowance_used_up; no_fallback_credit".into()
            )
        );
        // 45015: the allowance has expired whatever was counted.
        say(&w, "oS", 2, "again").await;
        w.wechat.script(
            CUSTOM,
            vec![Scripted::Json(
                json!({"errcode": 45015, "errmsg": "response out of time limit"}),
            )],
        );
        agent_replies(&w, "agent_bob", "oS", "third").await;
        let (_, left, until) = allowance(&w, "oS").await;
        assert_eq!(
            (left, until),
            (4, w.now()),
            "{b:?}: ended now, its count as it was"
        );
        // So the next reply is known to find it expired.
        w.advance(1);
        agent_replies(&w, "agent_bob", "oS", "fourth").await;
        assert_eq!(
            replies(&w).await[3],
            (
                "skipped".into(),
                "undeliverable: allowance_expired; no_fallback_credit".into()
            ),
            "{b:?}"
        );
    }
}

#[tokio::test]
async fn a_reply_wechat_did_not_take_gives_its_reply_back() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        follow(&w, "oU").await;
        say(&w, "oU", 1, "hello").await;
        w.wechat.script(
            CUSTOM,
            vec![
                Scripted::Status(502),
                Scripted::Json(json!({"errcode": -1, "errmsg": "system busy"})),
            ],
        );
        agent_replies(&w, "agent_alice", "oU", "retried").await;
        assert_eq!(w.wechat.count(CUSTOM), 3, "{b:?}");
        assert_eq!(replies(&w).await[0].0, "sent");
        assert_eq!(allowance(&w, "oU").await.1, 4, "{b:?}: spent once");
        // Refused for another reason: not counted by WeChat, given back.
        w.wechat.script(
            CUSTOM,
            vec![Scripted::Json(
                json!({"errcode": 45002, "errmsg": "content size out of limit"}),
            )],
        );
        agent_replies(&w, "agent_alice", "oU", "too long").await;
        assert_eq!(allowance(&w, "oU").await.1, 4, "{b:?}");
    }
}

#[tokio::test]
async fn replies_racing_for_the_last_reply_get_it_once() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        follow(&w, "oV").await;
        agent_replies(&w, "agent_alice", "oV", "one").await;
        agent_replies(&w, "agent_alice", "oV", "two").await;
        assert_eq!(allowance(&w, "oV").await.1, 1, "{b:?}");
        // Two more, dispatched at the same moment by two dispatchers.
        let mut ids = vec![];
        for t in ["three", "four"] {
            let mut m = w.c2c("agent_alice", "oV", t);
            m["From_Account"] = json!("agent_alice");
            assert_eq!(w.im_only("C2C.CallbackAfterSendMsg", m).await.status, 200);
        }
        for i in w.outbox_of("kf").await {
            if i.s("status") == Some("queued") {
                ids.push(common::records::outbox::id_of(&i).to_owned());
            }
        }
        assert_eq!(ids.len(), 2, "{b:?}");
        let (a, c) = (vec![ids[0].clone()], vec![ids[1].clone()]);
        let _ = tokio::join!(
            common::flows::dispatch::run(&w.app, &a),
            common::flows::dispatch::run(&w.app, &c),
        );
        w.stream().await;
        assert_eq!(w.wechat.count(CUSTOM), 3, "{b:?}: the last reply once");
        assert_eq!(allowance(&w, "oV").await.1, 0, "{b:?}");
        let r = replies(&w).await;
        let skipped = r.iter().filter(|x| x.0 == "skipped").count();
        assert_eq!(skipped, 1, "{b:?}: {r:?}");
    }
}
