//! The thin glue between `lambda_http` and the framework-neutral handlers: every function binary
//! and `wxim invoke` convert through here, so an API Gateway event means the same thing in all
//! three places.

use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
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

/// The Lambda loop of an API function: each API Gateway event (HTTP API payload v2) becomes the
/// handlers' [`Request`], `handler`'s [`Response`] goes back as API Gateway's answer.
///
/// This is `lambda_http::run` with one step before the conversion: lambda_http 1.3 panics on an
/// event whose request line does not make a URI or whose base64 body is not (see
/// [`convertible`]), and in a release build (`panic = "abort"`) that takes the whole instance
/// down. Such an event is answered 400 `bad_event` instead, and the instance goes on.
pub async fn serve<F, Fut>(app: &'static App, handler: F) -> Result<(), lambda_http::Error>
where
    F: Fn(Request, &'static App) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let handler = &|req| handler(req, app);
    lambda_http::lambda_runtime::run(lambda_http::service_fn(
        move |ev: lambda_http::LambdaEvent<ApiGatewayV2httpRequest>| async move {
            Ok::<_, std::convert::Infallible>(answer(ev, handler).await)
        },
    ))
    .await
}

async fn answer<F, Fut>(
    ev: lambda_http::LambdaEvent<ApiGatewayV2httpRequest>,
    handler: &F,
) -> ApiGatewayV2httpResponse
where
    F: Fn(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let lambda_http::LambdaEvent { payload, context } = ev;
    if let Err(why) = convertible(&payload) {
        tracing::warn!(request_id = %context.request_id, decision = "bad_event", reason = %why);
        return gateway_answer(Response::error(400, "bad_event", &why));
    }
    let req: lambda_http::Request =
        lambda_http::request::LambdaRequest::ApiGatewayV2(payload).into();
    let req = req.with_lambda_context(context);
    gateway_answer(handler(request(req)).await)
}

/// A handler response as API Gateway takes it (what [`respond`] builds, in payload v2 form).
fn gateway_answer(resp: Response) -> ApiGatewayV2httpResponse {
    let resp = respond(resp);
    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = i64::from(resp.status().as_u16());
    out.headers = resp.headers().clone();
    match resp.into_body() {
        Body::Empty => {}
        b @ Body::Text(_) => out.body = Some(b),
        b => {
            out.is_base64_encoded = true;
            out.body = Some(b);
        }
    }
    out
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
    let ev: ApiGatewayV2httpRequest = serde_json::from_str(json)
        .map_err(|e| format!("not an API Gateway HTTP API (payload v2) event: {e}"))?;
    convertible(&ev)?;
    let req = lambda_http::request::from_str(json)
        .map_err(|e| format!("not an API Gateway HTTP API (payload v2) event: {e}"))?;
    let mut r = request(req);
    if r.request_id.is_empty() {
        r.request_id = "local-invoke".into();
    }
    Ok(r)
}

/// lambda_http 1.3 panics while converting an event ("failed to build request", "failed to
/// decode aws base64 encoded body") whose path, host, `X-Forwarded-Proto` and query do not make
/// a URI, or whose body claims base64 but is not (found by fuzzing:
/// fuzz/fuzz_targets/lambda_event.rs; upstream aws-lambda-rust-runtime#461). An event file is
/// refused here first, with what is wrong, instead of aborting `wxim invoke`. The checks
/// rebuild the URI exactly as lambda_http's conversion does.
fn convertible(ev: &ApiGatewayV2httpRequest) -> Result<(), String> {
    use base64::Engine as _;
    use lambda_http::http;

    if ev.is_base64_encoded
        && let Some(body) = &ev.body
        && base64::engine::general_purpose::STANDARD
            .decode(body)
            .is_err()
    {
        return Err("the event says isBase64Encoded but its body is not base64".into());
    }
    let header = |name: &str| ev.headers.get(name).and_then(|v| v.to_str().ok());
    let host = header("host").or(ev.request_context.domain_name.as_deref());
    let raw_path = ev.raw_path.as_deref().unwrap_or_default();
    let path = match ev.request_context.stage.as_deref() {
        _ if std::env::var_os("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH").is_some() => raw_path.into(),
        None | Some("$default") => raw_path.to_owned(),
        Some(stage) if raw_path.starts_with(&format!("/{stage}/")) => raw_path.to_owned(),
        Some(stage) => format!("/{stage}{raw_path}"),
    };
    let bad_uri = || "the event's host, path and query do not form a URI".to_owned();
    let mut uri = match host {
        None => url::Url::parse(&format!("http://localhost{path}"))
            .map_err(|_| bad_uri())?
            .path()
            .to_owned(),
        Some(host) => {
            let scheme = header("x-forwarded-proto").unwrap_or("https");
            url::Url::parse(&format!("{scheme}://{host}{path}"))
                .map_err(|_| bad_uri())?
                .to_string()
        }
    };
    if let Some(q) = ev.raw_query_string.as_deref().filter(|q| !q.is_empty()) {
        uri.push('?');
        uri.push_str(q);
    }
    http::Uri::try_from(uri).map_err(|_| bad_uri())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(
        raw_path: &str,
        query: &str,
        headers: serde_json::Value,
        body: (&str, bool),
    ) -> String {
        serde_json::json!({
            "version": "2.0", "routeKey": "POST /wechat/{app}", "rawPath": raw_path,
            "rawQueryString": query, "headers": headers, "pathParameters": {"app": "mp"},
            "requestContext": {"requestId": "r1", "stage": "$default",
                "http": {"method": "POST", "path": raw_path, "protocol": "HTTP/1.1",
                         "sourceIp": "192.0.2.1", "userAgent": "t"}},
            "body": body.0, "isBase64Encoded": body.1,
        })
        .to_string()
    }

    #[test]
    fn a_well_formed_event_converts() {
        let r = parse_event(&event(
            "/wechat/mp",
            "a=1&b=%20x",
            serde_json::json!({"host": "example.com", "content-type": "text/xml"}),
            ("PHhtbC8+", true),
        ))
        .unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/wechat/mp"));
        assert_eq!(
            r.query,
            vec![("a".into(), "1".into()), ("b".into(), " x".into())]
        );
        assert_eq!(r.body, b"<xml/>");
        assert_eq!(r.header("content-type"), Some("text/xml"));
        assert_eq!(r.request_id, "r1");
    }

    /// Found by fuzzing (fuzz/fuzz_targets/lambda_event.rs): each of these made lambda_http
    /// panic inside the conversion; now each is an error that says what is wrong.
    #[test]
    fn events_lambda_http_cannot_convert_are_refused_not_a_panic() {
        let no_headers = serde_json::json!({});
        for (what, ev) in [
            // The first the fuzzer found was a character http::Uri refuses in the query.
            (
                "quote in the query",
                event("/wechat/mp", "\"", no_headers.clone(), ("", false)),
            ),
            (
                "space in the query",
                event("/wechat/mp", "a=b c", no_headers.clone(), ("", false)),
            ),
            (
                "port-like path",
                event(":99999", "", no_headers.clone(), ("", false)),
            ),
            (
                "host with a space",
                event(
                    "/wechat/mp",
                    "",
                    serde_json::json!({"host": "a b"}),
                    ("", false),
                ),
            ),
            (
                "forwarded proto",
                event(
                    "/wechat/mp",
                    "",
                    serde_json::json!({"host": "example.com", "x-forwarded-proto": "a b"}),
                    ("", false),
                ),
            ),
            (
                "body not base64",
                event("/wechat/mp", "", no_headers.clone(), ("%%%", true)),
            ),
        ] {
            let e = parse_event(&ev).expect_err(what);
            assert!(!e.is_empty(), "{what}");
            // The function binaries' loop answers the same event 400, without calling the
            // handler and without the panic that would abort the instance.
            let payload = serde_json::from_str(&ev).unwrap();
            let ev = lambda_http::LambdaEvent::new(payload, lambda_http::Context::default());
            let out = futures_executor(answer(ev, &|_| async { panic!("not called") }));
            assert_eq!(out.status_code, 400, "{what}");
            let Some(Body::Text(body)) = out.body else {
                panic!("{what}: a text body")
            };
            assert!(body.contains("\"bad_event\""), "{what}: {body}");
        }
    }

    #[test]
    fn the_functions_loop_hands_a_good_event_to_the_handler_and_its_answer_back() {
        let ev = event(
            "/wechat/mp",
            "echostr=42",
            serde_json::json!({"host": "example.com"}),
            ("", false),
        );
        let ev = lambda_http::LambdaEvent::new(
            serde_json::from_str(&ev).unwrap(),
            lambda_http::Context::default(),
        );
        let out = futures_executor(answer(ev, &|req: Request| async move {
            assert_eq!(req.path, "/wechat/mp");
            Response::text(200, req.query("echostr").unwrap_or(""))
        }));
        assert_eq!(out.status_code, 200);
        assert!(!out.is_base64_encoded);
        assert!(matches!(out.body, Some(Body::Text(b)) if b == "42"));
    }

    fn futures_executor<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }
}
