//! Notifications that know what the user already saw, end to end through the IM callback
//! handler: read reports and recalls withdraw what is queued or held, the sender's offline-push
//! settings are honoured, group @-mentions notify the members IM names, and `PushOnline` counts
//! as configured. Every callback is delivered twice, and the second changes nothing.

use common::records::keys;
use common::store::{Item, Table};
use serde_json::{Value, json};
use wxim_tests::harness::{CUSTOMER, MP_OPENID, Options, SELLER, TEMPLATE, World};
use wxim_tests::{BACKENDS, Backend};

const T0: i64 = 1_700_000_000;
const OTHER: &str = "shop_other";
const GROUP: &str = "@TGS#2J4SZEAEL";
const MEMBERS: &str = "/v4/group_open_http_svc/get_group_member_info";

fn count(body: &Value) -> &str {
    body["data"]["number4"]["value"].as_str().unwrap()
}

fn preview(body: &Value) -> &str {
    body["data"]["thing2"]["value"].as_str().unwrap()
}

async fn snapshot(w: &World) -> (Vec<Item>, Vec<Item>) {
    (
        w.app.store.scan(Table::State).await.unwrap(),
        w.app.store.scan(Table::Outbox).await.unwrap(),
    )
}

/// Delivers the callback, then delivers it again and checks the second changed nothing.
async fn twice(w: &World, command: &str, body: Value) {
    let r = w.im(command, body.clone()).await;
    assert_eq!(r.status, 200, "{command}: {}", r.body_str());
    let before = snapshot(w).await;
    let sends = w.sends().len();
    let r = w.im(command, body).await;
    assert_eq!(r.status, 200, "{command} again: {}", r.body_str());
    assert_eq!(
        before,
        snapshot(w).await,
        "{command}: a duplicate changes nothing"
    );
    assert_eq!(
        w.sends().len(),
        sends,
        "{command}: a duplicate sends nothing"
    );
}

fn read_report(reader: &str, peer: &str, last_read_time: i64) -> Value {
    json!({"CallbackCommand": "C2C.CallbackAfterMsgReport", "Report_Account": reader,
           "Peer_Account": peer, "LastReadTime": last_read_time,
           "EventTime": last_read_time * 1000, "UnreadMsgNum": 0})
}

fn recall_of(m: &Value) -> Value {
    json!({"CallbackCommand": "C2C.CallbackAfterMsgWithDraw", "From_Account": m["From_Account"],
           "To_Account": m["To_Account"], "MsgKey": m["MsgKey"], "EventTime": T0 * 1000,
           "UnreadMsgNum": 0})
}

async fn notify_items(w: &World) -> Vec<Item> {
    w.outbox_of("notify").await
}

async fn reason_of(w: &World, text: &str) -> (String, String) {
    let items = notify_items(w).await;
    let i = items
        .iter()
        .find(|i| i.s("preview") == Some(text))
        .unwrap_or_else(|| panic!("no notification for {text}: {items:?}"));
    (
        i.s("status").unwrap_or("").to_owned(),
        i.s("reason").unwrap_or("").to_owned(),
    )
}

async fn pending(w: &World) -> i64 {
    w.state_item(&keys::notify_state(CUSTOMER), keys::ONE)
        .await
        .and_then(|i| i.n("pending"))
        .unwrap_or(0)
}

fn followups(due: &[(String, String, String)]) -> usize {
    due.iter().filter(|r| r.2 == "followup").count()
}

#[tokio::test]
async fn a_read_report_cancels_what_waits_from_that_conversation_only() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0).set("NOTIFY_DEBOUNCE_SECS", "300")).await;
        w.ready_offline(3).await;
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "one"))
            .await;
        assert_eq!(w.sends().len(), 1, "{b:?}");
        for (from, text) in [(SELLER, "two"), (SELLER, "three"), (OTHER, "four")] {
            w.advance(10);
            w.im("C2C.CallbackAfterSendMsg", w.c2c(from, CUSTOMER, text))
                .await;
        }
        assert_eq!(pending(&w).await, 3, "{b:?}: three held in the window");
        // Read on another device: everything from SELLER up to now.
        twice(
            &w,
            "C2C.CallbackAfterMsgReport",
            read_report(CUSTOMER, SELLER, w.now()),
        )
        .await;
        assert_eq!(
            pending(&w).await,
            1,
            "{b:?}: only OTHER's message still waits"
        );
        // The follow-up at the window's end tells only what was not read.
        w.advance(400);
        w.sweep().await;
        let sends = w.sends();
        assert_eq!(sends.len(), 2, "{b:?}");
        assert_eq!(count(&sends[1].body), "1", "{b:?}");
        assert_eq!(preview(&sends[1].body), "four", "{b:?}");
        assert!(wxim_tests::log_text().contains("notifications_withdrawn"));
    }
}

