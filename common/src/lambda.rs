//! The thin glue between `lambda_http` and the framework-neutral handlers: every function binary
//! and `wxim invoke` convert through here, so an API Gateway event means the same thing in all
//! three places.

use lambda_http::Body;
use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};

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
/// The event is read field by field ([`from_event`]) rather than through lambda_http's
/// `http::Request`: that conversion builds and parses a URI, a query map and four extensions the
/// handlers never read, and it panics on events whose host, path and query do not make a URI or
/// whose base64 body is not (aws-lambda-rust-runtime#461; `panic = "abort"` would take the
/// instance down). Here the only event refused is one whose body says base64 and is not: 400
/// `bad_event`, and the instance goes on.
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
    match from_event(payload, &context.request_id) {
        Ok(req) => gateway_answer(handler(req).await),
        Err(why) => {
            tracing::warn!(request_id = %context.request_id, decision = "bad_event", reason = %why);
            gateway_answer(Response::error(400, "bad_event", &why))
        }
    }
}

/// A handler response as API Gateway takes it (payload v2): UTF-8 bodies go as text, so that
/// `echostr` and XML replies reach WeChat byte for byte, never JSON-quoted or base64-encoded;
/// anything else as base64. A header no HTTP response can carry is left out, not the answer.
fn gateway_answer(resp: Response) -> ApiGatewayV2httpResponse {
    use lambda_http::http::{HeaderName, HeaderValue};

    let mut out = ApiGatewayV2httpResponse::default();
    out.status_code = i64::from(resp.status);
    for (k, v) in &resp.headers {
        match (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            (Ok(k), Ok(v)) => {
                out.headers.append(k, v);
            }
            _ => tracing::warn!(decision = "header_dropped", header = %k.escape_debug()),
        }
    }
    match String::from_utf8(resp.body) {
        Ok(s) if s.is_empty() => {}
        Ok(s) => out.body = Some(Body::Text(s)),
        Err(e) => {
            out.is_base64_encoded = true;
            out.body = Some(Body::Binary(e.into_bytes()));
        }
    }
    out
}

/// The handlers' request from an API Gateway event (HTTP API payload v2), as lambda_http would
/// present it: the raw path (no stage prefix), the query parsed from `rawQueryString` exactly
/// once, header values that are text, the payload's `cookies` as one `cookie` header, the body
/// base64-decoded when the event says so, API Gateway's request id (else the invocation's,
/// `fallback_id`) and the caller an AWS_IAM authorizer verified.
pub fn from_event(ev: ApiGatewayV2httpRequest, fallback_id: &str) -> Result<Request, String> {
    use base64::Engine as _;

    let body = match ev.body {
        None => Vec::new(),
        Some(b) if ev.is_base64_encoded => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|_| "the event says isBase64Encoded but its body is not base64".to_owned())?,
        Some(b) => b.into_bytes(),
    };
    let mut headers: Vec<(String, String)> = ev
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    if let Some(cookies) = ev.cookies.filter(|c| !c.is_empty()) {
        let joined = cookies.join("; ");
        if lambda_http::http::HeaderValue::try_from(joined.as_str()).is_ok() {
            headers.retain(|(k, _)| k != "cookie");
            headers.push(("cookie".into(), joined));
        }
    }
    let ctx = ev.request_context;
    let principal = ctx
        .authorizer
        .and_then(|a| a.iam)
        .and_then(|iam| iam.user_arn.or(iam.caller_id))
        .filter(|p| !p.is_empty());
    Ok(Request {
        method: ctx.http.method.as_str().to_owned(),
        // API Gateway always sends rawPath; an event file without one is the root.
        path: ev
            .raw_path
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".into()),
        query: ev
            .raw_query_string
            .as_deref()
            .map(parse_query)
            .unwrap_or_default(),
        headers,
        path_params: ev.path_parameters.into_iter().collect(),
        body,
        request_id: ctx.request_id.unwrap_or_else(|| fallback_id.to_owned()),
        principal,
    })
}

