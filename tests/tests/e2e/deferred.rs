//! Work that cannot happen when the stream delivers an item, or that the stream lost: claims
//! still held by a dispatcher that died, concurrent dispatches for one recipient, follow-ups of
//! held notifications, quiet hours, WeChat's daily quota, and items whose stream records never
//! arrived. Everything goes through the public handlers, the stream handler and the sweep.

use common::records::keys;
use common::records::outbox;
use local::routes::{Function, invoke};
use local::standin::Scripted;
use serde_json::{Value, json};
use wxim_tests::harness::{CUSTOMER, MP_OPENID, OA_GH, Options, SELLER, TEMPLATE, World};
use wxim_tests::{BACKENDS, Backend};

/// 2023-11-14T22:13:20Z, 06:13:20 in Shanghai.
const T0: i64 = 1_700_000_000;
const SEND: &str = "/cgi-bin/message/subscribe/send";

/// Queues a message's notification without dispatching it; returns the outbox id.
async fn queue(w: &World, text: &str) -> String {
    let before: Vec<String> = w
        .outbox_of("notify")
        .await
        .iter()
        .map(|i| i.s("id").unwrap().to_owned())
        .collect();
    let r = w
        .im_only("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, text))
        .await;
    assert_eq!(r.status, 200);
    w.outbox_of("notify")
        .await
        .iter()
        .map(|i| i.s("id").unwrap().to_owned())
        .find(|id| !before.contains(id))
        .expect("a new outbox item")
}

fn insert_event(id: &str, seq: &str) -> String {
    json!({"Records": [{"eventID": seq, "eventName": "INSERT", "awsRegion": "ap-east-1", "dynamodb": {
        "Keys": {"pk": {"S": format!("out#{id}")}, "sk": {"S": "-"}}, "SequenceNumber": seq, "SizeBytes": 60}}]})
    .to_string()
}

async fn item(w: &World, id: &str) -> common::store::Item {
    outbox::get(&*w.app.store, id).await.unwrap().unwrap()
}

fn count(body: &Value) -> &str {
    body["data"]["number4"]["value"].as_str().unwrap()
}

#[tokio::test]
async fn a_claim_still_held_is_retried_and_a_retaken_one_is_never_sent_twice() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        w.ready_offline(1).await;
        let id = queue(&w, "x").await;
        // A dispatcher claimed it and then died (store failure mid-way, Lambda timeout).
        assert!(
            outbox::claim(&*w.app.store, &id, w.now())
                .await
                .unwrap()
                .is_some()
        );
        let event = insert_event(&id, "300");
        for _ in 0..2 {
            w.advance(20);
            let out = invoke(Function::NotifyDispatch, &event, &w.app)
                .await
                .unwrap();
            assert_eq!(
                out, r#"{"batchItemFailures":[{"itemIdentifier":"300"}]}"#,
                "{b:?}: still claimed, so the stream must come back"
            );
        }
        assert!(w.sends().is_empty(), "{b:?}");
        assert_eq!(item(&w, &id).await.s("status"), Some("sending"));
        // The claim is stale now: the redelivery takes it over, but the dead dispatcher's send
        // may have reached WeChat, so it is recorded as possibly sent and never sent again.
        w.advance(25);
        let out = invoke(Function::NotifyDispatch, &event, &w.app)
            .await
            .unwrap();
        assert_eq!(out, r#"{"batchItemFailures":[]}"#, "{b:?}");
        assert!(w.sends().is_empty(), "{b:?}: not sent a second time");
        let it = item(&w, &id).await;
        assert_eq!(it.s("status"), Some("failed"), "{b:?}");
        assert_eq!(it.s("reason"), Some("maybe_sent: claim_retaken"), "{b:?}");
        // Only an ended item is "already handled".
        let out = invoke(Function::NotifyDispatch, &event, &w.app)
            .await
            .unwrap();
        assert_eq!(out, r#"{"batchItemFailures":[]}"#, "{b:?}");
        assert!(w.sends().is_empty(), "{b:?}");
        let logs = wxim_tests::log_text();
        assert!(logs.contains("\"decision\":\"in_flight\""));
        assert!(logs.contains("\"decision\":\"already_handled\""));
    }
}

#[tokio::test]
async fn two_deliveries_for_one_recipient_at_once_send_once() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0).set("NOTIFY_DEBOUNCE_SECS", "300")).await;
        w.ready_offline(3).await;
        // A slow WeChat widens the gap between the decision and the record of the send.
        w.wechat.script(
            SEND,
            vec![Scripted::Delay(std::time::Duration::from_millis(250), None)],
        );
        let (a, b_id) = (queue(&w, "one").await, queue(&w, "two").await);
        let claim = |id: String| {
            let store = w.app.store.clone();
            let now = w.now();
            async move {
                outbox::claim(&*store, &id, now)
                    .await
                    .unwrap()
                    .unwrap()
                    .item
            }
        };
        let (ia, ib) = (claim(a.clone()).await, claim(b_id.clone()).await);
        let (ra, rb) = tokio::join!(
            common::flows::deliver::deliver(&w.app, CUSTOMER, std::slice::from_ref(&ia)),
            common::flows::deliver::deliver(&w.app, CUSTOMER, std::slice::from_ref(&ib)),
        );
        ra.unwrap();
        rb.unwrap();
        assert_eq!(w.sends().len(), 1, "{b:?}: one notification per window");
        let mut statuses: Vec<(String, String)> = vec![];
        for id in [&a, &b_id] {
            let i = item(&w, id).await;
            statuses.push((
                i.s("status").unwrap().to_owned(),
                i.s("reason").unwrap_or("").to_owned(),
            ));
        }
        statuses.sort();
        assert_eq!(
            statuses,
            [
                ("sent".to_owned(), String::new()),
                (
                    "skipped".to_owned(),
                    "merged_within_debounce_window".to_owned()
                )
            ],
            "{b:?}"
        );
        let st = w
            .state_item(&keys::notify_state(CUSTOMER), keys::ONE)
            .await
            .unwrap();
        assert_eq!(st.n("pending"), Some(1), "{b:?}: the held one is counted");
        assert_eq!(w.credits(MP_OPENID, TEMPLATE).await, 2, "{b:?}");

        // The same race through the dispatcher: two stream invocations at once.
        w.advance(400);
        w.wechat.script(
            SEND,
            vec![Scripted::Delay(std::time::Duration::from_millis(250), None)],
        );
        let (c, d) = (queue(&w, "three").await, queue(&w, "four").await);
        let (rc, rd) = tokio::join!(
            common::flows::dispatch::run(&w.app, std::slice::from_ref(&c)),
            common::flows::dispatch::run(&w.app, std::slice::from_ref(&d)),
        );
        assert!(rc.is_empty() && rd.is_empty(), "{b:?}: {rc:?} {rd:?}");
        let sends = w.sends();
        assert_eq!(sends.len(), 2, "{b:?}");
        // The winner's count includes the message held in the previous window.
        assert_eq!(count(&sends[1].body), "2", "{b:?}");
    }
}

