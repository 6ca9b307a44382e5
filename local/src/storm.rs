//! `wxim storm` (`scripts/storm`): a bounded duplicate storm against `wxim serve`, on loopback
//! only, then exactly-once checks.
//!
//! It starts moto (`scripts/dynamodb-server.py --fast-transactions`, with a snapshot file so it can
//! be stopped and restarted without losing a write), the WeChat and IM stand-ins in this process, creates the
//! tables (`wxim tables create`) and runs `wxim serve` against them. Setup binds `n` IM users to
//! mini-program openids (directly in the store) and reports them offline (`State.StateChange`
//! callbacks through the server). Then two phases, every event delivered **three times at
//! once**:
//!
//! - **A**: `n` subscribe popups (safe-mode JSON; one in five also accepts a second template,
//!   one in seven rejects a third, and one user in four gets a second popup event), and `n`
//!   official-account text messages from new followers (safe-mode XML). Like WeChat, a copy
//!   without a 200 is tried again 5 s after its try began, three tries in all.
//! - **B**: `n` `C2C.CallbackAfterSendMsg` callbacks, one to each offline bound user. Like IM,
//!   a copy is never tried again (IM does not retry after-event callbacks by default).
//!
//! Then it waits until every outbox item has ended, runs `wxim sweep --advance` (a sweep as it
//! would run long after: watch records due, stale claims retakable), and checks: credits per
//! (openid, template) equal the accepts minus what WeChat accepted; one outbox item per distinct
//! event (notifications, forwards, imports); every item ended with a reason; one WeChat send per
//! sent notification (at most one for a `maybe_sent`), one IM delivery per sent forward. It
//! prints every duplicate and every event lost at the edge, throughput and p50/p99 latency per
//! route. With `faults`, each fault starts when the traffic it is meant for flows: IM answers 503
//! for 3 s once the forwards have begun; moto is stopped (its tables saved) for 2 s plus its
//! restart when 40 % of phase A is delivered, and for 1 s plus its restart when 85 % of phase B
//! is; WeChat answers HTTP 500 for 2 s once the notifications have begun, then stalls past
//! `HTTP_TIMEOUT_MS` (and applies the call) for 2 s, then answers errcode -1 for 2 s.
//!
//! `wxim serve` runs with `HTTP_TIMEOUT_MS=1500`, `SWEEP_STALE_SECS=120` (the least allowed),
//! `SWEEP_INTERVAL_SECS=10` and otherwise the sample configuration's values (the default
//! `DISPATCH_BACKOFF_MS`, 1 s, so retries are paced as in production).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::App;
use common::clock::{Clock, SystemClock};
use common::config::{AppKind, Config};
use common::protocol::im::usersig;
use common::protocol::wechat::push::{self, Delivery as Mode};
use common::records::outbox::Status;
use common::store::spool::EmbeddedSpool;
use common::store::{DynamoStore, Item, Store, Table};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::standin::{Fault, StandIn};

pub struct Options {
    pub n: usize,
    pub concurrency: usize,
    pub faults: bool,
    pub python: PathBuf,
    pub moto: PathBuf,
    pub out: PathBuf,
    pub max_secs: u64,
}

const SECOND_TEMPLATE: &str = "storm_second_template";
const REJECTED_TEMPLATE: &str = "storm_rejected_template";
const SENDER: &str = "storm_sender";
/// WeChat waits 5 s for an answer and tries three times in all.
const WECHAT_TRIES: usize = 3;
const WECHAT_WAIT: Duration = Duration::from_secs(5);
/// IM waits 2 s for an answer to a callback.
const IM_WAIT: Duration = Duration::from_secs(2);
/// The watch delay for the storm: the shortest allowed (the default, 600 s, would outlast it).
const SWEEP_STALE_SECS: i64 = 120;
/// Far enough ahead that every watch record is due and every claim retakable.
const SWEEP_ADVANCE_SECS: i64 = 900;

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

fn unix_now() -> i64 {
    SystemClock.now()
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

/// A child process of ours, killed (by its handle) when dropped.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn log_file(out: &std::path::Path, name: &str) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.join(name))
        .map_err(|e| format!("cannot write {name} in {}: {e}", out.display()))
}

/// moto on loopback, its tables saved to a snapshot when it stops and loaded when it starts.
struct Moto {
    port: u16,
    python: PathBuf,
    script: PathBuf,
    state: PathBuf,
    out: PathBuf,
    proc: Option<Proc>,
}

impl Moto {
    async fn start(&mut self) -> Result<Duration, String> {
        let started = Instant::now();
        let mut child = Command::new(&self.python)
            .arg(&self.script)
            .arg(self.port.to_string())
            .arg("--until-stdin-closes")
            .arg("--state")
            .arg(&self.state)
            // Else moto deep-copies whole tables per transaction, and the storm measures that.
            .arg("--fast-transactions")
            .args(["--log-slow", "50"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file(&self.out, "moto.log")?)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {} {}: {e} (run scripts/pyenv.sh)",
                    self.python.display(),
                    self.script.display()
                )
            })?;
        let stdout = child.stdout.take().ok_or("moto has no stdout")?;
        let proc = Proc {
            name: "moto",
            child,
        };
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            line
        });
        let line = tokio::time::timeout(Duration::from_secs(60), line)
            .await
            .map_err(|_| "moto did not start within 60 s".to_owned())?
            .map_err(|e| e.to_string())?;
        if line.trim() != "ready" {
            return Err(format!(
                "moto did not start (see {}/moto.log)",
                self.out.display()
            ));
        }
        self.proc = Some(proc);
        Ok(started.elapsed())
    }

    /// Stops it the graceful way (stdin closed): every write it acknowledged is in the snapshot.
    async fn stop(&mut self) -> Result<(), String> {
        let Some(mut proc) = self.proc.take() else {
            return Ok(());
        };
        drop(proc.child.stdin.take());
        let waited = tokio::task::spawn_blocking(move || {
            for _ in 0..200 {
                if let Ok(Some(_)) = proc.child.try_wait() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false // dropped: killed
        })
        .await
        .map_err(|e| e.to_string())?;
        if waited {
            Ok(())
        } else {
            Err("moto did not stop within 10 s (killed; its snapshot may be stale)".into())
        }
    }
}

