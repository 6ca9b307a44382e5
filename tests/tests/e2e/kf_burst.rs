//! Agent bursts, end to end: replies to one follower arriving within `KF_MERGE_SECS` go as one
//! customer-service message (one reply of WeChat's allowance), whatever the duplicates of the
//! callbacks or of the stream records, and a reply racing the follower's next message is decided
//! on the allowance as it is when it is sent.

use common::config::AppKind;
use common::flows::dispatch;
use common::protocol::wechat::push::Delivery;
use common::records::outbox::id_of;
use wxim_tests::BACKENDS;
use wxim_tests::harness::{Options, World};

use super::oa::{CUSTOM, T0, conv, custom_texts, follow, notices, say, xml};

const AFTER: &str = "C2C.CallbackAfterSendMsg";

fn world(b: wxim_tests::Backend) -> Options<'static> {
    Options::new(b).at(T0).set("KF_MERGE_SECS", "3")
}

fn reply(w: &World, to: &str, text: &str) -> serde_json::Value {
    let mut m = w.c2c("agent_alice", to, text);
    m["From_Account"] = serde_json::json!("agent_alice");
    m
}

async fn left(w: &World, openid: &str) -> i64 {
    conv(w, openid).await.n("allowance_left").unwrap_or(-1)
}

async fn kf_ids(w: &World) -> Vec<String> {
    w.outbox_of("kf")
        .await
        .iter()
        .map(|i| id_of(i).to_owned())
        .collect()
}

#[tokio::test]
async fn five_quick_answers_go_as_one_message_and_spend_one_reply() {
    for b in BACKENDS {
        let w = World::new(world(b)).await;
        follow(&w, "oB1").await;
        say(&w, "oB1", 1, "在吗？订单 123").await;
        let texts = [
            "您好",
            "我查一下",
            "订单 123 已发货",
            "单号 SF100",
            "预计明天到",
        ];
        let mut first = None;
        for t in texts {
            let m = reply(&w, "oB1", t);
            assert_eq!(w.im(AFTER, m.clone()).await.status, 200);
            first.get_or_insert(m);
        }
        // Held for the rest of the burst: nothing has gone to WeChat yet.
        assert_eq!(w.wechat.count(CUSTOM), 0, "{b:?}");
        // IM retries a callback of the burst: nothing more is queued.
        w.im(AFTER, first.unwrap()).await;
        assert_eq!(w.outbox_of("kf").await.len(), 5, "{b:?}");
        w.advance(3);
        w.stream().await;
        assert_eq!(custom_texts(&w), vec![texts.join("\n")], "{b:?}");
        assert_eq!(left(&w, "oB1").await, 4, "{b:?}: one reply spent");
        let items = w.outbox_of("kf").await;
        assert!(items.iter().all(|i| i.s("status") == Some("sent")), "{b:?}");
        let merged = items
            .iter()
            .filter(|i| i.s("merged_into").is_some())
            .count();
        assert_eq!(merged, 4, "{b:?}");
        // A reply after the burst is a burst of its own.
        w.im(AFTER, reply(&w, "oB1", "还有问题随时找我")).await;
        w.advance(3);
        w.stream().await;
        assert_eq!(w.wechat.count(CUSTOM), 2, "{b:?}");
        assert_eq!(left(&w, "oB1").await, 3, "{b:?}");
    }
}

#[tokio::test]
async fn a_burst_the_allowance_has_no_room_for_is_told_to_the_agent_once() {
    for b in BACKENDS {
        let w = World::new(world(b)).await;
        follow(&w, "oB2").await;
        w.advance(61);
        for t in ["one", "two", "three"] {
            w.im(AFTER, reply(&w, "oB2", t)).await;
        }
        w.advance(3);
        w.stream().await;
        assert_eq!(w.wechat.count(CUSTOM), 0, "{b:?}");
        let told = notices(&w);
        assert_eq!(told.len(), 1, "{b:?}: one notice for the burst: {told:?}");
        let items = w.outbox_of("kf").await;
        assert!(
            items.iter().all(|i| i.s("status") == Some("skipped")
                && i.s("reason") == Some("undeliverable: allowance_expired; no_fallback_credit")),
            "{b:?}: {items:?}"
        );
    }
}

