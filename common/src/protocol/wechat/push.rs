//! Opening a WeChat push: which signature to check, whether to decrypt, and the typed message
//! inside (reference §1, §2.5). Everything here is pure; the handler decides what to store.

use super::app::WechatApp;
use super::crypto::{self, CryptoError};
use super::message::ParseError;
use super::message::{self, Format, Message};
use super::signature;
use super::xml;
use crate::http::Request;

/// Bodies above this are refused before any parsing (WeChat's own pushes are a few KB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No `encrypt_type`, or `raw`: the body is the message, `signature` authenticates it.
    Plain,
    /// `encrypt_type=aes` (compatible or safe mode): only the decrypted payload counts and
    /// `msg_signature` authenticates it.
    Aes,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Aes => "aes",
        }
    }
}

/// A verified, decrypted and parsed push.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub mode: Mode,
    pub format: Format,
    pub message: Message,
    pub timestamp: String,
    pub nonce: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("request body exceeds {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("missing query parameter {0}")]
    MissingParam(&'static str),
    #[error("signature does not match")]
    BadSignature,
    #[error("timestamp is outside the accepted window (a replayed or delayed push)")]
    StaleTimestamp,
    #[error(
        "plaintext push refused: this app has an EncodingAESKey, so pushes must be encrypted (set the ALLOW_PLAINTEXT variable while switching modes)"
    )]
    PlaintextRefused,
    #[error("unsupported encrypt_type")]
    UnsupportedEncryptType,
    #[error("encrypted push received but no EncodingAESKey is configured for this app")]
    NoAesKey,
    #[error("malformed envelope: {0}")]
    Envelope(ParseError),
    #[error("cannot decrypt: {0}")]
    Crypto(CryptoError),
    #[error("malformed message: {0}")]
    Message(ParseError),
}

impl PushError {
    pub fn status(&self) -> u16 {
        match self {
            PushError::TooLarge => 413,
            PushError::BadSignature
            | PushError::StaleTimestamp
            | PushError::PlaintextRefused
            | PushError::Crypto(CryptoError::AppIdMismatch) => 403,
            _ => 400,
        }
    }

    /// Stable machine-readable code for the error body and the log line.
    pub fn code(&self) -> &'static str {
        match self {
            PushError::TooLarge => "body_too_large",
            PushError::MissingParam(_) => "missing_parameter",
            PushError::BadSignature => "bad_signature",
            PushError::StaleTimestamp => "stale_timestamp",
            PushError::PlaintextRefused => "plaintext_refused",
            PushError::UnsupportedEncryptType => "unsupported_encrypt_type",
            PushError::NoAesKey => "aes_not_configured",
            PushError::Envelope(ParseError::Doctype) | PushError::Message(ParseError::Doctype) => {
                "doctype_refused"
            }
            PushError::Envelope(_) => "malformed_envelope",
            PushError::Crypto(CryptoError::AppIdMismatch) => "appid_mismatch",
            PushError::Crypto(_) => "bad_ciphertext",
            PushError::Message(_) => "malformed_message",
        }
    }
}

fn param<'a>(req: &'a Request, name: &'static str) -> Result<&'a str, PushError> {
    req.query(name)
        .filter(|v| !v.is_empty())
        .ok_or(PushError::MissingParam(name))
}

/// GET URL verification: the `echostr` to answer when the signature holds. In every mode the
/// echostr is plaintext for official accounts and mini programs (only WeCom encrypts it).
pub fn verify_url<'a>(app: &WechatApp, req: &'a Request) -> Result<&'a str, PushError> {
    let sig = param(req, "signature")?;
    let ts = param(req, "timestamp")?;
    let nonce = param(req, "nonce")?;
    let echostr = param(req, "echostr")?;
    if !signature::verify(sig, &[app.token.expose(), ts, nonce]) {
        return Err(PushError::BadSignature);
    }
    Ok(echostr)
}

