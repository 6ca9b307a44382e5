//! `wxim sign`: rewrites an API Gateway event so that it is a valid delivery for the configured
//! app (fresh timestamp and nonce, signatures, and the body re-encrypted in compat/safe mode).

use common::config::{AppKind, Config};
use common::protocol::wechat::push::{self, Delivery};
use common::protocol::wechat::signature;
use serde_json::Value;

pub struct SignOptions {
    pub delivery: Option<Delivery>,
    pub timestamp: Option<String>,
    pub nonce: Option<String>,
    /// Give a WeChat message a new `CreateTime` (the timestamp) and, when it has one, a new
    /// `MsgId`, so that the signed copy is a new delivery rather than a retry of the original.
    pub fresh: bool,
}

/// Rewrites the identity of a plaintext message (XML or JSON): `CreateTime` to `ts`, `MsgId` to
/// a random 17-digit id where present.
fn refresh_identity(plaintext: &[u8], ts: &str) -> Result<Vec<u8>, String> {
    let msg_id = format!("9{}", random_digits(16));
    let text = std::str::from_utf8(plaintext).map_err(|_| "the message is not UTF-8")?;
    if text.trim_start().starts_with('{') {
        let mut v: Value =
            serde_json::from_str(text).map_err(|e| format!("the message is not JSON: {e}"))?;
        let t: i64 = ts.parse().map_err(|_| "--timestamp must be unix seconds")?;
        v["CreateTime"] = Value::from(t);
        if v.get("MsgId").is_some() {
            v["MsgId"] = Value::from(msg_id.parse::<u64>().unwrap_or(0));
        }
        return serde_json::to_vec(&v).map_err(|e| e.to_string());
    }
    let mut out = text.to_owned();
    for (tag, value) in [("CreateTime", ts), ("MsgId", msg_id.as_str())] {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        if let Some(a) = out.find(&open)
            && let Some(len) = out[a..].find(&close)
        {
            out.replace_range(a + open.len()..a + len, value);
        }
    }
    Ok(out.into_bytes())
}

fn random_digits(n: usize) -> String {
    let mut b = vec![0u8; n];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| char::from(b'0' + x % 10)).collect()
}

fn now() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .to_string()
}

fn body_of(event: &Value) -> Result<Vec<u8>, String> {
    let body = event.get("body").and_then(Value::as_str).unwrap_or("");
    if event.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| "isBase64Encoded is true but body is not base64".to_owned())
    } else {
        Ok(body.as_bytes().to_vec())
    }
}

fn set_query(event: &mut Value, query: &[(String, String)]) {
    let qs = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query.iter())
        .finish();
    event["rawQueryString"] = Value::String(qs);
    let map: serde_json::Map<String, Value> = query
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    event["queryStringParameters"] = Value::Object(map);
}

/// Signs an IM callback: SdkAppid, and with a callback token a fresh RequestTime and its Sign.
fn sign_im(config: &Config, event: &mut Value, opts: &SignOptions) -> Result<String, String> {
    let im = config
        .im
        .as_ref()
        .ok_or("IM is not configured (set IM_SDKAPPID and IM_SECRET_KEY)")?;
    let mut query: Vec<(String, String)> = event
        .get("rawQueryString")
        .and_then(Value::as_str)
        .map(common::http::parse_query)
        .unwrap_or_default();
    query.retain(|(k, _)| !matches!(k.as_str(), "SdkAppid" | "Sign" | "RequestTime"));
    query.insert(0, ("SdkAppid".into(), im.sdkappid.to_string()));
    let what = match &im.callback_token {
        Some(token) => {
            let ts = opts.timestamp.clone().unwrap_or_else(now);
            query.push(("RequestTime".into(), ts.clone()));
            query.push((
                "Sign".into(),
                common::protocol::im::usersig::callback_sign(token.expose(), &ts),
            ));
            format!("signed IM callback (RequestTime {ts})")
        }
        None => "set SdkAppid (no IM_CALLBACK_TOKEN, so no Sign)".to_owned(),
    };
    set_query(event, &query);
    Ok(what)
}

/// The validity the official UserSig libraries default to (180 days).
pub const USERSIG_EXPIRE_SECS: i64 = 180 * 86_400;