#[tokio::test]
async fn a_read_report_drops_a_queued_notification_and_spares_later_messages() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        w.ready_offline(2).await;
        // Queued by the handler, not dispatched yet.
        let r = w
            .im_only("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "seen"))
            .await;
        assert_eq!(r.status, 200);
        w.advance(30);
        let later = w.c2c(SELLER, CUSTOMER, "after the read");
        w.im_only("C2C.CallbackAfterSendMsg", later).await;
        // Read up to a moment before the second message.
        twice(
            &w,
            "C2C.CallbackAfterMsgReport",
            read_report(CUSTOMER, SELLER, T0 + 10),
        )
        .await;
        w.stream().await;
        assert_eq!(
            reason_of(&w, "seen").await,
            ("skipped".into(), "read".into()),
            "{b:?}"
        );
        let sends = w.sends();
        assert_eq!(sends.len(), 1, "{b:?}: only the unread message is told");
        assert_eq!(preview(&sends[0].body), "after the read", "{b:?}");
        assert_eq!(count(&sends[0].body), "1", "{b:?}");
        assert_eq!(w.credits(MP_OPENID, TEMPLATE).await, 1, "{b:?}");
    }
}

#[tokio::test]
async fn a_recall_drops_a_queued_notification() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        w.ready_offline(1).await;
        let m = w.c2c(SELLER, CUSTOMER, "sent by mistake");
        w.im_only("C2C.CallbackAfterSendMsg", m.clone()).await;
        twice(&w, "C2C.CallbackAfterMsgWithDraw", recall_of(&m)).await;
        w.stream().await;
        assert!(w.sends().is_empty(), "{b:?}");
        assert_eq!(
            reason_of(&w, "sent by mistake").await,
            ("skipped".into(), "recalled".into()),
            "{b:?}"
        );
        assert_eq!(w.credits(MP_OPENID, TEMPLATE).await, 1, "{b:?}");
        // The message's after-send callback delivered again queues nothing new.
        w.im("C2C.CallbackAfterSendMsg", m).await;
        assert!(w.sends().is_empty(), "{b:?}");
    }
}

#[tokio::test]
async fn a_recall_of_a_held_message_corrects_the_follow_up() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0).set("NOTIFY_DEBOUNCE_SECS", "300")).await;
        w.ready_offline(3).await;
        let first = w.c2c(SELLER, CUSTOMER, "first");
        w.im("C2C.CallbackAfterSendMsg", first.clone()).await;
        w.advance(10);
        w.im(
            "C2C.CallbackAfterSendMsg",
            w.c2c(SELLER, CUSTOMER, "second"),
        )
        .await;
        w.advance(10);
        let third = w.c2c(SELLER, CUSTOMER, "third");
        w.im("C2C.CallbackAfterSendMsg", third.clone()).await;
        assert_eq!(pending(&w).await, 2, "{b:?}");
        // The latest held message is recalled: the follow-up speaks for the one before.
        twice(&w, "C2C.CallbackAfterMsgWithDraw", recall_of(&third)).await;
        assert_eq!(pending(&w).await, 1, "{b:?}");
        // The sent one is recalled too: a subscribe message cannot be taken back.
        twice(&w, "C2C.CallbackAfterMsgWithDraw", recall_of(&first)).await;
        assert_eq!(pending(&w).await, 1, "{b:?}: the count it told stands");
        w.advance(400);
        w.sweep().await;
        let sends = w.sends();
        assert_eq!(sends.len(), 2, "{b:?}");
        assert_eq!(count(&sends[1].body), "1", "{b:?}");
        assert_eq!(preview(&sends[1].body), "second", "{b:?}");
        assert_eq!(w.credits(MP_OPENID, TEMPLATE).await, 1, "{b:?}");
    }
}