/// POST: checks the right signature for the mode, decrypts when needed, and parses. With
/// `window_secs > 0` the push's timestamp must be within that many seconds of `now`.
pub fn open(
    app: &WechatApp,
    req: &Request,
    now: i64,
    window_secs: i64,
) -> Result<Inbound, PushError> {
    if req.body.len() > MAX_BODY_BYTES {
        return Err(PushError::TooLarge);
    }
    let ts = param(req, "timestamp")?;
    let nonce = param(req, "nonce")?;
    let token = app.token.expose();
    let mode = match req.query("encrypt_type") {
        None | Some("") | Some("raw") => Mode::Plain,
        Some(t) if t.eq_ignore_ascii_case("aes") => Mode::Aes,
        Some(_) => return Err(PushError::UnsupportedEncryptType),
    };
    let (format, opened) = match mode {
        Mode::Plain => {
            let sig = param(req, "signature")?;
            if !signature::verify(sig, &[token, ts, nonce]) {
                return Err(PushError::BadSignature);
            }
            if !app.allow_plaintext {
                return Err(PushError::PlaintextRefused);
            }
            let format = message::detect_format(&req.body).map_err(PushError::Message)?;
            (format, None)
        }
        Mode::Aes => {
            // `signature` is also present in safe mode but only `msg_signature` covers the
            // ciphertext; checking the wrong one is the classic peer bug.
            let msg_sig = param(req, "msg_signature")?;
            let crypto = app.crypto.as_ref().ok_or(PushError::NoAesKey)?;
            let env = message::parse_envelope(&req.body).map_err(PushError::Envelope)?;
            let encrypt = env
                .encrypt
                .as_deref()
                .filter(|e| !e.is_empty())
                .ok_or(PushError::Envelope(ParseError::Missing("Encrypt")))?;
            if !signature::verify(msg_sig, &[token, ts, nonce, encrypt]) {
                return Err(PushError::BadSignature);
            }
            let opened = crypto
                .decrypt_in_place(encrypt)
                .map_err(PushError::Crypto)?;
            (env.format, Some(opened))
        }
    };
    // Checked once the request is known to be WeChat's, so a forger learns nothing from it.
    if window_secs > 0 {
        let t: i64 = ts.parse().map_err(|_| PushError::StaleTimestamp)?;
        if now.abs_diff(t) > window_secs.unsigned_abs() {
            return Err(PushError::StaleTimestamp);
        }
    }
    let body = opened.as_ref().map_or(&req.body[..], crypto::Opened::msg);
    let message = message::parse_message(body).map_err(PushError::Message)?;
    Ok(Inbound {
        mode,
        format,
        message,
        timestamp: ts.to_owned(),
        nonce: nonce.to_owned(),
    })
}

/// How a push is delivered, as configured in the WeChat console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Plain,
    /// Compatible mode: the plaintext fields plus an `Encrypt` element.
    Compat,
    /// Safe mode: only `ToUserName` and `Encrypt`.
    Safe,
}

impl Delivery {
    pub fn parse(s: &str) -> Option<Delivery> {
        match s {
            "plain" => Some(Delivery::Plain),
            "compat" => Some(Delivery::Compat),
            "safe" | "aes" => Some(Delivery::Safe),
            _ => None,
        }
    }
}

/// A push as WeChat would send it: query parameters and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPush {
    pub query: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl SignedPush {
    pub fn query_string(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.query.iter())
            .finish()
    }
}

/// The inverse of [`open`]: signs (and in compat/safe mode encrypts) a plaintext message for an
/// app. Used by `wxim sign`, the demo and the tests to produce exactly what WeChat sends.
pub fn seal(
    app: &WechatApp,
    plaintext: &[u8],
    delivery: Delivery,
    timestamp: &str,
    nonce: &str,
) -> Result<SignedPush, String> {
    let token = app.token.expose();
    let signature = signature::sign(&[token, timestamp, nonce]);
    let mut query = vec![
        ("signature".to_owned(), signature),
        ("timestamp".to_owned(), timestamp.to_owned()),
        ("nonce".to_owned(), nonce.to_owned()),
    ];
    let msg = message::parse_message(plaintext)
        .map_err(|e| format!("the body is not a WeChat message: {e}"))?;
    query.push(("openid".to_owned(), msg.from_user.clone()));
    if delivery == Delivery::Plain {
        return Ok(SignedPush {
            query,
            body: plaintext.to_vec(),
        });
    }
    let crypto = app
        .crypto
        .as_ref()
        .ok_or_else(|| format!("no EncodingAESKey is configured for {}", app.kind))?;
    let encrypt = crypto.encrypt(plaintext);
    let msg_signature = signature::sign(&[token, timestamp, nonce, &encrypt]);
    query.push(("encrypt_type".to_owned(), "aes".to_owned()));
    query.push(("msg_signature".to_owned(), msg_signature));
    let body = match (delivery, msg.format) {
        // The account id is the message's own (any text a parser accepted), so it is written
        // as escaped CDATA: a `]]>` in it once broke the envelope (found by fuzzing).
        (Delivery::Safe, Format::Xml) => format!(
            "<xml><ToUserName>{}</ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>",
            xml::cdata(&msg.to_user)
        )
        .into_bytes(),
        (Delivery::Safe, Format::Json) => {
            serde_json::json!({ "ToUserName": msg.to_user, "Encrypt": encrypt })
                .to_string()
                .into_bytes()
        }
        (_, Format::Xml) => {
            let text = std::str::from_utf8(plaintext).map_err(|_| "the body is not UTF-8")?;
            let end = text.rfind("</xml>").ok_or("the XML body has no </xml>")?;
            format!(
                "{}<Encrypt><![CDATA[{encrypt}]]></Encrypt>{}",
                &text[..end],
                &text[end..]
            )
            .into_bytes()
        }
        (_, Format::Json) => {
            let mut v: serde_json::Value =
                serde_json::from_slice(plaintext).map_err(|_| "the JSON body is malformed")?;
            v["Encrypt"] = serde_json::Value::String(encrypt);
            v.to_string().into_bytes()
        }
    };
    Ok(SignedPush { query, body })
}

