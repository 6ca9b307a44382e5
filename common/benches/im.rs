//! Warm CPU of the IM side, against DESIGN.md's budget: callback parse + auth < 10 µs; and
//! UserSig generation/verification. Run: ./scripts/bench.

use std::hint::black_box;

use common::config::{ImConfig, Secret};
use common::http::Request;
use common::protocol::im::{callback, usersig};
use criterion::{Criterion, criterion_group, criterion_main};

const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";

fn callback_parse_auth(c: &mut Criterion) {
    let im = ImConfig {
        sdkappid: 1400000000,
        secret_key: Secret::new(KEY),
        admin_user: "administrator".into(),
        api_base: "https://console.tim.qq.com".into(),
        callback_token: Some(Secret::new("xxxxyyyy")),
        callback_window_secs: 300,
        agents: vec![],
        agents_mp: vec![],
    };
    let body = r#"{"CallbackCommand":"C2C.CallbackAfterSendMsg","From_Account":"jared","To_Account":"Jonh","MsgSeq":48374,"MsgRandom":2837546,"MsgTime":1557481126,"MsgKey":"48374_2837546_1557481126","OnlineOnlyFlag":1,"SendMsgResult":0,"ErrorInfo":"send msg succeed","UnreadMsgNum":7,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"red packet"}}],"CloudCustomData":"your cloud custom data"}"#;
    let req = Request::new(
        "POST",
        "/im/callback?SdkAppid=1400000000&CallbackCommand=C2C.CallbackAfterSendMsg&contenttype=json&ClientIP=127.0.0.1&OptPlatform=iOS&RequestTime=1669872112&Sign=17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061",
    )
    .with_body(body);
    c.bench_function("im_callback_parse_and_auth", |b| {
        b.iter(|| {
            callback::authenticate(&im, black_box(&req), 1669872113).unwrap();
            black_box(callback::parse(req.query("CallbackCommand"), &req.body).unwrap())
        })
    });
}

fn usersig_gen_verify(c: &mut Criterion) {
    c.bench_function("usersig_generate", |b| {
        b.iter(|| {
            usersig::generate(
                1400000000,
                KEY,
                black_box("administrator"),
                604800,
                1700000000,
            )
        })
    });
    let sig = usersig::generate(1400000000, KEY, "administrator", 604800, 1700000000);
    c.bench_function("usersig_verify", |b| {
        b.iter(|| {
            usersig::verify(
                1400000000,
                KEY,
                black_box(&sig),
                "administrator",
                1700000001,
            )
            .unwrap()
        })
    });
}

criterion_group!(benches, callback_parse_auth, usersig_gen_verify);
criterion_main!(benches);