#[tokio::test]
async fn held_messages_get_one_follow_up_when_the_window_ends() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0).set("NOTIFY_DEBOUNCE_SECS", "300")).await;
        w.ready_offline(3).await;
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "one"))
            .await;
        assert_eq!(w.sends().len(), 1, "{b:?}");
        for text in ["two", "three"] {
            w.advance(10);
            w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, text))
                .await;
        }
        assert_eq!(w.sends().len(), 1, "{b:?}: held inside the window");
        let followups: Vec<_> = w
            .due_records()
            .await
            .into_iter()
            .filter(|r| r.2 == "followup")
            .collect();
        assert_eq!(
            followups.len(),
            1,
            "{b:?}: one follow-up per window: {followups:?}"
        );
        // Not due yet.
        w.sweep().await;
        assert_eq!(w.sends().len(), 1, "{b:?}");
        // The window (T0 .. T0+300) is over: one follow-up says how many are waiting.
        w.advance(400 - 20);
        let report = w.sweep().await;
        assert_eq!(report.followups, 1, "{b:?}: {report:?}");
        let sends = w.sends();
        assert_eq!(sends.len(), 2, "{b:?}");
        assert_eq!(count(&sends[1].body), "2", "{b:?}");
        assert_eq!(
            sends[1].body["data"]["thing2"]["value"], "three",
            "{b:?}: the latest held message speaks"
        );
        assert_eq!(w.credits(MP_OPENID, TEMPLATE).await, 1, "{b:?}");
        let st = w
            .state_item(&keys::notify_state(CUSTOMER), keys::ONE)
            .await
            .unwrap();
        assert_eq!(st.n("pending"), Some(0), "{b:?}");
        // Nothing more to tell: later sweeps send nothing.
        w.advance(900);
        w.sweep().await;
        assert_eq!(w.sends().len(), 2, "{b:?}");

        // Held, but the user came back before the window ended: no follow-up.
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "five"))
            .await;
        assert_eq!(w.sends().len(), 3, "{b:?}");
        w.advance(10);
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "six"))
            .await;
        w.state_change(CUSTOMER, "Login", w.now() * 1000).await;
        w.advance(400);
        w.sweep().await;
        assert_eq!(w.sends().len(), 3, "{b:?}: they have seen it");
    }
}

