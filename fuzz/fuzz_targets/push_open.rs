//! Opening a push for the configured mini program (events/sample.env): signature, timestamp
//! window, envelope, base64, AES, the 32-byte PKCS#7 padding, the length field, the appid tail,
//! then the message parser. Four shapes of input, chosen by the first byte:
//!
//! 0. raw: a query string and a body, as anyone on the internet can send them (also the GET
//!    URL verification); the signed samples of events/wechat-event/ are its seeds;
//! 1. crafted ciphertext: the fuzzer chooses every decrypted byte (random, length field,
//!    message, tail, padding); the target encrypts and signs it correctly, so that all of the
//!    decryption checks are reached, and compares with a reference implementation of §2.3;
//! 2. sealed: a plaintext message sealed as WeChat does (`push::seal`, plain / compatible /
//!    safe) must open to exactly what the plaintext parses to (a round trip);
//! 3. tampered: a sealed push with one query value or body byte changed must not open, unless
//!    the change is one the signature does not cover.
#![no_main]
use arbitrary::{Arbitrary, Unstructured};
use common::http::{Request, parse_query};
use common::protocol::wechat::message::{self, Format};
use common::protocol::wechat::push::{self, Delivery, PushError};
use libfuzzer_sys::fuzz_target;
use wxim_fuzz::*;

const WINDOW: i64 = 300;

/// Everything the input has left.
fn rest<'a>(u: &mut Unstructured<'a>) -> &'a [u8] {
    let n = u.len();
    u.bytes(n).unwrap_or_default()
}

fn request(query: Vec<(String, String)>, body: Vec<u8>) -> Request {
    let mut r = Request::new("POST", "/wechat/mp");
    r.query = query;
    r.body = body;
    r
}

