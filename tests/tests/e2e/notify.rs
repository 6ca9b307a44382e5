//! Offline notifications end to end: signed IM callbacks and WeChat pushes through the public
//! handlers, the outbox dispatched as the stream would, and the WeChat/IM stand-ins answering
//! with the documented successes and errors.

use common::records::keys;
use common::store::Table;
use local::standin::Scripted;
use serde_json::json;
use wxim_tests::harness::{CUSTOMER, MP_OPENID, Options, SELLER, TEMPLATE, World};
use wxim_tests::{BACKENDS, Backend};

const T0: i64 = 1_700_000_000;
const SEND: &str = "/cgi-bin/message/subscribe/send";
const TOKEN: &str = "/cgi-bin/stable_token";

#[tokio::test]
async fn an_offline_message_becomes_one_subscribe_message() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        w.ready_offline(1).await;
        let r = w
            .im(
                "C2C.CallbackAfterSendMsg",
                w.c2c(SELLER, CUSTOMER, "您的订单已发货"),
            )
            .await;
        assert_eq!(
            r.body_str(),
            r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#,
            "{b:?}"
        );
        let sends = w.sends();
        assert_eq!(sends.len(), 1, "{b:?}");
        let body = &sends[0].body;
        assert_eq!(body["touser"], MP_OPENID);
        assert_eq!(body["template_id"], TEMPLATE);
        assert_eq!(body["page"], "pages/chat/index");
        assert_eq!(body["data"]["thing1"]["value"], SELLER);
        assert_eq!(body["data"]["thing2"]["value"], "您的订单已发货");
        // 1700000000 is 2023-11-15 06:13 in Asia/Shanghai.
        assert_eq!(body["data"]["time3"]["value"], "2023年11月15日 06:13");
        assert_eq!(body["data"]["number4"]["value"], "1");
        assert!(
            sends[0]
                .query("access_token")
                .is_some_and(|t| t.starts_with("ACCESS_TOKEN_"))
        );
        let items = w.outbox_of("notify").await;
        assert_eq!(items.len(), 1, "{b:?}");
        assert_eq!(items[0].s("status"), Some("sent"));
        let msgid = items[0].s("msgid").unwrap().to_owned();
        assert_eq!(
            w.credits(MP_OPENID, TEMPLATE).await,
            0,
            "{b:?}: the credit is spent"
        );
        let rec = w
            .state_item(
                &keys::wechat_msg(common::config::AppKind::Mp, &msgid),
                keys::ONE,
            )
            .await
            .unwrap();
        assert_eq!(rec.s("outbox_id"), items[0].s("id"));
    }
}

#[tokio::test]
async fn the_delivery_result_event_lands_on_the_send() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    w.ready_offline(1).await;
    w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "hi"))
        .await;
    let msgid = w.outbox_of("notify").await[0]
        .s("msgid")
        .unwrap()
        .to_owned();
    let ev = json!({"ToUserName": "gh_123456789abc", "FromUserName": MP_OPENID, "CreateTime": T0 + 50,
        "MsgType": "event", "Event": "subscribe_msg_sent_event",
        "List": {"TemplateId": TEMPLATE, "MsgID": msgid, "ErrorCode": "0", "ErrorStatus": "success"}});
    let r = w
        .push(
            common::config::AppKind::Mp,
            &ev.to_string(),
            common::protocol::wechat::push::Delivery::Safe,
        )
        .await;
    assert_eq!(r.status, 200);
    let rec = w
        .state_item(
            &keys::wechat_msg(common::config::AppKind::Mp, &msgid),
            keys::ONE,
        )
        .await
        .unwrap();
    assert_eq!(rec.s("delivery_status"), Some("success"));
    assert!(
        rec.s("outbox_id").is_some(),
        "the send and its result share one record"
    );
}

