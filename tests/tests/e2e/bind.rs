//! `POST /bind` end to end: a real UserSig checked with the IM key, a real `jscode2session`
//! exchange against the WeChat stand-in (including its documented error answers), and the binding
//! in the store, on both backends.

use common::config::AppKind;
use common::http::{Request, Response};
use common::protocol::im::usersig;
use common::records::keys;
use common::store::Table;
use local::routes::{self, Function};
use local::standin::Scripted;
use serde_json::{Value, json};
use wxim_tests::harness::{CUSTOMER, MP_OPENID, Options, SELLER, World};
use wxim_tests::{BACKENDS, Backend};

const T0: i64 = 1_700_000_000;
const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
const MP_APPID: &str = "wx1234567890abcdef";
const EXCHANGE: &str = "/sns/jscode2session";
const OTHER_OPENID: &str = "otFpruOTHER-openid-000000001";

fn sig(w: &World, user: &str) -> String {
    usersig::generate(1_400_000_000, KEY, user, 86_400, w.now())
}

async fn post(w: &World, body: Value) -> (u16, Value) {
    post_raw(w, body.to_string().into_bytes()).await
}

async fn post_raw(w: &World, body: Vec<u8>) -> (u16, Value) {
    let req = Request::new("POST", "/bind").with_body(body);
    let r: Response = routes::call(Function::Bind, &req, &w.app).await;
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

/// A `wx.login` code the stand-in exchanges (once) for `openid`.
fn code(w: &World, name: &str, openid: &str) -> String {
    let c = format!("0c3{name}{}", wxim_tests::random_suffix());
    w.wechat.add_code(&c, MP_APPID, openid, None);
    c
}

async fn binding(w: &World, user: &str) -> Option<String> {
    common::records::binding::by_user(&*w.app.store, user, AppKind::Mp)
        .await
        .unwrap()
        .map(|b| b.openid)
}

async fn owner(w: &World, openid: &str) -> Option<String> {
    common::records::binding::by_openid(&*w.app.store, AppKind::Mp, openid)
        .await
        .unwrap()
}

async fn stored(w: &World) -> usize {
    let mut n = 0;
    for t in Table::ALL {
        n += w.app.store.scan(t).await.unwrap().len();
    }
    n
}

#[tokio::test]
async fn a_login_code_and_a_usersig_bind_both_ways() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        let c = code(&w, "first", MP_OPENID);
        w.wechat
            .add_code(&c, MP_APPID, MP_OPENID, Some("oUnion_0001"));
        let (status, v) = post(
            &w,
            json!({"code": c, "userId": CUSTOMER, "userSig": sig(&w, CUSTOMER)}),
        )
        .await;
        assert_eq!(status, 200, "{b:?}: {v}");
        assert_eq!(v, json!({"bound": true, "userId": CUSTOMER, "app": "mp"}));
        assert_eq!(binding(&w, CUSTOMER).await.as_deref(), Some(MP_OPENID));
        assert_eq!(owner(&w, MP_OPENID).await.as_deref(), Some(CUSTOMER));
        let item = w
            .state_item(&keys::binding_by_user(CUSTOMER), "mp")
            .await
            .unwrap();
        assert_eq!(item.s("unionid"), Some("oUnion_0001"), "{b:?}");
        // The exchange used the mini program's credentials and the code, once.
        let calls = w.wechat.requests(EXCHANGE);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].query("appid"), Some(MP_APPID));
        assert_eq!(calls[0].query("grant_type"), Some("authorization_code"));
        // Neither the session key, the code nor the sig is answered, stored or logged.
        let dump: String = {
            let mut s = String::new();
            for t in Table::ALL {
                for i in w.app.store.scan(t).await.unwrap() {
                    s.push_str(&i.to_json().to_string());
                }
            }
            s
        };
        let logs = wxim_tests::log_text();
        let issued = w.wechat.issued();
        let session_key = issued
            .iter()
            .find(|k| k.starts_with("SESSION_KEY_"))
            .expect("the exchange issued a session key");
        for secret in [session_key.as_str(), c.as_str(), &sig(&w, CUSTOMER)[..40]] {
            assert!(!v.to_string().contains(secret));
            assert!(!dump.contains(secret), "{b:?}: stored");
            assert!(!logs.contains(secret), "{b:?}: logged");
        }
    }
}

