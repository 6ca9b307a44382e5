//! Local stand-ins of the WeChat and IM server APIs, speaking their documented wire format
//! (including their error answers), for the demo, `wxim standins` and the tests. They keep just
//! enough state to behave like the real services: issued access tokens, used login codes, IM
//! accounts and presence. Any answer can be scripted ahead (an error, an HTTP failure, a delay)
//! to rehearse what the real services do on a bad day, and a [`Fault`] can be switched on for a
//! stretch of time, in process ([`StandIn::fault`]) or over HTTP (`POST /__fault`, for
//! `wxim standins`): `{"status":500,"secs":5}`, `{"errcode":-1,"secs":5}`,
//! `{"stall_ms":8000,"secs":5}`, `{}` to end it.
//!
//! Every credential they issue has a recognisable shape, so that a log scan can find any of them
//! by pattern without knowing which were issued: access tokens `ACCESS_TOKEN_<appid>_<n>`,
//! session keys `SESSION_KEY_<appid>_<n>` ([`ISSUED_PATTERNS`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::clock::Clock as _;
use common::config::Config;
use common::http::{Request, Response};
use common::protocol::im::usersig;
use common::protocol::wechat::keyword::{self, Mode};
use serde_json::{Value, json};

use crate::httpd;

/// The shapes of the credentials the stand-ins issue, as regular expressions (read by
/// `scripts/scan-logs.py`, which fails a test run whose logs match any of them).
pub const ISSUED_PATTERNS: [&str; 2] = [
    r"ACCESS_TOKEN_[A-Za-z0-9]+_[0-9]+",
    r"SESSION_KEY_[A-Za-z0-9]+_[0-9]+",
];

/// Query parameters and body fields that carry a credential in a request to WeChat or IM.
const CREDENTIAL_FIELDS: [&str; 4] = ["access_token", "secret", "usersig", "js_code"];

/// A scripted answer for the next call to a path.
#[derive(Debug, Clone)]
pub enum Scripted {
    /// A JSON body with HTTP 200 (WeChat and IM put their errors in the body).
    Json(Value),
    /// An HTTP status with a plain body (gateway failures).
    Status(u16),
    /// Wait, then answer the inner script (or the normal answer when `None`).
    Delay(Duration, Option<Box<Scripted>>),
}

/// How a stand-in misbehaves while a fault is on (every path but `/__fault`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// This HTTP status, nothing applied.
    Status(u16),
    /// The service's own error answer with this code (WeChat `errcode`, IM `ErrorCode`), nothing
    /// applied: WeChat's -1 "system busy".
    Errcode(i64),
    /// Waits this long, then applies the call and answers normally: a client whose timeout is
    /// shorter gives up on a call that did happen.
    Stall(Duration),
}

impl Fault {
    /// The JSON `POST /__fault` takes: `{"status":500}`, `{"errcode":-1}`, `{"stall_ms":8000}`;
    /// `None` for `{}` (no fault).
    pub fn from_json(v: &Value) -> Result<Option<Fault>, String> {
        if let Some(s) = v.get("status") {
            let s = s
                .as_u64()
                .filter(|s| (100..=599).contains(s))
                .ok_or("status must be an HTTP status")?;
            return Ok(Some(Fault::Status(s as u16)));
        }
        if let Some(c) = v.get("errcode") {
            return Ok(Some(Fault::Errcode(
                c.as_i64().ok_or("errcode must be a number")?,
            )));
        }
        if let Some(ms) = v.get("stall_ms") {
            return Ok(Some(Fault::Stall(Duration::from_millis(
                ms.as_u64().ok_or("stall_ms must be a number")?,
            ))));
        }
        Ok(None)
    }
}

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Value,
    /// Answered by a [`Fault`] (a stall still applies the call).
    pub faulted: Option<Fault>,
}

/// A message the WeChat stand-in accepted (it answered errcode 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub path: String,
    pub touser: String,
    pub template_id: Option<String>,
    pub msgid: Option<u64>,
}

/// A one-to-one message the IM stand-in delivered (a resend IM deduplicates is not another).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub from: String,
    pub to: String,
    pub random: u64,
    pub time: i64,
}