#[tokio::test]
async fn concurrent_duplicates_of_callbacks_and_stream_records_send_each_reply_once() {
    for b in BACKENDS {
        let w = World::new(world(b)).await;
        follow(&w, "oB3").await;
        say(&w, "oB3", 1, "hello").await;
        let (m1, m2, m3) = (
            reply(&w, "oB3", "first"),
            reply(&w, "oB3", "second"),
            reply(&w, "oB3", "third"),
        );
        let rs = tokio::join!(
            w.im_only(AFTER, m1.clone()),
            w.im_only(AFTER, m2.clone()),
            w.im_only(AFTER, m1.clone()),
            w.im_only(AFTER, m3.clone()),
            w.im_only(AFTER, m2),
            w.im_only(AFTER, m1),
        );
        for r in [rs.0, rs.1, rs.2, rs.3, rs.4, rs.5] {
            assert_eq!(r.status, 200, "{b:?}");
        }
        let ids = kf_ids(&w).await;
        assert_eq!(ids.len(), 3, "{b:?}: one item per reply");
        w.advance(3);
        // The stream delivers every record, some twice, to dispatchers running at once.
        let (a, bb, c) = (
            vec![ids[0].clone()],
            vec![ids[1].clone(), ids[2].clone()],
            ids.clone(),
        );
        let _ = tokio::join!(
            dispatch::run(&w.app, &a),
            dispatch::run(&w.app, &bb),
            dispatch::run(&w.app, &c),
            dispatch::run(&w.app, &a),
        );
        w.stream().await;
        let sent = custom_texts(&w);
        let all: Vec<&str> = sent.iter().flat_map(|t| t.split('\n')).collect();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            vec!["first", "second", "third"],
            "{b:?}: each once: {sent:?}"
        );
        assert_eq!(left(&w, "oB3").await, 5 - sent.len() as i64, "{b:?}");
        let items = w.outbox_of("kf").await;
        assert!(items.iter().all(|i| i.s("status") == Some("sent")), "{b:?}");
    }
}

#[tokio::test]
async fn a_reply_held_while_the_follower_writes_again_goes_in_the_new_allowance() {
    for b in BACKENDS {
        let w = World::new(world(b)).await;
        follow(&w, "oB4").await;
        w.advance(61);
        // The follow's minute is over when the agent answers, but the follower writes again
        // before the reply is sent: it goes, in the allowance their message opened.
        w.im(AFTER, reply(&w, "oB4", "sorry for the wait")).await;
        say(&w, "oB4", 1, "anyone?").await;
        w.advance(3);
        w.stream().await;
        assert_eq!(custom_texts(&w), vec!["sorry for the wait"], "{b:?}");
        assert_eq!(left(&w, "oB4").await, 4, "{b:?}");
        assert!(notices(&w).is_empty(), "{b:?}");
    }
}

#[tokio::test]
async fn a_reply_sent_at_the_moment_the_follower_writes_is_decided_once_either_way() {
    for b in BACKENDS {
        let w = World::new(world(b)).await;
        follow(&w, "oB5").await;
        w.advance(61);
        w.im(AFTER, reply(&w, "oB5", "still there?")).await;
        w.advance(3);
        let ids = kf_ids(&w).await;
        let msg = xml(
            "oB5",
            w.now(),
            "<MsgType>text</MsgType><Content><![CDATA[yes]]></Content><MsgId>77</MsgId>",
        );
        let (r, _) = tokio::join!(
            w.push_only(AppKind::Oa, &msg, Delivery::Safe),
            dispatch::run(&w.app, &ids),
        );
        assert_eq!(r.status, 200, "{b:?}");
        w.stream().await;
        let kf = &w.outbox_of("kf").await[0];
        match kf.s("status") {
            // Sent in the allowance the message opened (one of its five spent)…
            Some("sent") => {
                assert_eq!(w.wechat.count(CUSTOM), 1, "{b:?}");
                assert_eq!(left(&w, "oB5").await, 4, "{b:?}");
                assert!(notices(&w).is_empty(), "{b:?}");
            }
            // …or found the follow's minute over, before the message: not sent, agent told,
            // and the message's five replies untouched.
            Some("skipped") => {
                assert_eq!(w.wechat.count(CUSTOM), 0, "{b:?}");
                assert_eq!(left(&w, "oB5").await, 5, "{b:?}");
                assert_eq!(notices(&w).len(), 1, "{b:?}");
            }
            other => panic!("{b:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn with_merging_off_each_reply_is_its_own_message_even_in_one_batch() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0).set("KF_MERGE_SECS", "0")).await;
        follow(&w, "oB6").await;
        say(&w, "oB6", 1, "hello").await;
        // Both callbacks before any dispatch: one stream batch carries both.
        for t in ["one", "two"] {
            assert_eq!(w.im_only(AFTER, reply(&w, "oB6", t)).await.status, 200);
        }
        w.stream().await;
        assert_eq!(custom_texts(&w).len(), 2, "{b:?}");
        assert_eq!(left(&w, "oB6").await, 3, "{b:?}");
    }
}