/// What one HTTP try gave.
#[derive(Debug, Clone)]
struct Try {
    status: Option<u16>,
    latency: Duration,
    started: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Route {
    Presence,
    Popup,
    OaMessage,
    ImCallback,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Presence => "setup  POST /im/callback (StateChange)",
            Route::Popup => "A      POST /wechat/mp (popups)",
            Route::OaMessage => "A      POST /wechat/oa (OA messages)",
            Route::ImCallback => "B      POST /im/callback (C2C after-send)",
        }
    }

    fn wechat(self) -> bool {
        matches!(self, Route::Popup | Route::OaMessage)
    }
}

/// One copy of one event, as the storm delivers it.
struct Copy {
    route: Route,
    event: usize,
    path_and_query: String,
    body: Vec<u8>,
}

#[derive(Default)]
struct Results {
    /// (route, event) → every try of every copy.
    tries: BTreeMap<(Route, usize), Vec<Try>>,
}

impl Results {
    fn accepted(&self, route: Route, event: usize) -> bool {
        self.tries
            .get(&(route, event))
            .is_some_and(|t| t.iter().any(|t| t.status == Some(200)))
    }
}

struct Storm {
    http: reqwest::Client,
    base: String,
    permits: Arc<Semaphore>,
    results: Arc<Mutex<Results>>,
    /// Copies delivered so far (answered, or out of tries), all phases.
    done: Arc<AtomicUsize>,
}

