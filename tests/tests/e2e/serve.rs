//! `wxim serve` over real TCP: the local HTTP server's answers to broken and slow clients (raw
//! bytes on a socket), its timeouts, and the local outbox stream that dispatches what the
//! handlers queue without ever scanning the outbox on a request; and the stand-ins' faults.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::App;
use common::http::{Request, Response};
use common::records::keys;
use common::records::outbox::{self, Queueing};
use common::store::{EmbeddedStore, Item, Store, StoreError, Table, Update, Write};
use local::httpd::{self, Limits};
use local::standin::{Fault, Scripted};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wxim_tests::Backend;
use wxim_tests::harness::{CUSTOMER, MP_OPENID, Options, SELLER, TEMPLATE, World};

const SEND: &str = "/cgi-bin/message/subscribe/send";

/// Short limits, so that every timeout shows within a second.
fn limits() -> Limits {
    Limits {
        header_read: Duration::from_millis(400),
        body_read: Duration::from_millis(400),
        idle: Duration::from_secs(5),
        max_body: 1024,
    }
}

/// A server answering `200 <body length>`, after `delay` (a slow handler).
async fn server(limits: Limits, delay: Duration) -> (String, tokio::task::JoinHandle<()>) {
    let listener = httpd::bind(0).await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handler: httpd::Handler = Arc::new(move |req: Request| {
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Response::text(200, req.body.len().to_string())
        })
    });
    (
        addr,
        tokio::spawn(httpd::serve_with(listener, handler, limits)),
    )
}

/// Writes `bytes` (then shuts down the sending side when `half_close`), and reads until the
/// server closes the connection, at most 3 s. Returns what was read and how long it took.
async fn raw(addr: &str, bytes: &[u8], half_close: bool) -> (String, Duration) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    if half_close {
        s.shutdown().await.unwrap();
    }
    let started = Instant::now();
    let mut out = vec![];
    let read = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the server kept the connection open for 3 s; read so far: {}",
        String::from_utf8_lossy(&out)
    );
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

fn status_line(resp: &str) -> &str {
    resp.lines().next().unwrap_or("")
}

