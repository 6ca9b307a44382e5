//! Every file in events/ goes through `wxim invoke`'s code path (the API Gateway event parsed by
//! lambda_http, then the function's handler) and must produce the outcome events/expected.json
//! documents, on both stores. Deliveries that change state are then delivered again, as WeChat
//! retries, and must change nothing more.

use std::collections::BTreeMap;

use common::store::Table;
use local::routes::{Function, invoke};
use serde_json::Value;
use wxim_tests::{BACKENDS, app, repo_root};

fn expected() -> BTreeMap<String, Value> {
    let raw = std::fs::read_to_string(repo_root().join("events/expected.json")).unwrap();
    serde_json::from_str(&raw).unwrap()
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
}

async fn check_state(app: &common::App, exp: &Value, file: &str, tag: &str) {
    if exp["nothing_stored"].as_bool() == Some(true) {
        for t in Table::ALL {
            let items = app.store.scan(t).await.unwrap();
            assert!(
                items.is_empty(),
                "{tag} {file}: expected nothing stored, found {items:?}"
            );
        }
    }
    for want in exp["items"].as_array().into_iter().flatten() {
        let pk = want["pk"].as_str().unwrap();
        let sk = want["sk"].as_str().unwrap();
        let got = app
            .store
            .get(Table::State, pk, sk)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{tag} {file}: no item {pk}/{sk}"));
        let got = got.to_json();
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&got[k], v, "{tag} {file}: attribute {k} of {pk}/{sk}");
        }
    }
}

#[tokio::test]
async fn sample_events_produce_their_documented_outcome() {
    for backend in BACKENDS {
        for (file, exp) in expected() {
            let app = app(backend, &[]).await;
            let tag = format!("{backend:?}");
            let f = Function::from_name(exp["function"].as_str().unwrap()).unwrap();
            let raw = std::fs::read_to_string(repo_root().join("events").join(&file)).unwrap();
            let out: Value = serde_json::from_str(&invoke(f, &raw, &app).await.unwrap()).unwrap();
            assert_eq!(out["statusCode"], exp["status"], "{tag} {file}: {out}");
            if let Some(body) = exp["body"].as_str() {
                assert_eq!(out["body"], body, "{tag} {file}");
            }
            if let Some(ct) = exp["content_type"].as_str() {
                let got = out["headers"]["content-type"].as_str().unwrap_or("");
                assert!(got.starts_with(ct), "{tag} {file}: content-type {got}");
            }
            if let Some(code) = exp["error"].as_str() {
                let body: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
                assert_eq!(body["error"], code, "{tag} {file}");
                assert!(
                    !body["message"].as_str().unwrap_or("").is_empty(),
                    "{tag} {file}"
                );
            }
            check_state(&app, &exp, &file, &tag).await;

            if exp["status"] == 200 && f == Function::WechatEvent {
                let before: Vec<_> = app.store.scan(Table::State).await.unwrap();
                let again: Value =
                    serde_json::from_str(&invoke(f, &raw, &app).await.unwrap()).unwrap();
                assert_eq!(again["statusCode"], 200, "{tag} {file}: retry");
                if exp["body"].is_string() {
                    assert_eq!(
                        again["body"], out["body"],
                        "{tag} {file}: retry answers the same"
                    );
                }
                let after: Vec<_> = app.store.scan(Table::State).await.unwrap();
                assert_eq!(
                    before, after,
                    "{tag} {file}: a retry must not change anything"
                );
            }
        }
    }
}
