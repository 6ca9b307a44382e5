//! The thin glue between `lambda_http` and the framework-neutral handlers: every function binary
//! and `wxim invoke` convert through here, so an API Gateway event means the same thing in all
//! three places.

use lambda_http::{Body, RequestExt, request::RequestContext};

use crate::app::App;
use crate::http::{Request, Response, parse_query};
use crate::obs;

/// Cold start: logging and configuration, once; the store and the API clients are created by
/// their first use. A configuration error is logged with the variable at fault and fails the
/// init, so Lambda reports it instead of serving requests.
pub async fn init(service: &str) -> Result<&'static App, lambda_http::Error> {
    obs::init(obs::Sink::Stdout, service);
    started(App::from_env().await)
}

/// [`init`] for a function that keeps no state (wechat-verify): the same configuration checks,
/// no DynamoDB store at all (so none of the SDK is linked into its binary).
pub fn init_stateless(service: &'static str) -> Result<&'static App, lambda_http::Error> {
    obs::init(obs::Sink::Stdout, service);
    started(App::from_env_stateless(service))
}

fn started(
    app: Result<App, crate::config::ConfigError>,
) -> Result<&'static App, lambda_http::Error> {
    match app {
        Ok(app) => {
            let agents = app.config.im.as_ref().map_or(0, |im| im.agents.len());
            if app.config.oa.is_some() && agents == 0 {
                // A valid setup (an account that only sends subscribe messages), but if agents
                // were meant to answer followers, this is the line that explains the silence.
                tracing::warn!(
                    decision = "oa_without_agents",
                    variable = "IM_AGENT_ACCOUNTS",
                    "official account configured without IM agents: followers' messages are kept, not forwarded"
                );
            }
            Ok(Box::leak(Box::new(app)))
        }
        Err(e) => {
            tracing::error!(decision = "init_failed", variable = %e.var, "configuration error: {e}");
            Err(Box::new(e))
        }
    }
}

/// Converts an API Gateway request (HTTP API payload v2) into the handlers' request.
pub fn request(req: lambda_http::Request) -> Request {
    let path = {
        let raw = req.raw_http_path();
        if raw.is_empty() {
            req.uri().path().to_owned()
        } else {
            raw.to_owned()
        }
    };
    let query = req.uri().query().map(parse_query).unwrap_or_default();
    let path_params = req
        .path_parameters_ref()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let (request_id, principal) = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => (
            ctx.request_id.clone(),
            // Present only when the route's AWS_IAM authorizer verified the SigV4 signature.
            ctx.authorizer
                .as_ref()
                .and_then(|a| a.iam.as_ref())
                .and_then(|iam| iam.user_arn.clone().or_else(|| iam.caller_id.clone()))
                .filter(|p| !p.is_empty()),
        ),
        _ => (None, None),
    };
    let request_id = request_id
        .or_else(|| req.lambda_context_ref().map(|c| c.request_id.clone()))
        .unwrap_or_default();
    let headers = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    Request {
        method: req.method().as_str().to_owned(),
        path,
        query,
        headers,
        path_params,
        body: req.body().as_ref().to_vec(),
        request_id,
        principal,
    }
}

/// Converts a handler response for API Gateway; UTF-8 bodies go as text so that `echostr` and
/// XML replies reach WeChat byte for byte, never JSON-quoted or base64-encoded.
pub fn respond(resp: Response) -> lambda_http::Response<Body> {
    let mut builder = lambda_http::Response::builder().status(resp.status);
    for (k, v) in &resp.headers {
        builder = builder.header(k, v);
    }
    let body = match String::from_utf8(resp.body) {
        Ok(s) if s.is_empty() => Body::Empty,
        Ok(s) => Body::Text(s),
        Err(e) => Body::Binary(e.into_bytes()),
    };
    builder
        .body(body)
        .unwrap_or_else(|_| lambda_http::Response::new(Body::Empty))
}

/// Parses an API Gateway event file (as `cargo lambda invoke --data-file` would send it).
pub fn parse_event(json: &str) -> Result<Request, String> {
    let req = lambda_http::request::from_str(json)
        .map_err(|e| format!("not an API Gateway HTTP API (payload v2) event: {e}"))?;
    let mut r = request(req);
    if r.request_id.is_empty() {
        r.request_id = "local-invoke".into();
    }
    Ok(r)
}
