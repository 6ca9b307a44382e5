//! Framework-neutral HTTP request and response, so the handlers are plain functions that the
//! Lambda binaries, `wxim serve`/`wxim invoke` and the tests all call the same way.

#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The path as routed, e.g. `/wechat/mp` (no stage prefix, no query).
    pub path: String,
    /// Query parameters, percent-decoded exactly once, in arrival order.
    pub query: Vec<(String, String)>,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Route parameters (`{app}`, `{id}`) when the router supplies them.
    pub path_params: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// API Gateway's request id (or a generated one locally), carried into every log line.
    pub request_id: String,
    /// The caller the platform has already authenticated: the IAM principal API Gateway's
    /// `AWS_IAM` authorizer verified, or the local operator (`wxim notify`). `None` for anonymous
    /// requests, which the admin routes refuse unless they carry the configured bearer token.
    pub principal: Option<String>,
}

impl Request {
    pub fn new(method: &str, path_and_query: &str) -> Self {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        Request {
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
            query: parse_query(query),
            ..Default::default()
        }
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A route parameter, falling back to the path segment after `prefix` so that a request
    /// routed without parameters (`cargo lambda watch`, a stage-prefixed path) still resolves.
    pub fn path_param(&self, name: &str, prefix: &str) -> Option<String> {
        if let Some((_, v)) = self.path_params.iter().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        let idx = self.path.find(prefix)?;
        let rest = &self.path[idx + prefix.len()..];
        let seg = rest.trim_start_matches('/').split('/').next()?;
        (!seg.is_empty()).then(|| seg.to_owned())
    }
}

pub fn parse_query(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
        }
    }

    pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body)
    }

    pub fn xml(body: impl Into<Vec<u8>>) -> Self {
        Self::new(200, "application/xml; charset=utf-8", body)
    }

    pub fn json_raw(status: u16, body: &str) -> Self {
        Self::new(status, "application/json", body)
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self::new(status, "application/json", value.to_string())
    }

    /// Every refusal has the same shape: a JSON object with a stable `error` code and a readable
    /// `message`, never containing input values or secrets.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Self::json(
            status,
            &serde_json::json!({ "error": code, "message": message }),
        )
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("<binary>")
    }

    /// The response as one JSON object (`statusCode`, `headers`, `body`), the way `wxim invoke`
    /// prints it and API Gateway would see it.
    pub fn to_invoke_json(&self) -> serde_json::Value {
        let headers: serde_json::Map<String, serde_json::Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::json!({
            "statusCode": self.status,
            "headers": headers,
            "body": String::from_utf8_lossy(&self.body),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_decoded_once() {
        let r = Request::new("get", "/wechat/mp?a=1%2B1&b=x+y&c=%2525");
        assert_eq!(r.query("a"), Some("1+1"));
        assert_eq!(r.query("b"), Some("x y"));
        assert_eq!(r.query("c"), Some("%25"));
        assert_eq!(r.method, "GET");
    }

    #[test]
    fn path_param_falls_back_to_segment() {
        let r = Request::new("GET", "/dev/wechat/oa");
        assert_eq!(r.path_param("app", "/wechat/").as_deref(), Some("oa"));
        let mut r = Request::new("GET", "/x");
        r.path_params.push(("app".into(), "mp".into()));
        assert_eq!(r.path_param("app", "/wechat/").as_deref(), Some("mp"));
        assert_eq!(
            Request::new("GET", "/wechat/").path_param("app", "/wechat/"),
            None
        );
    }
}
