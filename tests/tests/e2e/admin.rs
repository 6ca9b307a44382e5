//! The admin send (`POST /notify`, `GET /notify/{id}`) end to end: through the public handler,
//! the outbox and the dispatcher, against the WeChat stand-in's documented answers, on both
//! backends; and `wxim serve`'s bearer-token gate over real HTTP.

use common::config::AppKind;
use common::http::{Request, Response};
use common::protocol::wechat::push::Delivery;
use local::routes::{self, Function};
use local::standin::Scripted;
use serde_json::{Value, json};
use wxim_tests::harness::{CUSTOMER, MP_OPENID, Options, TEMPLATE, World};
use wxim_tests::{BACKENDS, Backend};

const T0: i64 = 1_700_000_000;
const SEND: &str = "/cgi-bin/message/subscribe/send";
const OPS: &str = "arn:aws:iam::123456789012:user/ops-console";
const ADMIN_TOKEN: &str = "local-admin-token-7f3c9a";

fn done() -> Value {
    json!({"thing1": "工单已完成", "character_string2": "WO-2024-0001", "time3": {"value": "2023年11月15日 06:13"}})
}

fn to_user() -> Value {
    json!({"to": {"userId": CUSTOMER}, "templateId": TEMPLATE, "data": done()})
}

/// A request as API Gateway delivers it after its AWS_IAM authorizer verified the caller.
fn signed(method: &str, path: &str, body: Option<&Value>) -> Request {
    let mut r = Request::new(method, path);
    if let Some(b) = body {
        r = r.with_body(b.to_string());
    }
    r.principal = Some(OPS.into());
    r
}

async fn call(w: &World, req: &Request) -> (Response, Value) {
    let r = routes::call(Function::AdminNotify, req, &w.app).await;
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r, v)
}

async fn submit(w: &World, body: &Value) -> (u16, Value) {
    let (r, v) = call(w, &signed("POST", "/notify", Some(body))).await;
    (r.status, v)
}

async fn status(w: &World, id: &str) -> Value {
    let (r, v) = call(w, &signed("GET", &format!("/notify/{id}"), None)).await;
    assert_eq!(r.status, 200, "{v}");
    v
}

async fn ready(w: &World, credits: usize) {
    w.bind(CUSTOMER, MP_OPENID).await;
    for _ in 0..credits {
        w.accept(MP_OPENID, TEMPLATE).await;
    }
}

#[tokio::test]
async fn a_send_by_im_user_reaches_wechat_and_its_state_is_readable() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        ready(&w, 1).await;
        let mut body = to_user();
        body["page"] = json!("pages/order/index?id=WO-2024-0001");
        body["miniprogramState"] = json!("trial");
        body["lang"] = json!("en_US");
        let (r, v) = call(&w, &signed("POST", "/notify", Some(&body))).await;
        assert_eq!(r.status, 202, "{b:?}: {v}");
        let id = v["id"].as_str().unwrap().to_owned();
        assert_eq!(v["status"], "queued");
        assert_eq!(r.header("location"), Some(format!("/notify/{id}").as_str()));

        let sends = w.sends();
        assert_eq!(sends.len(), 1, "{b:?}");
        let sent = &sends[0].body;
        assert_eq!(sent["touser"], MP_OPENID);
        assert_eq!(sent["template_id"], TEMPLATE);
        assert_eq!(sent["page"], "pages/order/index?id=WO-2024-0001");
        assert_eq!(sent["miniprogram_state"], "trial");
        assert_eq!(sent["lang"], "en_US");
        assert_eq!(sent["data"]["thing1"]["value"], "工单已完成");
        assert_eq!(sent["data"]["time3"]["value"], "2023年11月15日 06:13");
        assert_eq!(w.credits(MP_OPENID, TEMPLATE).await, 0, "one credit spent");

        let s = status(&w, &id).await;
        assert_eq!(s["status"], "sent", "{b:?}: {s}");
        assert_eq!(s["to"], json!({"openid": MP_OPENID, "userId": CUSTOMER}));
        assert_eq!(s["templateId"], TEMPLATE);
        let msgid = s["msgid"].as_str().unwrap().to_owned();
        assert!(s.get("delivery").is_none());

        // WeChat's delivery result event lands on the send and shows in its state.
        let ev = json!({"ToUserName": "gh_123456789abc", "FromUserName": MP_OPENID, "CreateTime": T0 + 9,
            "MsgType": "event", "Event": "subscribe_msg_sent_event",
            "List": {"TemplateId": TEMPLATE, "MsgID": msgid, "ErrorCode": "0", "ErrorStatus": "success"}});
        let r = w.push(AppKind::Mp, &ev.to_string(), Delivery::Safe).await;
        assert_eq!(r.status, 200);
        let s = status(&w, &id).await;
        assert_eq!(s["delivery"]["status"], "success", "{b:?}: {s}");
        assert_eq!(s["delivery"]["errcode"], 0);
    }
}