#[tokio::test]
async fn a_body_that_ends_before_its_content_length_is_400_not_413() {
    let (addr, srv) = server(limits(), Duration::ZERO).await;
    let (resp, _) = raw(
        &addr,
        b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly this",
        true,
    )
    .await;
    assert!(status_line(&resp).contains(" 400 "), "{resp}");
    assert!(resp.contains(r#""error":"malformed_body""#), "{resp}");
    srv.abort();
}

#[tokio::test]
async fn a_malformed_chunked_body_is_400() {
    let (addr, srv) = server(limits(), Duration::ZERO).await;
    let (resp, _) = raw(
        &addr,
        b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        false,
    )
    .await;
    assert!(status_line(&resp).contains(" 400 "), "{resp}");
    assert!(resp.contains(r#""error":"malformed_body""#), "{resp}");
    srv.abort();
}

#[tokio::test]
async fn only_a_body_over_the_limit_is_413() {
    let (addr, srv) = server(limits(), Duration::ZERO).await;
    // Declared and sent in full.
    let mut req = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n".to_vec();
    req.extend(vec![b'a'; 2000]);
    let (resp, _) = raw(&addr, &req, false).await;
    assert!(status_line(&resp).contains(" 413 "), "{resp}");
    assert!(resp.contains(r#""error":"body_too_large""#), "{resp}");
    // Chunked, well formed, over the limit.
    let chunk = "a".repeat(800);
    let req = format!(
        "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n320\r\n{chunk}\r\n320\r\n{chunk}\r\n0\r\n\r\n"
    );
    let (resp, _) = raw(&addr, req.as_bytes(), false).await;
    assert!(status_line(&resp).contains(" 413 "), "{resp}");
    // At the limit: accepted, and the connection closes when the client does.
    let mut req =
        b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n"
            .to_vec();
    req.extend(vec![b'a'; 1024]);
    let (resp, _) = raw(&addr, &req, false).await;
    assert!(status_line(&resp).contains(" 200 "), "{resp}");
    assert!(resp.ends_with("1024"), "{resp}");
    srv.abort();
}

#[tokio::test]
async fn slow_headers_and_slow_bodies_are_cut_off() {
    let (addr, srv) = server(limits(), Duration::ZERO).await;
    // Half a request head, then nothing: closed by the header timeout.
    let (resp, took) = raw(&addr, b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Le", false).await;
    assert!(!resp.contains(" 200 "), "{resp}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(2500),
        "closed after {took:?}"
    );
    // A connection that never sends a byte: the same timer.
    let (resp, took) = raw(&addr, b"", false).await;
    assert!(!resp.contains(" 200 "), "{resp}");
    assert!(took < Duration::from_millis(2500), "closed after {took:?}");
    // The head, then part of the body: 408 when the body timeout ends.
    let (resp, took) = raw(
        &addr,
        b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc",
        false,
    )
    .await;
    assert!(status_line(&resp).contains(" 408 "), "{resp}");
    assert!(resp.contains(r#""error":"body_timeout""#), "{resp}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(2500),
        "answered after {took:?}"
    );
    srv.abort();
}

#[tokio::test]
async fn idle_connections_are_closed_but_slow_handlers_are_not() {
    let limits = Limits {
        header_read: Duration::from_secs(20),
        idle: Duration::from_millis(400),
        ..limits()
    };
    let (addr, srv) = server(limits, Duration::from_millis(1200)).await;
    // A keep-alive request whose handler takes three idle periods: answered in full, then the
    // connection, idle, is closed (long before the 20 s header timeout).
    let (resp, took) = raw(
        &addr,
        b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
        false,
    )
    .await;
    assert!(status_line(&resp).contains(" 200 "), "{resp}");
    assert!(resp.ends_with("\r\n\r\n3"), "{resp}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(2800),
        "the idle connection was closed {took:?} after the request"
    );
    // A connection that never sends anything: closed after the idle period.
    let (resp, took) = raw(&addr, b"", false).await;
    assert!(resp.is_empty(), "{resp}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "closed after {took:?}"
    );
    srv.abort();
}

/// A store that counts its scans (no request of `wxim serve` may cause one).
#[derive(Debug)]
struct CountingScans {
    inner: Arc<dyn Store>,
    scans: Arc<AtomicUsize>,
}

#[async_trait]
impl Store for CountingScans {
    async fn get(&self, t: Table, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        self.inner.get(t, pk, sk).await
    }
    async fn query(&self, t: Table, pk: &str, p: &str) -> Result<Vec<Item>, StoreError> {
        self.inner.query(t, pk, p).await
    }
    async fn scan(&self, t: Table) -> Result<Vec<Item>, StoreError> {
        self.scans.fetch_add(1, Ordering::SeqCst);
        self.inner.scan(t).await
    }
    async fn write(&self, w: Write) -> Result<Option<Item>, StoreError> {
        self.inner.write(w).await
    }
    async fn transact(&self, ws: Vec<Write>) -> Result<(), StoreError> {
        self.inner.transact(ws).await
    }
}

/// `wxim serve` on the world's app: its store counting scans, streamed, behind real HTTP.
async fn serve(
    app: App,
) -> (
    String,
    Arc<AtomicUsize>,
    Arc<App>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let scans = Arc::new(AtomicUsize::new(0));
    let app = App {
        store: Arc::new(CountingScans {
            inner: app.store.clone(),
            scans: scans.clone(),
        }),
        ..app
    };
    let (app, dispatcher) = local::stream::start(app);
    let listener = httpd::bind(0).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(httpd::serve(listener, local::routes::handler(app.clone())));
    (base, scans, app, vec![server, dispatcher])
}

async fn post(http: &reqwest::Client, base: &str, req: &Request) -> (u16, String) {
    let r = http
        .post(format!("{base}{}", req.path))
        .query(&req.query)
        .body(req.body.clone())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("gave up waiting for {what}");
}

#[tokio::test]
async fn serve_answers_first_and_dispatches_from_the_stream_without_scanning() {
    let w = World::new(Options::new(Backend::Embedded).set("HTTP_TIMEOUT_MS", "3000")).await;
    w.ready_offline(2).await;
    let msg = w.c2c(SELLER, CUSTOMER, "hello");
    let cb = w.im_request("C2C.CallbackAfterSendMsg", &msg);
    // WeChat takes its time: the callback must be answered long before.
    w.wechat.script(
        SEND,
        vec![Scripted::Delay(Duration::from_millis(800), None)],
    );
    let World { app, wechat, .. } = w;
    let (base, scans, app, tasks) = serve(app).await;
    let http = reqwest::Client::new();
    let started = Instant::now();
    let (status, body) = post(&http, &base, &cb).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "answered after {:?}: before the send",
        started.elapsed()
    );
    // The duplicate IM may send: answered, queues nothing new.
    let (status, _) = post(&http, &base, &cb).await;
    assert_eq!(status, 200);
    wait_for("the notification", || !wechat.sent().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = wechat.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].touser, MP_OPENID);
    assert_eq!(sent[0].template_id.as_deref(), Some(TEMPLATE));
    assert_eq!(
        scans.load(Ordering::SeqCst),
        0,
        "no request of wxim serve scans a table"
    );
    let items: Vec<Item> = app
        .store
        .scan(Table::Outbox)
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.s("kind") == Some("notify"))
        .collect();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].s("status"), Some("sent"));
    for t in tasks {
        t.abort();
    }
}

#[tokio::test]
async fn a_retry_waits_on_its_own_and_new_items_go_first() {
    // A production-like backoff: the first send's retry waits two seconds or so.
    let w = World::new(Options::new(Backend::Embedded).set("DISPATCH_BACKOFF_MS", "1500")).await;
    w.ready_offline(1).await;
    const OTHER: &str = "oOTHER_openid_for_the_retry_test";
    w.bind(SELLER, OTHER).await;
    w.accept(OTHER, TEMPLATE).await;
    let r = w.state_change(SELLER, "Logout", w.now() * 1000).await;
    assert_eq!(r.status, 200);
    let first = w.im_request(
        "C2C.CallbackAfterSendMsg",
        &w.c2c(SELLER, CUSTOMER, "first"),
    );
    let second = w.im_request(
        "C2C.CallbackAfterSendMsg",
        &w.c2c(CUSTOMER, SELLER, "second"),
    );
    w.wechat.script(
        SEND,
        vec![Scripted::Json(
            serde_json::json!({"errcode": -1, "errmsg": "system busy"}),
        )],
    );
    let World { app, wechat, .. } = w;
    let (base, scans, _app, tasks) = serve(app).await;
    let http = reqwest::Client::new();
    let started = Instant::now();
    assert_eq!(post(&http, &base, &first).await.0, 200);
    wait_for("the first attempt", || wechat.count(SEND) == 1).await;
    assert_eq!(post(&http, &base, &second).await.0, 200);
    wait_for("the second notification", || wechat.sent().len() == 1).await;
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "the new item waited for the retry ({:?})",
        started.elapsed()
    );
    assert_eq!(wechat.sent()[0].touser, OTHER);
    wait_for("the retried notification", || wechat.sent().len() == 2).await;
    assert_eq!(wechat.sent()[1].touser, MP_OPENID);
    assert!(started.elapsed() >= Duration::from_millis(1400));
    assert_eq!(scans.load(Ordering::SeqCst), 0);
    for t in tasks {
        t.abort();
    }
}

#[tokio::test]
async fn the_stream_carries_exactly_the_new_queued_outbox_items() {
    let clock: Arc<dyn common::clock::Clock> = Arc::new(common::clock::SystemClock);
    let inner: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory(clock).unwrap());
    let (store, mut records) = local::stream::wrap(inner);
    let q = Queueing {
        now: 1_700_000_000,
        retention_secs: 86_400 * 365 * 100,
        watch_after_secs: 600,
    };
    let del = || outbox::Job::Delete {
        user_id: "u".into(),
    };
    let job = || outbox::enqueue("job-1", &del(), q);
    store.transact(job().writes().to_vec()).await.unwrap();
    let r = records.try_recv().expect("the insert is streamed");
    assert_eq!((r.id.as_str(), r.redelivery), ("job-1", 0));
    // The same job again (a retried webhook): refused by its condition, nothing streamed.
    assert!(
        store
            .transact(job().writes().to_vec())
            .await
            .unwrap_err()
            .is_condition_failed()
    );
    assert!(records.try_recv().is_none());
    // A claim (an update) is no insert.
    let claimed = outbox::claim(&store, "job-1", q.now).await.unwrap();
    assert!(claimed.is_some());
    store
        .write(Write::update(
            Table::Outbox,
            &keys::outbox("job-1"),
            keys::ONE,
            vec![Update::set("x", 1i64)],
        ))
        .await
        .unwrap();
    assert!(records.try_recv().is_none());
    // A single put of a queued item (not through a transaction) is streamed too.
    let [put, _watch] = outbox::enqueue("job-2", &del(), q).writes();
    store.write(put).await.unwrap();
    assert_eq!(records.try_recv().map(|r| r.id), Some("job-2".into()));
    drop(store);
    assert!(
        records.recv().await.is_none(),
        "the stream ends with its store"
    );
}

#[tokio::test]
async fn a_stand_in_fault_lasts_its_stretch() {
    let w = World::new(Options::new(Backend::Embedded)).await;
    let http = reqwest::Client::new();
    let token = |http: &reqwest::Client| {
        http.post(format!("{}/cgi-bin/stable_token", w.wechat.base))
            .body(r#"{"grant_type":"client_credential","appid":"x","secret":"y"}"#)
            .send()
    };
    let r = http
        .post(format!("{}/__fault", w.wechat.base))
        .body(r#"{"status":503,"secs":0.4}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(token(&http).await.unwrap().status(), 503);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = token(&http).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.text().await.unwrap().contains("40013"),
        "normal answers again"
    );
    // In process, as the storm uses it: WeChat's "system busy", then off.
    w.wechat
        .fault(Some(Fault::Errcode(-1)), Duration::from_secs(60));
    assert!(
        token(&http)
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains(r#""errcode":-1"#)
    );
    w.wechat.fault(None, Duration::ZERO);
    assert!(
        token(&http)
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("40013")
    );
    let faulted: Vec<_> = w
        .wechat
        .requests("/cgi-bin/stable_token")
        .into_iter()
        .map(|r| r.faulted)
        .collect();
    assert_eq!(
        faulted,
        [
            Some(Fault::Status(503)),
            None,
            Some(Fault::Errcode(-1)),
            None
        ]
    );
    let r = http
        .post(format!("{}/__fault", w.wechat.base))
        .body(r#"{"status":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