#[tokio::test]
async fn recalling_everything_held_drops_the_follow_up() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0).set("NOTIFY_DEBOUNCE_SECS", "300")).await;
        w.ready_offline(2).await;
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "hello"))
            .await;
        w.advance(10);
        let oops = w.c2c(SELLER, CUSTOMER, "oops");
        w.im("C2C.CallbackAfterSendMsg", oops.clone()).await;
        assert_eq!(followups(&w.due_records().await), 1, "{b:?}");
        twice(&w, "C2C.CallbackAfterMsgWithDraw", recall_of(&oops)).await;
        assert_eq!(pending(&w).await, 0, "{b:?}");
        assert_eq!(
            followups(&w.due_records().await),
            0,
            "{b:?}: nothing left to tell"
        );
        w.advance(400);
        w.sweep().await;
        assert_eq!(w.sends().len(), 1, "{b:?}");
    }
}

#[tokio::test]
async fn the_senders_push_settings_are_honoured() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0).set("NOTIFY_DEBOUNCE_SECS", "0")).await;
        w.ready_offline(2).await;
        let mut silent = w.c2c(SELLER, CUSTOMER, "silent");
        silent["OfflinePushInfo"] = json!({"PushFlag": 1, "Desc": "ignored"});
        twice(&w, "C2C.CallbackAfterSendMsg", silent).await;
        assert!(notify_items(&w).await.is_empty(), "{b:?}");
        assert!(wxim_tests::log_text().contains("push_disabled_by_sender"));
        let mut described = w.c2c(SELLER, CUSTOMER, "the real text");
        described["OfflinePushInfo"] =
            json!({"PushFlag": 0, "Title": "t", "Desc": "您有一条新订单消息"});
        described["CloudCustomData"] = json!("{\"orderId\":\"SECRET-42\"}");
        twice(&w, "C2C.CallbackAfterSendMsg", described).await;
        let sends = w.sends();
        assert_eq!(sends.len(), 1, "{b:?}");
        assert_eq!(preview(&sends[0].body), "您有一条新订单消息", "{b:?}");
        assert!(!sends[0].body.to_string().contains("SECRET-42"), "{b:?}");
        // Desc is still shaped by the keyword's rules (thing: at most 20 characters).
        let mut long = w.c2c(SELLER, CUSTOMER, "x");
        long["OfflinePushInfo"] = json!({"Desc": "一二三四五六七八九十一二三四五六七八九十一二三"});
        w.im("C2C.CallbackAfterSendMsg", long).await;
        let sends = w.sends();
        assert_eq!(sends.len(), 2, "{b:?}");
        assert!(preview(&sends[1].body).chars().count() <= 20, "{b:?}");
    }
}

fn group_msg(seq: u64, text: &str, at: Value) -> Value {
    json!({"CallbackCommand": "Group.CallbackAfterSendMsg", "GroupId": GROUP, "Type": "Public",
           "From_Account": SELLER, "Operator_Account": SELLER, "Random": 9000 + seq, "MsgSeq": seq,
           "MsgTime": T0, "OnlineOnlyFlag": 0,
           "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}],
           "CloudCustomData": "", "EventTime": T0 * 1000, "GroupAtInfo": at})
}

#[tokio::test]
async fn a_group_at_mention_notifies_the_member_it_names() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0).set("NOTIFY_DEBOUNCE_SECS", "300")).await;
        w.ready_offline(2).await;
        w.im.set_group(GROUP, "Public", &[SELLER, CUSTOMER]);
        w.im.name_group(GROUP, "周末徒步群");
        // No GroupAtInfo: an "@customer_lin" in the text is not a mention.
        twice(
            &w,
            "Group.CallbackAfterSendMsg",
            group_msg(1, "@customer_lin hi", Value::Null),
        )
        .await;
        assert!(notify_items(&w).await.is_empty(), "{b:?}");
        assert!(wxim_tests::log_text().contains("no_mention"));
        let at = json!([{"GroupAtAllFlag": 0, "GroupAt_Account": CUSTOMER},
                        {"GroupAtAllFlag": 0, "GroupAt_Account": SELLER}]);
        twice(
            &w,
            "Group.CallbackAfterSendMsg",
            group_msg(2, "@林 请看一下", at.clone()),
        )
        .await;
        let sends = w.sends();
        assert_eq!(
            sends.len(),
            1,
            "{b:?}: the sender mentioning themself is not told"
        );
        assert_eq!(sends[0].body["touser"], MP_OPENID);
        // The callback has no group name: IM's get_group_info gives it.
        assert_eq!(
            sends[0].body["data"]["thing1"]["value"],
            format!("{SELLER}（周末徒步群）")
        );
        assert_eq!(preview(&sends[0].body), "@林 请看一下");
        // The same debounce window as one-to-one messages: held, then one follow-up.
        w.advance(10);
        w.im("Group.CallbackAfterSendMsg", group_msg(3, "还在吗", at))
            .await;
        assert_eq!(w.sends().len(), 1, "{b:?}");
        w.advance(400);
        w.sweep().await;
        let sends = w.sends();
        assert_eq!(sends.len(), 2, "{b:?}");
        assert_eq!(count(&sends[1].body), "1");
        assert_eq!(preview(&sends[1].body), "还在吗");
        assert_eq!(
            w.im.count(MEMBERS),
            0,
            "{b:?}: named mentions need no member list"
        );
    }
}

