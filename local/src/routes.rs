//! The functions by name (as under `functions/`) and the HTTP routes of `template.yaml`, mapped to
//! the very handlers the Lambda binaries call. What a handler queues in the outbox is dispatched
//! as the DynamoDB Stream would in AWS: by `wxim serve`, through the stream of its store
//! ([`crate::stream`], no table scan on any request); by the one-shot commands (`wxim invoke`,
//! `wxim notify`, `wxim sweep`, the demo) and the tests, by draining the queue before they
//! return ([`stream`]), so that what the stream would do is done by then.

use common::App;
use common::flows::dispatch;
use common::handlers;
use common::handlers::dispatch::Invocation;
use common::http::{Request, Response};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    WechatVerify,
    WechatEvent,
    ImCallback,
    NotifyDispatch,
    Bind,
    AdminNotify,
}

impl Function {
    pub const ALL: [Function; 6] = [
        Function::WechatVerify,
        Function::WechatEvent,
        Function::ImCallback,
        Function::NotifyDispatch,
        Function::Bind,
        Function::AdminNotify,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Function::WechatVerify => "wechat-verify",
            Function::WechatEvent => "wechat-event",
            Function::ImCallback => "im-callback",
            Function::NotifyDispatch => "notify-dispatch",
            Function::Bind => "bind",
            Function::AdminNotify => "admin-notify",
        }
    }

    pub fn from_name(name: &str) -> Option<Function> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    pub fn names() -> String {
        Self::ALL.map(|f| f.name()).join(", ")
    }

    /// The route a request takes, as API Gateway would choose it.
    pub fn route(method: &str, path: &str) -> Option<Function> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method, segs.as_slice()) {
            ("GET", ["wechat", _]) => Some(Function::WechatVerify),
            ("POST", ["wechat", _]) => Some(Function::WechatEvent),
            ("POST", ["im", "callback"]) => Some(Function::ImCallback),
            ("POST", ["bind"]) => Some(Function::Bind),
            ("POST", ["notify"]) | ("GET", ["notify", _]) => Some(Function::AdminNotify),
            _ => None,
        }
    }

    /// Whether the function may write outbox items (so the local stream should run after it).
    fn writes_outbox(self) -> bool {
        matches!(
            self,
            Function::WechatEvent | Function::ImCallback | Function::AdminNotify
        )
    }
}

/// Runs an HTTP function's handler, then the dispatcher over what it queued (`wxim invoke`, the
/// command line and the tests: by the time it returns, what the stream would do is done).
pub async fn call(f: Function, req: &Request, app: &App) -> Response {
    let resp = handle(f, req, app).await;
    if f.writes_outbox() {
        stream(app).await;
    }
    resp
}

/// The function's handler alone, as Lambda runs it.
pub async fn handle(f: Function, req: &Request, app: &App) -> Response {
    match f {
        Function::WechatVerify => handlers::wechat::verify(req, app).await,
        Function::WechatEvent => handlers::wechat::event(req, app).await,
        Function::ImCallback => handlers::im::callback(req, app).await,
        Function::Bind => handlers::bind::bind(req, app).await,
        Function::AdminNotify => handlers::admin::notify(req, app).await,
        Function::NotifyDispatch => Response::error(
            400,
            "not_http",
            "notify-dispatch is invoked by the outbox stream, not over HTTP",
        ),
    }
}

/// The local stand-in for the outbox's DynamoDB Stream: dispatch everything queued, retrying
/// as Lambda would up to the attempt limit.
pub async fn stream(app: &App) {
    let rounds = app.config.dispatch_max_attempts as usize + 1;
    if let Err(e) = dispatch::drain(app, rounds).await {
        tracing::warn!(decision = "dispatch_failed", reason = %e, "local dispatch could not read the outbox");
    }
}

/// One sweep of deferred work (what the schedule runs in AWS), then the local stream over the
/// follow-ups it queued.
pub async fn sweep(app: &App) -> Result<common::flows::sweep::Report, String> {
    let report = common::flows::sweep::sweep(app)
        .await
        .map_err(|e| e.to_string());
    stream(app).await;
    report
}

/// `wxim sweep --scan-outbox`: every unfinished outbox item re-driven (or rescheduled), found by
/// reading the whole outbox rather than through due records; then the local stream.
pub async fn rescan(app: &App) -> Result<common::flows::sweep::Report, String> {
    let report = common::flows::sweep::rescan(app)
        .await
        .map_err(|e| e.to_string());
    stream(app).await;
    report
}

/// `wxim serve`'s schedule: a sweep every `SWEEP_INTERVAL_SECS` (none when 0). The app is the
/// streamed one ([`crate::stream::start`]): the follow-ups a sweep queues reach the dispatcher
/// through the stream, as in AWS, so nothing is drained (scanned) here.
pub async fn sweep_every(app: std::sync::Arc<App>) {
    let secs = app.config.sweep_interval_secs;
    if secs == 0 {
        return;
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = common::flows::sweep::sweep(&app).await {
            tracing::warn!(decision = "sweep_incomplete", reason = %e, "the next sweep continues");
        }
    }
}