impl Storm {
    /// Delivers every copy (each event's three copies side by side), WeChat's retries included;
    /// returns when all are done.
    async fn deliver(&self, copies: Vec<Copy>) {
        let mut tasks = vec![];
        for c in copies {
            let http = self.http.clone();
            let url = format!("{}{}", self.base, c.path_and_query);
            let permits = self.permits.clone();
            let results = self.results.clone();
            let done = self.done.clone();
            tasks.push(tokio::spawn(async move {
                let tries = if c.route.wechat() { WECHAT_TRIES } else { 1 };
                let wait = if c.route.wechat() {
                    WECHAT_WAIT
                } else {
                    IM_WAIT
                };
                for n in 0..tries {
                    let permit = permits.acquire().await;
                    let started = Instant::now();
                    let sent = http
                        .post(&url)
                        .timeout(wait)
                        .body(c.body.clone())
                        .send()
                        .await;
                    let status = match sent {
                        Ok(r) => {
                            let s = r.status().as_u16();
                            let _ = r.bytes().await;
                            Some(s)
                        }
                        Err(_) => None,
                    };
                    let latency = started.elapsed();
                    drop(permit);
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .tries
                        .entry((c.route, c.event))
                        .or_default()
                        .push(Try {
                            status,
                            latency,
                            started,
                        });
                    if status == Some(200) || n + 1 == tries {
                        break;
                    }
                    // WeChat tries again when its 5 s are up.
                    tokio::time::sleep_until((started + wait).into()).await;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// A line of the fault timeline, printed with the report.
fn note(timeline: &Mutex<Vec<String>>, t0: Instant, what: String) {
    let line = format!("  +{:5.1} s  {what}", t0.elapsed().as_secs_f64());
    eprintln!("storm: {}", line.trim_start());
    timeline
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(line);
}

fn env_map(
    table: &str,
    moto_port: u16,
    wechat: &str,
    im: &str,
    out: &std::path::Path,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = crate::sample::vars().into_iter().collect();
    for (k, v) in [
        ("TABLE_NAME", table.to_owned()),
        (
            "AWS_ENDPOINT_URL_DYNAMODB",
            format!("http://127.0.0.1:{moto_port}"),
        ),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("WECHAT_API_BASE", wechat.to_owned()),
        ("IM_API_BASE", im.to_owned()),
        ("HTTP_TIMEOUT_MS", "1500".into()),
        ("SWEEP_STALE_SECS", SWEEP_STALE_SECS.to_string()),
        ("SWEEP_INTERVAL_SECS", "10".into()),
        ("WXIM_DATA_DIR", out.join("data").display().to_string()),
        // The spool is serve's spool.db there (not moto's SQS: moto is what the faults stop);
        // its retries are quick so that the storm's outage is caught up within the run.
        ("SPOOL_RETRY_SECS", "2".into()),
        ("RUST_LOG", "info".into()),
    ] {
        env.insert(k.to_owned(), v);
    }
    env
}

fn command(
    exe: &std::path::Path,
    env: &BTreeMap<String, String>,
    out: &std::path::Path,
) -> Command {
    let mut c = Command::new(exe);
    c.env_clear();
    for k in ["PATH", "HOME", "TMPDIR"] {
        if let Some(v) = std::env::var_os(k) {
            c.env(k, v);
        }
    }
    c.envs(env).current_dir(out);
    c
}

async fn run_to_end(mut c: Command, what: &str) -> Result<String, String> {
    let what = what.to_owned();
    tokio::task::spawn_blocking(move || {
        let o = c.output().map_err(|e| format!("cannot run {what}: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    })
    .await
    .map_err(|e| e.to_string())?
}

fn mp_openid(i: usize) -> String {
    format!("oStorm_mp_{i:04}")
}
fn mp_user(i: usize) -> String {
    format!("storm_user_{i:04}")
}
fn oa_openid(i: usize) -> String {
    format!("oStorm_oa_{i:04}")
}

/// The popup events: (openid index, templates accepted, templates rejected, plaintext).
fn popups(n: usize, template: &str, ts: i64) -> Vec<(usize, Vec<String>, String)> {
    let mut out = vec![];
    for i in 0..n {
        let mut list = vec![
            json!({"TemplateId": template, "SubscribeStatusString": "accept", "PopupScene": "0"}),
        ];
        let mut accepted = vec![template.to_owned()];
        if i % 5 == 0 {
            list.push(json!({"TemplateId": SECOND_TEMPLATE, "SubscribeStatusString": "accept", "PopupScene": "0"}));
            accepted.push(SECOND_TEMPLATE.to_owned());
        }
        if i % 7 == 0 {
            list.push(json!({"TemplateId": REJECTED_TEMPLATE, "SubscribeStatusString": "reject", "PopupScene": "0"}));
        }
        out.push((i, accepted, popup_body(i, ts, Value::Array(list))));
    }
    // A second accept, a second later, for one user in four.
    for i in (0..n).step_by(4) {
        let list =
            json!([{"TemplateId": template, "SubscribeStatusString": "accept", "PopupScene": "0"}]);
        out.push((i, vec![template.to_owned()], popup_body(i, ts + 1, list)));
    }
    out
}

fn popup_body(i: usize, ts: i64, list: Value) -> String {
    json!({
        "ToUserName": "gh_123456789abc", "FromUserName": mp_openid(i), "CreateTime": ts,
        "MsgType": "event", "Event": "subscribe_msg_popup_event", "List": list,
    })
    .to_string()
}

fn oa_message(i: usize, ts: i64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_abcdef123456]]></ToUserName><FromUserName><![CDATA[{}]]></FromUserName><CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[storm question {i}]]></Content><MsgId>{}</MsgId></xml>",
        oa_openid(i),
        7_000_000_000_000_000_000u64 + i as u64
    )
}

/// Three copies of a signed WeChat push.
fn push_copies(
    config: &Config,
    kind: AppKind,
    route: Route,
    event: usize,
    plaintext: &str,
) -> Result<Vec<Copy>, String> {
    let app = config
        .app(kind)
        .ok_or_else(|| format!("{kind} is not configured"))?;
    let ts = unix_now().to_string();
    let signed = push::seal(app, plaintext.as_bytes(), Mode::Safe, &ts, &random_hex(4))?;
    Ok((0..3)
        .map(|_| Copy {
            route,
            event,
            path_and_query: format!("/wechat/{kind}?{}", signed.query_string()),
            body: signed.body.clone(),
        })
        .collect())
}

/// Three copies of a signed IM callback.
fn im_copies(
    config: &Config,
    route: Route,
    event: usize,
    command: &str,
    body: &Value,
) -> Vec<Copy> {
    let im = config.im.as_ref().expect("IM is configured");
    let now = unix_now().to_string();
    let sign = im
        .callback_token
        .as_ref()
        .map(|t| usersig::callback_sign(t.expose(), &now))
        .unwrap_or_default();
    let pq = format!(
        "/im/callback?SdkAppid={}&CallbackCommand={command}&contenttype=json&ClientIP=127.0.0.1&OptPlatform=Web&RequestTime={now}&Sign={sign}",
        im.sdkappid
    );
    (0..3)
        .map(|_| Copy {
            route,
            event,
            path_and_query: pq.clone(),
            body: body.to_string().into_bytes(),
        })
        .collect()
}

fn c2c(i: usize, ts: i64) -> Value {
    let seq = 10_000 + i as u64;
    json!({
        "CallbackCommand": "C2C.CallbackAfterSendMsg",
        "From_Account": SENDER, "To_Account": mp_user(i),
        "MsgSeq": seq, "MsgRandom": 500_000 + seq, "MsgTime": ts,
        "MsgKey": format!("{seq}_{}_{ts}", 500_000 + seq), "OnlineOnlyFlag": 0,
        "SendMsgResult": 0, "ErrorInfo": "send msg succeed", "UnreadMsgNum": 1,
        "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": format!("storm message {i}")}}],
    })
}

fn percentile(sorted: &[Duration], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1000.0
}

async fn outbox(store: &dyn Store) -> Result<Vec<Item>, String> {
    store
        .scan(Table::Outbox)
        .await
        .map_err(|e| format!("cannot read the outbox: {e}"))
}

fn open_items(items: &[Item]) -> usize {
    items
        .iter()
        .filter(|i| Status::parse(i.s("status").unwrap_or("")).is_some_and(Status::is_open))
        .count()
}

/// Waits until no outbox item is open and the stand-ins are quiet, at most `limit`. The outbox
/// is scanned only once the stand-ins have been quiet for a second, and at most every 5 s (a
/// scan holds moto's lock, so scanning often would slow down what it waits for).
/// What the spool did, from serve's log: webhooks spooled during an outage, replays applied,
/// and what is still waiting or dead-lettered.
fn spool_summary(out: &std::path::Path, spool: &EmbeddedSpool) -> String {
    let log = std::fs::read_to_string(out.join("serve.log")).unwrap_or_default();
    let count = |decision: &str| log.matches(&format!("\"decision\":\"{decision}\"")).count();
    format!(
        "spool: {} webhooks spooled, {} replays applied, {} retried, {} pending, {} dead-lettered",
        count("spooled"),
        count("spool_applied"),
        count("spool_retry"),
        spool.pending().map_or(0, |p| p.len()),
        spool.dead_letters().map_or(0, |d| d.len()),
    )
}

async fn settle(
    store: &dyn Store,
    spool: &EmbeddedSpool,
    wx: &StandIn,
    im: &StandIn,
    limit: Duration,
) -> (bool, Duration) {
    let started = Instant::now();
    let mut last = (usize::MAX, usize::MAX);
    let mut scanned: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let counts = (wx.request_counts().0, im.request_counts().0);
        let quiet = counts == last;
        last = counts;
        if quiet && scanned.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            scanned = Some(Instant::now());
            // Spooled webhooks not applied yet have no outbox items so far.
            let spooled = spool.pending().map_or(usize::MAX, |p| p.len());
            if spooled == 0
                && let Ok(items) = outbox(store).await
                && open_items(&items) == 0
            {
                return (true, started.elapsed());
            }
        }
        if started.elapsed() >= limit {
            return (false, started.elapsed());
        }
    }
}

/// Runs the storm; `Ok(true)` when every check passed. Never longer than `max_secs` (at least
/// 60): then it stops where it is, its processes with it.
pub async fn run(opts: Options) -> Result<bool, String> {
    let limit = Duration::from_secs(opts.max_secs.max(60));
    tokio::time::timeout(limit, storm(opts))
        .await
        .map_err(|_| {
            format!(
                "the storm took longer than --max-secs ({} s); stopped",
                limit.as_secs()
            )
        })?
}

async fn storm(opts: Options) -> Result<bool, String> {
    let deadline = Duration::from_secs(opts.max_secs.max(60));
    let started = Instant::now();
    let stamp = unix_now();
    let out = opts.out.join(format!("run-{stamp}"));
    std::fs::create_dir_all(out.join("data"))
        .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let out = out.canonicalize().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // Absolute, but not resolved: a venv's python is a symlink that must stay one.
    let python = std::path::absolute(&opts.python)
        .ok()
        .filter(|p| p.exists())
        .ok_or_else(|| {
            format!(
                "{} not found: run scripts/pyenv.sh (scripts/storm does)",
                opts.python.display()
            )
        })?;
    let script = std::fs::canonicalize(&opts.moto)
        .map_err(|_| format!("{} not found", opts.moto.display()))?;
    eprintln!(
        "storm: n={}, concurrency {}, faults {}; logs in {}",
        opts.n,
        opts.concurrency,
        if opts.faults { "on" } else { "off" },
        out.display()
    );

    // The stand-ins, in this process (their ledgers are what the checks read).
    let base = crate::sample::config(&[]).map_err(|e| e.to_string())?;
    let pairs: Vec<(String, String)> = [&base.mp, &base.oa]
        .into_iter()
        .flatten()
        .map(|a| (a.appid.clone(), a.secret.expose().to_owned()))
        .collect();
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(a, s)| (a.as_str(), s.as_str()))
        .collect();
    let wx = StandIn::wechat(0, &pairs)
        .await
        .map_err(|e| e.to_string())?;
    let imc = base.im.as_ref().ok_or("the sample configures IM")?;
    let agents: Vec<&str> = imc.agents.iter().map(String::as_str).collect();
    let im = StandIn::im(
        0,
        imc.sdkappid,
        imc.secret_key.expose(),
        &imc.admin_user,
        &agents,
    )
    .await
    .map_err(|e| e.to_string())?;

    // moto, the tables, the storm's own view of the store.
    let mut moto = Moto {
        port: free_port()?,
        python,
        script,
        state: out.join("dynamodb.snapshot"),
        out: out.clone(),
        proc: None,
    };
    moto.start().await?;
    let table = format!("wxim-storm-{}", random_hex(3));
    let env = env_map(&table, moto.port, &wx.base, &im.base, &out);
    let config = Config::from_lookup(&|k| env.get(k).cloned()).map_err(|e| e.to_string())?;
    let mut tables = command(&exe, &env, &out);
    tables.args(["tables", "create"]);
    run_to_end(tables, "wxim tables create").await?;
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "test", "test", None, None, "static",
            ))
            .endpoint_url(format!("http://127.0.0.1:{}", moto.port))
            // The process's one HTTP/TLS stack: the SDK has no client of its own here.
            .http_client(common::store::sdk_http_client())
            .build(),
    );
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(DynamoStore::new(
        client,
        table.clone(),
        format!("{table}-outbox"),
        clock.clone(),
    ));
    let spool = EmbeddedSpool::open(&out.join("data").join("spool.db"), clock.clone())
        .map_err(|e| format!("cannot open serve's spool: {e}"))?;
    let app = App::new(config.clone(), store.clone(), clock);

    // wxim serve.
    let serve_port = free_port()?;
    let mut serve = command(&exe, &env, &out);
    serve
        .args([
            "serve",
            "--port",
            &serve_port.to_string(),
            "--until-stdin-closes",
        ])
        .stdin(Stdio::piped())
        .stdout(log_file(&out, "serve.log")?)
        .stderr(log_file(&out, "serve.log")?);
    let serve = Proc {
        name: "wxim serve",
        child: serve
            .spawn()
            .map_err(|e| format!("cannot start wxim serve: {e}"))?,
    };
    let serve_base = format!("http://127.0.0.1:{serve_port}");
    let mut up = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", serve_port))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !up {
        return Err(format!("{} did not listen (see serve.log)", serve.name));
    }

    let storm = Storm {
        // On the process's one rustls configuration (reqwest has no provider of its own here).
        http: common::protocol::wechat::api::transport::client(
            reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(opts.concurrency),
        ),
        base: serve_base,
        permits: Arc::new(Semaphore::new(opts.concurrency.max(1))),
        results: Arc::new(Mutex::new(Results::default())),
        done: Arc::new(AtomicUsize::new(0)),
    };
    let n = opts.n;
    let template = config
        .notify
        .as_ref()
        .map(|c| c.template_id.clone())
        .ok_or("the sample configures NOTIFY_TEMPLATE_ID")?;

    // Setup: bindings (in the store) and every user offline (through the server).
    let setup = Instant::now();
    for i in 0..n {
        common::records::binding::bind(
            &*store,
            &mp_user(i),
            AppKind::Mp,
            &mp_openid(i),
            None,
            unix_now(),
        )
        .await
        .map_err(|e| format!("binding {}: {e}", mp_user(i)))?;
    }
    let now_ms = SystemClock.now_ms();
    let presence: Vec<Copy> = (0..n)
        .flat_map(|i| {
            let body = json!({"CallbackCommand": "State.StateChange", "EventTime": now_ms,
                "Info": {"Action": "Logout", "To_Account": mp_user(i), "Reason": "storm"}});
            im_copies(&config, Route::Presence, i, "State.StateChange", &body)
                .into_iter()
                .take(1)
        })
        .collect();
    storm.deliver(presence).await;
    eprintln!(
        "storm: setup done in {:.1} s ({n} bindings, {n} users offline)",
        setup.elapsed().as_secs_f64()
    );

    let timeline = Arc::new(Mutex::new(Vec::<String>::new()));
    let t0 = Instant::now();
    let moto = Arc::new(tokio::sync::Mutex::new(moto));

    // Phase A: popups and official-account messages.
    let ts = unix_now();
    let popup_events = popups(n, &template, ts);
    let mut copies = vec![];
    for (e, (i, _, body)) in popup_events.iter().enumerate() {
        copies.extend(push_copies(&config, AppKind::Mp, Route::Popup, e, body)?);
        if e < n {
            copies.extend(push_copies(
                &config,
                AppKind::Oa,
                Route::OaMessage,
                *i,
                &oa_message(*i, ts),
            )?);
        }
    }
    note(&timeline, t0, format!("phase A: {} copies", copies.len()));
    // Faults start when the traffic they are meant for flows (the machine's speed varies).
    let faults_a = opts.faults.then(|| {
        let (im, moto, timeline) = (im.clone(), moto.clone(), timeline.clone());
        let done = storm.done.clone();
        let (from, total) = (done.load(Ordering::Relaxed), copies.len());
        tokio::spawn(async move {
            let outbound = im.request_counts().0;
            when(|| im.request_counts().0 >= outbound + 10).await;
            im.fault(Some(Fault::Status(503)), Duration::from_secs(3));
            note(&timeline, t0, "IM answers HTTP 503 for 3 s".into());
            when(|| done.load(Ordering::Relaxed) >= from + total * 2 / 5).await;
            bounce(&moto, &timeline, t0, Duration::from_secs(2)).await;
        })
    });
    let phase_a = Instant::now();
    storm.deliver(copies).await;
    let phase_a_secs = phase_a.elapsed();
    if let Some(f) = faults_a {
        let _ = f.await;
    }
    note(&timeline, t0, "phase A delivered".into());
    // The accepts spooled during phase A's outage are applied before the messages they are for
    // arrive, as they would be in the minutes a user takes between accepting and being written
    // to: a message that overtakes its recipient's spooled accept finds no credit (README,
    // "Store failures").
    let drained = Instant::now();
    while spool.pending().map_or(0, |p| p.len()) > 0 && drained.elapsed() < Duration::from_secs(90)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    note(
        &timeline,
        t0,
        format!(
            "phase A's spool drained in {:.1} s ({} still pending)",
            drained.elapsed().as_secs_f64(),
            spool.pending().map_or(0, |p| p.len())
        ),
    );

    // Phase B: IM callbacks to the offline users.
    let ts = unix_now();
    let mut copies = vec![];
    for i in 0..n {
        copies.extend(im_copies(
            &config,
            Route::ImCallback,
            i,
            "C2C.CallbackAfterSendMsg",
            &c2c(i, ts),
        ));
    }
    note(&timeline, t0, format!("phase B: {} copies", copies.len()));
    let faults_b = opts.faults.then(|| {
        let (wx, moto, timeline) = (wx.clone(), moto.clone(), timeline.clone());
        let done = storm.done.clone();
        let (from, total) = (done.load(Ordering::Relaxed), copies.len());
        tokio::spawn(async move {
            // Near the end of the callbacks: the last ones meet a store outage.
            let bouncing = {
                let (moto, timeline) = (moto.clone(), timeline.clone());
                tokio::spawn(async move {
                    when(|| done.load(Ordering::Relaxed) >= from + total * 17 / 20).await;
                    bounce(&moto, &timeline, t0, Duration::from_secs(1)).await;
                })
            };
            let stretch = Duration::from_secs(2);
            let outbound = wx.request_counts().0;
            when(|| wx.request_counts().0 >= outbound + 10).await;
            wx.fault(Some(Fault::Status(500)), stretch);
            note(&timeline, t0, "WeChat answers HTTP 500 for 2 s".into());
            tokio::time::sleep(stretch).await;
            wx.fault(Some(Fault::Stall(Duration::from_millis(2500))), stretch);
            note(
                &timeline,
                t0,
                "WeChat stalls 2.5 s (past HTTP_TIMEOUT_MS 1.5 s, then applies the call) for 2 s"
                    .into(),
            );
            tokio::time::sleep(stretch).await;
            wx.fault(Some(Fault::Errcode(-1)), stretch);
            note(&timeline, t0, "WeChat answers errcode -1 for 2 s".into());
            tokio::time::sleep(stretch).await;
            note(&timeline, t0, "WeChat behaves again".into());
            let _ = bouncing.await;
        })
    });
    let phase_b = Instant::now();
    storm.deliver(copies).await;
    let phase_b_secs = phase_b.elapsed();
    if let Some(f) = faults_b {
        let _ = f.await;
    }
    note(&timeline, t0, "phase B delivered".into());

    // Dispatch: until every item has ended (the stream's retries, serve's own sweep).
    let remaining = deadline.saturating_sub(started.elapsed());
    let wait = remaining
        .saturating_sub(Duration::from_secs(60))
        .min(Duration::from_secs(if opts.faults { 300 } else { 120 }));
    let (settled, _) = settle(&*store, &spool, &wx, &im, wait).await;
    let dispatched = t0.elapsed();
    let before_sweep = outbox(&*store).await?;
    note(
        &timeline,
        t0,
        format!(
            "dispatch {}: {} outbox items, {} still open; {}",
            if settled {
                "settled"
            } else {
                "gave up waiting"
            },
            before_sweep.len(),
            open_items(&before_sweep),
            spool_summary(&out, &spool)
        ),
    );

    // The sweep, as it would run long after the storm.
    let mut sweeps = vec![];
    for _ in 0..3 {
        let mut sweep = command(&exe, &env, &out);
        sweep.args(["sweep", "--advance", &SWEEP_ADVANCE_SECS.to_string()]);
        match run_to_end(sweep, "wxim sweep --advance").await {
            Ok(report) => sweeps.push(report.trim().to_owned()),
            Err(e) => sweeps.push(e),
        }
        let items = outbox(&*store).await?;
        if open_items(&items) == 0 {
            break;
        }
    }
    note(
        &timeline,
        t0,
        format!(
            "wxim sweep --advance {SWEEP_ADVANCE_SECS}: {}",
            sweeps.join(" | ")
        ),
    );
    // Whatever the sweep queued, serve's stream (and the sweep's own drain) sends.
    let _ = settle(&*store, &spool, &wx, &im, Duration::from_secs(20)).await;

    // Stop serve before reading the final state, so nothing moves under the checks.
    drop(serve);
    let results = std::mem::take(&mut *storm.results.lock().unwrap_or_else(|p| p.into_inner()));
    let items = outbox(&*store).await?;
    let report = Report {
        n,
        out: &out,
        opts: &opts,
        results: &results,
        items: &items,
        popup_events: &popup_events,
        template: &template,
        wx: &wx,
        im: &im,
        app: &app,
        phases: [phase_a_secs, phase_b_secs],
        dispatched,
    };
    let lines = timeline.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let passed = report.print(&lines).await?;
    moto.lock().await.stop().await?;
    Ok(passed)
}

