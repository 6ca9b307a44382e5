//! IM callbacks at the edges: extreme RequestTime values, before-callbacks that must never block a
//! message even when refused, a body naming a member twice, what an applied Login resets, and
//! duplicate callbacks as dedupe hits.

use common::http::Request;
use common::records::keys;
use common::store::Table;
use serde_json::{Value, json};
use wxim_tests::harness::{CUSTOMER, MP_OPENID, Options, SELLER, TEMPLATE, World};
use wxim_tests::{BACKENDS, Backend};

const T0: i64 = 1_700_000_000;
const OK: &str = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#;

fn set_query(mut req: Request, name: &str, value: &str) -> Request {
    req.query.retain(|(k, _)| k != name);
    req.query.push((name.to_owned(), value.to_owned()));
    req
}

async fn nothing_stored(w: &World) {
    for t in Table::ALL {
        let items = w.app.store.scan(t).await.unwrap();
        assert!(items.is_empty(), "expected nothing stored, found {items:?}");
    }
}

#[tokio::test]
async fn request_times_at_the_limits_of_i64_are_stale_not_a_panic() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    let body = json!({"CallbackCommand": "State.StateChange", "EventTime": T0 * 1000,
        "Info": {"Action": "Login", "To_Account": CUSTOMER, "Reason": "Register"}});
    for t in [
        i64::MIN.to_string(),
        i64::MAX.to_string(),
        (i64::MIN + 1).to_string(),
    ] {
        let req = set_query(w.im_request("State.StateChange", &body), "RequestTime", &t);
        let r = common::handlers::im::callback(&req, &w.app).await;
        assert_eq!(r.status, 401, "{t}: {}", r.body_str());
        assert!(r.body_str().contains("stale_request"), "{t}");
    }
    nothing_stored(&w).await;
}

#[tokio::test]
async fn a_before_send_callback_is_answered_ok_even_when_refused() {
    let w = World::new(
        Options::new(Backend::Embedded)
            .at(T0)
            .set("NOTIFY_TRIGGER", "before"),
    )
    .await;
    let mut m = w.c2c(SELLER, CUSTOMER, "hello");
    m["CallbackCommand"] = json!("C2C.CallbackBeforeSendMsg");
    let good = w.im_request("C2C.CallbackBeforeSendMsg", &m);
    let cases: Vec<(&str, Request)> = vec![
        ("bad_sign", set_query(good.clone(), "Sign", &"0".repeat(64))),
        (
            "wrong_sdkappid",
            set_query(good.clone(), "SdkAppid", "1400000001"),
        ),
        (
            "stale_request",
            set_query(good.clone(), "RequestTime", &(T0 - 3600).to_string()),
        ),
        (
            "stale_request",
            set_query(good.clone(), "RequestTime", &i64::MIN.to_string()),
        ),
        ("missing_sign", {
            let mut r = good.clone();
            r.query.retain(|(k, _)| k != "Sign");
            r
        }),
        ("malformed_callback", good.clone().with_body("{not json")),
        (
            "malformed_callback",
            good.clone()
                .with_body(r#"{"CallbackCommand":"C2C.CallbackBeforeSendMsg"}"#),
        ),
        (
            "body_too_large",
            good.clone().with_body(vec![b' '; 70 * 1024]),
        ),
        // The command only in the body, as a misconfigured proxy might forward it.
        ("bad_sign", {
            let mut r = set_query(good.clone(), "Sign", &"1".repeat(64));
            r.query.retain(|(k, _)| k != "CallbackCommand");
            r
        }),
    ];
    for (code, req) in cases {
        let r = common::handlers::im::callback(&req, &w.app).await;
        assert_eq!((r.status, r.body_str()), (200, OK), "{code}");
        let logs = wxim_tests::log_text();
        assert!(
            logs.lines()
                .any(|l| l.contains("refused_allowed") && l.contains(code)),
            "{code}: the refusal is logged"
        );
    }
    // Refused means refused: nothing was queued, nothing sent, nothing stored.
    nothing_stored(&w).await;
    assert!(w.sends().is_empty());
    // Other commands are still refused the usual way.
    let mut after = w.c2c(SELLER, CUSTOMER, "x");
    after["CallbackCommand"] = json!("C2C.CallbackAfterSendMsg");
    let req = set_query(
        w.im_request("C2C.CallbackAfterSendMsg", &after),
        "Sign",
        &"0".repeat(64),
    );
    let r = common::handlers::im::callback(&req, &w.app).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn an_after_send_callback_naming_the_recipient_twice_is_refused_and_stores_nothing() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    let mut m = w.c2c(SELLER, CUSTOMER, "hello");
    m["CallbackCommand"] = json!("C2C.CallbackAfterSendMsg");
    let good = w.im_request("C2C.CallbackAfterSendMsg", &m);
    // A second `To_Account` after the real one: a reader that takes the last would notify
    // someone the sender never wrote to.
    let body = m.to_string();
    let forged = format!(
        r#"{},"To_Account":"someone_else"}}"#,
        body.strip_suffix('}').unwrap()
    );
    assert!(forged.matches("\"To_Account\"").count() == 2, "{forged}");
    let r = common::handlers::im::callback(&good.clone().with_body(forged), &w.app).await;
    assert_eq!(r.status, 400, "{}", r.body_str());
    let answer: Value = serde_json::from_str(r.body_str()).unwrap();
    assert_eq!(answer["error"], "malformed_callback");
    nothing_stored(&w).await;
    // The same message without the second member is applied.
    let r = common::handlers::im::callback(&good, &w.app).await;
    assert_eq!((r.status, r.body_str()), (200, OK));
}

#[tokio::test]
async fn an_applied_login_starts_a_fresh_debounce_window() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0).set("NOTIFY_DEBOUNCE_SECS", "300")).await;
        w.ready_offline(3).await;
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "one"))
            .await;
        assert_eq!(w.sends().len(), 1, "{b:?}");
        // Back online and away again, well inside the window.
        w.advance(10);
        w.state_change(CUSTOMER, "Login", w.now() * 1000).await;
        w.advance(10);
        w.state_change(CUSTOMER, "Logout", w.now() * 1000).await;
        let st = w
            .state_item(&keys::notify_state(CUSTOMER), keys::ONE)
            .await
            .unwrap();
        assert_eq!(st.n("last_sent_at"), None, "{b:?}: the window is reset");
        w.advance(10);
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "two"))
            .await;
        let sends = w.sends();
        assert_eq!(
            sends.len(),
            2,
            "{b:?}: a new offline period notifies at once"
        );
        assert_eq!(sends[1].body["data"]["number4"]["value"], "1");
        // A stale Login (older than what is stored) is not applied and resets nothing.
        w.state_change(CUSTOMER, "Login", (T0 - 100) * 1000).await;
        let st = w
            .state_item(&keys::notify_state(CUSTOMER), keys::ONE)
            .await
            .unwrap();
        assert!(st.n("last_sent_at").is_some(), "{b:?}");
    }
}

