//! Every file in events/ goes through `wxim invoke`'s code path (the event parsed as Lambda would,
//! the function's handler, then the local stream) against the WeChat and IM stand-ins, on both
//! stores, and must produce the outcome events/expected.json documents. Deliveries that change
//! state are then delivered again, as WeChat and IM retry, and must change nothing more.

use std::collections::BTreeMap;

use common::config::AppKind;
use common::store::Table;
use local::routes::{Function, invoke};
use serde_json::Value;
use wxim_tests::harness::{Options, World};
use wxim_tests::{BACKENDS, repo_root};

/// The time every sample is signed at.
const T: i64 = 1_700_000_000;

fn expected() -> BTreeMap<String, Value> {
    let raw = std::fs::read_to_string(repo_root().join("events/expected.json")).unwrap();
    serde_json::from_str(&raw).unwrap()
}

fn read(file: &str) -> String {
    std::fs::read_to_string(repo_root().join("events").join(file)).unwrap()
}

fn event_files() -> Vec<String> {
    let mut out = vec![];
    let root = repo_root().join("events");
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "json") {
                out.push(f.strip_prefix(&root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_sample_event_has_a_documented_outcome() {
    let exp = expected();
    for f in event_files() {
        assert!(
            exp.contains_key(&f),
            "events/{f} is not described in events/expected.json"
        );
    }
    for k in exp.keys() {
        assert!(
            repo_root().join("events").join(k).exists(),
            "expected.json names a missing file {k}"
        );
    }
    let readme = std::fs::read_to_string(repo_root().join("events/README.md")).unwrap();
    for k in exp.keys() {
        assert!(
            readme.contains(k.as_str()),
            "events/README.md does not describe {k}"
        );
    }
}

/// Every member of `want` is in `got` with the same value (objects compared member-wise).
fn assert_subset(want: &Value, got: &Value, what: &str) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, v) in w {
                assert_subset(v, g.get(k).unwrap_or(&Value::Null), &format!("{what}.{k}"));
            }
        }
        _ => assert_eq!(want, got, "{what}"),
    }
}

fn function_of(file: &str) -> Function {
    Function::from_name(file.split('/').next().unwrap()).unwrap()
}