/// Parses an API Gateway event file (as `cargo lambda invoke --data-file` would send it).
pub fn parse_event(json: &str) -> Result<Request, String> {
    let ev: ApiGatewayV2httpRequest = serde_json::from_str(json)
        .map_err(|e| format!("not an API Gateway HTTP API (payload v2) event: {e}"))?;
    let mut r = from_event(ev, "")?;
    if r.request_id.is_empty() {
        r.request_id = "local-invoke".into();
    }
    Ok(r)
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

    /// Found by fuzzing (fuzz/fuzz_targets/lambda_event.rs): each of these made lambda_http's
    /// own conversion panic; read field by field they are ordinary requests, handed on as sent.
    #[test]
    fn events_lambda_http_could_not_convert_are_handed_on_as_sent() {
        let no_headers = serde_json::json!({});
        for (what, ev, path, query) in [
            // The first the fuzzer found was a character http::Uri refuses in the query.
            (
                "quote in the query",
                event("/wechat/mp", "a=\"", no_headers.clone(), ("", false)),
                "/wechat/mp",
                vec![("a".to_owned(), "\"".to_owned())],
            ),
            (
                "space in the query",
                event("/wechat/mp", "a=b c", no_headers.clone(), ("", false)),
                "/wechat/mp",
                vec![("a".to_owned(), "b c".to_owned())],
            ),
            (
                "port-like path",
                event(":99999", "", no_headers.clone(), ("", false)),
                ":99999",
                vec![],
            ),
            (
                "host with a space",
                event(
                    "/wechat/mp",
                    "",
                    serde_json::json!({"host": "a b"}),
                    ("", false),
                ),
                "/wechat/mp",
                vec![],
            ),
            (
                "forwarded proto",
                event(
                    "/wechat/mp",
                    "",
                    serde_json::json!({"host": "example.com", "x-forwarded-proto": "a b"}),
                    ("", false),
                ),
                "/wechat/mp",
                vec![],
            ),
        ] {
            let r = parse_event(&ev).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!((r.path.as_str(), &r.query), (path, &query), "{what}");
            let payload = serde_json::from_str(&ev).unwrap();
            let ev = lambda_http::LambdaEvent::new(payload, lambda_http::Context::default());
            let out = futures_executor(answer(ev, &|req: Request| async move {
                Response::text(200, req.path)
            }));
            assert_eq!(out.status_code, 200, "{what}");
            assert!(
                matches!(out.body, Some(Body::Text(b)) if b == path),
                "{what}"
            );
        }
    }

    /// A body that says base64 and is not: refused with what is wrong, by `wxim invoke` and by
    /// the functions' loop (400, the handler not called), never a panic.
    #[test]
    fn an_event_whose_base64_body_is_not_is_refused() {
        let ev = event("/wechat/mp", "", serde_json::json!({}), ("%%%", true));
        let e = parse_event(&ev).expect_err("not base64");
        assert!(e.contains("base64"), "{e}");
        let payload = serde_json::from_str(&ev).unwrap();
        let ev = lambda_http::LambdaEvent::new(payload, lambda_http::Context::default());
        let out = futures_executor(answer(ev, &|_| async { panic!("not called") }));
        assert_eq!(out.status_code, 400);
        let Some(Body::Text(body)) = out.body else {
            panic!("a text body")
        };
        assert!(body.contains("\"bad_event\""), "{body}");
    }

    #[test]
    fn cookies_become_one_header_and_the_iam_caller_the_principal() {
        let mut ev: serde_json::Value = serde_json::from_str(&event(
            "/notify",
            "",
            serde_json::json!({"cookie": "stale=1", "x-bin": "a"}),
            ("", false),
        ))
        .unwrap();
        ev["cookies"] = serde_json::json!(["a=1", "b=2"]);
        ev["requestContext"]["authorizer"] =
            serde_json::json!({"iam": {"userArn": "arn:aws:iam::123456789012:user/ops"}});
        let r = parse_event(&ev.to_string()).unwrap();
        assert_eq!(r.header("cookie"), Some("a=1; b=2"));
        assert_eq!(r.headers.iter().filter(|(k, _)| k == "cookie").count(), 1);
        assert_eq!(
            r.principal.as_deref(),
            Some("arn:aws:iam::123456789012:user/ops")
        );
        ev["requestContext"]["authorizer"] = serde_json::json!({"iam": {"userArn": ""}});
        assert_eq!(parse_event(&ev.to_string()).unwrap().principal, None);
    }

    #[test]
    fn answers_carry_text_as_text_bytes_as_base64_and_drop_an_impossible_header() {
        let mut resp = Response::text(200, "<xml/>");
        resp.headers.push(("bad header".into(), "x".into()));
        let out = gateway_answer(resp);
        assert_eq!(out.status_code, 200);
        assert!(!out.is_base64_encoded);
        assert!(matches!(out.body, Some(Body::Text(ref b)) if b == "<xml/>"));
        assert!(out.headers.get("content-type").is_some());
        assert_eq!(out.headers.len(), 1);
        let bytes = Response {
            status: 200,
            headers: vec![],
            body: vec![0xff, 0x00],
        };
        let out = gateway_answer(bytes);
        assert!(out.is_base64_encoded);
        assert!(matches!(out.body, Some(Body::Binary(ref b)) if b == &[0xff, 0x00]));
        let empty = gateway_answer(Response {
            status: 204,
            headers: vec![],
            body: vec![],
        });
        assert_eq!((empty.status_code, empty.body), (204, None));
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