fn dedupe_hits_im() -> usize {
    wxim_tests::log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["DedupeHits"].is_number() && v["Source"] == "im")
        .count()
}

#[tokio::test]
async fn a_repeated_im_callback_counts_as_a_dedupe_hit() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    w.ready_offline(2).await;
    let m = w.c2c(SELLER, CUSTOMER, "once");
    w.im("C2C.CallbackAfterSendMsg", m.clone()).await;
    let before = dedupe_hits_im();
    w.im("C2C.CallbackAfterSendMsg", m).await;
    assert!(
        dedupe_hits_im() > before,
        "DedupeHits{{Source=im}} is emitted"
    );
    assert_eq!(w.sends().len(), 1);
}

#[tokio::test]
async fn an_expired_admin_usersig_is_regenerated_on_70001_and_the_call_succeeds() {
    for b in BACKENDS {
        const QUERY: &str = "/v4/openim/query_online_status";
        let w = World::new(Options::new(b).at(T0).set("NOTIFY_DEBOUNCE_SECS", "300")).await;
        w.bind(CUSTOMER, MP_OPENID).await;
        w.accept(MP_OPENID, TEMPLATE).await;
        w.accept(MP_OPENID, TEMPLATE).await;
        // No presence record: every dispatch asks IM, with the cached admin UserSig.
        w.im.set_online(CUSTOMER, "Offline");
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "one"))
            .await;
        assert_eq!(w.sends().len(), 1, "{b:?}");
        // IM now refuses the cached sig as expired, once.
        w.advance(400);
        w.im.script(
            QUERY,
            vec![local::standin::Scripted::Json(json!({
                "ActionStatus": "FAIL", "ErrorCode": 70001, "ErrorInfo": "UserSig expired"
            }))],
        );
        w.im("C2C.CallbackAfterSendMsg", w.c2c(SELLER, CUSTOMER, "two"))
            .await;
        let q = w.im.requests(QUERY);
        assert_eq!(q.len(), 3, "{b:?}: the refused call and its one retry");
        let sig = |i: usize| q[i].query("usersig").unwrap().to_owned();
        assert_eq!(sig(1), sig(0), "{b:?}: the cached sig was used first");
        assert_ne!(sig(2), sig(1), "{b:?}: then a regenerated one");
        let im = w.app.config.im.as_ref().unwrap();
        let info = common::protocol::im::usersig::verify(
            im.sdkappid,
            im.secret_key.expose(),
            &sig(2),
            &im.admin_user,
            w.now(),
        )
        .unwrap();
        assert_eq!(info.time, w.now(), "{b:?}: issued now");
        // The call succeeded: the presence answer was used and the notification went out.
        assert_eq!(w.sends().len(), 2, "{b:?}");
        let items = w.outbox_of("notify").await;
        assert!(
            items.iter().all(|i| i.s("status") == Some("sent")),
            "{b:?}: {items:?}"
        );
    }
}
