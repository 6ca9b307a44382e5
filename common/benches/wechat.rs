//! Warm CPU per WeChat request, against the budgets in DESIGN.md: GET verify < 5 µs; safe-mode
//! decrypt + parse + encrypted reply of a 1 KB message < 30 µs. Run: ./scripts/bench.

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use common::App;
use common::clock::{Clock, SystemClock};
use common::config::{AppKind, Config};
use common::http::Request;
use common::protocol::wechat::message;
use common::protocol::wechat::push::{self, Delivery};
use common::protocol::wechat::reply::{self, EncryptedReply};
use common::protocol::wechat::signature;
use common::store::EmbeddedStore;
use criterion::{Criterion, criterion_group, criterion_main};

/// The verify handler never waits on I/O, so polling it once completes it; this keeps an async
/// runtime out of the measurement.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn config() -> Config {
    let vars = [
        ("WECHAT_MP_APPID", "wx1234567890abcdef"),
        ("WECHAT_MP_SECRET", "bench-secret"),
        ("WECHAT_MP_TOKEN", "wxpushtoken2024"),
        (
            "WECHAT_MP_AES_KEY",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        ),
    ];
    Config::from_lookup(&|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
    .expect("bench config")
}

fn get_verify(c: &mut Criterion) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Arc::new(EmbeddedStore::in_memory(clock.clone()).unwrap());
    let app = App::new(config(), store, clock);
    let sig = signature::sign(&["wxpushtoken2024", "1714036504", "1514711492"]);
    let req = Request::new(
        "GET",
        &format!(
            "/wechat/mp?signature={sig}&timestamp=1714036504&nonce=1514711492&echostr=4375120948345356249"
        ),
    );
    c.bench_function("get_verify_handler", |b| {
        b.iter(|| {
            let r = ready(common::handlers::wechat::verify(black_box(&req), &app));
            assert_eq!(r.status, 200);
        })
    });
}

fn safe_mode_1kb(c: &mut Criterion) {
    let config = config();
    let app = config.app(AppKind::Mp).unwrap();
    // A 1 KB official-account text message in safe mode, XML.
    let content = "你好, this is a customer message. ".repeat(24);
    let plain = format!(
        "<xml><ToUserName><![CDATA[gh_abcdef123456]]></ToUserName><FromUserName><![CDATA[oUSER_openid_0001]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content><MsgId>24000000000000001</MsgId></xml>"
    );
    assert!((1000..1200).contains(&plain.len()), "{}", plain.len());
    let signed = push::seal(
        app,
        plain.as_bytes(),
        Delivery::Safe,
        "1700000000",
        "1234567890",
    )
    .unwrap();
    let req = Request::new("POST", &format!("/wechat/mp?{}", signed.query_string()))
        .with_body(signed.body);
    let token = app.token.expose();
    let crypto = app.crypto.as_ref().unwrap();
    c.bench_function("safe_mode_decrypt_parse_encrypted_reply_1kb", |b| {
        b.iter(|| {
            let inbound = push::open(app, black_box(&req), 1700000001, 300).unwrap();
            let m = &inbound.message;
            let text = reply::text_xml(
                &m.from_user,
                &m.to_user,
                1700000001,
                "Connecting you to an agent, please wait a moment.",
            );
            let sealed = EncryptedReply::seal(
                crypto,
                token,
                text.as_bytes(),
                1700000001,
                &inbound.nonce,
                None,
            );
            black_box(sealed.to_xml())
        })
    });

    // The same request's steps one by one, so that a change to one of them can be judged by
    // its own figure (the whole path above moves by several percent between runs).
    let env = message::parse_envelope(&req.body).unwrap();
    let encrypt = env.encrypt.as_deref().unwrap();
    let (ts, nonce, msg_sig) = (
        req.query("timestamp").unwrap(),
        req.query("nonce").unwrap(),
        req.query("msg_signature").unwrap(),
    );
    let mut parts = c.benchmark_group("safe_mode_step");
    parts.bench_function("parse_envelope", |b| {
        b.iter(|| message::parse_envelope(black_box(&req.body)).unwrap())
    });
    parts.bench_function("verify_msg_signature", |b| {
        b.iter(|| {
            assert!(signature::verify(
                msg_sig,
                &[token, ts, black_box(nonce), encrypt]
            ))
        })
    });
    parts.bench_function("decrypt", |b| {
        b.iter(|| crypto.decrypt_in_place(black_box(encrypt)).unwrap())
    });
    parts.bench_function("parse_message", |b| {
        b.iter(|| message::parse_message(black_box(plain.as_bytes())).unwrap())
    });
    let text = reply::text_xml(
        "oUSER_openid_0001",
        "gh_abcdef123456",
        1700000001,
        "Connecting you to an agent, please wait a moment.",
    );
    parts.bench_function("seal_reply", |b| {
        b.iter(|| {
            EncryptedReply::seal(
                crypto,
                token,
                black_box(text.as_bytes()),
                1700000001,
                nonce,
                None,
            )
            .to_xml()
        })
    });
    parts.finish();
}

criterion_group!(benches, get_verify, safe_mode_1kb);
criterion_main!(benches);