/// The spool's consumer, once: every spooled webhook that is due replayed through its handler
/// (what the SQS event source does in AWS), then the local stream over what they queued.
pub async fn drain_spool(app: &App) -> Result<handlers::spool::Drained, String> {
    let done = handlers::spool::drain_once(app, usize::MAX)
        .await
        .map_err(|e| e.to_string())?;
    if done.applied > 0 {
        stream(app).await;
    }
    Ok(done)
}

/// `wxim serve`'s spool consumer: due messages replayed as they come, up to a batch at a time
/// concurrently (polled every second when there are none), as the SQS event source hands them
/// to notify-dispatch in AWS, scaled out. The app is the streamed one: what a replay queues
/// reaches the dispatcher through the stream.
pub async fn spool_every(app: std::sync::Arc<App>) {
    let Some(spool) = app.spool.clone() else {
        return;
    };
    loop {
        match spool.receive(crate::stream::BATCH).await {
            Ok(got) if !got.is_empty() => {
                let mut tasks = tokio::task::JoinSet::new();
                for m in got {
                    let (app, spool) = (app.clone(), spool.clone());
                    tasks.spawn(async move {
                        let outcome = handlers::spool::replay(&app, &m.body).await;
                        handlers::spool::settle(&app, &*spool, &m, &outcome).await;
                    });
                }
                while tasks.join_next().await.is_some() {}
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(decision = "spool_unavailable", reason = %e, "the consumer tries again");
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// A request from the local operator (`wxim notify`): whoever runs `wxim` already holds the
/// store and the secrets, so they are an authenticated caller of the admin routes.
pub fn operator_request(method: &str, path: &str) -> Request {
    let mut req = Request::new(method, path);
    req.principal = Some("wxim (local operator)".into());
    req.request_id = "local-cli".into();
    req
}

/// `wxim invoke`: one event through one function, the response as one JSON object.
pub async fn invoke(f: Function, raw_event: &str, app: &App) -> Result<String, String> {
    if f == Function::NotifyDispatch {
        let event: serde_json::Value = serde_json::from_str(raw_event)
            .map_err(|e| format!("not a DynamoDB Stream or scheduled event: {e}"))?;
        match Invocation::parse(&event) {
            Invocation::Stream(_) => {
                return Ok(handlers::dispatch::handle(&event, app, "local-invoke")
                    .await
                    .to_string());
            }
            Invocation::Spool(_) => {
                let out = handlers::dispatch::handle(&event, app, "local-invoke").await;
                stream(app).await;
                return Ok(out.to_string());
            }
            Invocation::Sweep => return Ok(sweep(app).await?.to_json().to_string()),
            Invocation::Unknown => {}
        }
        return Err(
            "not a DynamoDB Stream or SQS event (no Records) nor the scheduled sweep (detail-type \"Scheduled Event\" or {\"action\":\"sweep\"})"
                .into(),
        );
    }
    let req = common::lambda::parse_event(raw_event)?;
    let resp = call(f, &req, app).await;
    Ok(resp.to_invoke_json().to_string())
}

/// `wxim serve`: every route of the template on one local server. Give it the app
/// [`crate::stream::start`] returns: the handlers answer as soon as they have written, and the
/// stream's dispatcher sends what they queued on its own task, as in AWS (WeChat gives up after
/// 5 s and IM after 2 s, and a slow or failing outbound call must not make them).
pub fn handler(app: std::sync::Arc<App>) -> crate::httpd::Handler {
    std::sync::Arc::new(move |req: Request| {
        let app = app.clone();
        Box::pin(async move {
            let Some(f) = Function::route(&req.method, &req.path) else {
                return Response::error(404, "no_route", "no such route");
            };
            handle(f, &req, &app).await
        })
    })
}

/// One line saying what is configured, for the serve banner (never a secret).
pub fn summary(config: &common::config::Config) -> String {
    let apps: Vec<&str> = common::config::AppKind::ALL
        .into_iter()
        .filter(|k| config.app(*k).is_some())
        .map(|k| k.as_str())
        .collect();
    let store = match &config.table_name {
        Some(t) => format!("DynamoDB table {t}"),
        None => format!("embedded store in {}", config.data_dir),
    };
    let store = match &config.spool_queue_url {
        Some(q) => format!("{store}; spool: SQS queue {q}"),
        None => format!("{store}; spool: {}/spool.db", config.data_dir),
    };
    let sweep = match config.sweep_interval_secs {
        0 => "no periodic sweep (SWEEP_INTERVAL_SECS=0; run `wxim sweep`)".to_owned(),
        n => format!("sweep every {n} s"),
    };
    format!(
        "WeChat apps: {}; IM: {}; notifications: {}; {store}; {sweep}; WeChat API {}; {}",
        if apps.is_empty() {
            "none".to_owned()
        } else {
            apps.join(", ")
        },
        config
            .im
            .as_ref()
            .map(|i| i.sdkappid.to_string())
            .unwrap_or_else(|| "not configured".into()),
        if config.notify.is_some() { "on" } else { "off" },
        config.wechat_api_base,
        if config.admin_token.is_some() {
            "/notify needs Authorization: Bearer $WXIM_ADMIN_TOKEN"
        } else {
            "/notify refuses every request until WXIM_ADMIN_TOKEN is set"
        },
    )
}
