//! An agent's recalled message (`C2C.CallbackAfterMsgWithDraw`), end to end: not sent when it
//! had not gone yet (held for its burst, or recalled before its own callback came), and told to
//! the agent, once, when it had: WeChat cannot recall a customer-service message.

use serde_json::json;
use wxim_tests::BACKENDS;
use wxim_tests::harness::{Options, World};

use super::oa::{CUSTOM, T0, custom_texts, follow, notices, say};

const AFTER: &str = "C2C.CallbackAfterSendMsg";
const RECALL: &str = "C2C.CallbackAfterMsgWithDraw";

fn reply(w: &World, to: &str, text: &str) -> serde_json::Value {
    let mut m = w.c2c("agent_alice", to, text);
    m["From_Account"] = json!("agent_alice");
    m
}

/// The recall IM sends for `m`.
fn recall_of(m: &serde_json::Value) -> serde_json::Value {
    json!({"CallbackCommand": RECALL, "From_Account": m["From_Account"], "To_Account": m["To_Account"],
           "MsgKey": m["MsgKey"], "UnreadMsgNum": 0, "EventTime": 1_700_000_100_000i64})
}

async fn ready(w: &World, who: &str) {
    follow(w, who).await;
    say(w, who, 1, "hello").await;
}

async fn kf_reasons(w: &World) -> Vec<(String, String)> {
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
async fn a_reply_recalled_within_its_burst_is_not_sent_and_the_rest_go() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0).set("KF_MERGE_SECS", "3")).await;
        ready(&w, "oR1").await;
        let (m1, m2, m3) = (
            reply(&w, "oR1", "您好"),
            reply(&w, "oR1", "打错了"),
            reply(&w, "oR1", "请稍等"),
        );
        for m in [&m1, &m2, &m3] {
            w.im(AFTER, m.clone()).await;
        }
        assert_eq!(w.im(RECALL, recall_of(&m2)).await.status, 200);
        // IM's retry of the recall changes nothing.
        w.im(RECALL, recall_of(&m2)).await;
        w.advance(3);
        w.stream().await;
        assert_eq!(custom_texts(&w), vec!["您好\n请稍等"], "{b:?}");
        let r = kf_reasons(&w).await;
        assert!(
            r.contains(&("skipped".into(), "recalled_before_sent".into())),
            "{b:?}: {r:?}"
        );
        assert!(notices(&w).is_empty(), "{b:?}: nothing to tell");
    }
}

#[tokio::test]
async fn a_reply_recalled_before_its_own_callback_is_never_sent() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        ready(&w, "oR2").await;
        let m = reply(&w, "oR2", "wrong window");
        w.im(RECALL, recall_of(&m)).await;
        w.im(AFTER, m).await;
        assert_eq!(w.wechat.count(CUSTOM), 0, "{b:?}");
        assert_eq!(
            kf_reasons(&w).await,
            vec![("skipped".into(), "recalled_before_sent".into())],
            "{b:?}"
        );
    }
}

#[tokio::test]
async fn a_reply_already_sent_cannot_be_recalled_and_the_agent_is_told_once() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        ready(&w, "oR3").await;
        let m = reply(&w, "oR3", "sent already");
        w.im(AFTER, m.clone()).await;
        assert_eq!(w.wechat.count(CUSTOM), 1, "{b:?}");
        w.im(RECALL, recall_of(&m)).await;
        w.im(RECALL, recall_of(&m)).await;
        let told = notices(&w);
        assert_eq!(told.len(), 1, "{b:?}: {told:?}");
        assert!(
            told[0].0 == "agent_alice"
                && told[0].1.contains("already delivered")
                && told[0].1.contains("WeChat cannot recall"),
            "{b:?}: {told:?}"
        );
        // A recall of a message the bridge never carried changes nothing.
        let other = w.c2c("customer_lin", "shop_support", "hi");
        w.im(RECALL, recall_of(&other)).await;
        assert_eq!(notices(&w).len(), 1, "{b:?}");
    }
}
