//! WeChat push rules beyond the published vectors: downgrade and replay refusals, a store failure
//! answered so that WeChat retries (and the retry applied once), unconfigured apps, and input that
//! could never be stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use common::App;
use common::clock::{Clock, ManualClock};
use common::config::AppKind;
use common::http::{Request, Response};
use common::protocol::wechat::push::{self, Delivery};
use common::store::{Item, Store, StoreError, Table, Write};
use local::routes::{self, Function};
use serde_json::{Value, json};
use wxim_tests::harness::{MP_OPENID, Options, TEMPLATE, World};
use wxim_tests::{BACKENDS, Backend};

const T0: i64 = 1_700_000_000;

fn popup(create_time: i64) -> String {
    json!({"ToUserName": "gh_123456789abc", "FromUserName": MP_OPENID, "CreateTime": create_time,
        "MsgType": "event", "Event": "subscribe_msg_popup_event",
        "List": {"TemplateId": TEMPLATE, "SubscribeStatusString": "accept", "PopupScene": "0"}})
    .to_string()
}

/// A push signed (and sealed) at `ts`, delivered to `app`'s handler.
async fn push_at(app: &App, kind: AppKind, body: &str, delivery: Delivery, ts: i64) -> Response {
    let wapp = app.config.app(kind).unwrap();
    let signed = push::seal(wapp, body.as_bytes(), delivery, &ts.to_string(), "42").unwrap();
    let req = Request::new("POST", &format!("/wechat/{kind}?{}", signed.query_string()))
        .with_body(signed.body);
    routes::call(Function::WechatEvent, &req, app).await
}

