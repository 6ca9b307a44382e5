//! The API Gateway adapter (`common::lambda`, feature `lambda`): an HTTP API payload v2 event
//! becomes the handlers' request. Raw event text must never panic (first byte even); a
//! well-formed event built from fuzzed parts (odd) must convert faithfully: method, the body
//! (plain or base64), the query as parsed from `rawQueryString`, header values, the path
//! parameters and the request id.
#![no_main]
use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::http::parse_query;
use common::lambda;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

#[derive(Arbitrary, Debug)]
struct Event<'a> {
    method: u8,
    app: &'a str,
    query: &'a str,
    encode_query: bool,
    pairs: Vec<(&'a str, &'a str)>,
    headers: Vec<(u8, &'a str)>,
    request_id: &'a str,
    base64: bool,
    body: &'a [u8],
}

const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const HEADERS: [&str; 4] = [
    "content-type",
    "authorization",
    "x-forwarded-for",
    "user-agent",
];

fn structured(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let e = Event::arbitrary(u)?;
    let method = METHODS[usize::from(e.method) % METHODS.len()];
    // What API Gateway delivers: a path segment, visible-ASCII header values, and a query string
    // of URI characters (percent-encoded by the client; `%` sequences are not checked by
    // anyone before the adapter decodes them once). Events outside this are refused, not a
    // panic: see the raw mode and common::lambda's tests.
    let app: String = e
        .app
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(16)
        .collect();
    let app = if app.is_empty() { "mp".to_owned() } else { app };
    let query: String = if e.encode_query {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(e.pairs.iter())
            .finish()
    } else {
        e.query
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/?%".contains(*c))
            .collect()
    };
    let mut headers = serde_json::Map::new();
    for (i, v) in e.headers.iter().take(4) {
        let v: String = v
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .collect();
        headers.insert(
            HEADERS[usize::from(*i) % HEADERS.len()].to_owned(),
            v.trim().into(),
        );
    }
    let body_text = match e.base64 {
        true => STANDARD.encode(e.body),
        false => String::from_utf8_lossy(e.body).into_owned(),
    };
    let path = format!("/wechat/{app}");
    let event = json!({
        "version": "2.0",
        "routeKey": format!("{method} /wechat/{{app}}"),
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "pathParameters": {"app": app},
        "requestContext": {
            "accountId": "123456789012", "apiId": "api", "domainName": "example.com",
            "domainPrefix": "example", "stage": "$default", "requestId": e.request_id,
            "routeKey": format!("{method} /wechat/{{app}}"), "time": "12/Mar/2024:19:03:58 +0000",
            "timeEpoch": 1_710_270_238_000i64,
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "192.0.2.1", "userAgent": "fuzz"},
        },
        "body": body_text,
        "isBase64Encoded": e.base64,
    });
    let r = lambda::parse_event(&event.to_string()).expect("a well-formed event parses");
    assert_eq!(r.method, method);
    assert_eq!(r.path, path);
    let body = if e.base64 {
        e.body.to_vec()
    } else {
        body_text.into_bytes()
    };
    assert_eq!(r.body, body, "the body changed");
    assert_eq!(r.query, parse_query(&query), "the query changed");
    assert_eq!(
        r.path_param("app", "/wechat/").as_deref(),
        Some(app.as_str())
    );
    for (k, v) in &headers {
        assert_eq!(r.header(k), v.as_str(), "header {k}");
    }
    let rid = if e.request_id.is_empty() {
        "local-invoke"
    } else {
        e.request_id
    };
    assert_eq!(r.request_id, rid);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((m, rest)) if m % 2 == 0 => {
            if let Ok(s) = std::str::from_utf8(rest) {
                let _ = lambda::parse_event(s);
            }
        }
        Some(_) => {
            let _ = structured(&mut Unstructured::new(&data[1..]));
        }
        None => {}
    }
});