#[tokio::test]
async fn a_login_reads_both_directions_in_one_request() {
    let w = World::new(Options::new(Backend::Embedded).at(T0).counted()).await;
    let c = code(&w, "counted", MP_OPENID);
    let (status, v) = post(
        &w,
        json!({"code": c, "userId": CUSTOMER, "userSig": sig(&w, CUSTOMER)}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let n = w.counts();
    // The user's and the openid's previous bindings in one batch read, then the transaction
    // (both directions and the used code).
    assert_eq!((n.requests, n.rcu, n.wcu), (2, 2, 6), "{n:?}");
}

#[tokio::test]
async fn rebinding_moves_either_side_and_the_two_directions_agree() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        let bind = |user: &'static str, openid: &'static str, name: &'static str| {
            let w = &w;
            async move {
                let c = code(w, name, openid);
                post(
                    w,
                    json!({"code": c, "userId": user, "userSig": sig(w, user)}),
                )
                .await
            }
        };
        assert_eq!(bind(CUSTOMER, MP_OPENID, "a").await.0, 200);
        // The same IM user on another WeChat account: the old openid is released.
        assert_eq!(bind(CUSTOMER, OTHER_OPENID, "b").await.0, 200);
        assert_eq!(binding(&w, CUSTOMER).await.as_deref(), Some(OTHER_OPENID));
        assert_eq!(owner(&w, OTHER_OPENID).await.as_deref(), Some(CUSTOMER));
        assert_eq!(owner(&w, MP_OPENID).await, None, "{b:?}");
        // Another IM user logs in on that WeChat account: the openid moves to them.
        assert_eq!(bind(SELLER, OTHER_OPENID, "c").await.0, 200);
        assert_eq!(owner(&w, OTHER_OPENID).await.as_deref(), Some(SELLER));
        assert_eq!(binding(&w, SELLER).await.as_deref(), Some(OTHER_OPENID));
        assert_eq!(binding(&w, CUSTOMER).await, None, "{b:?}");
    }
}

#[tokio::test]
async fn a_code_is_good_for_one_binding() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        let c = code(&w, "once", MP_OPENID);
        let first = json!({"code": c, "userId": CUSTOMER, "userSig": sig(&w, CUSTOMER)});
        assert_eq!(post(&w, first.clone()).await.0, 200);
        let before = stored(&w).await;
        // Replayed as is, and replayed for another user: WeChat refuses (40163), nothing changes.
        let (status, v) = post(&w, first).await;
        assert_eq!((status, v["error"].as_str()), (409, Some("code_used")));
        let (status, v) = post(
            &w,
            json!({"code": c, "userId": SELLER, "userSig": sig(&w, SELLER)}),
        )
        .await;
        assert_eq!((status, v["error"].as_str()), (409, Some("code_used")));
        assert_eq!(stored(&w).await, before, "{b:?}");
        assert_eq!(owner(&w, MP_OPENID).await.as_deref(), Some(CUSTOMER));
        // Even if WeChat exchanged a code twice, our own one-use marker refuses the second.
        let c2 = code(&w, "twice", OTHER_OPENID);
        let body = json!({"code": c2, "userId": SELLER, "userSig": sig(&w, SELLER)});
        assert_eq!(post(&w, body.clone()).await.0, 200);
        w.wechat.script(
            EXCHANGE,
            vec![Scripted::Json(
                json!({"openid": OTHER_OPENID, "session_key": "c2Vzc2lvbg=="}),
            )],
        );
        let (status, v) = post(&w, body).await;
        assert_eq!(
            (status, v["error"].as_str()),
            (409, Some("code_used")),
            "{b:?}"
        );
    }
}