#[tokio::test]
async fn nothing_is_queued_for_online_unbound_or_credit_less_recipients() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        // Unbound.
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "a"))
            .await;
        // Bound, offline, no credit.
        w.bind(CUSTOMER, MP_OPENID).await;
        w.state_change(CUSTOMER, "Logout", T0 * 1000).await;
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "b"))
            .await;
        // Credit, but online again.
        w.accept(MP_OPENID, TEMPLATE).await;
        w.state_change(CUSTOMER, "Login", T0 * 1000 + 1).await;
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "c"))
            .await;
        // An online-only message and a message IM failed to deliver never notify either.
        w.state_change(CUSTOMER, "Logout", T0 * 1000 + 2).await;
        let mut m = w.c2c(SELLER, CUSTOMER, "d");
        m["OnlineOnlyFlag"] = json!(1);
        w.im("C2C.CallbackAfterSendMsg", m).await;
        let mut m = w.c2c(SELLER, CUSTOMER, "e");
        m["SendMsgResult"] = json!(80001);
        w.im("C2C.CallbackAfterSendMsg", m).await;
        assert!(w.outbox().await.is_empty(), "{b:?}");
        assert!(w.sends().is_empty(), "{b:?}");
        assert_eq!(w.credits(MP_OPENID, TEMPLATE).await, 1, "{b:?}");
        let logs = wxim_tests::log_text();
        for reason in [
            "recipient_not_bound",
            "no_credit",
            "recipient_online",
            "online_only_message",
            "not_delivered_in_im",
        ] {
            assert!(logs.contains(reason), "{reason} is logged as the decision");
        }
    }
}

#[tokio::test]
async fn a_late_older_state_change_never_overwrites_a_newer_one() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        w.ready_offline(1).await;
        let t = T0 * 1000;
        w.state_change(CUSTOMER, "Login", t + 2000).await;
        // The Disconnect of the previous connection arrives late.
        w.state_change(CUSTOMER, "Disconnect", t + 1000).await;
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "x"))
            .await;
        assert!(w.outbox().await.is_empty(), "{b:?}: still online");
        w.state_change(CUSTOMER, "Disconnect", t + 3000).await;
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "y"))
            .await;
        assert_eq!(w.sends().len(), 1, "{b:?}: offline now");
    }
}

#[tokio::test]
async fn unknown_or_stale_presence_is_settled_by_query_online_status() {
    let w = World::new(
        Options::new(Backend::Embedded)
            .at(T0)
            .set("PRESENCE_STALE_SECS", "600"),
    )
    .await;
    w.bind(CUSTOMER, MP_OPENID).await;
    w.accept(MP_OPENID, TEMPLATE).await;
    w.accept(MP_OPENID, TEMPLATE).await;
    // No presence record at all: IM says Online, so no notification.
    w.im.set_online(CUSTOMER, "Online");
    w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "a"))
        .await;
    let items = w.outbox_of("notify").await;
    assert_eq!(items[0].s("reason"), Some("recipient_online"), "{items:?}");
    assert_eq!(w.im.count("/v4/openim/query_online_status"), 1);
    // A mini-program login long ago, never followed by a logout: stale, so ask IM again.
    w.state_change(CUSTOMER, "Login", (T0 - 700) * 1000).await;
    w.im.set_online(CUSTOMER, "Offline");
    w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "b"))
        .await;
    assert_eq!(w.sends().len(), 1);
    assert_eq!(w.im.count("/v4/openim/query_online_status"), 2);
    // The admin UserSig the stand-in checked was generated with the configured key.
    let q = &w.im.requests("/v4/openim/query_online_status")[0];
    assert_eq!(q.query("identifier"), Some("administrator"));
    assert!(q.query("random").unwrap().parse::<u32>().is_ok());
}

#[tokio::test]
async fn a_retried_callback_queues_and_sends_once() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        w.ready_offline(2).await;
        let m = w.c2c(SELLER, CUSTOMER, "once");
        w.im("C2C.CallbackAfterSendMsg", m.clone()).await;
        let again = w.im("C2C.CallbackAfterSendMsg", m).await;
        assert_eq!(again.status, 200);
        assert_eq!(w.outbox().await.len(), 1, "{b:?}");
        assert_eq!(w.sends().len(), 1, "{b:?}");
        assert_eq!(w.credits(MP_OPENID, TEMPLATE).await, 1, "{b:?}");
    }
}

