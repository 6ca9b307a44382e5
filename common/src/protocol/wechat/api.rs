//! The WeChat server API client: stable access token, subscribe messages, customer-service
//! messages and `jscode2session`. Every answer is classified (reference §5) so that callers retry
//! what can succeed later and record what never will.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::protocol::secret::Secret;
use crate::protocol::wechat::app::AppKind;

pub mod transport;

pub use transport::Http;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// WeChat answered with a non-zero `errcode`.
    #[error("WeChat errcode {code}: {msg}")]
    Wechat { code: i64, msg: String },
    #[error("WeChat answered HTTP {0}")]
    Http(u16),
    #[error("WeChat did not answer in time")]
    Timeout,
    #[error("cannot reach WeChat ({0})")]
    Network(&'static str),
    #[error("unexpected answer from WeChat: {0}")]
    Protocol(String),
}

/// What to do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The access token is invalid or expired: refresh and retry once.
    TokenInvalid,
    /// May succeed later; `after_secs` is the least sensible wait.
    Retryable { after_secs: u64 },
    /// Will not succeed by retrying: record it with the reason.
    Permanent,
}

impl ApiError {
    pub fn errcode(&self) -> Option<i64> {
        match self {
            ApiError::Wechat { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Classification for business APIs (on the token endpoint itself 40001 means a wrong
    /// secret, see [`WechatApi::stable_token`]).
    pub fn class(&self) -> ErrorClass {
        match self {
            ApiError::Wechat { code, .. } => match code {
                40001 | 40014 | 42001 => ErrorClass::TokenInvalid,
                -1 => ErrorClass::Retryable { after_secs: 2 },
                45011 => ErrorClass::Retryable { after_secs: 60 },
                43108 => ErrorClass::Retryable { after_secs: 1 },
                _ => ErrorClass::Permanent,
            },
            ApiError::Http(s) if *s >= 500 || *s == 429 => ErrorClass::Retryable { after_secs: 2 },
            ApiError::Http(_) => ErrorClass::Permanent,
            ApiError::Timeout | ApiError::Network(_) => ErrorClass::Retryable { after_secs: 2 },
            ApiError::Protocol(_) => ErrorClass::Retryable { after_secs: 5 },
        }
    }

    /// Whether WeChat may have acted on the request although no answer says so: the request may
    /// have been sent before the connection broke or the time ran out, or a gateway gave up
    /// waiting for the backend. A refused connection and an errcode are definite answers.
    pub fn may_have_been_delivered(&self) -> bool {
        match self {
            ApiError::Timeout | ApiError::Protocol(_) | ApiError::Http(504) => true,
            ApiError::Network(what) => *what != CONNECT_FAILED,
            ApiError::Wechat { .. } | ApiError::Http(_) => false,
        }
    }

    /// A short reason for records and metrics: the errcode, or the transport failure.
    pub fn reason(&self) -> String {
        match self {
            ApiError::Wechat { code, .. } => code.to_string(),
            ApiError::Http(s) => format!("http_{s}"),
            ApiError::Timeout => "timeout".into(),
            ApiError::Network(_) => "network".into(),
            ApiError::Protocol(_) => "protocol".into(),
        }
    }
}

/// The one transport failure that proves the request never left: no connection was made.
const CONNECT_FAILED: &str = "connection failed";

/// Transport errors are rebuilt from their kind only: reqwest's own messages include the URL,
/// and WeChat URLs carry the access token or the app secret. A connect timeout counts as a
/// failed connection (nothing was sent), so `is_connect` is asked first.
fn transport(e: reqwest::Error) -> ApiError {
    if e.is_connect() {
        ApiError::Network(CONNECT_FAILED)
    } else if e.is_timeout() {
        ApiError::Timeout
    } else if e.is_body() || e.is_decode() {
        ApiError::Protocol("unreadable body".into())
    } else {
        ApiError::Network("request failed")
    }
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

/// WeChat's errmsg carries a request id (`rid: …`) and sometimes the offending field; it never
/// carries our secrets, but bound it anyway.
fn errmsg(s: &str) -> String {
    s.chars().take(160).collect()
}

/// A successful `jscode2session`. The session key stays server-side: it is never returned or
/// logged (`Secret`), and this service has no use for it beyond proving the exchange worked.
#[derive(Debug, Clone)]
pub struct Session {
    pub openid: String,
    pub unionid: Option<String>,
    pub session_key: Secret,
}

/// The longest a `stable_token` call may take, whatever `HTTP_TIMEOUT_MS` says: the refresher
/// holds the store lease for the whole call, and the lease ([`super::token`]) must outlive it,
/// or a second instance would refresh at the same time.
pub const TOKEN_CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct WechatApi {
    http: Http,
    base: String,
}

impl std::fmt::Debug for WechatApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatApi")
            .field("base", &self.base)
            .finish()
    }
}

impl WechatApi {
    pub fn new(http: Http, base: &str) -> Self {
        WechatApi {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// The HTTP client shared by the WeChat and IM clients (see [`transport`]): rustls with
    /// the compiled-in roots, pooled, created on the first request.
    pub fn http_client(timeout_ms: u64) -> Http {
        Http::new(timeout_ms)
    }

    /// The HTTP client handle (also the IM client's), to tell whether it has been built yet.
    pub fn http(&self) -> &Http {
        &self.http
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Value, ApiError> {
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(ApiError::Http(status));
        }
        let bytes = resp.bytes().await.map_err(transport)?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|_| ApiError::Protocol("body is not JSON".into()))?;
        let env: Envelope = serde_json::from_value(v.clone()).unwrap_or(Envelope {
            errcode: 0,
            errmsg: String::new(),
        });
        if env.errcode != 0 {
            return Err(ApiError::Wechat {
                code: env.errcode,
                msg: errmsg(&env.errmsg),
            });
        }
        Ok(v)
    }

    /// `cgi-bin/stable_token` in normal mode: idempotent while the token is valid, so instances
    /// never invalidate each other. `force_refresh` is never used: it is limited to 20 a day.
    pub async fn stable_token(
        &self,
        appid: &str,
        secret: &Secret,
    ) -> Result<(String, i64), ApiError> {
        let v = self
            .call(
                self.http
                    .post(format!("{}/cgi-bin/stable_token", self.base))
                    .timeout(TOKEN_CALL_TIMEOUT)
                    .json(&serde_json::json!({
                        "grant_type": "client_credential",
                        "appid": appid,
                        "secret": secret.expose(),
                        "force_refresh": false,
                    })),
            )
            .await?;
        let token = v["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::Protocol("no access_token in the answer".into()))?;
        let expires_in = v["expires_in"].as_i64().unwrap_or(7200).clamp(60, 7200);
        Ok((token.to_owned(), expires_in))
    }

    fn with_token(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .query(&[("access_token", token)])
    }

    /// Mini-program subscribe message; returns WeChat's msgid (a 64-bit number, kept as text).
    pub async fn send_subscribe(&self, token: &str, body: &Value) -> Result<String, ApiError> {
        let v = self
            .call(
                self.with_token("/cgi-bin/message/subscribe/send", token)
                    .json(body),
            )
            .await?;
        Ok(msgid(&v))
    }

    /// Official-account subscribe notification (订阅通知).
    pub async fn send_oa_subscribe(&self, token: &str, body: &Value) -> Result<String, ApiError> {
        let v = self
            .call(
                self.with_token("/cgi-bin/message/subscribe/bizsend", token)
                    .json(body),
            )
            .await?;
        Ok(msgid(&v))
    }

    /// Customer-service message (48-hour window).
    pub async fn send_custom(&self, token: &str, body: &Value) -> Result<(), ApiError> {
        self.call(
            self.with_token("/cgi-bin/message/custom/send", token)
                .json(body),
        )
        .await
        .map(|_| ())
    }

    /// A customer-service image: the bytes (checked by [`super::media::check`]) uploaded as
    /// temporary media (`cgi-bin/media/upload?type=image`, multipart field `media`); its
    /// `media_id`, valid 3 days.
    pub async fn upload_image(
        &self,
        token: &str,
        bytes: &[u8],
        format: super::media::ImageFormat,
    ) -> Result<String, ApiError> {
        let (content_type, body) = super::media::multipart(bytes, format);
        let v = self
            .call(
                self.with_token("/cgi-bin/media/upload", token)
                    .query(&[("type", "image")])
                    .header("content-type", content_type)
                    .body(body),
            )
            .await?;
        v["media_id"]
            .as_str()
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::Protocol("no media_id".into()))
    }

    /// The bytes behind a media URL (an agent's image in IM), at most `max` of them, with the
    /// content type they were served with. `Ok(None)` when there are more than `max`. `allowed`
    /// is asked about the URL finally answering (after redirects) before its body is read.
    pub async fn fetch_media(
        &self,
        url: &str,
        max: usize,
        allowed: impl Fn(&str) -> bool,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, ApiError> {
        let mut resp = self.http.get(url).send().await.map_err(transport)?;
        if !allowed(resp.url().as_str()) {
            return Err(ApiError::Protocol(
                "redirected off the allowed hosts".into(),
            ));
        }
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(ApiError::Http(status));
        }
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Ok(None);
        }
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut bytes = vec![];
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if bytes.len() + chunk.len() > max {
                return Ok(None);
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some((bytes, content_type)))
    }

    /// The official account's typing state towards a follower (`command` is `Typing` or
    /// `CancelTyping`): 45080 when no message was exchanged with them in the last 30 s, 45081
    /// when they already see it (it lasts 15 s).
    pub async fn typing(
        &self,
        token: &str,
        app: AppKind,
        openid: &str,
        command: &str,
    ) -> Result<(), ApiError> {
        // The mini program's is `custom/business/typing`, with the same body and rules.
        let path = match app {
            AppKind::Oa => "/cgi-bin/message/custom/typing",
            AppKind::Mp => "/cgi-bin/message/custom/business/typing",
        };
        self.call(
            self.with_token(path, token)
                .json(&serde_json::json!({ "touser": openid, "command": command })),
        )
        .await
        .map(|_| ())
    }

    /// Exchanges a `wx.login` code for the user's openid.
    pub async fn jscode2session(
        &self,
        appid: &str,
        secret: &Secret,
        code: &str,
    ) -> Result<Session, ApiError> {
        let v = self
            .call(
                self.http
                    .get(format!("{}/sns/jscode2session", self.base))
                    .query(&[
                        ("appid", appid),
                        ("secret", secret.expose()),
                        ("js_code", code),
                        ("grant_type", "authorization_code"),
                    ]),
            )
            .await?;
        let openid = v["openid"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::Protocol("no openid in the answer".into()))?;
        Ok(Session {
            openid: openid.to_owned(),
            unionid: v["unionid"].as_str().map(str::to_owned),
            session_key: Secret::new(v["session_key"].as_str().unwrap_or("")),
        })
    }
}

fn msgid(v: &Value) -> String {
    match &v["msgid"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wx(code: i64) -> ApiError {
        ApiError::Wechat {
            code,
            msg: String::new(),
        }
    }

    #[test]
    fn classification_follows_the_reference_tables() {
        for c in [40001, 40014, 42001] {
            assert_eq!(wx(c).class(), ErrorClass::TokenInvalid);
        }
        assert_eq!(wx(-1).class(), ErrorClass::Retryable { after_secs: 2 });
        assert_eq!(wx(45011).class(), ErrorClass::Retryable { after_secs: 60 });
        for c in [
            43101, 40003, 40037, 47003, 41030, 45009, 45015, 45047, 48001,
        ] {
            assert_eq!(wx(c).class(), ErrorClass::Permanent, "{c}");
        }
        assert!(matches!(
            ApiError::Http(502).class(),
            ErrorClass::Retryable { .. }
        ));
        assert_eq!(ApiError::Http(404).class(), ErrorClass::Permanent);
        assert!(matches!(
            ApiError::Timeout.class(),
            ErrorClass::Retryable { .. }
        ));
    }

    #[test]
    fn only_answers_and_refused_connections_are_definite() {
        for e in [
            ApiError::Timeout,
            ApiError::Network("request failed"),
            ApiError::Protocol("body is not JSON".into()),
            ApiError::Http(504),
        ] {
            assert!(e.may_have_been_delivered(), "{e:?}");
        }
        for e in [
            wx(-1),
            wx(45009),
            ApiError::Network(CONNECT_FAILED),
            ApiError::Http(502),
            ApiError::Http(503),
        ] {
            assert!(!e.may_have_been_delivered(), "{e:?}");
        }
    }
}