#[tokio::test]
async fn quiet_hours_hold_and_the_follow_up_goes_when_they_end() {
    for b in BACKENDS {
        let w = World::new(
            Options::new(b)
                .at(T0)
                .set("NOTIFY_QUIET_HOURS", "06:00-07:00"),
        )
        .await;
        w.ready_offline(1).await;
        // T0 is 06:13:20 in Shanghai.
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "night"))
            .await;
        assert!(w.sends().is_empty(), "{b:?}");
        assert_eq!(
            w.outbox_of("notify").await[0].s("reason"),
            Some("quiet_hours")
        );
        w.advance(1800);
        w.sweep().await;
        assert!(w.sends().is_empty(), "{b:?}: still quiet at 06:43");
        // 07:00 has passed.
        w.advance(1000 + 90);
        w.sweep().await;
        let sends = w.sends();
        assert_eq!(sends.len(), 1, "{b:?}");
        assert_eq!(count(&sends[0].body), "1");
        assert_eq!(sends[0].body["data"]["thing2"]["value"], "night");
        assert_eq!(w.credits(MP_OPENID, TEMPLATE).await, 0, "{b:?}");
    }
}

#[tokio::test]
async fn the_daily_quota_parks_the_send_until_the_next_day() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        w.ready_offline(1).await;
        w.wechat.script(
            SEND,
            vec![Scripted::Json(
                json!({"errcode": 45009, "errmsg": "reach max api daily quota limit"}),
            )],
        );
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "x"))
            .await;
        assert_eq!(w.sends().len(), 1, "{b:?}");
        let id = w.outbox_of("notify").await[0].s("id").unwrap().to_owned();
        let parked = item(&w, &id).await;
        // 00:05 on 2023-11-16 in Shanghai.
        let reset = 1_700_064_300;
        assert_eq!(
            (
                parked.s("status"),
                parked.s("last_error"),
                parked.n("not_before")
            ),
            (Some("queued"), Some("45009"), Some(reset)),
            "{b:?}"
        );
        assert_eq!(
            w.credits(MP_OPENID, TEMPLATE).await,
            1,
            "{b:?}: not the user's fault"
        );
        // Neither the stream nor a replay of its record touch a parked item.
        w.stream().await;
        let out = invoke(Function::NotifyDispatch, &insert_event(&id, "7"), &w.app)
            .await
            .unwrap();
        assert_eq!(out, r#"{"batchItemFailures":[]}"#, "{b:?}");
        w.advance(3600);
        w.sweep().await;
        assert_eq!(w.sends().len(), 1, "{b:?}: still parked");
        // The next day.
        w.advance(reset + 90 - w.now());
        let report = w.sweep().await;
        assert!(report.redriven >= 1, "{b:?}: {report:?}");
        assert_eq!(w.sends().len(), 2, "{b:?}");
        assert_eq!(item(&w, &id).await.s("status"), Some("sent"), "{b:?}");
        assert_eq!(w.credits(MP_OPENID, TEMPLATE).await, 0, "{b:?}");
        assert!(
            wxim_tests::log_text()
                .lines()
                .any(|l| l.contains("SendsParked") && l.contains("45009"))
        );
    }
}