#[tokio::test]
async fn a_burst_is_merged_and_the_debounce_window_holds_the_rest() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0).set("NOTIFY_DEBOUNCE_SECS", "300")).await;
        w.ready_offline(3).await;
        for text in ["one", "two", "three"] {
            w.advance(1);
            w.im_only("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, text))
                .await;
        }
        w.stream().await;
        let sends = w.sends();
        assert_eq!(sends.len(), 1, "{b:?}: one notification for the batch");
        assert_eq!(sends[0].body["data"]["number4"]["value"], "3");
        assert_eq!(
            sends[0].body["data"]["thing2"]["value"], "three",
            "the latest message speaks"
        );
        let statuses: Vec<_> = w
            .outbox()
            .await
            .iter()
            .map(|i| i.s("status").unwrap().to_owned())
            .collect();
        assert_eq!(statuses.iter().filter(|s| *s == "sent").count(), 1);
        assert_eq!(statuses.iter().filter(|s| *s == "skipped").count(), 2);
        // Inside the window: held and counted.
        w.advance(10);
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "four"))
            .await;
        assert_eq!(w.sends().len(), 1, "{b:?}");
        let held = w
            .outbox_of("notify")
            .await
            .into_iter()
            .find(|i| i.s("preview") == Some("four"))
            .unwrap();
        assert_eq!(held.s("reason"), Some("merged_within_debounce_window"));
        // After the window the next one says how many are waiting: four and five.
        w.advance(300);
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "five"))
            .await;
        let sends = w.sends();
        assert_eq!(sends.len(), 2, "{b:?}");
        assert_eq!(sends[1].body["data"]["number4"]["value"], "2");
        assert_eq!(
            w.credits(MP_OPENID, TEMPLATE).await,
            1,
            "{b:?}: two notifications, two credits"
        );
        // Coming online clears the count.
        w.state_change(CUSTOMER, "Login", (T0 + 400) * 1000).await;
        let st = w
            .state_item(&keys::notify_state(CUSTOMER), keys::ONE)
            .await
            .unwrap();
        assert_eq!(st.n("pending"), Some(0));
    }
}

#[tokio::test]
async fn an_invalid_token_is_refreshed_and_the_send_retried_once() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        w.ready_offline(1).await;
        // WeChat says the cached token is no longer valid (40001), once.
        w.wechat.script(SEND, vec![Scripted::Json(json!({"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"}))]);
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "x"))
            .await;
        assert_eq!(
            w.sends().len(),
            2,
            "{b:?}: the failed send and its one retry"
        );
        assert_eq!(w.wechat.count(TOKEN), 2, "{b:?}: a fresh token was fetched");
        assert_eq!(
            w.outbox_of("notify").await[0].s("status"),
            Some("sent"),
            "{b:?}"
        );
        assert!(
            w.wechat
                .requests(TOKEN)
                .iter()
                .all(|r| r.body["force_refresh"] == false),
            "never force_refresh"
        );
    }
}

#[tokio::test]
async fn a_token_refused_twice_is_recorded_not_looped() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    w.ready_offline(1).await;
    let e = json!({"errcode": 40001, "errmsg": "invalid credential"});
    w.wechat
        .script(SEND, vec![Scripted::Json(e.clone()), Scripted::Json(e)]);
    w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "x"))
        .await;
    assert_eq!(w.sends().len(), 2);
    let item = &w.outbox_of("notify").await[0];
    assert_eq!(
        (item.s("status"), item.s("reason")),
        (Some("failed"), Some("40001"))
    );
    assert_eq!(
        w.credits(MP_OPENID, TEMPLATE).await,
        1,
        "the credit is given back"
    );
}

#[tokio::test]
async fn permanent_errors_are_recorded_and_43101_zeroes_the_credits() {
    for (code, credits_after) in [(43101, 0), (47003, 3), (40003, 3), (40037, 3)] {
        let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
        w.ready_offline(3).await;
        w.wechat.script(
            SEND,
            vec![Scripted::Json(
                json!({"errcode": code, "errmsg": "refused"}),
            )],
        );
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "x"))
            .await;
        assert_eq!(w.sends().len(), 1, "{code}: never retried");
        let item = &w.outbox_of("notify").await[0];
        let code_s = code.to_string();
        assert_eq!(
            (item.s("status"), item.s("reason")),
            (Some("failed"), Some(code_s.as_str()))
        );
        assert_eq!(
            w.credits(MP_OPENID, TEMPLATE).await,
            credits_after,
            "{code}"
        );
        assert!(
            wxim_tests::log_text().contains(&format!("\"ErrCode\":\"{code}\"")),
            "{code}: EMF metric by errcode"
        );
    }
}