/// Layout: one flags byte (bit 0: plaintext allowed; bit 1: a 300 s window around the samples'
/// signing time, else no window), then the query string, a newline, and the body: so that the
/// samples in events/ are seeds as they are.
fn raw(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let flags: u8 = u.arbitrary()?;
    let data = rest(u);
    let (query, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let app = mp_app(flags & 1 == 1);
    let window = if flags & 2 == 2 { WINDOW } else { 0 };
    let req = request(parse_query(&String::from_utf8_lossy(query)), body.to_vec());
    let _ = push::verify_url(&app, &req);
    if let Ok(inbound) = push::open(&app, &req, NOW, window) {
        // Only a request signed with the token opens; the fuzzer cannot forge SHA-1.
        let ts = req.query("timestamp").unwrap();
        let nonce = req.query("nonce").unwrap();
        assert_eq!(inbound.timestamp, ts);
        assert_eq!(inbound.nonce, nonce);
        let sig = match inbound.mode {
            push::Mode::Plain => wechat_signature(&[MP_TOKEN, ts, nonce]),
            push::Mode::Aes => {
                let env = message::parse_envelope(&req.body).unwrap();
                wechat_signature(&[MP_TOKEN, ts, nonce, &env.encrypt.unwrap()])
            }
        };
        let param = match inbound.mode {
            push::Mode::Plain => "signature",
            push::Mode::Aes => "msg_signature",
        };
        assert_eq!(
            req.query(param),
            Some(sig.as_str()),
            "opened without the right {param}"
        );
    }
    Ok(())
}

fn crafted(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let format = if u.arbitrary()? {
        Format::Xml
    } else {
        Format::Json
    };
    let nonce = format!("n{}", u32::arbitrary(u)?);
    let mut plain = rest(u).to_vec();
    plain.truncate(plain.len() / 16 * 16);
    let key = raw_aes_key(MP_AES_KEY);
    let encrypt = cbc_encrypt_raw(&key, plain.clone());
    let app = mp_app(false);
    let crypto = app.crypto.as_ref().unwrap();

    let expected = reference_open(&plain, MP_APPID);
    assert_eq!(
        crypto.decrypt(&encrypt),
        expected,
        "decrypt disagrees with reference §2.3"
    );

    let ts = NOW.to_string();
    let body = match format {
        Format::Xml => format!(
            "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        ),
        Format::Json => serde_json::json!({"ToUserName": "gh_1", "Encrypt": encrypt}).to_string(),
    };
    let sig = wechat_signature(&[MP_TOKEN, &ts, &nonce, &encrypt]);
    let query = vec![
        ("timestamp".to_owned(), ts.clone()),
        ("nonce".to_owned(), nonce),
        ("encrypt_type".to_owned(), "aes".to_owned()),
        ("msg_signature".to_owned(), sig),
        (
            "signature".to_owned(),
            wechat_signature(&[MP_TOKEN, &ts, "x"]),
        ),
    ];
    let got = push::open(&app, &request(query, body.into_bytes()), NOW, WINDOW);
    match (&expected, got) {
        // No ciphertext at all is a missing field, before any crypto.
        (Err(_), Err(PushError::Envelope(e))) if plain.is_empty() => {
            assert_eq!(e, message::ParseError::Missing("Encrypt"));
        }
        (Err(e), Err(PushError::Crypto(g))) => assert_eq!(*e, g),
        (Ok(msg), Ok(inbound)) => {
            assert_eq!(Ok(inbound.message), message::parse_message(msg));
            assert_eq!(inbound.format, format);
        }
        (Ok(msg), Err(PushError::Message(e))) => {
            assert_eq!(message::parse_message(msg).err(), Some(e));
        }
        (e, g) => panic!("expected {e:?}, open gave {g:?}"),
    }
    Ok(())
}

/// A plaintext message for sealing: mostly one of a few real shapes with fuzzed values, so that
/// it parses and the round trip has something to compare; sometimes raw bytes.
fn plaintext(u: &mut Unstructured<'_>) -> arbitrary::Result<(Vec<u8>, bool)> {
    let json: bool = u.arbitrary()?;
    let to: &str = u.arbitrary()?;
    let from: &str = u.arbitrary()?;
    let content: &str = u.arbitrary()?;
    let (to, from, content) = (xml_text(to), xml_text(from), xml_text(content));
    let t: i64 = u.arbitrary()?;
    let body = match u.int_in_range(0..=3)? {
        0 => return Ok((rest(u).to_vec(), json)),
        1 if json => serde_json::json!({"ToUserName": to, "FromUserName": from, "CreateTime": t,
            "MsgType": "text", "Content": content, "MsgId": u64::arbitrary(u)?}).to_string(),
        1 => format!("<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName><CreateTime>{t}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content>{}</Content><MsgId>{}</MsgId></xml>",
            cdata(&to), cdata(&from), cdata(&content), u64::arbitrary(u)?),
        2 if json => serde_json::json!({"ToUserName": to, "FromUserName": from, "CreateTime": t.to_string(),
            "MsgType": "event", "Event": "subscribe_msg_popup_event",
            "List": [{"TemplateId": content, "SubscribeStatusString": "accept", "PopupScene": "0"}]}).to_string(),
        2 => format!("<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName><CreateTime>{t}</CreateTime><MsgType>event</MsgType><Event>subscribe</Event><EventKey>{}</EventKey></xml>{}",
            cdata(&to), cdata(&from), cdata(&content), xml_text(u.arbitrary()?)),
        _ => {
            let prefix: &str = u.arbitrary()?;
            let rest = String::from_utf8_lossy(rest(u)).into_owned();
            format!("{prefix}{rest}")
        }
    };
    Ok((body.into_bytes(), json))
}

fn delivery(u: &mut Unstructured<'_>) -> arbitrary::Result<Delivery> {
    Ok(*u.choose(&[Delivery::Plain, Delivery::Compat, Delivery::Safe])?)
}

/// An `Encrypt` the plaintext itself carries would be read instead of the one `seal` adds; WeChat
/// never sends one inside a message, so such inputs are not round trips.
fn carries_encrypt(plain: &[u8]) -> bool {
    plain.windows(7).any(|w| w == b"Encrypt")
}

fn sealed(u: &mut Unstructured<'_>, tamper: bool) -> arbitrary::Result<()> {
    let delivery = delivery(u)?;
    let nonce: &str = u.arbitrary()?;
    let nonce = if nonce.is_empty() { "1" } else { nonce };
    let skew = u.int_in_range(-WINDOW..=WINDOW)?;
    let which: u8 = u.arbitrary()?;
    let at: usize = u.arbitrary()?;
    let (plain, _) = plaintext(u)?;
    let app = mp_app(delivery == Delivery::Plain);
    let ts = (NOW + skew).to_string();
    let parsed = message::parse_message(&plain);
    let signed = match push::seal(&app, &plain, delivery, &ts, nonce) {
        Ok(s) => s,
        Err(_) => {
            assert!(parsed.is_err(), "seal refused a message that parses");
            return Ok(());
        }
    };
    let parsed = parsed.expect("seal accepted a message that does not parse");
    // Through the URL, as WeChat sends it: encoded once, decoded once.
    let mut req = Request::new("POST", &format!("/wechat/mp?{}", signed.query_string()));
    req.body = signed.body.clone();
    if !tamper {
        if carries_encrypt(&plain) && delivery == Delivery::Compat {
            return Ok(());
        }
        let inbound = push::open(&app, &req, NOW, WINDOW)
            .unwrap_or_else(|e| panic!("a sealed {delivery:?} push did not open: {e:?}"));
        assert_eq!(
            inbound.message, parsed,
            "the round trip changed the message"
        );
        assert_eq!(inbound.timestamp, ts);
        assert_eq!(inbound.nonce, nonce);
        if !carries_encrypt(&plain) {
            assert_eq!(
                push::plaintext_of(&app, &signed.body).as_deref(),
                Ok(&plain[..])
            );
        }
        return Ok(());
    }
    // Tamper with one signed thing: timestamp, nonce, msg_signature, or the ciphertext.
    let covered = match which % 4 {
        0 => "timestamp",
        1 => "nonce",
        2 => "msg_signature",
        _ => "body",
    };
    if covered == "body" {
        if delivery == Delivery::Plain {
            // The plaintext signature does not cover the body (why plaintext is refused when a
            // key is configured); nothing to check.
            return Ok(());
        }
        let env = message::parse_envelope(&req.body).unwrap();
        let enc = env.encrypt.unwrap().into_owned();
        let i = at % enc.len();
        let mut bytes = enc.into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(bytes).unwrap();
        let body = String::from_utf8(req.body.clone()).unwrap();
        let orig = message::parse_envelope(&req.body).unwrap().encrypt.unwrap().into_owned();
        req.body = body.replacen(&orig, &forged, 1).into_bytes();
    } else {
        if delivery == Delivery::Plain && covered == "msg_signature" {
            return Ok(());
        }
        for (k, v) in req.query.iter_mut() {
            if k == covered {
                v.push('0');
            }
        }
    }
    let got = push::open(&app, &req, NOW, WINDOW);
    assert!(
        matches!(
            got,
            Err(PushError::BadSignature | PushError::StaleTimestamp)
        ),
        "a push with a changed {covered} ({delivery:?}) gave {got:?}"
    );
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(mode) = u8::arbitrary(&mut u) else {
        return;
    };
    let _ = match mode % 4 {
        0 => raw(&mut u),
        1 => crafted(&mut u),
        2 => sealed(&mut u, false),
        _ => sealed(&mut u, true),
    };
});