async fn run_setup(w: &World, exp: &Value) {
    for step in exp["setup"].as_array().into_iter().flatten() {
        if let Some(b) = step["bind"].as_array() {
            let (u, o) = (b[0].as_str().unwrap(), b[1].as_str().unwrap());
            common::records::binding::bind(&*w.app.store, u, AppKind::Mp, o, None, w.now())
                .await
                .unwrap();
        } else if let Some(secs) = step["advance"].as_i64() {
            w.advance(secs);
        } else if let Some(f) = step["invoke"].as_str() {
            invoke(function_of(f), &read(f), &w.app).await.unwrap();
        } else if let Some(g) = step.get("group") {
            let members: Vec<&str> = g["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap())
                .collect();
            w.im.set_group(
                g["id"].as_str().unwrap(),
                g["type"].as_str().unwrap(),
                &members,
            );
            if let Some(name) = g["name"].as_str() {
                w.im.name_group(g["id"].as_str().unwrap(), name);
            }
        } else if let Some(o) = step["online"].as_array() {
            w.im.set_online(o[0].as_str().unwrap(), o[1].as_str().unwrap());
        } else if let Some(f) = step["handler"].as_str() {
            // The handler alone, leaving what it queued for the stream.
            let req = common::lambda::parse_event(&read(f)).unwrap();
            common::handlers::im::callback(&req, &w.app).await;
        } else {
            panic!("unknown setup step {step}");
        }
    }
}

/// The text of a passive reply (decrypted when encrypted).
fn reply_text(w: &World, body: &str) -> String {
    let env = common::protocol::wechat::message::parse_envelope(body.as_bytes()).unwrap();
    let oa = w.app.config.app(AppKind::Oa).unwrap();
    // Plaintext mode replies in plaintext; compatible and safe mode encrypt.
    let plain = match env.encrypt {
        Some(e) => oa.crypto.as_ref().unwrap().decrypt(&e).unwrap(),
        None => body.as_bytes().to_vec(),
    };
    match common::protocol::wechat::message::parse_message(&plain)
        .unwrap()
        .kind
    {
        common::protocol::wechat::message::MessageKind::Text { content } => content,
        other => panic!("not a text reply: {other:?}"),
    }
}

async fn check(w: &World, file: &str, exp: &Value, out: &Value, tag: &str) {
    if let Some(status) = exp["status"].as_u64() {
        assert_eq!(out["statusCode"], status, "{tag} {file}: {out}");
    }
    let body = out
        .get("body")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| out.to_string());
    if let Some(b) = exp["body"].as_str() {
        assert_eq!(body, b, "{tag} {file}");
    }
    if let Some(ct) = exp["content_type"].as_str() {
        let got = out["headers"]["content-type"].as_str().unwrap_or("");
        assert!(got.starts_with(ct), "{tag} {file}: content-type {got}");
    }
    if let Some(code) = exp["error"].as_str() {
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], code, "{tag} {file}");
        assert!(
            !v["message"].as_str().unwrap_or("").is_empty(),
            "{tag} {file}"
        );
    }
    if let Some(text) = exp["reply_text"].as_str() {
        assert_eq!(reply_text(w, &body), text, "{tag} {file}");
    }
    if let Some(want) = exp.get("json") {
        let got: Value = serde_json::from_str(&body).unwrap();
        assert_subset(want, &got, &format!("{tag} {file}: body"));
    }
    for gone in exp["absent"].as_array().into_iter().flatten() {
        let (pk, sk) = (gone["pk"].as_str().unwrap(), gone["sk"].as_str().unwrap());
        let got = w.app.store.get(Table::State, pk, sk).await.unwrap();
        assert!(
            got.is_none(),
            "{tag} {file}: {pk}/{sk} should not exist: {got:?}"
        );
    }
    if exp["nothing_stored"].as_bool() == Some(true) {
        for t in Table::ALL {
            let items = w.app.store.scan(t).await.unwrap();
            assert!(
                items.is_empty(),
                "{tag} {file}: expected nothing stored, found {items:?}"
            );
        }
    }
    for want in exp["items"].as_array().into_iter().flatten() {
        let (pk, sk) = (want["pk"].as_str().unwrap(), want["sk"].as_str().unwrap());
        let got = w
            .app
            .store
            .get(Table::State, pk, sk)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{tag} {file}: no item {pk}/{sk}"))
            .to_json();
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&got[k], v, "{tag} {file}: attribute {k} of {pk}/{sk}");
        }
    }
    if let Some(want) = exp["outbox"].as_array() {
        let mut got: Vec<String> = w
            .outbox()
            .await
            .iter()
            .map(|i| {
                let mut s = format!(
                    "{}:{}",
                    i.s("kind").unwrap_or(""),
                    i.s("status").unwrap_or("")
                );
                if want
                    .iter()
                    .any(|x| x["kind"].as_str() == i.s("kind") && x.get("reason").is_some())
                {
                    s.push_str(&format!(":{}", i.s("reason").unwrap_or("")));
                }
                s
            })
            .collect();
        let mut want: Vec<String> = want
            .iter()
            .map(|x| {
                let mut s = format!(
                    "{}:{}",
                    x["kind"].as_str().unwrap(),
                    x["status"].as_str().unwrap()
                );
                if let Some(r) = x["reason"].as_str() {
                    s.push_str(&format!(":{r}"));
                }
                s
            })
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{tag} {file}: outbox");
    }
    let counts = [
        (
            "sends",
            w.sends().len() + w.wechat.count("/cgi-bin/message/subscribe/bizsend"),
        ),
        (
            "custom_sends",
            w.wechat.count("/cgi-bin/message/custom/send"),
        ),
        ("im_sends", w.im.delivered()),
    ];
    for (k, n) in counts {
        if let Some(want) = exp[k].as_u64() {
            assert_eq!(n as u64, want, "{tag} {file}: {k}");
        }
    }
    if let Some(want) = exp.get("send_data") {
        let sends = w.sends();
        let last = sends
            .last()
            .unwrap_or_else(|| panic!("{tag} {file}: no subscribe message sent"));
        assert_subset(want, &last.body["data"], &format!("{tag} {file}: data"));
    }
    if let Some(want) = exp["custom_texts"].as_array() {
        let got: Vec<Value> = w
            .wechat
            .requests("/cgi-bin/message/custom/send")
            .iter()
            .map(|r| r.body["text"]["content"].clone())
            .collect();
        assert_eq!(&got, want, "{tag} {file}: customer-service texts");
    }
}

#[tokio::test]
async fn sample_events_produce_their_documented_outcome() {
    for backend in BACKENDS {
        for (file, exp) in expected() {
            let tag = format!("{backend:?}");
            let mut opts = Options::new(backend).at(T);
            for (k, v) in exp["config"].as_object().into_iter().flatten() {
                opts = opts.set(k, v.as_str().unwrap());
            }
            let w = World::new(opts).await;
            run_setup(&w, &exp).await;
            let f = function_of(&file);
            let raw = read(&file);
            let out: Value = serde_json::from_str(&invoke(f, &raw, &w.app).await.unwrap()).unwrap();
            // What the case held back (an agent's burst) falls due.
            if let Some(secs) = exp["advance_after"].as_i64() {
                w.advance(secs);
                w.stream().await;
            }
            check(&w, &file, &exp, &out, &tag).await;

            // Webhooks are retried by WeChat and IM; an admin send with an Idempotency-Key may be.
            let retried = exp["idempotent"] == true
                || (out["statusCode"] == 200
                    && matches!(f, Function::WechatEvent | Function::ImCallback));
            if retried {
                let before = (
                    w.app.store.scan(Table::State).await.unwrap(),
                    w.app.store.scan(Table::Outbox).await.unwrap(),
                );
                let again: Value =
                    serde_json::from_str(&invoke(f, &raw, &w.app).await.unwrap()).unwrap();
                assert_eq!(
                    again["statusCode"], out["statusCode"],
                    "{tag} {file}: retry"
                );
                if exp["body"].is_string() {
                    assert_eq!(
                        again["body"], out["body"],
                        "{tag} {file}: a retry answers the same"
                    );
                }
                if let Some(text) = exp["reply_text"].as_str() {
                    assert_eq!(
                        reply_text(&w, again["body"].as_str().unwrap()),
                        text,
                        "{tag} {file}: the reply is replayed"
                    );
                }
                let after = (
                    w.app.store.scan(Table::State).await.unwrap(),
                    w.app.store.scan(Table::Outbox).await.unwrap(),
                );
                assert_eq!(
                    before, after,
                    "{tag} {file}: a retry must not change anything"
                );
            }
        }
    }
}