#[tokio::test]
async fn busy_and_gateway_failures_are_retried_with_backoff_then_sent() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        w.ready_offline(1).await;
        w.wechat.script(
            SEND,
            vec![
                Scripted::Json(json!({"errcode": -1, "errmsg": "system error"})),
                Scripted::Status(502),
                Scripted::Status(503),
            ],
        );
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "x"))
            .await;
        assert_eq!(w.sends().len(), 4, "{b:?}: -1, 502, 503, then success");
        let item = &w.outbox_of("notify").await[0];
        assert_eq!(item.s("status"), Some("sent"), "{b:?}");
        assert_eq!(item.n("attempts"), Some(4));
        assert_eq!(
            w.credits(MP_OPENID, TEMPLATE).await,
            0,
            "{b:?}: spent exactly once"
        );
    }
}

#[tokio::test]
async fn a_send_that_may_have_been_delivered_is_neither_retried_nor_refunded() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0).set("NOTIFY_DEBOUNCE_SECS", "300")).await;
        w.ready_offline(2).await;
        // WeChat takes longer than HTTP_TIMEOUT_MS (400 ms in the harness) to answer: it may
        // well have delivered the message.
        w.wechat.script(
            SEND,
            vec![Scripted::Delay(std::time::Duration::from_millis(900), None)],
        );
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "x"))
            .await;
        assert_eq!(w.sends().len(), 1, "{b:?}: never sent twice");
        let item = &w.outbox_of("notify").await[0];
        assert_eq!(
            (item.s("status"), item.s("reason")),
            (Some("failed"), Some("maybe_sent: timeout")),
            "{b:?}"
        );
        assert_eq!(
            w.credits(MP_OPENID, TEMPLATE).await,
            1,
            "{b:?}: the credit stays spent"
        );
        // Treated as told: the window is taken, the next message is held for the follow-up.
        w.advance(10);
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "y"))
            .await;
        assert_eq!(w.sends().len(), 1, "{b:?}");
        let logs = wxim_tests::log_text();
        assert!(
            logs.lines()
                .any(|l| l.contains("NotificationsUncertain") && l.contains("\"timeout\"")),
            "EMF metric for the uncertain send"
        );
    }
}

#[tokio::test]
async fn retries_stop_at_the_attempt_limit_and_say_why() {
    let w = World::new(
        Options::new(Backend::Embedded)
            .at(T0)
            .set("DISPATCH_MAX_ATTEMPTS", "3"),
    )
    .await;
    w.ready_offline(1).await;
    w.wechat.script(SEND, vec![Scripted::Status(503); 10]);
    w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "x"))
        .await;
    assert_eq!(w.sends().len(), 3);
    let item = &w.outbox_of("notify").await[0];
    assert_eq!(item.s("status"), Some("failed"));
    assert_eq!(item.s("reason"), Some("retries_exhausted: http_503"));
    assert_eq!(w.credits(MP_OPENID, TEMPLATE).await, 1);
    // The failure is counted by its underlying code, not by the wrapper.
    let failed: Vec<serde_json::Value> = wxim_tests::log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["NotificationsFailed"].is_number())
        .collect();
    assert!(failed.iter().any(|v| v["ErrCode"] == "http_503"));
    assert!(failed.iter().all(|v| {
        !v["ErrCode"]
            .as_str()
            .unwrap_or("")
            .contains("retries_exhausted")
    }));
}

#[tokio::test]
async fn token_endpoint_errors_are_classified() {
    let w = World::new(
        Options::new(Backend::Embedded)
            .at(T0)
            .set("WECHAT_MP_SECRET", "wrong-secret"),
    )
    .await;
    w.ready_offline(1).await;
    w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "x"))
        .await;
    let item = &w.outbox_of("notify").await[0];
    assert_eq!(
        (item.s("status"), item.s("reason")),
        (Some("failed"), Some("token_40125"))
    );
    assert!(w.sends().is_empty());
    assert_eq!(w.credits(MP_OPENID, TEMPLATE).await, 1);
}