#[tokio::test]
async fn at_all_is_off_by_default() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        w.ready_offline(1).await;
        w.im.set_group(GROUP, "Public", &[SELLER, CUSTOMER]);
        twice(
            &w,
            "Group.CallbackAfterSendMsg",
            group_msg(1, "@all 今晚八点开会", json!([{"GroupAtAllFlag": 1}])),
        )
        .await;
        assert!(notify_items(&w).await.is_empty(), "{b:?}");
        assert_eq!(w.im.count(MEMBERS), 0, "{b:?}");
        assert!(wxim_tests::log_text().contains("at_all_off"));
    }
}

fn members(n: usize, at: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            if i == at {
                CUSTOMER.to_owned()
            } else if i == 0 {
                SELLER.to_owned()
            } else {
                format!("member_{i:03}")
            }
        })
        .collect()
}

#[tokio::test]
async fn at_all_reaches_the_members_im_lists_in_pages_within_the_cap() {
    for b in BACKENDS {
        let w = World::new(
            Options::new(b)
                .at(T0)
                .set("NOTIFY_GROUP_AT_ALL", "true")
                .set("NOTIFY_GROUP_AT_ALL_MAX", "300"),
        )
        .await;
        w.ready_offline(1).await;
        let list = members(150, 120);
        let refs: Vec<&str> = list.iter().map(String::as_str).collect();
        w.im.set_group(GROUP, "Public", &refs);
        twice(
            &w,
            "Group.CallbackAfterSendMsg",
            group_msg(1, "@all 今晚八点开会", json!([{"GroupAtAllFlag": 1}])),
        )
        .await;
        assert_eq!(w.sends().len(), 1, "{b:?}");
        // Two pages (Limit 100 from Offset 0, then from 100) for each delivery of the callback.
        let pages: Vec<(Value, Value)> =
            w.im.requests(MEMBERS)
                .iter()
                .map(|r| (r.body["Offset"].clone(), r.body["Limit"].clone()))
                .collect();
        assert_eq!(
            pages,
            [
                (json!(0), json!(100)),
                (json!(100), json!(100)),
                (json!(0), json!(100)),
                (json!(100), json!(100))
            ],
            "{b:?}"
        );
        // Members who are not bound are recorded as such; nobody else is queued.
        assert_eq!(notify_items(&w).await.len(), 1, "{b:?}");
    }
}

#[tokio::test]
async fn at_all_stops_at_the_cap_and_pages_a_community_by_next() {
    let w = World::new(
        Options::new(Backend::Embedded)
            .at(T0)
            .set("NOTIFY_GROUP_AT_ALL", "true")
            .set("NOTIFY_GROUP_AT_ALL_MAX", "100"),
    )
    .await;
    w.ready_offline(1).await;
    let list = members(150, 120);
    let refs: Vec<&str> = list.iter().map(String::as_str).collect();
    w.im.set_group(GROUP, "Public", &refs);
    w.im(
        "Group.CallbackAfterSendMsg",
        group_msg(1, "@all a", json!([{"GroupAtAllFlag": 1}])),
    )
    .await;
    assert!(w.sends().is_empty(), "beyond the cap");
    assert_eq!(w.im.count(MEMBERS), 1);
    // A Community group pages by Next: its members 100.. come with the second page.
    let w = World::new(
        Options::new(Backend::Embedded)
            .at(T0)
            .set("NOTIFY_GROUP_AT_ALL", "true")
            .set("NOTIFY_GROUP_AT_ALL_MAX", "200"),
    )
    .await;
    w.ready_offline(1).await;
    w.im.set_group(GROUP, "Community", &refs);
    let mut m = group_msg(2, "@all b", json!([{"GroupAtAllFlag": 1}]));
    m["Type"] = json!("Community");
    w.im("Group.CallbackAfterSendMsg", m).await;
    assert_eq!(w.sends().len(), 1);
    let nexts: Vec<Value> =
        w.im.requests(MEMBERS)
            .iter()
            .map(|r| r.body["Next"].clone())
            .collect();
    assert_eq!(nexts, [json!(""), json!("100")]);
    // A group IM does not know: only the named mentions would be told, and nothing fails.
    let mut m = group_msg(3, "@all c", json!([{"GroupAtAllFlag": 1}]));
    m["GroupId"] = json!("@TGS#unknown");
    let r = w.im("Group.CallbackAfterSendMsg", m).await;
    assert_eq!(r.status, 200);
    assert_eq!(w.sends().len(), 1);
    assert!(wxim_tests::log_text().contains("at_all_members_unavailable"));
}