#[tokio::test]
async fn the_credit_rules_and_the_error_policy_are_the_notifications_ones() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        // No credit: skipped, WeChat never asked.
        w.bind(CUSTOMER, MP_OPENID).await;
        let (_, v) = submit(&w, &to_user()).await;
        let s = status(&w, v["id"].as_str().unwrap()).await;
        assert_eq!(
            (s["status"].as_str(), s["reason"].as_str()),
            (Some("skipped"), Some("no_credit"))
        );
        assert_eq!(w.sends().len(), 0);

        // 43101: WeChat knows of no subscription; recorded, credits zeroed, not retried.
        w.accept(MP_OPENID, TEMPLATE).await;
        w.accept(MP_OPENID, TEMPLATE).await;
        w.wechat.script(
            SEND,
            vec![Scripted::Json(
                json!({"errcode": 43101, "errmsg": "user refuse to accept the msg"}),
            )],
        );
        let (_, v) = submit(&w, &to_user()).await;
        let s = status(&w, v["id"].as_str().unwrap()).await;
        assert_eq!(
            (s["status"].as_str(), s["reason"].as_str()),
            (Some("failed"), Some("43101")),
            "{b:?}"
        );
        assert_eq!(w.credits(MP_OPENID, TEMPLATE).await, 0);
        assert_eq!(w.sends().len(), 1);

        // Busy, then fine: retried with backoff and sent; the credit spent once.
        w.accept(MP_OPENID, TEMPLATE).await;
        w.wechat.script(
            SEND,
            vec![
                Scripted::Json(json!({"errcode": -1, "errmsg": "system error"})),
                Scripted::Status(503),
            ],
        );
        let (_, v) = submit(&w, &to_user()).await;
        let s = status(&w, v["id"].as_str().unwrap()).await;
        assert_eq!(s["status"], "sent", "{b:?}: {s}");
        assert_eq!(s["attempts"], 3);
        assert_eq!(w.credits(MP_OPENID, TEMPLATE).await, 0);
    }
}

#[tokio::test]
async fn an_idempotency_key_queues_one_message() {
    let w = World::new(Options::new(Backend::Dynamo).at(T0)).await;
    ready(&w, 3).await;
    let keyed = |body: &Value, key: &str| {
        signed("POST", "/notify", Some(body)).with_header("Idempotency-Key", key)
    };
    let (r1, v1) = call(&w, &keyed(&to_user(), "wo-1-done")).await;
    let (r2, v2) = call(&w, &keyed(&to_user(), "wo-1-done")).await;
    assert_eq!((r1.status, r2.status), (202, 202));
    assert_eq!(v1["id"], v2["id"]);
    assert_eq!(v2["status"], "sent", "a replay answers the current state");
    assert_eq!(w.sends().len(), 1);
    assert_eq!(w.outbox_of("send").await.len(), 1);
    // The same key for another request is a client bug, not a replay.
    let mut other = to_user();
    other["data"]["thing1"] = json!("工单已关闭");
    let (r, v) = call(&w, &keyed(&other, "wo-1-done")).await;
    assert_eq!(
        (r.status, v["error"].as_str()),
        (409, Some("idempotency_conflict"))
    );
    // Without a key, every request is its own.
    submit(&w, &to_user()).await;
    submit(&w, &to_user()).await;
    assert_eq!(w.outbox_of("send").await.len(), 3);
    assert_eq!(w.sends().len(), 3);
}

#[tokio::test]
async fn bad_requests_are_refused_and_nothing_is_queued() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    ready(&w, 1).await;
    let with = |k: &str, v: Value| {
        let mut b = to_user();
        b[k] = v;
        b
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            with(
                "data",
                json!({"thing1": "您提交的售后工单已经全部处理完成，请查收。"}),
            ),
            400,
            "invalid_data",
        ),
        (
            with("data", json!({"number4": "three"})),
            400,
            "invalid_data",
        ),
        (with("data", json!({})), 400, "invalid_data"),
        (with("data", json!("x")), 400, "invalid_data"),
        (
            with("to", json!({"userId": CUSTOMER, "openid": MP_OPENID})),
            400,
            "invalid_recipient",
        ),
        (with("to", json!({})), 400, "invalid_recipient"),
        (with("to", json!("customer_lin")), 400, "invalid_recipient"),
        (
            with("to", json!({"userId": "nobody_here"})),
            422,
            "not_bound",
        ),
        (with("templateId", json!("bad id!")), 400, "invalid_field"),
        (with("templateId", json!(null)), 400, "missing_field"),
        (
            with("miniprogramState", json!("production")),
            400,
            "invalid_field",
        ),
        (with("lang", json!("fr_FR")), 400, "invalid_field"),
        (with("app", json!("xx")), 400, "invalid_field"),
    ];
    for (body, status, error) in cases {
        let (got, v) = submit(&w, &body).await;
        assert_eq!(
            (got, v["error"].as_str()),
            (status, Some(error)),
            "{body}: {v}"
        );
        assert!(!v["message"].as_str().unwrap_or("").is_empty());
    }
    let (got, v) = submit(&w, &with("data", json!({"thing1": "x".repeat(30)}))).await;
    assert_eq!(got, 400);
    assert!(v["message"].as_str().unwrap().contains("thing1"), "{v}");
    let big = call(
        &w,
        &signed("POST", "/notify", None).with_body(vec![b' '; 20_000]),
    )
    .await;
    assert_eq!(big.0.status, 413);
    let bad = call(&w, &signed("POST", "/notify", None).with_body("{\"to\":")).await;
    assert_eq!(
        (bad.0.status, bad.1["error"].as_str()),
        (400, Some("malformed_json"))
    );
    assert!(w.outbox().await.is_empty());
    assert_eq!(w.sends().len(), 0);
}