#[tokio::test]
async fn many_dispatchers_at_once_fetch_one_token() {
    for b in BACKENDS {
        // A generous timeout: a slow machine must not turn the slow fetch into a failure.
        let w = World::new(Options::new(b).set("HTTP_TIMEOUT_MS", "5000")).await;
        // Slow token endpoint, so the instances really overlap.
        w.wechat.script(
            TOKEN,
            vec![Scripted::Delay(std::time::Duration::from_millis(300), None)],
        );
        let mp = w
            .app
            .config
            .app(common::config::AppKind::Mp)
            .unwrap()
            .clone();
        let mut tasks = vec![];
        for _ in 0..16 {
            // Each its own instance: own in-memory cache and lease owner, the same store.
            let tokens = common::records::token::TokenManager::new();
            let store = w.app.store.clone();
            let api = w.app.wechat.clone();
            let clock = w.app.clock.clone();
            let mp = mp.clone();
            tasks.push(tokio::spawn(async move {
                tokens.get(&mp, &*store, &api, &*clock).await
            }));
        }
        let mut got = std::collections::HashSet::new();
        for t in tasks {
            got.insert(t.await.unwrap().unwrap());
        }
        assert_eq!(got.len(), 1, "{b:?}: everyone got the same token");
        assert_eq!(w.wechat.count(TOKEN), 1, "{b:?}: exactly one fetch");
    }
}

#[tokio::test]
async fn the_refresh_lease_outlives_a_slow_token_call() {
    for b in BACKENDS {
        // HTTP_TIMEOUT_MS at its maximum: the token call must still not outlast the lease.
        let w = World::new(Options::new(b).at(T0).set("HTTP_TIMEOUT_MS", "60000")).await;
        w.wechat.script(
            TOKEN,
            vec![Scripted::Delay(
                std::time::Duration::from_millis(1500),
                None,
            )],
        );
        let mp = w
            .app
            .config
            .app(common::config::AppKind::Mp)
            .unwrap()
            .clone();
        let instance = |mp: common::config::WechatApp| {
            let tokens = common::records::token::TokenManager::new();
            let (store, api, clock) = (
                w.app.store.clone(),
                w.app.wechat.clone(),
                w.app.clock.clone(),
            );
            tokio::spawn(async move { tokens.get(&mp, &*store, &api, &*clock).await })
        };
        let first = instance(mp.clone());
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        // The first instance is still fetching when 11 s have passed on the clock: beyond a
        // 10 s lease, within the current one. A second instance must wait, not fetch again.
        w.advance(11);
        let second = instance(mp);
        let (a, b2) = (
            first.await.unwrap().unwrap(),
            second.await.unwrap().unwrap(),
        );
        assert_eq!(a, b2, "{b:?}");
        assert_eq!(w.wechat.count(TOKEN), 1, "{b:?}: one refresh at a time");
    }
    assert!(
        common::records::token::LEASE_SECS
            > common::protocol::wechat::api::TOKEN_CALL_TIMEOUT.as_secs() as i64
    );
}

#[tokio::test]
async fn a_token_that_expires_sooner_never_replaces_the_stored_one() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    let store = &*w.app.store;
    // A token that needs refreshing (inside the 300 s margin) but still lives 250 s; the fetch
    // answers one that lives only 100 s.
    store
        .write(common::store::Write::put(
            Table::State,
            common::store::Item::new(keys::access_token(common::config::AppKind::Mp), keys::ONE)
                .with("token", "LONGER_LIVED")
                .with("token_expires_at", T0 + 250),
        ))
        .await
        .unwrap();
    w.wechat.script(
        TOKEN,
        vec![Scripted::Json(
            json!({"access_token": "SHORTER_LIVED", "expires_in": 100}),
        )],
    );
    let mp = w.app.config.app(common::config::AppKind::Mp).unwrap();
    let t = w
        .app
        .tokens
        .get(mp, store, &w.app.wechat, &*w.app.clock)
        .await
        .unwrap();
    assert_eq!(t, "LONGER_LIVED");
    let item = w
        .state_item(&keys::access_token(common::config::AppKind::Mp), keys::ONE)
        .await
        .unwrap();
    assert_eq!(item.s("token"), Some("LONGER_LIVED"));
    assert!(item.s("lease_owner").is_none(), "the lease is released");
}

#[tokio::test]
async fn template_data_that_cannot_be_valid_fails_before_spending() {
    let w = World::new(Options::new(Backend::Embedded).at(T0).set(
        "NOTIFY_DATA",
        r#"{"thing1":"{sender}","number2":"{preview}"}"#,
    ))
    .await;
    w.ready_offline(1).await;
    w.im(
        "C2C.CallbackAfterSendMsg",
        w.c2c(SELLER, CUSTOMER, "not a number"),
    )
    .await;
    let item = &w.outbox_of("notify").await[0];
    assert_eq!(item.s("status"), Some("failed"));
    assert!(
        item.s("reason")
            .unwrap()
            .starts_with("template_data: number2")
    );
    assert!(w.sends().is_empty());
    assert_eq!(w.credits(MP_OPENID, TEMPLATE).await, 1);
}

