//! The functions by name (as under `functions/`) and the HTTP routes of `template.yaml`, mapped to
//! the very handlers the Lambda binaries call.

use common::App;
use common::handlers;
use common::http::{Request, Response};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    WechatVerify,
    WechatEvent,
}

impl Function {
    pub const ALL: [Function; 2] = [Function::WechatVerify, Function::WechatEvent];

    pub fn name(self) -> &'static str {
        match self {
            Function::WechatVerify => "wechat-verify",
            Function::WechatEvent => "wechat-event",
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
            _ => None,
        }
    }
}

pub async fn call(f: Function, req: &Request, app: &App) -> Response {
    match f {
        Function::WechatVerify => handlers::wechat::verify(req, app).await,
        Function::WechatEvent => handlers::wechat::event(req, app).await,
    }
}

/// `wxim invoke`: one event through one function, the response as one JSON object.
pub async fn invoke(f: Function, raw_event: &str, app: &App) -> Result<String, String> {
    let req = common::lambda::parse_event(raw_event)?;
    let resp = call(f, &req, app).await;
    Ok(resp.to_invoke_json().to_string())
}

/// `wxim serve`: every route of the template on one local server.
pub fn handler(app: std::sync::Arc<App>) -> crate::httpd::Handler {
    std::sync::Arc::new(move |req: Request| {
        let app = app.clone();
        Box::pin(async move {
            match Function::route(&req.method, &req.path) {
                Some(f) => call(f, &req, &app).await,
                None => Response::error(404, "no_route", "no such route"),
            }
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
    format!(
        "WeChat apps: {}; {store}",
        if apps.is_empty() {
            "none".to_owned()
        } else {
            apps.join(", ")
        }
    )
}