#[tokio::test]
async fn a_usersig_that_does_not_prove_the_user_is_refused_before_wechat() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    let c = code(&w, "sig", MP_OPENID);
    let other_key = "0123456789abcdef".repeat(4);
    let cases = [
        (
            usersig::generate(1_400_000_000, KEY, CUSTOMER, 86_400, T0 - 2 * 86_400),
            "usersig_expired",
        ),
        (
            usersig::generate(1_400_000_000, &other_key, CUSTOMER, 86_400, T0),
            "invalid_usersig",
        ),
        (sig(&w, SELLER), "invalid_usersig"),
        (
            usersig::generate(1_400_000_001, KEY, CUSTOMER, 86_400, T0),
            "invalid_usersig",
        ),
        ("not-a-usersig".to_owned(), "invalid_usersig"),
    ];
    for (s, want) in cases {
        let (status, v) = post(&w, json!({"code": c, "userId": CUSTOMER, "userSig": s})).await;
        assert_eq!((status, v["error"].as_str()), (401, Some(want)), "{v}");
        assert!(!v["message"].as_str().unwrap().contains(CUSTOMER));
    }
    assert_eq!(
        w.wechat.count(EXCHANGE),
        0,
        "no forged request reaches WeChat"
    );
    assert_eq!(stored(&w).await, 0);
    // The code was not spent: the genuine request still works.
    let (status, _) = post(
        &w,
        json!({"code": c, "userId": CUSTOMER, "userSig": sig(&w, CUSTOMER)}),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn wechat_refusals_are_clear_and_store_nothing() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    let wx = |code: i64, msg: &str| Scripted::Json(json!({"errcode": code, "errmsg": msg}));
    let cases = [
        (wx(40029, "invalid code"), 400, "invalid_code"),
        (
            wx(45011, "api minute-quota reach limit"),
            429,
            "rate_limited",
        ),
        (wx(40226, "invalid user"), 403, "user_blocked"),
        (wx(-1, "system error"), 503, "wechat_unavailable"),
        (Scripted::Status(502), 503, "wechat_unavailable"),
        (wx(40125, "invalid appsecret"), 502, "wechat_refused"),
        (
            Scripted::Json(json!({"session_key": "x"})),
            503,
            "wechat_unavailable",
        ),
    ];
    for (answer, status, error) in cases {
        let c = code(&w, "err", MP_OPENID);
        w.wechat.script(EXCHANGE, vec![answer]);
        let (got, v) = post(
            &w,
            json!({"code": c, "userId": CUSTOMER, "userSig": sig(&w, CUSTOMER)}),
        )
        .await;
        assert_eq!((got, v["error"].as_str()), (status, Some(error)), "{v}");
    }
    // A timeout is a retryable failure too, answered well before the client gives up.
    let c = code(&w, "slow", MP_OPENID);
    w.wechat.script(
        EXCHANGE,
        vec![Scripted::Delay(std::time::Duration::from_secs(2), None)],
    );
    let (got, v) = post(
        &w,
        json!({"code": c, "userId": CUSTOMER, "userSig": sig(&w, CUSTOMER)}),
    )
    .await;
    assert_eq!(
        (got, v["error"].as_str()),
        (503, Some("wechat_unavailable"))
    );
    assert_eq!(stored(&w).await, 0);
    let logs = wxim_tests::log_text();
    assert!(!logs.contains("sample-mp-app-secret-0000000000"));
}

#[tokio::test]
async fn malformed_requests_are_400_or_413_and_store_nothing() {
    let w = World::new(Options::new(Backend::Embedded).at(T0)).await;
    let s = sig(&w, CUSTOMER);
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{\"code\":".to_vec(), 400, "malformed_json"),
        (b"[]".to_vec(), 400, "malformed_json"),
        (
            json!({"userId": CUSTOMER, "userSig": s})
                .to_string()
                .into_bytes(),
            400,
            "missing_field",
        ),
        (
            json!({"code": 7, "userId": CUSTOMER, "userSig": s})
                .to_string()
                .into_bytes(),
            400,
            "invalid_field",
        ),
        (
            json!({"code": "c", "userId": "u".repeat(33), "userSig": s})
                .to_string()
                .into_bytes(),
            400,
            "invalid_field",
        ),
        (vec![b' '; 9000], 413, "body_too_large"),
    ];
    for (body, status, error) in cases {
        let (got, v) = post_raw(&w, body).await;
        assert_eq!((got, v["error"].as_str()), (status, Some(error)), "{v}");
    }
    let r = routes::call(Function::Bind, &Request::new("GET", "/bind"), &w.app).await;
    assert_eq!(r.status, 405);
    assert_eq!(w.wechat.count(EXCHANGE), 0);
    assert_eq!(stored(&w).await, 0);
}

#[tokio::test]
async fn without_im_or_the_mini_program_the_route_says_so() {
    let w = World::new(
        Options::new(Backend::Embedded)
            .set("WECHAT_MP_APPID", "")
            .set("WECHAT_MP_SECRET", "")
            .set("WECHAT_MP_TOKEN", "")
            .set("WECHAT_MP_AES_KEY", "")
            .set("WECHAT_MP_ALLOW_PLAINTEXT", ""),
    )
    .await;
    let (status, v) = post(&w, json!({"code": "c", "userId": "u", "userSig": "s"})).await;
    assert_eq!((status, v["error"].as_str()), (404, Some("not_configured")));
}