/// Refreshes a bind request's `userSig` for its `userId` (issued at the timestamp, or now), so
/// that a sample stays valid after its original sig expired.
fn sign_bind(config: &Config, event: &mut Value, opts: &SignOptions) -> Result<String, String> {
    let im = config
        .im
        .as_ref()
        .ok_or("IM is not configured (set IM_SDKAPPID and IM_SECRET_KEY)")?;
    let mut body: Value = serde_json::from_slice(&body_of(event)?)
        .map_err(|_| "the body of a /bind event must be JSON".to_owned())?;
    let user = body["userId"]
        .as_str()
        .ok_or("the /bind body has no userId")?
        .to_owned();
    let ts = opts.timestamp.clone().unwrap_or_else(now);
    let time: i64 = ts.parse().map_err(|_| "--timestamp must be unix seconds")?;
    body["userSig"] = Value::String(common::protocol::im::usersig::generate(
        im.sdkappid,
        im.secret_key.expose(),
        &user,
        USERSIG_EXPIRE_SECS,
        time,
    ));
    event["body"] = Value::String(body.to_string());
    event["isBase64Encoded"] = Value::Bool(false);
    Ok(format!(
        "signed a UserSig for {user} (issued at {ts}, valid 180 days)"
    ))
}

/// Signs a WeChat event (GET verification or POST push) for the app its path names, an IM
/// callback, or a bind request's UserSig.
pub fn sign_event(
    config: &Config,
    event: &mut Value,
    opts: &SignOptions,
) -> Result<String, String> {
    let path = event
        .get("rawPath")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if path.ends_with("/im/callback") {
        return sign_im(config, event, opts);
    }
    if path.ends_with("/bind") {
        return sign_bind(config, event, opts);
    }
    let name = event
        .pointer("/pathParameters/app")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| path.rsplit('/').next().map(str::to_owned))
        .unwrap_or_default();
    let kind = AppKind::parse(&name)
        .filter(|_| path.contains("/wechat/"))
        .ok_or("only WeChat events (rawPath /wechat/mp or /wechat/oa), IM callbacks (/im/callback) and bind requests (/bind) can be signed")?;
    let app = config.app(kind).ok_or_else(|| {
        format!(
            "WeChat app {kind} is not configured (set WECHAT_{}_APPID etc.)",
            kind.as_str().to_uppercase()
        )
    })?;
    let ts = opts.timestamp.clone().unwrap_or_else(now);
    let nonce = opts.nonce.clone().unwrap_or_else(|| random_digits(10));
    let method = event
        .pointer("/requestContext/http/method")
        .and_then(Value::as_str)
        .unwrap_or("POST")
        .to_ascii_uppercase();
    let old_query: Vec<(String, String)> = event
        .get("rawQueryString")
        .and_then(Value::as_str)
        .map(common::http::parse_query)
        .unwrap_or_default();
    let old = |k: &str| {
        old_query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    if method == "GET" {
        let echostr = old("echostr").unwrap_or_else(|| random_digits(19));
        let sig = signature::sign(&[app.token.expose(), &ts, &nonce]);
        set_query(
            event,
            &[
                ("signature".into(), sig),
                ("echostr".into(), echostr),
                ("timestamp".into(), ts),
                ("nonce".into(), nonce),
            ],
        );
        return Ok(format!("signed GET verification for {kind}"));
    }
    let body = body_of(event)?;
    let mut plaintext = push::plaintext_of(app, &body)?;
    if opts.fresh {
        plaintext = refresh_identity(&plaintext, &ts)?;
    }
    let delivery = opts
        .delivery
        .unwrap_or(if old("encrypt_type").as_deref() == Some("aes") {
            if common::protocol::wechat::message::parse_message(&body).is_ok() {
                Delivery::Compat
            } else {
                Delivery::Safe
            }
        } else {
            Delivery::Plain
        });
    let signed = push::seal(app, &plaintext, delivery, &ts, &nonce)?;
    set_query(event, &signed.query);
    event["body"] =
        Value::String(String::from_utf8(signed.body).map_err(|_| "the signed body is not UTF-8")?);
    event["isBase64Encoded"] = Value::Bool(false);
    Ok(format!("signed POST push for {kind} ({delivery:?} mode)"))
}