impl Recorded {
    pub fn query(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    requests: Vec<Recorded>,
    /// The fault on now, and until when.
    fault: Option<(Fault, Instant)>,
    /// WeChat: every message accepted, in order.
    sent: Vec<Sent>,
    scripts: HashMap<String, VecDeque<Scripted>>,
    /// WeChat: appid → (secret, current token, generation).
    apps: HashMap<String, (String, String, u32)>,
    /// WeChat: code → (appid, openid, unionid) and the codes already exchanged.
    codes: HashMap<String, (String, String, Option<String>)>,
    used_codes: HashSet<String>,
    msgid: u64,
    /// IM: imported accounts and presence.
    accounts: HashSet<String>,
    online: HashMap<String, String>,
    /// IM: the one-to-one messages delivered, keyed as IM deduplicates them: (from, to,
    /// MsgRandom, MsgTime). A resend is the same message only within the same second
    /// (reference §3.2), so a late retry is delivered again, as on the real service.
    delivered: HashMap<MessageId, (String, Value)>,
    allow_delete: bool,
    /// IM: groups by id: their type (`Public`, `Work`, `Community`, …) and members in join order.
    groups: HashMap<String, (String, Vec<String>)>,
    /// IM: group names, for `get_group_info`.
    group_names: HashMap<String, String>,
    /// Every access token and session key handed out, in order.
    issued: Vec<String>,
    /// WeChat: session keys handed out so far (numbering them).
    sessions: u32,
    im: Option<(u64, String, String)>,
    print: bool,
    /// The time the stand-ins run on: UserSig expiry, the typing rules (the system clock by default).
    clock: Option<Arc<dyn common::clock::Clock>>,
    /// WeChat: per follower, when a message was last exchanged (a customer-service message
    /// sent, or [`StandIn::user_wrote`]) and when the typing state was last granted.
    exchanged: HashMap<String, i64>,
    typing: HashMap<String, i64>,
    /// WeChat: the temporary media uploaded (media_id → the bytes' length).
    media: HashMap<String, usize>,
    /// IM: the picture bytes served behind the URLs put in image elements (name → bytes,
    /// content type).
    images: HashMap<String, (Vec<u8>, String)>,
}

#[derive(Clone)]
pub struct StandIn {
    pub base: String,
    shared: Arc<Mutex<Shared>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

fn wx_error(code: i64, msg: &str) -> Response {
    Response::json(200, &json!({ "errcode": code, "errmsg": msg }))
}

fn im_error(code: i64, info: &str) -> Response {
    Response::json(
        200,
        &json!({ "ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": info }),
    )
}

fn im_ok(mut extra: Value) -> Response {
    extra["ActionStatus"] = json!("OK");
    extra["ErrorCode"] = json!(0);
    extra["ErrorInfo"] = json!("");
    Response::json(200, &extra)
}

impl StandIn {
    async fn start(
        port: u16,
        shared: Shared,
        route: fn(&Arc<Mutex<Shared>>, &Request, &Value) -> Response,
    ) -> std::io::Result<StandIn> {
        let listener = httpd::bind(port).await?;
        let base = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Mutex::new(shared));
        let s2 = shared.clone();
        let handler: httpd::Handler = Arc::new(move |req: Request| {
            let shared = s2.clone();
            Box::pin(async move {
                let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                if req.path == "/__fault" {
                    return admin_fault(&shared, &req, &body);
                }
                if req.path == "/__setup" {
                    return admin_setup(&shared, &req, &body);
                }
                let (script, fault, print, im) = {
                    let mut g = shared.lock().unwrap_or_else(|p| p.into_inner());
                    let fault = match &g.fault {
                        Some((f, until)) if *until > Instant::now() => Some(f.clone()),
                        _ => None,
                    };
                    g.requests.push(Recorded {
                        path: req.path.clone(),
                        query: req.query.clone(),
                        body: body.clone(),
                        faulted: fault.clone(),
                    });
                    (
                        g.scripts.get_mut(&req.path).and_then(VecDeque::pop_front),
                        fault,
                        g.print,
                        g.im.is_some(),
                    )
                };
                if print {
                    let mut shown_body = body.clone();
                    // Even a stand-in does not print app secrets.
                    if let Some(o) = shown_body.as_object_mut()
                        && o.contains_key("secret")
                    {
                        o.insert("secret".into(), json!("***"));
                    }
                    let shown = if body.is_null() {
                        String::new()
                    } else {
                        serde_json::to_string_pretty(&shown_body).unwrap_or_default()
                    };
                    println!(
                        "   [stand-in] {} {} {}",
                        req.method,
                        req.path,
                        shown.replace('\n', "\n      ")
                    );
                }
                match fault {
                    Some(Fault::Status(st)) => return Response::text(st, "upstream failure"),
                    Some(Fault::Errcode(code)) if im => {
                        return im_error(code, "internal error (fault injected)");
                    }
                    Some(Fault::Errcode(code)) => return wx_error(code, "system error"),
                    Some(Fault::Stall(d)) => tokio::time::sleep(d).await,
                    None => {}
                }
                let mut script = script;
                loop {
                    match script {
                        Some(Scripted::Json(v)) => return Response::json(200, &v),
                        Some(Scripted::Status(s)) => return Response::text(s, "upstream failure"),
                        Some(Scripted::Delay(d, inner)) => {
                            tokio::time::sleep(d).await;
                            script = inner.map(|b| *b);
                        }
                        None => return route(&shared, &req, &body),
                    }
                }
            })
        });
        // Room for WeChat's largest upload (10 MB), so that its own 40006 answers a bigger one.
        let limits = httpd::Limits {
            max_body: 11 * 1024 * 1024,
            ..httpd::Limits::default()
        };
        let task = tokio::spawn(httpd::serve_with(listener, handler, limits));
        Ok(StandIn {
            base,
            shared,
            task: Arc::new(task),
        })
    }