#[tokio::test]
async fn push_online_counts_as_configured() {
    for b in BACKENDS {
        for (mode, sent) in [(None, 0), (Some("online"), 0), (Some("offline"), 1)] {
            let mut o = Options::new(b).at(T0);
            if let Some(m) = mode {
                o = o.set("NOTIFY_PUSH_ONLINE", m);
            }
            let w = World::new(o).await;
            // Bound with a credit, no presence from callbacks: IM is asked.
            w.bind(CUSTOMER, MP_OPENID).await;
            w.accept(MP_OPENID, TEMPLATE).await;
            w.im.set_online(CUSTOMER, "PushOnline");
            twice(
                &w,
                "C2C.CallbackAfterSendMsg",
                w.c2c(SELLER, CUSTOMER, "hi"),
            )
            .await;
            assert_eq!(w.sends().len(), sent, "{b:?} {mode:?}");
            if sent == 0 {
                assert_eq!(
                    reason_of(&w, "hi").await,
                    ("skipped".into(), "recipient_online".into()),
                    "{b:?} {mode:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_message_told_by_a_follow_up_is_never_taken_out_of_a_later_count() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0).set("NOTIFY_DEBOUNCE_SECS", "300")).await;
        w.ready_offline(3).await;
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "a"))
            .await;
        w.advance(10);
        let held = w.c2c(SELLER, CUSTOMER, "b");
        w.im("C2C.CallbackAfterSendMsg", held.clone()).await;
        // The follow-up tells "b"; a new window opens with it.
        w.advance(400);
        w.sweep().await;
        assert_eq!(w.sends().len(), 2, "{b:?}");
        w.advance(10);
        w.im("C2C.CallbackAfterSendMsg", w.c2c(OTHER, CUSTOMER, "c"))
            .await;
        assert_eq!(pending(&w).await, 1, "{b:?}: c is held");
        // "b" is recalled and then read: it was told already, so c stays counted.
        twice(&w, "C2C.CallbackAfterMsgWithDraw", recall_of(&held)).await;
        twice(
            &w,
            "C2C.CallbackAfterMsgReport",
            read_report(CUSTOMER, SELLER, w.now()),
        )
        .await;
        assert_eq!(pending(&w).await, 1, "{b:?}");
        w.advance(400);
        w.sweep().await;
        let sends = w.sends();
        assert_eq!(sends.len(), 3, "{b:?}");
        assert_eq!(preview(&sends[2].body), "c", "{b:?}");
    }
}

#[tokio::test]
async fn a_login_after_the_hold_leaves_the_new_count_alone() {
    for b in BACKENDS {
        let w = World::new(
            Options::new(b)
                .at(T0)
                .set("NOTIFY_QUIET_HOURS", "06:00-07:00"),
        )
        .await;
        w.ready_offline(2).await;
        // Held by the quiet hours (T0 is 06:13 in Shanghai); no notification ever went out.
        let first = w.c2c(SELLER, CUSTOMER, "first");
        w.im("C2C.CallbackAfterSendMsg", first.clone()).await;
        assert_eq!(pending(&w).await, 1, "{b:?}");
        // They came back (the count is cleared) and left again; a new message is held.
        w.advance(5);
        w.state_change(CUSTOMER, "Login", w.now() * 1000).await;
        w.advance(5);
        w.state_change(CUSTOMER, "Logout", w.now() * 1000).await;
        w.im("C2C.CallbackAfterSendMsg", w.c2c(OTHER, CUSTOMER, "second"))
            .await;
        assert_eq!(pending(&w).await, 1, "{b:?}");
        twice(&w, "C2C.CallbackAfterMsgWithDraw", recall_of(&first)).await;
        assert_eq!(
            pending(&w).await,
            1,
            "{b:?}: the recall takes nothing from the new count"
        );
    }
}