#[tokio::test]
async fn only_the_state_of_an_existing_send_is_answered() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    for path in [
        "/notify/0123456789abcdef0123456789abcdef",
        "/notify/not-an-id",
        "/notify/..%2Fbind",
    ] {
        let (r, v) = call(&w, &signed("GET", path, None)).await;
        assert_eq!(
            (r.status, v["error"].as_str()),
            (404, Some("not_found")),
            "{path}"
        );
    }
    // An outbox item of another kind (an offline notification) is not an admin send.
    w.bind(CUSTOMER, MP_OPENID).await;
    w.accept(MP_OPENID, TEMPLATE).await;
    w.state_change(CUSTOMER, "Logout", T0 * 1000).await;
    w.im(
        "C2C.CallbackAfterSendMsg",
        w.c2c("shop_support", CUSTOMER, "hi"),
    )
    .await;
    let notify_id = w.outbox_of("notify").await[0].s("id").unwrap().to_owned();
    let (r, _) = call(&w, &signed("GET", &format!("/notify/{notify_id}"), None)).await;
    assert_eq!(r.status, 404);
    for (m, p) in [
        ("GET", "/notify"),
        ("POST", "/notify/abc"),
        ("DELETE", "/notify/abc"),
    ] {
        let (r, _) = call(&w, &signed(m, p, None)).await;
        assert_eq!(r.status, 405, "{m} {p}");
    }
}

#[tokio::test]
async fn callers_prove_who_they_are() {
    // No platform principal and no token configured: nothing gets in.
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    ready(&w, 1).await;
    let anon = Request::new("POST", "/notify").with_body(to_user().to_string());
    let (r, v) = call(&w, &anon).await;
    assert_eq!((r.status, v["error"].as_str()), (401, Some("unauthorized")));
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let (r, _) = call(
        &w,
        &anon.clone().with_header("authorization", "Bearer guess"),
    )
    .await;
    assert_eq!(r.status, 401);

    // With WXIM_ADMIN_TOKEN: the bearer token is a proof; a wrong one is refused even from a
    // verified principal.
    let w = World::new(
        Options::new(Backend::Embedded)
            .at(T0)
            .set("WXIM_ADMIN_TOKEN", ADMIN_TOKEN),
    )
    .await;
    ready(&w, 1).await;
    let (r, _) = call(
        &w,
        &anon
            .clone()
            .with_header("authorization", "Bearer wrong-token"),
    )
    .await;
    assert_eq!(r.status, 401);
    let (r, _) = call(
        &w,
        &signed("POST", "/notify", Some(&to_user())).with_header("authorization", "Bearer wrong"),
    )
    .await;
    assert_eq!(r.status, 401);
    let (r, v) = call(
        &w,
        &anon
            .clone()
            .with_header("authorization", &format!("bearer {ADMIN_TOKEN}")),
    )
    .await;
    assert_eq!(r.status, 202, "{v}");
    assert_eq!(w.outbox_of("send").await.len(), 1);
    assert!(!wxim_tests::log_text().contains(ADMIN_TOKEN));
}

#[tokio::test]
async fn wxim_serve_requires_the_bearer_token_over_http() {
    let w = World::new(Options::new(Backend::Embedded).set("WXIM_ADMIN_TOKEN", ADMIN_TOKEN)).await;
    ready(&w, 1).await;
    let World { app, wechat, .. } = w;
    let (app, dispatcher) = local::stream::start(app);
    let listener = local::httpd::bind(0).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(local::httpd::serve(listener, routes::handler(app)));
    let http = reqwest::Client::new();
    let post = |token: Option<&str>| {
        let mut r = http.post(format!("{base}/notify")).json(&to_user());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(post(Some("nope")).await.unwrap().status(), 401);
    let resp = post(Some(ADMIN_TOKEN)).await.unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    // `serve` answers first and dispatches in the background, as the stream does in AWS.
    let mut got = Value::Null;
    for _ in 0..100 {
        got = http
            .get(format!("{base}{location}"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if got["status"] == "sent" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(got["status"], "sent", "{got}");
    assert_eq!(wechat.count(SEND), 1);
    // The public routes stay public.
    let r = http
        .post(format!("{base}/bind"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    server.abort();
    dispatcher.abort();
}