/// Waits until `cond` holds (polled every 50 ms), at most 90 s: a fault whose traffic never
/// comes is injected anyway.
async fn when(cond: impl Fn() -> bool) {
    let started = Instant::now();
    while !cond() && started.elapsed() < Duration::from_secs(90) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops moto (its tables saved), waits `outage`, starts it again.
async fn bounce(
    moto: &tokio::sync::Mutex<Moto>,
    timeline: &Mutex<Vec<String>>,
    t0: Instant,
    outage: Duration,
) {
    let mut m = moto.lock().await;
    match m.stop().await {
        Ok(()) => note(timeline, t0, "DynamoDB (moto) stopped".into()),
        Err(e) => note(timeline, t0, format!("DynamoDB (moto): {e}")),
    }
    tokio::time::sleep(outage).await;
    match m.start().await {
        Ok(took) => note(
            timeline,
            t0,
            format!(
                "DynamoDB (moto) back ({:.1} s to start, tables restored)",
                took.as_secs_f64()
            ),
        ),
        Err(e) => note(
            timeline,
            t0,
            format!("DynamoDB (moto) did not restart: {e}"),
        ),
    }
}

struct Report<'a> {
    n: usize,
    out: &'a std::path::Path,
    opts: &'a Options,
    results: &'a Results,
    items: &'a [Item],
    popup_events: &'a [(usize, Vec<String>, String)],
    template: &'a str,
    wx: &'a StandIn,
    im: &'a StandIn,
    app: &'a App,
    phases: [Duration; 2],
    dispatched: Duration,
}