fn error(r: &Response) -> String {
    serde_json::from_slice::<Value>(&r.body).unwrap()["error"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

async fn nothing_stored(app: &App) {
    for t in Table::ALL {
        assert!(app.store.scan(t).await.unwrap().is_empty(), "{t:?}");
    }
}

#[tokio::test]
async fn an_app_with_an_aes_key_refuses_plaintext_pushes_unless_allowed() {
    for b in BACKENDS {
        let strict = World::new(
            Options::new(b)
                .at(T0)
                .set("WECHAT_MP_ALLOW_PLAINTEXT", "")
                .set("WECHAT_OA_ALLOW_PLAINTEXT", "false"),
        )
        .await;
        let r = push_at(&strict.app, AppKind::Mp, &popup(T0), Delivery::Plain, T0).await;
        assert_eq!(
            (r.status, error(&r).as_str()),
            (403, "plaintext_refused"),
            "{b:?}"
        );
        nothing_stored(&strict.app).await;
        // Encrypted pushes (safe and compatible mode) are what it expects.
        for d in [Delivery::Safe, Delivery::Compat] {
            let r = push_at(&strict.app, AppKind::Mp, &popup(T0 + 1), d, T0).await;
            assert_eq!(r.status, 200, "{b:?} {d:?}: {}", r.body_str());
        }
        assert_eq!(strict.credits(MP_OPENID, TEMPLATE).await, 1);
    }
    // Allowed explicitly (while switching the console's mode) it is accepted.
    let open = World::new(Options::new(Backend::Embedded).at(T0)).await;
    let r = push_at(&open.app, AppKind::Mp, &popup(T0), Delivery::Plain, T0).await;
    assert_eq!(r.status, 200);
    // Without an AES key, plaintext is the only mode and needs no flag.
    let plain_only = World::new(
        Options::new(Backend::Embedded)
            .at(T0)
            .set("WECHAT_MP_AES_KEY", "")
            .set("WECHAT_MP_ALLOW_PLAINTEXT", ""),
    )
    .await;
    let r = push_at(
        &plain_only.app,
        AppKind::Mp,
        &popup(T0),
        Delivery::Plain,
        T0,
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn pushes_signed_outside_the_window_are_refused_as_replays() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    for (ts, status) in [
        (T0 - 301, 403),
        (T0 + 301, 403),
        (T0 - 299, 200),
        (T0 + 60, 200),
    ] {
        let r = push_at(&w.app, AppKind::Mp, &popup(ts), Delivery::Safe, ts).await;
        assert_eq!(r.status, status, "signed at {ts}: {}", r.body_str());
        if status == 403 {
            assert_eq!(error(&r), "stale_timestamp");
        }
    }
    assert_eq!(w.credits(MP_OPENID, TEMPLATE).await, 2);
    // A forged push is told "bad signature", never whether its timestamp was fresh.
    let wapp = w.app.config.app(AppKind::Mp).unwrap();
    let mut signed = push::seal(wapp, popup(T0).as_bytes(), Delivery::Safe, "1", "42").unwrap();
    signed.query.retain(|(k, _)| k != "msg_signature");
    signed.query.push(("msg_signature".into(), "0".repeat(40)));
    let req = Request::new("POST", &format!("/wechat/mp?{}", signed.query_string()))
        .with_body(signed.body);
    let r = routes::call(Function::WechatEvent, &req, &w.app).await;
    assert_eq!(error(&r), "bad_signature");
    // The window can be turned off (0).
    let w = World::new(
        Options::new(Backend::Embedded)
            .at(T0)
            .set("WECHAT_TIMESTAMP_WINDOW_SECS", "0"),
    )
    .await;
    let r = push_at(&w.app, AppKind::Mp, &popup(1), Delivery::Safe, 1).await;
    assert_eq!(r.status, 200);
}

/// The real store, with its next `failures` transactions failing as DynamoDB does when it is
/// throttled or unreachable.
#[derive(Debug)]
struct Flaky {
    inner: Arc<dyn Store>,
    failures: AtomicUsize,
}

#[async_trait]
impl Store for Flaky {
    async fn get(&self, t: Table, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        self.inner.get(t, pk, sk).await
    }
    async fn query(&self, t: Table, pk: &str, prefix: &str) -> Result<Vec<Item>, StoreError> {
        self.inner.query(t, pk, prefix).await
    }
    async fn scan(&self, t: Table) -> Result<Vec<Item>, StoreError> {
        self.inner.scan(t).await
    }
    async fn write(&self, w: Write) -> Result<Option<Item>, StoreError> {
        self.inner.write(w).await
    }
    async fn transact(&self, ws: Vec<Write>) -> Result<(), StoreError> {
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(StoreError::Unavailable(
                "ProvisionedThroughputExceededException".into(),
            ));
        }
        self.inner.transact(ws).await
    }
}

#[tokio::test]
async fn a_store_failure_makes_wechat_retry_and_the_retry_is_applied_once() {
    for b in BACKENDS {
        let clock = Arc::new(ManualClock::at(T0));
        let dynclock: Arc<dyn Clock> = clock.clone();
        let store = Arc::new(Flaky {
            inner: wxim_tests::store(b, dynclock.clone()).await,
            failures: AtomicUsize::new(1),
        });
        let app = App::new(wxim_tests::config(&[]), store.clone(), dynclock);
        let wapp = app.config.app(AppKind::Mp).unwrap();
        let signed = push::seal(
            wapp,
            popup(T0).as_bytes(),
            Delivery::Safe,
            &T0.to_string(),
            "7",
        )
        .unwrap();
        let req = Request::new("POST", &format!("/wechat/mp?{}", signed.query_string()))
            .with_body(signed.body);
        let first = common::handlers::wechat::event(&req, &app).await;
        assert_eq!(
            (first.status, error(&first).as_str()),
            (503, "store_unavailable"),
            "{b:?}"
        );
        nothing_stored(&app).await;
        // WeChat's retry (the same request) is applied; the one after it is a duplicate.
        for _ in 0..2 {
            let r = common::handlers::wechat::event(&req, &app).await;
            assert_eq!((r.status, r.body_str()), (200, "success"), "{b:?}");
        }
        let credits =
            common::records::subscription::credits(&*app.store, AppKind::Mp, MP_OPENID, TEMPLATE)
                .await
                .unwrap();
        assert_eq!(credits, 1, "{b:?}");
    }
}

#[tokio::test]
async fn an_unconfigured_app_is_not_found() {
    let w = World::new(
        Options::new(Backend::Embedded)
            .set("WECHAT_OA_APPID", "")
            .set("WECHAT_OA_SECRET", "")
            .set("WECHAT_OA_TOKEN", "")
            .set("WECHAT_OA_AES_KEY", "")
            .set("WECHAT_OA_ALLOW_PLAINTEXT", ""),
    )
    .await;
    let get = Request::new(
        "GET",
        "/wechat/oa?signature=x&timestamp=1&nonce=1&echostr=1",
    );
    let r = routes::call(Function::WechatVerify, &get, &w.app).await;
    assert_eq!((r.status, error(&r).as_str()), (404, "app_not_configured"));
    let post =
        Request::new("POST", "/wechat/oa?signature=x&timestamp=1&nonce=1").with_body("<xml/>");
    let r = routes::call(Function::WechatEvent, &post, &w.app).await;
    assert_eq!((r.status, error(&r).as_str()), (404, "app_not_configured"));
    nothing_stored(&w.app).await;
}

#[tokio::test]
async fn a_list_too_long_to_store_is_refused_not_retried() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    let item = json!({"TemplateId": TEMPLATE, "SubscribeStatusString": "accept"});
    let body = json!({"ToUserName": "gh_123456789abc", "FromUserName": MP_OPENID, "CreateTime": T0,
        "MsgType": "event", "Event": "subscribe_msg_popup_event", "List": vec![item; 200]});
    // Sealed by hand: `push::seal` itself refuses to build a message it could not parse.
    let wapp = w.app.config.app(AppKind::Mp).unwrap();
    let enc = wapp
        .crypto
        .as_ref()
        .unwrap()
        .encrypt(body.to_string().as_bytes());
    let ts = T0.to_string();
    let token = wapp.token.expose();
    let signed = push::SignedPush {
        query: vec![
            (
                "signature".into(),
                common::protocol::wechat::signature::sign(&[token, &ts, "9"]),
            ),
            ("timestamp".into(), ts.clone()),
            ("nonce".into(), "9".into()),
            ("encrypt_type".into(), "aes".into()),
            (
                "msg_signature".into(),
                common::protocol::wechat::signature::sign(&[token, &ts, "9", &enc]),
            ),
        ],
        body: json!({"ToUserName": "gh_123456789abc", "Encrypt": enc})
            .to_string()
            .into_bytes(),
    };
    let req = Request::new("POST", &format!("/wechat/mp?{}", signed.query_string()))
        .with_body(signed.body);
    let r = routes::call(Function::WechatEvent, &req, &w.app).await;
    assert_eq!((r.status, error(&r).as_str()), (400, "malformed_message"));
    nothing_stored(&w.app).await;
}
