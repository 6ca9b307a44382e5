//! No secret in any log line: the flows of the whole suite's kinds — notifications with their
//! retries and failures, refused requests of every route, IM REST calls (including a re-signed
//! one), the official-account bridge, binding, admin sends and the sweep — are driven here with
//! every secret the configuration holds and every credential the stand-ins saw, and the captured
//! log lines (of this test and of every other test in the binary so far) are searched for them.

use common::config::AppKind;
use common::http::Request;
use common::protocol::wechat::push::{self, Delivery};
use local::routes::{self, Function};
use local::standin::Scripted;
use serde_json::json;
use wxim_tests::Backend;
use wxim_tests::harness::{CUSTOMER, MP_OPENID, OA_GH, Options, SELLER, TEMPLATE, World};

const T0: i64 = 1_700_000_000;
const SEND: &str = "/cgi-bin/message/subscribe/send";
const CUSTOM: &str = "/cgi-bin/message/custom/send";
const SENDMSG: &str = "/v4/openim/sendmsg";
const QUERY: &str = "/v4/openim/query_online_status";
const ADMIN_TOKEN: &str = "admin-bearer-token-9f8e7d6c5b4a";

fn oa_xml(from: &str, ts: i64, inner: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{OA_GH}]]></ToUserName><FromUserName><![CDATA[{from}]]></FromUserName><CreateTime>{ts}</CreateTime>{inner}</xml>"
    )
}

fn with_query(mut req: Request, name: &str, value: &str) -> Request {
    req.query.retain(|(k, _)| k != name);
    req.query.push((name.to_owned(), value.to_owned()));
    req
}