    /// The WeChat API: stable_token, subscribe/send, subscribe/bizsend, custom/send,
    /// custom/typing (45080 without an exchange in 30 s, 45081 while already typing),
    /// jscode2session. `apps` are the (appid, secret) pairs it accepts.
    /// The WeChat stand-in knowing every app `config` has (appid and secret).
    pub async fn wechat_for(port: u16, config: &Config) -> std::io::Result<StandIn> {
        let apps: Vec<(String, String)> = [&config.mp, &config.oa]
            .into_iter()
            .flatten()
            .map(|a| (a.appid.clone(), a.secret.expose().to_owned()))
            .collect();
        let pairs: Vec<(&str, &str)> = apps.iter().map(|(a, s)| (a.as_str(), s.as_str())).collect();
        StandIn::wechat(port, &pairs).await
    }

    /// The IM stand-in for `config`'s IM app, knowing its agents and `users`; `None` without IM.
    pub async fn im_for(
        port: u16,
        config: &Config,
        users: &[&str],
    ) -> std::io::Result<Option<StandIn>> {
        let Some(im) = &config.im else {
            return Ok(None);
        };
        let mut accounts: Vec<&str> = im
            .agents
            .iter()
            .chain(&im.agents_mp)
            .map(String::as_str)
            .collect();
        accounts.extend_from_slice(users);
        StandIn::im(
            port,
            im.sdkappid,
            im.secret_key.expose(),
            &im.admin_user,
            &accounts,
        )
        .await
        .map(Some)
    }

    pub async fn wechat(port: u16, apps: &[(&str, &str)]) -> std::io::Result<StandIn> {
        let mut s = Shared::default();
        for (appid, secret) in apps {
            s.apps.insert(
                (*appid).to_owned(),
                ((*secret).to_owned(), String::new(), 0),
            );
        }
        s.msgid = 3_000_000_000_000_000_000;
        Self::start(port, s, wechat_route).await
    }

    /// The IM REST API for one SDKAppID: admin UserSig checked with the key, accounts, presence,
    /// one-to-one sends. `accounts` exist from the start (the agents, typically).
    pub async fn im(
        port: u16,
        sdkappid: u64,
        key: &str,
        admin: &str,
        accounts: &[&str],
    ) -> std::io::Result<StandIn> {
        let s = Shared {
            im: Some((sdkappid, key.to_owned(), admin.to_owned())),
            accounts: accounts.iter().map(|a| (*a).to_owned()).collect(),
            ..Default::default()
        };
        Self::start(port, s, im_route).await
    }

    fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        f(&mut self.shared.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Checks UserSig expiry against this clock instead of the system's (tests on a manual clock).
    pub fn use_clock(&self, clock: Arc<dyn common::clock::Clock>) {
        self.with(|s| s.clock = Some(clock));
    }

    /// Misbehaves as `fault` says for `stretch` from now (`None`: behaves again).
    pub fn fault(&self, fault: Option<Fault>, stretch: Duration) {
        self.with(|s| s.fault = fault.map(|f| (f, Instant::now() + stretch)));
    }

    /// WeChat: every message it accepted (subscribe messages, customer-service messages).
    pub fn sent(&self) -> Vec<Sent> {
        self.with(|s| s.sent.clone())
    }

    /// IM: every distinct one-to-one message it delivered.
    pub fn delivered_messages(&self) -> Vec<Delivered> {
        self.with(|s| {
            s.delivered
                .keys()
                .map(|(from, to, random, time)| Delivered {
                    from: from.clone(),
                    to: to.clone(),
                    random: *random,
                    time: *time,
                })
                .collect()
        })
    }

    /// How many requests it has received, and how many of them a fault answered.
    pub fn request_counts(&self) -> (usize, usize) {
        self.with(|s| {
            (
                s.requests.len(),
                s.requests.iter().filter(|r| r.faulted.is_some()).count(),
            )
        })
    }

    /// Prints every request it receives (the demo shows what would be posted to WeChat).
    pub fn print_requests(&self, on: bool) {
        self.with(|s| s.print = on);
    }

    /// The next answers for `path`, in order, before it goes back to its normal behaviour.
    pub fn script(&self, path: &str, answers: Vec<Scripted>) {
        self.with(|s| {
            s.scripts
                .entry(path.to_owned())
                .or_default()
                .extend(answers)
        });
    }

    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.with(|s| {
            s.requests
                .iter()
                .filter(|r| r.path == path)
                .cloned()
                .collect()
        })
    }

    pub fn count(&self, path: &str) -> usize {
        self.with(|s| s.requests.iter().filter(|r| r.path == path).count())
    }

    /// WeChat: a `wx.login` code that `jscode2session` will exchange once.
    pub fn add_code(&self, code: &str, appid: &str, openid: &str, unionid: Option<&str>) {
        self.with(|s| {
            s.codes.insert(
                code.to_owned(),
                (
                    appid.to_owned(),
                    openid.to_owned(),
                    unionid.map(str::to_owned),
                ),
            )
        });
    }

    /// WeChat: the follower wrote to the official account (the stand-in does not see pushes),
    /// which the typing state needs within 30 s.
    pub fn user_wrote(&self, openid: &str) {
        self.with(|s| {
            let now = s.now();
            s.exchanged.insert(openid.to_owned(), now);
        });
    }