#[tokio::test]
async fn an_admin_send_over_the_daily_quota_waits_for_the_next_day() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    w.accept(MP_OPENID, TEMPLATE).await;
    w.wechat.script(
        SEND,
        vec![Scripted::Json(
            json!({"errcode": 45009, "errmsg": "reach max api daily quota limit"}),
        )],
    );
    let req = local::routes::operator_request("POST", "/notify").with_body(
        json!({"to": {"openid": MP_OPENID}, "templateId": TEMPLATE,
               "data": {"thing1": "工单已完成"}})
        .to_string(),
    );
    let r = local::routes::call(Function::AdminNotify, &req, &w.app).await;
    assert_eq!(r.status, 202, "{}", r.body_str());
    let id = serde_json::from_slice::<Value>(&r.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let get = local::routes::operator_request("GET", &format!("/notify/{id}"));
    let r = common::handlers::admin::notify(&get, &w.app).await;
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (&v["status"], &v["lastError"], &v["notBefore"]),
        (&json!("queued"), &json!("45009"), &json!(1_700_064_300)),
        "{v}"
    );
    assert_eq!(w.credits(MP_OPENID, TEMPLATE).await, 1);
    w.advance(1_700_064_300 + 90 - T0);
    w.sweep().await;
    let r = common::handlers::admin::notify(&get, &w.app).await;
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["status"], "sent", "{v}");
    assert!(v.get("notBefore").is_none());
    assert_eq!(w.sends().len(), 2);
}