/// Drives every flow once; returns the credentials the stand-ins saw on the wire.
async fn drive(w: &World) -> Vec<String> {
    // Mini-program notifications: a plain send, a token WeChat refuses (refresh, retry),
    // a gateway failure (retry), a timeout (maybe sent), the daily quota (parked), and the
    // sweep's follow-up and re-drive.
    w.bind(CUSTOMER, MP_OPENID).await;
    for _ in 0..10 {
        w.accept(MP_OPENID, TEMPLATE).await;
    }
    w.im.set_online(CUSTOMER, "Offline");
    let say = |text: &str| w.c2c(SELLER, CUSTOMER, text);
    w.im("C2C.CallbackAfterSendMsg", say("one")).await;
    w.wechat.script(
        SEND,
        vec![Scripted::Json(
            json!({"errcode": 40001, "errmsg": "invalid credential"}),
        )],
    );
    w.advance(400);
    w.im("C2C.CallbackAfterSendMsg", say("two")).await;
    w.wechat.script(SEND, vec![Scripted::Status(502)]);
    w.advance(400);
    w.im("C2C.CallbackAfterSendMsg", say("three")).await;
    w.advance(10);
    w.im("C2C.CallbackAfterSendMsg", say("held")).await;
    w.advance(400);
    w.sweep().await;
    w.wechat.script(
        SEND,
        vec![Scripted::Delay(std::time::Duration::from_millis(900), None)],
    );
    w.advance(400);
    w.im("C2C.CallbackAfterSendMsg", say("slow")).await;
    w.wechat.script(
        SEND,
        vec![Scripted::Json(
            json!({"errcode": 45009, "errmsg": "reach max api daily quota limit"}),
        )],
    );
    w.advance(400);
    w.im("C2C.CallbackAfterSendMsg", say("quota")).await;
    // IM refuses the cached admin UserSig once (70001), and answers 502 once.
    w.im.script(
        QUERY,
        vec![
            Scripted::Json(
                json!({"ActionStatus": "FAIL", "ErrorCode": 70001, "ErrorInfo": "UserSig expired"}),
            ),
            Scripted::Status(502),
        ],
    );
    w.advance(400);
    w.im("C2C.CallbackAfterSendMsg", say("resigned")).await;
    w.advance(86_400);
    w.sweep().await;

    // Refused requests, route by route.
    let body = json!({"CallbackCommand": "State.StateChange", "EventTime": w.now() * 1000,
        "Info": {"Action": "Login", "To_Account": CUSTOMER, "Reason": "Register"}});
    let good = w.im_request("State.StateChange", &body);
    for req in [
        with_query(good.clone(), "Sign", &"0".repeat(64)),
        with_query(good.clone(), "RequestTime", &i64::MIN.to_string()),
        with_query(good.clone(), "SdkAppid", "1"),
        good.clone().with_body("{oops"),
    ] {
        common::handlers::im::callback(&req, &w.app).await;
    }
    let mut before = say("x");
    before["CallbackCommand"] = json!("C2C.CallbackBeforeSendMsg");
    let req = with_query(
        w.im_request("C2C.CallbackBeforeSendMsg", &before),
        "Sign",
        &"1".repeat(64),
    );
    assert_eq!(
        common::handlers::im::callback(&req, &w.app).await.status,
        200
    );
    let mp = w.app.config.app(AppKind::Mp).unwrap();
    let now = w.now().to_string();
    let popup = json!({"ToUserName": "gh_123456789abc", "FromUserName": MP_OPENID,
        "CreateTime": w.now(), "MsgType": "event", "Event": "subscribe_msg_popup_event",
        "List": {"TemplateId": TEMPLATE, "SubscribeStatusString": "accept"}});
    let signed = push::seal(mp, popup.to_string().as_bytes(), Delivery::Safe, &now, "1").unwrap();
    let req = Request::new("POST", &format!("/wechat/mp?{}", signed.query_string()))
        .with_body(signed.body);
    for req in [
        with_query(req.clone(), "msg_signature", &"0".repeat(40)),
        with_query(req.clone(), "timestamp", "1"),
        req.clone()
            .with_body("<xml><Encrypt>not base64!</Encrypt></xml>"),
    ] {
        let r = common::handlers::wechat::event(&req, &w.app).await;
        assert!(r.status >= 400, "{}", r.body_str());
    }
    let verify = Request::new(
        "GET",
        &format!(
            "/wechat/mp?signature={}&timestamp={now}&nonce=1&echostr=e",
            "0".repeat(40)
        ),
    );
    assert_eq!(
        common::handlers::wechat::verify(&verify, &w.app)
            .await
            .status,
        403
    );
    let admin = |token: &str| {
        Request::new("POST", "/notify")
            .with_header("authorization", &format!("Bearer {token}"))
            .with_body(
                json!({"to": {"userId": CUSTOMER}, "templateId": TEMPLATE,
                       "data": {"thing1": "工单已完成"}})
                .to_string(),
            )
    };
    assert_eq!(
        routes::call(Function::AdminNotify, &admin("wrong"), &w.app)
            .await
            .status,
        401
    );
    assert_eq!(
        routes::call(Function::AdminNotify, &admin(ADMIN_TOKEN), &w.app)
            .await
            .status,
        202
    );

    // Binding: a UserSig made with the IM key, a login code exchanged for the openid (and a
    // session key that must never show), then the same code again (refused).
    let im = w.app.config.im.as_ref().unwrap();
    let user_sig = common::protocol::im::usersig::generate(
        im.sdkappid,
        im.secret_key.expose(),
        "new_phone_user",
        86_400,
        w.now(),
    );
    let (code, _) = local::sample::LOGIN_CODES[1];
    let bind = Request::new("POST", "/bind").with_body(
        json!({"code": code, "userId": "new_phone_user", "userSig": user_sig}).to_string(),
    );
    assert_eq!(
        routes::call(Function::Bind, &bind, &w.app).await.status,
        200
    );
    assert!(routes::call(Function::Bind, &bind, &w.app).await.status >= 400);
    let forged = Request::new("POST", "/bind").with_body(
        json!({"code": "0c3Unknown", "userId": "someone", "userSig": user_sig}).to_string(),
    );
    assert!(routes::call(Function::Bind, &forged, &w.app).await.status >= 400);

    // The official-account bridge: follow (import, welcome), a message (forward to an agent,
    // IM failing once), the agent's reply outside the 48 h window (subscribe fallback, then
    // undeliverable and the agent told), and the unfollow (delete).
    let oa = |from: &str, inner: &str| {
        let w = &*w;
        let xml = oa_xml(from, w.now(), inner);
        async move { w.push(AppKind::Oa, &xml, Delivery::Safe).await }
    };
    oa(
        "oSecretFan",
        "<MsgType>event</MsgType><Event>subscribe</Event>",
    )
    .await;
    w.im.script(SENDMSG, vec![Scripted::Status(503)]);
    oa(
        "oSecretFan",
        "<MsgType>text</MsgType><Content><![CDATA[hello]]></Content><MsgId>4242</MsgId>",
    )
    .await;
    oa(
        "oSecretFan",
        "<MsgType>event</MsgType><Event>subscribe_msg_popup_event</Event><SubscribeMsgPopupEvent><List><TemplateId>oa_reply_waiting_T0001</TemplateId><SubscribeStatusString>accept</SubscribeStatusString><PopupScene>2</PopupScene></List></SubscribeMsgPopupEvent>",
    )
    .await;
    w.wechat.script(
        CUSTOM,
        vec![
            Scripted::Json(json!({"errcode": 45015, "errmsg": "response out of time limit"})),
            Scripted::Json(json!({"errcode": 45047, "errmsg": "out of limit"})),
        ],
    );
    for text in ["reply one", "reply two"] {
        let mut m = w.c2c("agent_alice", "oSecretFan", text);
        m["From_Account"] = json!("agent_alice");
        w.im("C2C.CallbackAfterSendMsg", m).await;
    }
    w.im.allow_delete(true);
    oa(
        "oSecretFan",
        "<MsgType>event</MsgType><Event>unsubscribe</Event>",
    )
    .await;

    // What went over the wire: access tokens, admin UserSigs, app secrets in token requests.
    let mut seen: Vec<String> = vec![user_sig, ADMIN_TOKEN.to_owned()];
    let issued = w.wechat.issued();
    assert!(
        issued.iter().any(|k| k.starts_with("SESSION_KEY_")),
        "the binding's exchange issued a session key"
    );
    seen.extend(issued);
    for path in [
        SEND,
        CUSTOM,
        "/cgi-bin/message/subscribe/bizsend",
        "/cgi-bin/stable_token",
        "/sns/jscode2session",
    ] {
        for r in w.wechat.requests(path) {
            seen.extend(r.query("access_token").map(str::to_owned));
            seen.extend(r.query("secret").map(str::to_owned));
            seen.extend(r.body["secret"].as_str().map(str::to_owned));
        }
    }
    for path in [
        QUERY,
        SENDMSG,
        "/v4/im_open_login_svc/account_import",
        "/v4/im_open_login_svc/account_delete",
    ] {
        for r in w.im.requests(path) {
            seen.extend(r.query("usersig").map(str::to_owned));
        }
    }
    seen
}

