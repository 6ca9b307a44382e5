//! What each kind of event costs the store, counted request by request (README, "Scale"): the
//! figures there are these assertions, so they cannot drift from the code.

use common::config::AppKind;
use common::protocol::wechat::push::Delivery;
use serde_json::json;
use wxim_tests::Backend;
use wxim_tests::counting::Counts;
use wxim_tests::harness::{CUSTOMER, MP_OPENID, OA_GH, Options, SELLER, TEMPLATE, World};

const T0: i64 = 1_700_000_000;

fn c(requests: u32, rcu: u32, wcu: u32) -> (u32, u32, u32) {
    (requests, rcu, wcu)
}

fn of(k: Counts) -> (u32, u32, u32) {
    (k.requests, k.rcu, k.wcu)
}

#[tokio::test]
async fn store_requests_per_event_kind() {
    let w = World::new(
        Options::new(Backend::Embedded)
            .at(T0)
            .set("NOTIFY_DEBOUNCE_SECS", "0")
            .counted(),
    )
    .await;
    w.ready_offline(2).await;
    w.counts();

    // A subscribe popup: the credit and the dedupe marker in one transaction.
    let popup = json!({
        "ToUserName": "gh_123456789abc", "FromUserName": MP_OPENID, "CreateTime": T0 + 50,
        "MsgType": "event", "Event": "subscribe_msg_popup_event",
        "List": {"TemplateId": TEMPLATE, "SubscribeStatusString": "accept", "PopupScene": "0"},
    })
    .to_string();
    assert_eq!(
        w.push_only(AppKind::Mp, &popup, Delivery::Safe)
            .await
            .status,
        200
    );
    let popup_cost = of(w.counts());
    // WeChat's retry of it: the refused transaction, then the marker's recorded reply.
    assert_eq!(
        w.push_only(AppKind::Mp, &popup, Delivery::Safe)
            .await
            .status,
        200
    );
    let duplicate_cost = of(w.counts());

    // An IM message to an offline, bound user with a credit: binding and presence (one Query of
    // the user's partition) and credit reads, then the outbox item with its watch record and its
    // waiting record in one transaction.
    let r = w
        .im_only("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "hello"))
        .await;
    assert_eq!(r.status, 200);
    let c2c_cost = of(w.counts());
    // Its dispatch (the stream): claim, presence, window, credit, send, record (the waiting
    // record removed with it).
    w.stream().await;
    let dispatch_cost = of(w.counts());
    assert_eq!(w.sends().len(), 1);

    // A state change: one conditional write (a Login adds the window reset).
    assert_eq!(
        w.state_change(CUSTOMER, "Logout", T0 * 1000 + 99_000)
            .await
            .status,
        200
    );
    let state_cost = of(w.counts());

    // An official-account follower's first message: conversation, the presence of each of the
    // two agents, assignment, forward job.
    let xml = format!(
        "<xml><ToUserName><![CDATA[{OA_GH}]]></ToUserName><FromUserName><![CDATA[oScale1]]></FromUserName><CreateTime>{}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi]]></Content><MsgId>7</MsgId></xml>",
        T0 + 60
    );
    assert_eq!(
        w.push_only(AppKind::Oa, &xml, Delivery::Safe).await.status,
        200
    );
    let oa_cost = of(w.counts());

    let got = [
        ("popup", popup_cost),
        ("duplicate push", duplicate_cost),
        ("c2c offline", c2c_cost),
        ("notification dispatch", dispatch_cost),
        ("state change", state_cost),
        ("oa message", oa_cost),
    ];
    eprintln!("store cost (requests, RCU, WCU): {got:?}");
    let want = [
        ("popup", c(1, 0, 4)),
        ("duplicate push", c(2, 1, 4)),
        ("c2c offline", c(3, 2, 6)),
        ("notification dispatch", c(9, 3, 13)),
        ("state change", c(1, 0, 1)),
        ("oa message", c(6, 4, 20)),
    ];
    assert_eq!(got, want);
}