#[tokio::test]
async fn long_and_multiline_text_is_shaped_to_the_keyword_rules() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    w.ready_offline(1).await;
    let text = "第一行\n第二行 with a very long English tail that goes on and on";
    w.im(
        "C2C.CallbackAfterSendMsg",
        w.c2c("a_very_long_sender_name_xxxxxxxx", CUSTOMER, text),
    )
    .await;
    let body = &w.sends()[0].body;
    let preview = body["data"]["thing2"]["value"].as_str().unwrap();
    assert!(
        preview.chars().count() <= 20 && !preview.contains('\n'),
        "{preview}"
    );
    assert!(
        body["data"]["thing1"]["value"]
            .as_str()
            .unwrap()
            .chars()
            .count()
            <= 20
    );
}

#[tokio::test]
async fn quiet_hours_hold_notifications() {
    let w = World::new(
        Options::new(Backend::Embedded)
            .at(T0)
            .set("NOTIFY_QUIET_HOURS", "06:00-07:00"),
    )
    .await;
    w.ready_offline(1).await;
    // T0 is 06:13 in Shanghai.
    w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "late"))
        .await;
    assert!(w.sends().is_empty());
    assert_eq!(
        w.outbox_of("notify").await[0].s("reason"),
        Some("quiet_hours")
    );
    assert_eq!(w.credits(MP_OPENID, TEMPLATE).await, 1);
}

#[tokio::test]
async fn before_send_trigger_queues_and_never_blocks() {
    let w = World::new(
        Options::new(Backend::Embedded)
            .at(T0)
            .set("NOTIFY_TRIGGER", "before"),
    )
    .await;
    w.ready_offline(1).await;
    let mut m = w.c2c(SELLER, CUSTOMER, "x");
    m["CallbackCommand"] = json!("C2C.CallbackBeforeSendMsg");
    let r = w.im("C2C.CallbackBeforeSendMsg", m).await;
    assert_eq!(
        r.body_str(),
        r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#
    );
    assert_eq!(w.sends().len(), 1);
    // With the before trigger, the after-send callback of the same message does not notify again.
    w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "y"))
        .await;
    assert_eq!(w.sends().len(), 1);
}