#[tokio::test]
async fn items_the_stream_never_delivered_are_redriven_by_the_sweep() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0).set("NOTIFY_DEBOUNCE_SECS", "0")).await;
        w.ready_offline(2).await;
        // Queued, but its stream record went to the dead-letter queue.
        let lost = queue(&w, "lost").await;
        // Claimed by a dispatcher that then died, and whose record was given up too.
        let dead = queue(&w, "dead").await;
        outbox::claim(&*w.app.store, &dead, w.now())
            .await
            .unwrap()
            .unwrap();
        // And one still being sent right now, by a live dispatcher.
        w.advance(590);
        let live = queue(&w, "live").await;
        w.advance(5);
        outbox::claim(&*w.app.store, &live, w.now())
            .await
            .unwrap()
            .unwrap();
        w.sweep_only().await;
        assert!(w.sends().is_empty(), "{b:?}: not stale yet");
        // SWEEP_STALE_SECS (600) later.
        w.advance(100);
        let report = w.sweep_only().await;
        assert_eq!(report.redriven, 2, "{b:?}: {report:?}");
        // The lost item is sent; the dead dispatcher's item may have been sent already, so it
        // ends possibly sent and is not sent again.
        let sends = w.sends();
        assert_eq!(sends.len(), 1, "{b:?}");
        assert_eq!(count(&sends[0].body), "1", "{b:?}");
        assert_eq!(item(&w, &lost).await.s("status"), Some("sent"), "{b:?}");
        let d = item(&w, &dead).await;
        assert_eq!(d.s("status"), Some("failed"), "{b:?}");
        assert_eq!(d.s("reason"), Some("maybe_sent: claim_retaken"), "{b:?}");
        assert_eq!(item(&w, &live).await.s("status"), Some("sending"), "{b:?}");
        // The live claim died after all: the sweep takes it over once it is stale, and ends it
        // possibly sent rather than risk a second notification.
        w.advance(600);
        let report = w.sweep_only().await;
        assert!(report.redriven >= 1, "{b:?}: {report:?}");
        let l = item(&w, &live).await;
        assert_eq!(l.s("status"), Some("failed"), "{b:?}");
        assert_eq!(l.s("reason"), Some("maybe_sent: claim_retaken"), "{b:?}");
        assert_eq!(w.sends().len(), 1, "{b:?}: nothing sent twice");
        // A queued item the sweep re-drives while WeChat is busy is retried by the sweep itself
        // (no stream will), and sent.
        let busy = queue(&w, "busy").await;
        w.wechat.script(
            SEND,
            vec![Scripted::Json(json!({"errcode": -1, "errmsg": "busy"}))],
        );
        w.advance(700);
        w.sweep_only().await;
        assert_eq!(item(&w, &busy).await.s("status"), Some("queued"), "{b:?}");
        w.advance(120);
        w.sweep_only().await;
        assert_eq!(item(&w, &busy).await.s("status"), Some("sent"), "{b:?}");
        // Every kind of job is watched: an official-account forward and an admin send whose
        // stream records were lost too.
        w.accept(MP_OPENID, TEMPLATE).await;
        let xml = format!(
            "<xml><ToUserName><![CDATA[{OA_GH}]]></ToUserName><FromUserName><![CDATA[oLost1]]></FromUserName><CreateTime>{}</CreateTime><MsgType>text</MsgType><Content><![CDATA[hello]]></Content><MsgId>99</MsgId></xml>",
            w.now()
        );
        let wapp = w.app.config.app(common::config::AppKind::Oa).unwrap();
        let signed = common::protocol::wechat::push::seal(
            wapp,
            xml.as_bytes(),
            common::protocol::wechat::push::Delivery::Safe,
            &w.now().to_string(),
            "1",
        )
        .unwrap();
        let req =
            common::http::Request::new("POST", &format!("/wechat/oa?{}", signed.query_string()))
                .with_body(signed.body);
        assert_eq!(
            common::handlers::wechat::event(&req, &w.app).await.status,
            200
        );
        let admin = local::routes::operator_request("POST", "/notify").with_body(
            json!({"to": {"openid": MP_OPENID}, "templateId": TEMPLATE,
                   "data": {"thing1": "工单已完成"}})
            .to_string(),
        );
        assert_eq!(
            common::handlers::admin::notify(&admin, &w.app).await.status,
            202
        );
        let forwards_before = w.im.delivered();
        w.advance(700);
        w.sweep_only().await;
        assert!(
            w.im.delivered() > forwards_before,
            "{b:?}: the forward went out"
        );
        for job in ["forward", "im_import", "send"] {
            let items = w.outbox_of(job).await;
            assert!(!items.is_empty(), "{b:?}: {job}");
            assert!(
                items.iter().all(|i| i.s("status") == Some("sent")),
                "{b:?}: {job}: {items:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_scheduled_event_runs_the_sweep() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    w.ready_offline(1).await;
    queue(&w, "lost").await;
    w.advance(700);
    // What EventBridge sends, and what the template's schedule sends as its input.
    let scheduled = json!({"version": "0", "id": "x", "detail-type": "Scheduled Event",
        "source": "aws.events", "time": "2023-11-14T22:25:00Z", "detail": {}});
    let out: Value = serde_json::from_str(
        &invoke(Function::NotifyDispatch, &scheduled.to_string(), &w.app)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(out["redriven"], 1, "{out}");
    assert_eq!(out["caught_up"], true, "{out}");
    assert_eq!(w.sends().len(), 1);
    let out =
        common::handlers::dispatch::handle(&json!({"action": "sweep"}), &w.app, "req-1").await;
    assert_eq!(out["redriven"], 0, "{out}");
    let out = common::handlers::dispatch::handle(&json!({"hello": 1}), &w.app, "req-2").await;
    assert_eq!(out["error"], "unknown_event");
    assert!(
        invoke(Function::NotifyDispatch, r#"{"hello":1}"#, &w.app)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn an_agent_reply_whose_fallback_hits_the_daily_quota_waits_without_alarming_the_agent() {
    const CUSTOM: &str = "/cgi-bin/message/custom/send";
    const BIZSEND: &str = "/cgi-bin/message/subscribe/bizsend";
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    let push = |inner: &str| {
        let xml = format!(
            "<xml><ToUserName><![CDATA[{OA_GH}]]></ToUserName><FromUserName><![CDATA[oFan]]></FromUserName><CreateTime>{}</CreateTime>{inner}</xml>",
            w.now()
        );
        let w = &w;
        async move {
            let r = w
                .push(
                    common::config::AppKind::Oa,
                    &xml,
                    common::protocol::wechat::push::Delivery::Safe,
                )
                .await;
            assert_eq!(r.status, 200);
        }
    };
    push("<MsgType>event</MsgType><Event>subscribe</Event>").await;
    push("<MsgType>event</MsgType><Event>subscribe_msg_popup_event</Event><SubscribeMsgPopupEvent><List><TemplateId>oa_reply_waiting_T0001</TemplateId><SubscribeStatusString>accept</SubscribeStatusString><PopupScene>2</PopupScene></List></SubscribeMsgPopupEvent>").await;
    w.wechat.script(
        CUSTOM,
        vec![Scripted::Json(
            json!({"errcode": 45015, "errmsg": "response out of time limit"}),
        )],
    );
    w.wechat.script(
        BIZSEND,
        vec![Scripted::Json(
            json!({"errcode": 45009, "errmsg": "reach max api daily quota limit"}),
        )],
    );
    let mut m = w.c2c("agent_alice", "oFan", "明天见");
    m["From_Account"] = json!("agent_alice");
    w.im("C2C.CallbackAfterSendMsg", m).await;
    let kf = &w.outbox_of("kf").await[0];
    assert_eq!(
        (kf.s("status"), kf.n("not_before")),
        (Some("queued"), Some(1_700_064_300)),
        "parked"
    );
    assert!(
        w.outbox_of("agent_notice").await.is_empty(),
        "nothing was given up, so the agent is not told it was"
    );
    // The next day the reply goes again: the follower has written since, so WeChat's
    // allowance is open again, and the customer-service message goes through.
    w.advance(1_700_064_300 + 90 - T0);
    push("<MsgType>text</MsgType><Content><![CDATA[还在吗]]></Content><MsgId>9001</MsgId>").await;
    w.sweep().await;
    let kf = &w.outbox_of("kf").await[0];
    assert_eq!(kf.s("status"), Some("sent"), "{kf:?}");
    assert_eq!(w.wechat.count(CUSTOM), 2);
}

#[tokio::test]
async fn an_item_without_a_watch_record_is_found_by_the_outbox_scan() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        w.ready_offline(1).await;
        // Queued the way a version without watch records queued it: the item alone.
        let id = outbox::id_for(&["legacy"]);
        let m = w.c2c(SELLER, CUSTOMER, "from before the upgrade");
        let [item_only, _watch] = outbox::enqueue(
            &id,
            &outbox::Job::Notify(outbox::Notice {
                recipient: CUSTOMER.into(),
                sender: SELLER.into(),
                preview: "from before the upgrade".into(),
                msg_time: m["MsgTime"].as_i64().unwrap(),
                app: common::config::AppKind::Mp,
                openid: MP_OPENID.into(),
                template_id: TEMPLATE.into(),
                msg_key: None,
                presence: None,
                followup: false,
                group: None,
            }),
            w.app.queueing(),
        )
        .writes();
        w.app.store.write(item_only).await.unwrap();
        w.advance(3600);
        w.sweep_only().await;
        assert!(w.sends().is_empty(), "{b:?}: no due record points at it");
        let report = common::flows::sweep::rescan(&w.app).await.unwrap();
        assert_eq!(report.redriven, 1, "{b:?}: {report:?}");
        assert_eq!(w.sends().len(), 1, "{b:?}");
        assert_eq!(item(&w, &id).await.s("status"), Some("sent"), "{b:?}");
        // Nothing unfinished is left: a second scan does nothing.
        let report = common::flows::sweep::rescan(&w.app).await.unwrap();
        assert_eq!((report.records, report.redriven), (0, 0), "{b:?}");
    }
}