    /// IM: what `query_online_status` reports for a user (`Online`, `PushOnline`, `Offline`).
    pub fn set_online(&self, user: &str, status: &str) {
        self.with(|s| s.online.insert(user.to_owned(), status.to_owned()));
    }

    /// IM: a group of `kind` (`Public`, `Work`, `Meeting`, `Community`, `AVChatRoom`) with these
    /// members, for `get_group_member_info`.
    pub fn set_group(&self, group_id: &str, kind: &str, members: &[&str]) {
        self.with(|s| {
            s.groups.insert(
                group_id.to_owned(),
                (
                    kind.to_owned(),
                    members.iter().map(|m| (*m).to_owned()).collect(),
                ),
            )
        });
    }

    /// IM: the name `get_group_info` reports for a group set with [`StandIn::set_group`].
    pub fn name_group(&self, group_id: &str, name: &str) {
        self.with(|s| s.group_names.insert(group_id.to_owned(), name.to_owned()));
    }

    /// IM: whether `account_delete` is allowed (only the Trial edition allows it).
    pub fn allow_delete(&self, yes: bool) {
        self.with(|s| s.allow_delete = yes);
    }

    pub fn has_account(&self, user: &str) -> bool {
        self.with(|s| s.accounts.contains(user))
    }

    /// The current token the stand-in would accept for an app (to simulate a revoked token).
    pub fn revoke_token(&self, appid: &str) {
        self.with(|s| {
            if let Some(a) = s.apps.get_mut(appid) {
                a.2 += 1;
                a.1 = format!("ACCESS_TOKEN_{appid}_{}", a.2);
                let t = a.1.clone();
                s.issued.push(t);
            }
        });
    }

    /// Every credential this stand-in issued (access tokens, session keys), in order.
    pub fn issued(&self) -> Vec<String> {
        self.with(|s| s.issued.clone())
    }