/// One check: its name, and what violates it (empty: passed).
struct Check {
    name: String,
    problems: Vec<String>,
}

impl Report<'_> {
    async fn print(&self, timeline: &[String]) -> Result<bool, String> {
        let mut text = String::new();
        let mut line = |s: String| {
            println!("{s}");
            text.push_str(&s);
            text.push('\n');
        };
        line(format!(
            "\nwxim storm: n={} distinct events per kind, each delivered 3 times at once, concurrency {}, faults {}",
            self.n,
            self.opts.concurrency,
            if self.opts.faults { "on" } else { "off" }
        ));
        line(
            "wxim serve: HTTP_TIMEOUT_MS=1500, SWEEP_STALE_SECS=120, SWEEP_INTERVAL_SECS=10, SPOOL_RETRY_SECS=2 (spool.db), defaults otherwise; moto --fast-transactions".into(),
        );
        line(
            "tries: HTTP requests (a WeChat copy is tried again 5 s after a try without 200, 3 tries; IM never); none: no answer in 5 s (WeChat) / 2 s (IM); latency over answered tries".into(),
        );
        line(format!(
            "\n{:<44} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8} {:>8}",
            "route", "tries", "200", "other", "none", "req/s", "p50 ms", "p99 ms"
        ));
        for route in [
            Route::Presence,
            Route::Popup,
            Route::OaMessage,
            Route::ImCallback,
        ] {
            let tries: Vec<&Try> = self
                .results
                .tries
                .iter()
                .filter(|((r, _), _)| *r == route)
                .flat_map(|(_, t)| t.iter())
                .collect();
            let ok = tries.iter().filter(|t| t.status == Some(200)).count();
            let none = tries.iter().filter(|t| t.status.is_none()).count();
            let first = tries.iter().map(|t| t.started).min();
            let last = tries.iter().map(|t| t.started + t.latency).max();
            let wall = match (first, last) {
                (Some(a), Some(b)) => (b - a).as_secs_f64().max(0.001),
                _ => 1.0,
            };
            let mut lat: Vec<Duration> = tries
                .iter()
                .filter(|t| t.status.is_some())
                .map(|t| t.latency)
                .collect();
            lat.sort();
            line(format!(
                "{:<44} {:>6} {:>6} {:>6} {:>6} {:>8.0} {:>8.1} {:>8.1}",
                route.label(),
                tries.len(),
                ok,
                tries.len() - ok - none,
                none,
                tries.len() as f64 / wall,
                percentile(&lat, 50),
                percentile(&lat, 99)
            ));
        }
        let by_kind = |k: &str| self.items.iter().filter(|i| i.s("kind") == Some(k)).count();
        line(format!(
            "\nphase A delivered in {:.1} s, phase B in {:.1} s; {} outbox items ({} notify, {} forward, {} im_import, {} agent_notice), all ended {:.1} s after phase A began",
            self.phases[0].as_secs_f64(),
            self.phases[1].as_secs_f64(),
            self.items.len(),
            by_kind("notify"),
            by_kind("forward"),
            by_kind("im_import"),
            by_kind("agent_notice"),
            self.dispatched.as_secs_f64()
        ));
        let (wx_req, wx_faulted) = self.wx.request_counts();
        let (im_req, im_faulted) = self.im.request_counts();
        line(format!(
            "WeChat stand-in: {wx_req} requests ({wx_faulted} answered by a fault); IM stand-in: {im_req} requests ({im_faulted} by a fault)"
        ));
        let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
        for i in self.items {
            let reason = i.s("reason").unwrap_or("");
            let short = reason.split(':').next().unwrap_or("");
            *statuses
                .entry(format!(
                    "{} {}{}",
                    i.s("kind").unwrap_or("?"),
                    i.s("status").unwrap_or("?"),
                    if short.is_empty() {
                        String::new()
                    } else {
                        format!(" ({short})")
                    }
                ))
                .or_default() += 1;
        }
        line("outbox items by kind, status (reason):".into());
        for (k, v) in &statuses {
            line(format!("  {v:>5}  {k}"));
        }
        if !timeline.is_empty() {
            line("timeline:".into());
            for t in timeline {
                line(t.clone());
            }
        }
        let checks = self.checks().await?;
        line("\nchecks:".into());
        let mut passed = true;
        for c in &checks {
            if c.problems.is_empty() {
                line(format!("  PASS  {}", c.name));
            } else {
                passed = false;
                line(format!("  FAIL  {} — {} cases", c.name, c.problems.len()));
                for p in c.problems.iter().take(12) {
                    line(format!("          {p}"));
                }
                if c.problems.len() > 12 {
                    line(format!("          … and {} more", c.problems.len() - 12));
                }
            }
        }
        line(format!(
            "\nstorm: {}",
            if passed {
                "every check passed"
            } else {
                "some checks FAILED (see above)"
            }
        ));
        let _ = std::fs::write(self.out.join("report.txt"), text);
        Ok(passed)
    }

    async fn checks(&self) -> Result<Vec<Check>, String> {
        let n = self.n;
        let store = &*self.app.store;
        let r = self.results;
        let mut checks = vec![];

        // Events no copy of which was accepted: lost at the edge.
        let mut edge = vec![];
        for (route, count) in [
            (Route::Popup, self.popup_events.len()),
            (Route::OaMessage, n),
        ] {
            for e in 0..count {
                if !r.accepted(route, e) {
                    edge.push(format!("{} event {e}: no try answered 200", route.label()));
                }
            }
        }
        checks.push(Check {
            name: "every WeChat push accepted within WeChat's three tries".into(),
            problems: edge,
        });
        let refused: Vec<String> = (0..n)
            .filter(|&i| !r.accepted(Route::ImCallback, i))
            .map(|i| {
                let statuses: Vec<String> = r
                    .tries
                    .get(&(Route::ImCallback, i))
                    .into_iter()
                    .flatten()
                    .map(|t| t.status.map_or("none".into(), |s| s.to_string()))
                    .collect();
                format!(
                    "callback to {}: every copy answered {} — IM does not retry an after-send callback, and the spool failed too, so this notification is lost",
                    mp_user(i),
                    statuses.join("/")
                )
            })
            .collect();
        checks.push(Check {
            name: "every IM callback accepted (a refused one is lost: IM never retries it)".into(),
            problems: refused,
        });

        // Ledgers.
        let sends = self.wx.sent();
        let mut sends_to: HashMap<(String, String), usize> = HashMap::new();
        for s in &sends {
            if let Some(t) = &s.template_id {
                *sends_to.entry((s.touser.clone(), t.clone())).or_default() += 1;
            }
        }
        let delivered = self.im.delivered_messages();
        let mut from: HashMap<String, usize> = HashMap::new();
        for d in &delivered {
            *from.entry(d.from.clone()).or_default() += 1;
        }

        // Credits: every accept counted once, minus what WeChat took.
        let mut accepts: HashMap<(usize, String), i64> = HashMap::new();
        for (e, (i, templates, _)) in self.popup_events.iter().enumerate() {
            if r.accepted(Route::Popup, e) {
                for t in templates {
                    *accepts.entry((*i, t.clone())).or_default() += 1;
                }
            }
        }
        let mut credit_problems = vec![];
        for i in 0..n {
            for t in [self.template, SECOND_TEMPLATE, REJECTED_TEMPLATE] {
                let got =
                    common::records::subscription::credits(store, AppKind::Mp, &mp_openid(i), t)
                        .await
                        .map_err(|e| e.to_string())?;
                let accepted = accepts.get(&(i, t.to_owned())).copied().unwrap_or(0);
                let spent = sends_to
                    .get(&(mp_openid(i), t.to_owned()))
                    .copied()
                    .unwrap_or(0) as i64;
                let want = (accepted - spent).max(0);
                if got != want {
                    credit_problems.push(format!(
                        "({}, {t}): {got} credits, expected {want} ({accepted} accepted, {spent} taken by WeChat)",
                        mp_openid(i)
                    ));
                }
            }
        }
        checks.push(Check {
            name: "credits per (openid, template) = accepts (each once) − sends WeChat took".into(),
            problems: credit_problems,
        });

        // One outbox item per distinct event.
        let mut per_recipient: HashMap<&str, Vec<&Item>> = HashMap::new();
        let mut per_from: HashMap<&str, Vec<&Item>> = HashMap::new();
        let mut imports: HashMap<&str, usize> = HashMap::new();
        for i in self.items {
            match i.s("kind") {
                Some("notify") => per_recipient
                    .entry(i.s("recipient").unwrap_or(""))
                    .or_default()
                    .push(i),
                Some("forward") => per_from
                    .entry(i.s("from").unwrap_or(""))
                    .or_default()
                    .push(i),
                Some("im_import") => *imports.entry(i.s("user_id").unwrap_or("")).or_default() += 1,
                _ => {}
            }
        }
        let mut one_item = vec![];
        for i in 0..n {
            let user = mp_user(i);
            let had_credit = accepts.contains_key(&(i, self.template.to_owned()));
            let want = usize::from(r.accepted(Route::ImCallback, i) && had_credit);
            let got = per_recipient.get(user.as_str()).map_or(0, Vec::len);
            if got != want {
                one_item.push(format!("{user}: {got} notify items, expected {want}"));
            }
            let f = oa_openid(i);
            let want = usize::from(r.accepted(Route::OaMessage, i));
            let got = per_from.get(f.as_str()).map_or(0, Vec::len);
            if got != want {
                one_item.push(format!("{f}: {got} forward items, expected {want}"));
            }
            let got = imports.get(f.as_str()).copied().unwrap_or(0);
            if got != want {
                one_item.push(format!("{f}: {got} im_import items, expected {want}"));
            }
        }
        checks.push(Check {
            name: "one outbox item per distinct event (notify, forward, im_import)".into(),
            problems: one_item,
        });

        // Every item ended, with a reason when not sent.
        let mut open = vec![];
        for i in self.items {
            let status = i.s("status").unwrap_or("");
            let id = i.s("id").unwrap_or("?");
            if Status::parse(status).is_some_and(Status::is_open) {
                open.push(format!(
                    "{} {id}: still {status} (attempts {}, last_error {})",
                    i.s("kind").unwrap_or("?"),
                    i.n("attempts").unwrap_or(0),
                    i.s("last_error").unwrap_or("-")
                ));
            } else if status != "sent" && i.s("reason").is_none_or(str::is_empty) {
                open.push(format!("{id}: {status} without a reason"));
            }
        }
        checks.push(Check {
            name: "every outbox item ended: sent, skipped or failed with its reason".into(),
            problems: open,
        });

        // WeChat: one send per sent notification; a maybe_sent at most one.
        let mut wx_problems = vec![];
        for (user, items) in &per_recipient {
            let openid = items[0].s("openid").unwrap_or("");
            let took = sends_to
                .get(&(openid.to_owned(), self.template.to_owned()))
                .copied()
                .unwrap_or(0);
            let item = items[0];
            let status = item.s("status").unwrap_or("");
            let reason = item.s("reason").unwrap_or("");
            let maybe = reason.starts_with("maybe_sent");
            let ok = match status {
                "sent" => took == 1,
                "failed" if maybe => took <= 1,
                _ => took == 0,
            };
            if !ok {
                wx_problems.push(format!(
                    "{}{user} ({openid}): WeChat took {took} sends, the item says {status}{} after {} attempts",
                    if took > 1 { "DUPLICATE " } else { "" },
                    if reason.is_empty() { String::new() } else { format!(" ({reason})") },
                    item.n("attempts").unwrap_or(0)
                ));
            }
        }
        checks.push(Check {
            name: "one WeChat send per sent notification (at most one for maybe_sent), none for the others".into(),
            problems: wx_problems,
        });

        // IM: one delivery per sent forward.
        let mut im_problems = vec![];
        for (f, items) in &per_from {
            let got = from.get(*f).copied().unwrap_or(0);
            let item = items[0];
            let status = item.s("status").unwrap_or("");
            // A retaken claim ends `failed` `maybe_sent: claim_retaken` (never sent again): the
            // dispatcher that went silent may have delivered it, once.
            let maybe = item
                .s("reason")
                .is_some_and(|r| r.starts_with("maybe_sent"));
            let ok = match status {
                "sent" => got == 1,
                "failed" if maybe => got <= 1,
                _ => got == 0,
            };
            if !ok {
                im_problems.push(format!(
                    "{}{f}: IM delivered {got} forwards, the item says {status}{} after {} attempts",
                    if got > 1 { "DUPLICATE " } else { "" },
                    item.s("reason").map(|r| format!(" ({r})")).unwrap_or_default(),
                    item.n("attempts").unwrap_or(0)
                ));
            }
        }
        let missing_accounts: Vec<String> = (0..n)
            .filter(|&i| r.accepted(Route::OaMessage, i) && !self.im.has_account(&oa_openid(i)))
            .map(|i| format!("{}: no IM account", oa_openid(i)))
            .collect();
        im_problems.extend(missing_accounts);
        checks.push(Check {
            name: "one IM delivery per sent forward (at most one for maybe_sent), none for the others; every follower imported"
                .into(),
            problems: im_problems,
        });
        Ok(checks)
    }
}