#[tokio::test]
async fn before_send_is_allowed_even_when_the_store_is_down() {
    // A table that does not exist on the DynamoDB-compatible server: every store call fails.
    let clock: std::sync::Arc<dyn common::clock::Clock> =
        std::sync::Arc::new(common::clock::SystemClock);
    let broken = common::store::DynamoStore::new(
        wxim_tests::dynamo::client(),
        "no-such-table",
        "no-such-outbox",
        clock.clone(),
    );
    let app = common::App::new(
        wxim_tests::config(&[("NOTIFY_TRIGGER", "before"), ("HTTP_TIMEOUT_MS", "400")]),
        std::sync::Arc::new(broken),
        clock,
    );
    let w = World::new(Options::new(Backend::Embedded)).await;
    let mut m = w.c2c(SELLER, CUSTOMER, "x");
    m["CallbackCommand"] = json!("C2C.CallbackBeforeSendMsg");
    let req = w.im_request("C2C.CallbackBeforeSendMsg", &m);
    let r = common::handlers::im::callback(&req, &app).await;
    assert_eq!(
        (r.status, r.body_str()),
        (200, r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#)
    );
    // An after-send callback that cannot be recorded asks IM to retry instead.
    let req = w.im_request("C2C.CallbackAfterSendMsg", &w.c2c(SELLER, CUSTOMER, "y"));
    let app = common::App::new(
        wxim_tests::config(&[("HTTP_TIMEOUT_MS", "400")]),
        std::sync::Arc::new(common::store::DynamoStore::new(
            wxim_tests::dynamo::client(),
            "no-such-table",
            "no-such-outbox",
            std::sync::Arc::new(common::clock::SystemClock),
        )),
        std::sync::Arc::new(common::clock::SystemClock),
    );
    let r = common::handlers::im::callback(&req, &app).await;
    assert_eq!(r.status, 503);
}

#[tokio::test]
async fn the_stream_handler_reports_only_what_must_be_retried() {
    let w = World::new(
        Options::new(Backend::Embedded)
            .at(T0)
            .set("DISPATCH_MAX_ATTEMPTS", "5"),
    )
    .await;
    w.ready_offline(1).await;
    w.im_only("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "x"))
        .await;
    let id = w.outbox_of("notify").await[0].s("id").unwrap().to_owned();
    let event = json!({"Records": [
        {"eventID": "1", "eventName": "MODIFY", "awsRegion": "ap-east-1", "dynamodb": {"Keys": {"pk": {"S": "out#other"}, "sk": {"S": "-"}}, "SequenceNumber": "100", "SizeBytes": 60}},
        {"eventID": "2", "eventName": "INSERT", "awsRegion": "ap-east-1", "dynamodb": {"Keys": {"pk": {"S": format!("out#{id}")}, "sk": {"S": "-"}}, "SequenceNumber": "200", "SizeBytes": 60}},
    ]});
    w.wechat.script(
        SEND,
        vec![Scripted::Json(json!({"errcode": -1, "errmsg": "busy"}))],
    );
    let out = local::routes::invoke(
        local::routes::Function::NotifyDispatch,
        &event.to_string(),
        &w.app,
    )
    .await
    .unwrap();
    assert_eq!(out, r#"{"batchItemFailures":[{"itemIdentifier":"200"}]}"#);
    // Lambda retries the record: now it goes through.
    let out = local::routes::invoke(
        local::routes::Function::NotifyDispatch,
        &event.to_string(),
        &w.app,
    )
    .await
    .unwrap();
    assert_eq!(out, r#"{"batchItemFailures":[]}"#);
    // And a third delivery of the same record (a replay) sends nothing more.
    let out = local::routes::invoke(
        local::routes::Function::NotifyDispatch,
        &event.to_string(),
        &w.app,
    )
    .await
    .unwrap();
    assert_eq!(out, r#"{"batchItemFailures":[]}"#);
    assert_eq!(w.sends().len(), 2);
}

#[tokio::test]
async fn im_callbacks_are_authenticated_and_bad_input_is_refused() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    let body = json!({"CallbackCommand": "State.StateChange", "EventTime": T0 * 1000,
        "Info": {"Action": "Login", "To_Account": CUSTOMER, "Reason": "Register"}});
    let good = w.im_request("State.StateChange", &body);
    type Edit<'a> = &'a dyn Fn(&mut Vec<(String, String)>);
    let call = |mut req: common::http::Request, f: Edit| {
        f(&mut req.query);
        req
    };
    let cases: Vec<(common::http::Request, u16, &str)> = vec![
        (
            call(good.clone(), &|q| {
                q.iter_mut()
                    .filter(|(k, _)| k == "SdkAppid")
                    .for_each(|p| p.1 = "1400000001".into())
            }),
            401,
            "wrong_sdkappid",
        ),
        (
            call(good.clone(), &|q| {
                q.iter_mut()
                    .filter(|(k, _)| k == "Sign")
                    .for_each(|p| p.1 = "0".repeat(64))
            }),
            401,
            "bad_sign",
        ),
        (
            call(good.clone(), &|q| q.retain(|(k, _)| k != "Sign")),
            401,
            "missing_sign",
        ),
        (
            call(good.clone(), &|q| {
                q.iter_mut()
                    .filter(|(k, _)| k == "RequestTime")
                    .for_each(|p| p.1 = (T0 - 301).to_string())
            }),
            401,
            "stale_request",
        ),
        (
            good.clone().with_body("{not json"),
            400,
            "malformed_callback",
        ),
        (
            good.clone().with_body(vec![b'x'; 70 * 1024]),
            413,
            "body_too_large",
        ),
    ];
    for (req, status, code) in cases {
        let r = common::handlers::im::callback(&req, &w.app).await;
        assert_eq!(r.status, status, "{code}: {}", r.body_str());
        assert!(r.body_str().contains(code), "{code}: {}", r.body_str());
    }
    for t in Table::ALL {
        assert!(
            w.app.store.scan(t).await.unwrap().is_empty(),
            "nothing stored"
        );
    }
    let r = common::handlers::im::callback(&good, &w.app).await;
    assert_eq!(r.status, 200);
    let other = w.im_request(
        "Group.CallbackAfterNewMemberJoin",
        &json!({"CallbackCommand": "Group.CallbackAfterNewMemberJoin"}),
    );
    let r = common::handlers::im::callback(&other, &w.app).await;
    assert_eq!(
        (r.status, r.body_str()),
        (200, r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#)
    );
}