#[tokio::test]
async fn no_secret_reaches_any_log_line() {
    let w = World::new(
        Options::new(Backend::Embedded)
            .at(T0)
            .set("WXIM_ADMIN_TOKEN", ADMIN_TOKEN)
            .set("NOTIFY_DEBOUNCE_SECS", "300"),
    )
    .await;
    let seen = drive(&w).await;
    assert!(
        seen.iter().any(|s| s.starts_with("ACCESS_TOKEN_")),
        "access tokens were used"
    );
    let mut admin_sigs: Vec<String> =
        w.im.requests(QUERY)
            .iter()
            .filter_map(|r| r.query("usersig").map(str::to_owned))
            .collect();
    admin_sigs.dedup();
    assert!(
        admin_sigs.len() >= 2,
        "admin UserSigs were used, and one was renewed"
    );
    // A token endpoint refusing a wrong secret.
    let wrong = World::new(
        Options::new(Backend::Embedded)
            .at(T0)
            .set("WECHAT_MP_SECRET", "wrong-secret-value-123"),
    )
    .await;
    wrong.bind(CUSTOMER, MP_OPENID).await;
    wrong.accept(MP_OPENID, TEMPLATE).await;
    wrong
        .im("C2C.CallbackAfterSendMsg", wrong.c2c(SELLER, CUSTOMER, "x"))
        .await;

    let mut secrets = w.app.config.secrets();
    secrets.extend(wrong.app.config.secrets());
    for needle in [
        "sample-mp-app-secret",
        "sample-oa-app-secret",
        "wxpushtoken2024",
        "oatoken2024",
        "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR",
        "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e",
        "xxxxyyyy",
        ADMIN_TOKEN,
        "wrong-secret-value-123",
    ] {
        assert!(
            secrets.iter().any(|s| s.contains(needle)),
            "Config::secrets() lists {}…",
            &needle[..4]
        );
    }
    secrets.extend(seen);
    secrets.sort();
    secrets.dedup();
    let logs = wxim_tests::log_text();
    assert!(logs.lines().count() > 100, "the flows were logged");
    for s in &secrets {
        // Long credentials are also looked for by a distinctive part (a log line could cut them).
        let probes: Vec<&str> = if s.len() > 32 {
            vec![s.as_str(), &s[..32], &s[s.len() - 32..]]
        } else {
            vec![s.as_str()]
        };
        for p in probes {
            assert!(
                !logs.contains(p),
                "a secret reached the logs: {}… ({} chars)",
                &s[..s.len().min(4)],
                s.len()
            );
        }
    }
    for line in logs.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not a JSON line: {line}"
        );
    }
}