/// The plaintext inside a push body in any mode, for re-signing: a safe-mode envelope or a
/// compat body is decrypted with the app's key.
pub fn plaintext_of(app: &WechatApp, body: &[u8]) -> Result<Vec<u8>, String> {
    let env = message::parse_envelope(body).ok();
    let encrypt = env.as_ref().and_then(|e| e.encrypt.clone());
    match (encrypt, &app.crypto) {
        (Some(enc), Some(crypto)) => crypto.decrypt(&enc).map_err(|e| {
            format!("cannot decrypt the body with the configured {} key ({e}); put the plaintext message in the body instead", app.kind)
        }),
        (Some(_), None) if message::parse_message(body).is_err() => Err(format!(
            "the body is encrypted but no EncodingAESKey is configured for {}",
            app.kind
        )),
        _ => Ok(body.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::secret::Secret;
    use crate::protocol::wechat::app::AppKind;
    use crate::protocol::wechat::crypto::MessageCrypto;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const APPID: &str = "wx1234567890abcdef";

    fn app() -> WechatApp {
        WechatApp {
            kind: AppKind::Mp,
            appid: APPID.into(),
            secret: Secret::new("s"),
            token: Secret::new("wxpushtoken2024"),
            aes_key: Some(Secret::new(KEY)),
            crypto: Some(MessageCrypto::new(KEY, APPID).unwrap()),
            allow_plaintext: true,
        }
    }

    fn reopen(app: &WechatApp, signed: &SignedPush) -> Result<Inbound, PushError> {
        let req = Request::new("POST", &format!("/wechat/mp?{}", signed.query_string()))
            .with_body(signed.body.clone());
        open(app, &req, 1_700_000_000, 300)
    }

    /// Found by fuzzing (fuzz/fuzz_targets/push_open.rs, the sealed round trip): an account id
    /// holding `]]>` closed the safe-mode envelope's CDATA early, and the `&` after it made the
    /// envelope malformed, so a push `seal` produced did not open.
    #[test]
    fn a_sealed_safe_xml_push_opens_whatever_its_account_id() {
        let app = app();
        let plain = "<xml><ToUserName><![CDATA[gh_]]]]><![CDATA[>&x]]></ToUserName><FromUserName><![CDATA[o1]]></FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi]]></Content></xml>";
        let msg = message::parse_message(plain.as_bytes()).unwrap();
        assert_eq!(msg.to_user, "gh_]]>&x");
        let signed = seal(&app, plain.as_bytes(), Delivery::Safe, "1700000000", "n").unwrap();
        let inbound = reopen(&app, &signed).expect("the sealed push opens");
        assert_eq!(inbound.message, msg);
        let env = message::parse_envelope(&signed.body).unwrap();
        assert_eq!(env.to_user.as_deref(), Some("gh_]]>&x"));
    }

    #[test]
    fn sealed_pushes_open_in_every_delivery_mode() {
        let app = app();
        let xml = "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[o1]]></FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>";
        let json = r#"{"ToUserName":"gh_1","FromUserName":"o1","CreateTime":1,"MsgType":"event","Event":"subscribe"}"#;
        for plain in [xml, json] {
            let msg = message::parse_message(plain.as_bytes()).unwrap();
            for d in [Delivery::Plain, Delivery::Compat, Delivery::Safe] {
                let signed = seal(&app, plain.as_bytes(), d, "1700000000", "n").unwrap();
                assert_eq!(reopen(&app, &signed).unwrap().message, msg, "{d:?}");
                assert_eq!(plaintext_of(&app, &signed.body).unwrap(), plain.as_bytes());
            }
        }
    }
}