    /// Every credential this stand-in received: access tokens, app secrets, UserSigs and login
    /// codes, from query parameters and JSON bodies.
    pub fn credentials_seen(&self) -> Vec<String> {
        self.with(|s| {
            let mut out: Vec<String> = vec![];
            for r in &s.requests {
                for f in CREDENTIAL_FIELDS {
                    out.extend(r.query(f).map(str::to_owned));
                    out.extend(r.body[f].as_str().map(str::to_owned));
                }
            }
            out.retain(|v| !v.is_empty());
            out.sort();
            out.dedup();
            out
        })
    }
}

/// `POST /__fault`: switches a fault on for `secs` (default 5), or off with `{}`.
fn admin_fault(shared: &Arc<Mutex<Shared>>, req: &Request, body: &Value) -> Response {
    if req.method != "POST" {
        return Response::error(405, "method_not_allowed", "use POST");
    }
    let fault = match Fault::from_json(body) {
        Ok(f) => f,
        Err(e) => return Response::error(400, "invalid_fault", &e),
    };
    let secs = body.get("secs").and_then(Value::as_f64).unwrap_or(5.0);
    if !(0.0..=3600.0).contains(&secs) {
        return Response::error(400, "invalid_fault", "secs must be from 0 to 3600");
    }
    let mut g = shared.lock().unwrap_or_else(|p| p.into_inner());
    g.fault = fault
        .clone()
        .map(|f| (f, Instant::now() + Duration::from_secs_f64(secs)));
    Response::json(
        200,
        &json!({ "fault": fault.map(|f| format!("{f:?}")), "secs": secs }),
    )
}

/// `POST /__setup`: what a test sets in process, for stand-ins in another process
/// (scripts/lambda_harness.py feeds it the `online` and `group` setup steps of
/// events/expected.json): `{"online": [user, status]}` or `{"group": {"id", "type", "members",
/// "name"?}}`.
fn admin_setup(shared: &Arc<Mutex<Shared>>, req: &Request, body: &Value) -> Response {
    if req.method != "POST" {
        return Response::error(405, "method_not_allowed", "use POST");
    }
    let mut g = shared.lock().unwrap_or_else(|p| p.into_inner());
    if let Some([Value::String(user), Value::String(status)]) =
        body["online"].as_array().map(Vec::as_slice)
    {
        g.online.insert(user.clone(), status.clone());
        return Response::json(200, &json!({ "online": user }));
    }
    let group = &body["group"];
    let members: Option<Vec<String>> = group["members"]
        .as_array()
        .and_then(|a| a.iter().map(|m| m.as_str().map(str::to_owned)).collect());
    match (group["id"].as_str(), group["type"].as_str(), members) {
        (Some(id), Some(kind), Some(members)) => {
            g.groups.insert(id.to_owned(), (kind.to_owned(), members));
            if let Some(name) = group["name"].as_str() {
                g.group_names.insert(id.to_owned(), name.to_owned());
            }
            Response::json(200, &json!({ "group": id }))
        }
        _ => Response::error(
            400,
            "invalid_setup",
            "expected {\"online\": [user, status]} or {\"group\": {\"id\", \"type\", \"members\"}}",
        ),
    }
}

impl Shared {
    fn now(&self) -> i64 {
        match &self.clock {
            Some(c) => c.now(),
            None => common::clock::SystemClock.now(),
        }
    }
}

fn wechat_route(shared: &Arc<Mutex<Shared>>, req: &Request, body: &Value) -> Response {
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    let token_ok = |s: &Shared| {
        let t = req.query("access_token").unwrap_or("");
        !t.is_empty() && s.apps.values().any(|a| a.1 == t)
    };
    match req.path.as_str() {
        "/cgi-bin/stable_token" => {
            if req.method != "POST" {
                return wx_error(43002, "require POST method");
            }
            if body["grant_type"] != "client_credential" {
                return wx_error(40002, "invalid grant_type");
            }
            let appid = body["appid"].as_str().unwrap_or("");
            let Some(app) = s.apps.get_mut(appid) else {
                return wx_error(40013, "invalid appid");
            };
            if body["secret"].as_str() != Some(app.0.as_str()) {
                return wx_error(40125, "invalid appsecret");
            }
            // Normal mode returns the same token while it is valid; force_refresh rotates it.
            if app.1.is_empty() || body["force_refresh"] == true {
                app.2 += 1;
                app.1 = format!("ACCESS_TOKEN_{appid}_{}", app.2);
                let t = app.1.clone();
                s.issued.push(t.clone());
                return Response::json(200, &json!({ "access_token": t, "expires_in": 7200 }));
            }
            Response::json(200, &json!({ "access_token": app.1, "expires_in": 7200 }))
        }
        "/cgi-bin/message/subscribe/send" | "/cgi-bin/message/subscribe/bizsend" => {
            if !token_ok(&s) {
                return wx_error(
                    40001,
                    "invalid credential, access_token is invalid or not latest",
                );
            }
            if body["touser"].as_str().is_none_or(str::is_empty) {
                return wx_error(40003, "invalid openid");
            }
            if body["template_id"].as_str().is_none_or(str::is_empty) {
                return wx_error(40037, "invalid template_id");
            }
            let Some(data) = body["data"].as_object() else {
                return wx_error(47003, "argument invalid! data invalid");
            };
            for (k, v) in data {
                let ok = v["value"]
                    .as_str()
                    .is_some_and(|val| keyword::normalise(k, val, Mode::Strict).is_ok());
                if !ok {
                    return wx_error(47003, &format!("argument invalid! data.{k}.value invalid"));
                }
            }
            s.msgid += 1;
            let msgid = s.msgid;
            s.sent.push(Sent {
                path: req.path.clone(),
                touser: body["touser"].as_str().unwrap_or("").to_owned(),
                template_id: body["template_id"].as_str().map(str::to_owned),
                msgid: Some(msgid),
            });
            Response::json(
                200,
                &json!({ "errcode": 0, "errmsg": "ok", "msgid": msgid }),
            )
        }
        "/cgi-bin/media/upload" => {
            if !token_ok(&s) {
                return wx_error(
                    40001,
                    "invalid credential, access_token is invalid or not latest",
                );
            }
            if req.query("type") != Some("image") {
                return wx_error(40004, "invalid media type");
            }
            let Some(bytes) = multipart_field(req, "media") else {
                return wx_error(41005, "media data missing");
            };
            if bytes.len() > 10 * 1024 * 1024 {
                return wx_error(40006, "invalid meida size");
            }
            if common::protocol::wechat::media::ImageFormat::sniff(&bytes).is_none() {
                return wx_error(40005, "invalid file type");
            }
            let media_id = format!("MEDIA_ID_{}", s.media.len() + 1);
            s.media.insert(media_id.clone(), bytes.len());
            let now = s.now();
            Response::json(
                200,
                &json!({ "type": "image", "media_id": media_id, "created_at": now }),
            )
        }
        "/cgi-bin/message/custom/send" => {
            if !token_ok(&s) {
                return wx_error(
                    40001,
                    "invalid credential, access_token is invalid or not latest",
                );
            }
            let Some(to) = body["touser"].as_str().filter(|t| !t.is_empty()) else {
                return wx_error(40003, "invalid openid");
            };
            if body["msgtype"] == "image"
                && !body["image"]["media_id"]
                    .as_str()
                    .is_some_and(|m| s.media.contains_key(m))
            {
                return wx_error(40007, "invalid media_id");
            }
            let now = s.now();
            s.exchanged.insert(to.to_owned(), now);
            wx_error(0, "ok")
        }
        // The official account's and the mini program's typing state follow the same rules.
        "/cgi-bin/message/custom/typing" | "/cgi-bin/message/custom/business/typing" => {
            if !token_ok(&s) {
                return wx_error(
                    40001,
                    "invalid credential, access_token is invalid or not latest",
                );
            }
            let Some(to) = body["touser"].as_str().filter(|t| !t.is_empty()) else {
                return wx_error(40003, "invalid openid");
            };
            let to = to.to_owned();
            let now = s.now();
            match body["command"].as_str() {
                Some("Typing") => {
                    if s.exchanged.get(&to).is_none_or(|t| now - t > 30) {
                        return wx_error(
                            45080,
                            "has not sent message to user in the last 30 seconds",
                        );
                    }
                    if s.typing.get(&to).is_some_and(|t| now - t < 15) {
                        return wx_error(45081, "you are already typing");
                    }
                    s.typing.insert(to, now);
                }
                Some("CancelTyping") => {
                    s.typing.remove(&to);
                }
                _ => return wx_error(47001, "data format error: command"),
            }
            s.sent.push(Sent {
                path: req.path.clone(),
                touser: body["touser"].as_str().unwrap_or("").to_owned(),
                template_id: None,
                msgid: None,
            });
            wx_error(0, "ok")
        }
        "/sns/jscode2session" => {
            let appid = req.query("appid").unwrap_or("");
            let Some(app) = s.apps.get(appid) else {
                return wx_error(40013, "invalid appid");
            };
            if req.query("secret") != Some(app.0.as_str()) {
                return wx_error(40125, "invalid appsecret");
            }
            let code = req.query("js_code").unwrap_or("").to_owned();
            if s.used_codes.contains(&code) {
                return wx_error(40163, "code been used");
            }
            let Some((code_app, openid, unionid)) = s.codes.get(&code).cloned() else {
                return wx_error(40029, "invalid code");
            };
            if code_app != appid {
                return wx_error(40029, "invalid code");
            }
            s.used_codes.insert(code);
            s.sessions += 1;
            let session_key = format!("SESSION_KEY_{appid}_{}", s.sessions);
            s.issued.push(session_key.clone());
            let mut v = json!({ "openid": openid, "session_key": session_key });
            if let Some(u) = unionid {
                v["unionid"] = json!(u);
            }
            Response::json(200, &v)
        }
        _ => Response::text(404, "not found"),
    }
}

/// The content type marking a stored picture as a redirect (its bytes are the target).
const REDIRECT: &str = "redirect";

/// The bytes of a `multipart/form-data` field, as WeChat's upload reads it.
fn multipart_field(req: &Request, name: &str) -> Option<Vec<u8>> {
    let ct = req.header("content-type")?;
    let boundary = ct.split("boundary=").nth(1)?.trim_matches('"');
    let delim = format!("--{boundary}");
    let body = &req.body;
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let mut at = find(body, delim.as_bytes(), 0)?;
    loop {
        let start = at + delim.len() + 2;
        let head_end = find(body, b"\r\n\r\n", start)?;
        let head = String::from_utf8_lossy(body.get(start..head_end)?);
        let next = find(body, format!("\r\n{delim}").as_bytes(), head_end + 4)?;
        if head.contains(&format!("name=\"{name}\"")) {
            let data = body.get(head_end + 4..next)?.to_vec();
            return (!data.is_empty()).then_some(data);
        }
        at = next + 2;
    }
}

fn im_route(shared: &Arc<Mutex<Shared>>, req: &Request, body: &Value) -> Response {
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    // The pictures behind the URLs of image elements (IM's storage serves them to anyone with
    // the URL, without the admin's credentials).
    if let Some(name) = req.path.strip_prefix("/img/") {
        return match s.images.get(name) {
            Some((to, ct)) if ct == REDIRECT => {
                let mut r = Response::new(302, "text/plain", "moved");
                r.headers
                    .push(("location".into(), String::from_utf8_lossy(to).into_owned()));
                r
            }
            Some((bytes, ct)) => Response::new(200, ct, bytes.clone()),
            None => Response::text(404, "no such picture"),
        };
    }
    let Some((sdkappid, key, admin)) = s.im.clone() else {
        return Response::text(500, "not an IM stand-in");
    };
    if req.query("sdkappid").and_then(|v| v.parse::<u64>().ok()) != Some(sdkappid) {
        return im_error(60006, "SDKAppID invalid");
    }
    if req.query("identifier") != Some(admin.as_str()) {
        return im_error(60010, "the request requires app admin permission");
    }
    if req
        .query("random")
        .and_then(|r| r.parse::<u32>().ok())
        .is_none()
    {
        return im_error(60002, "HTTP parse error: random");
    }
    let now = match &s.clock {
        Some(c) => c.now(),
        None => common::clock::SystemClock.now(),
    };
    match usersig::verify(
        sdkappid,
        &key,
        req.query("usersig").unwrap_or(""),
        &admin,
        now,
    ) {
        Ok(_) => {}
        Err(usersig::UserSigError::Expired { .. }) => return im_error(70001, "UserSig expired"),
        Err(_) => return im_error(70009, "UserSig verification failed"),
    }
    if !body.is_object() {
        return im_error(90001, "JSON parse error");
    }
    match req.path.as_str() {
        "/v4/openim/query_online_status" => {
            let users: Vec<String> = body["To_Account"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|u| u.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let mut result = vec![];
            let mut errors = vec![];
            for u in users {
                if !s.accounts.contains(&u) && !s.online.contains_key(&u) {
                    errors.push(json!({ "To_Account": u, "ErrorCode": 70107 }));
                    continue;
                }
                let st = s
                    .online
                    .get(&u)
                    .cloned()
                    .unwrap_or_else(|| "Offline".into());
                result.push(json!({ "To_Account": u, "Status": st, "Detail": [] }));
            }
            im_ok(json!({ "QueryResult": result, "ErrorList": errors }))
        }
        "/v4/im_open_login_svc/account_import" => {
            let Some(u) = body["UserID"]
                .as_str()
                .or_else(|| body["Identifier"].as_str())
            else {
                return im_error(70402, "UserID is required");
            };
            if u.len() > 32 {
                return im_error(70402, "UserID too long");
            }
            s.accounts.insert(u.to_owned());
            im_ok(json!({}))
        }
        "/v4/im_open_login_svc/account_delete" => {
            if !s.allow_delete {
                return im_error(
                    71000,
                    "account deletion is only allowed in the Trial edition",
                );
            }
            let mut items = vec![];
            for i in body["DeleteItem"].as_array().into_iter().flatten() {
                let u = i["UserID"].as_str().unwrap_or("").to_owned();
                let code = if s.accounts.remove(&u) { 0 } else { 70107 };
                items.push(json!({ "ResultCode": code, "ResultInfo": "", "UserID": u }));
            }
            im_ok(json!({ "ResultItem": items }))
        }
        "/v4/group_open_http_svc/get_group_member_info" => group_members(&s, body),
        "/v4/group_open_http_svc/get_group_info" => group_info(&s, body),
        "/v4/openim/sendmsg" => {
            let to = body["To_Account"].as_str().unwrap_or("").to_owned();
            let from = body["From_Account"].as_str().unwrap_or(&admin).to_owned();
            let Some(random) = body["MsgRandom"].as_u64() else {
                return im_error(90007, "MsgRandom is required");
            };
            if body["MsgBody"].as_array().is_none_or(Vec::is_empty) {
                return im_error(90005, "MsgBody is required");
            }
            for u in [&from, &to] {
                if *u != admin && !s.accounts.contains(u) {
                    return im_error(
                        90012,
                        "To_Account or From_Account is not an imported account",
                    );
                }
            }
            let seq = s.delivered.len() + 1;
            let key = s
                .delivered
                .entry((from, to, random, now))
                .or_insert_with(|| (format!("{seq}_{random}_{now}"), body["MsgBody"].clone()))
                .0
                .clone();
            im_ok(json!({ "MsgTime": now, "MsgKey": key }))
        }
        "/v4/openim/admin_getroammsg" => roam_messages(&s, body),
        _ => Response::text(404, "not found"),
    }
}

/// How IM tells one-to-one messages apart: (from, to, MsgRandom, MsgTime).
type MessageId = (String, String, u64, i64);

/// `admin_getroammsg` as IM documents it (269/42794): the messages between `Operator_Account`
/// and `Peer_Account` (both directions) with `MinTime` ≤ time ≤ `MaxTime`, newest first in pages
/// of `MaxCnt` (each page listed oldest first), continued after `LastMsgKey`; `Complete` 1 on
/// the last page, whose `LastMsgTime`/`LastMsgKey` name its oldest message.
fn roam_messages(s: &Shared, body: &Value) -> Response {
    let (Some(op), Some(peer)) = (
        body["Operator_Account"].as_str(),
        body["Peer_Account"].as_str(),
    ) else {
        return im_error(90001, "Operator_Account and Peer_Account are required");
    };
    let (Some(max_cnt), Some(min), Some(max)) = (
        body["MaxCnt"].as_u64(),
        body["MinTime"].as_i64(),
        body["MaxTime"].as_i64(),
    ) else {
        return im_error(90001, "MaxCnt, MinTime and MaxTime are required");
    };
    let seq = |key: &str| {
        key.split('_')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut all: Vec<(&MessageId, &(String, Value))> = s
        .delivered
        .iter()
        .filter(|((f, t, _, time), _)| {
            ((f == op && t == peer) || (f == peer && t == op)) && (min..=max).contains(time)
        })
        .collect();
    all.sort_by_key(|((.., time), (key, _))| std::cmp::Reverse((*time, seq(key))));
    let start = match body["LastMsgKey"].as_str() {
        Some(last) => all
            .iter()
            .position(|(_, (key, _))| key == last)
            .map_or(all.len(), |i| i + 1),
        None => 0,
    };
    let page: Vec<_> = all
        .iter()
        .skip(start)
        .take(max_cnt.clamp(1, 100) as usize)
        .collect();
    let complete = start + page.len() >= all.len();
    let last = page
        .last()
        .map(|((.., time), (key, _))| (*time, key.clone()));
    let list: Vec<Value> = page
        .iter()
        .rev()
        .map(|((from, to, random, time), (key, msg_body))| {
            json!({
                "From_Account": from, "To_Account": to, "MsgSeq": seq(key),
                "MsgRandom": random, "MsgTimeStamp": time, "MsgFlagBits": 0,
                "IsPeerRead": 0, "MsgKey": key, "MsgBody": msg_body,
            })
        })
        .collect();
    let mut answer = json!({
        "Complete": u8::from(complete),
        "MsgCnt": list.len(),
        "MsgList": list,
    });
    if let Some((time, key)) = last {
        answer["LastMsgTime"] = time.into();
        answer["LastMsgKey"] = key.into();
    }
    im_ok(answer)
}

/// `get_group_member_info` (cloud.tencent.com/document/product/269/1629): `Limit` (at most
/// 6000; absent: every member) and `Offset` page the members, except in a Community group,
/// which takes no `Offset` and pages by `Next` (`""` first, then the answer's `Next`, until it
/// comes back empty). An audio-video group (AVChatRoom) does not support the call.
fn group_members(s: &Shared, body: &Value) -> Response {
    let Some(id) = body["GroupId"].as_str().filter(|g| !g.is_empty()) else {
        return im_error(10004, "parameter invalid: GroupId is required");
    };
    let Some((kind, members)) = s.groups.get(id) else {
        return im_error(10010, "the group does not exist or has been dissolved");
    };
    if kind == "AVChatRoom" {
        return im_error(10007, "this group type does not support the operation");
    }
    let limit = match &body["Limit"] {
        Value::Null => members.len(),
        v => match v.as_u64() {
            Some(l) if l <= 6000 => l as usize,
            _ => return im_error(10004, "parameter invalid: Limit"),
        },
    };
    let community = kind == "Community";
    let start = if community {
        if !body["Offset"].is_null() {
            return im_error(
                10004,
                "parameter invalid: Community groups page by Next, not Offset",
            );
        }
        match body["Next"].as_str() {
            Some("") => 0,
            Some(n) => match n.parse::<usize>() {
                Ok(n) => n,
                Err(_) => return im_error(10004, "parameter invalid: Next"),
            },
            None => {
                return im_error(
                    10004,
                    "parameter invalid: Next is required for a Community group",
                );
            }
        }
    } else {
        match &body["Offset"] {
            Value::Null => 0,
            v => match v.as_u64() {
                Some(o) => o as usize,
                None => return im_error(10004, "parameter invalid: Offset"),
            },
        }
    };
    let page: Vec<Value> = members
        .iter()
        .skip(start)
        .take(limit)
        .enumerate()
        .map(|(i, m)| {
            let role = if start + i == 0 { "Owner" } else { "Member" };
            json!({ "Member_Account": m, "Role": role, "JoinTime": 1_690_000_000 + start + i })
        })
        .collect();
    let end = start + page.len();
    let mut answer = json!({ "MemberNum": members.len(), "MemberList": page });
    if community {
        answer["Next"] = json!(if end < members.len() {
            end.to_string()
        } else {
            String::new()
        });
    }
    im_ok(answer)
}

/// `get_group_info`: one `GroupInfo` entry per id of `GroupIdList` (at most 50), each with its
/// own `ErrorCode` (10010 for a group that does not exist), and the base fields
/// `ResponseFilter.GroupBaseInfoFilter` asks for (all of this stand-in's when absent).
fn group_info(s: &Shared, body: &Value) -> Response {
    let Some(ids) = body["GroupIdList"]
        .as_array()
        .filter(|a| !a.is_empty() && a.len() <= 50)
    else {
        return im_error(10004, "parameter invalid: GroupIdList");
    };
    let filter: Option<Vec<&str>> = body["ResponseFilter"]["GroupBaseInfoFilter"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    let wants = |f: &str| filter.as_ref().is_none_or(|l| l.contains(&f));
    let mut out = vec![];
    for id in ids {
        let id = id.as_str().unwrap_or("");
        let Some((kind, members)) = s.groups.get(id) else {
            out.push(json!({ "GroupId": id, "ErrorCode": 10010,
                             "ErrorInfo": "the group does not exist or has been dissolved" }));
            continue;
        };
        let mut g = json!({ "GroupId": id, "ErrorCode": 0, "ErrorInfo": "" });
        if wants("Type") {
            g["Type"] = json!(kind);
        }
        if wants("Name") {
            g["Name"] = json!(s.group_names.get(id).cloned().unwrap_or_default());
        }
        if wants("MemberNum") {
            g["MemberNum"] = json!(members.len());
        }
        out.push(g);
    }
    im_ok(json!({ "GroupInfo": out }))
}

impl StandIn {
    /// IM: serves `bytes` as `content_type` behind a URL of this stand-in, for an image element
    /// (`ImageInfoArray[].URL`); returns the URL.
    pub fn put_image(&self, name: &str, bytes: &[u8], content_type: &str) -> String {
        self.with(|s| {
            s.images
                .insert(name.to_owned(), (bytes.to_vec(), content_type.to_owned()))
        });
        format!("{}/img/{name}", self.base)
    }

    /// IM: a picture URL of this stand-in that redirects to `to` (storage moving a file).
    pub fn put_redirect(&self, name: &str, to: &str) -> String {
        self.with(|s| {
            s.images.insert(
                name.to_owned(),
                (to.as_bytes().to_vec(), REDIRECT.to_owned()),
            )
        });
        format!("{}/img/{name}", self.base)
    }

    /// WeChat: the size of each image uploaded as temporary media, by media_id.
    pub fn uploaded(&self) -> HashMap<String, usize> {
        self.with(|s| s.media.clone())
    }

    /// How many distinct one-to-one messages IM actually delivered (a resend with the same
    /// MsgRandom within the same second counts once).
    pub fn delivered(&self) -> usize {
        self.with(|s| s.delivered.len())
    }
}
