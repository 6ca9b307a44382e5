//! IM callbacks: the query check (SdkAppid, then Sign = sha256(token ‖ RequestTime) inside the
//! replay window) against a reference of tencent-im §2.3, and the body parser. The Sign is
//! either computed correctly over the fuzzed RequestTime (so the window and the comparison are
//! reached) or fuzzed; the body is raw bytes.
#![no_main]
use arbitrary::{Arbitrary, Unstructured};
use common::http::Request;
use common::protocol::im::callback::{self, AuthError, Callback};
use libfuzzer_sys::fuzz_target;
use wxim_fuzz::*;

#[derive(Debug)]
enum AppId<'a> {
    Ours,
    Padded,
    Other(u64),
    Text(&'a str),
    Missing,
}

#[derive(Debug)]
enum Time<'a> {
    Skew(i64),
    Text(&'a str),
    Missing,
}

#[derive(Debug)]
enum Sign<'a> {
    Right,
    Upper,
    OneOff(u8),
    Text(&'a str),
    Missing,
}

#[derive(Debug)]
struct Input<'a> {
    token: Option<&'a str>,
    window: u16,
    appid: AppId<'a>,
    time: Time<'a>,
    sign: Sign<'a>,
    command: Option<&'a str>,
    body: &'a [u8],
}

const COMMANDS: [&str; 4] = [
    "State.StateChange",
    "C2C.CallbackBeforeSendMsg",
    "C2C.CallbackAfterSendMsg",
    "Group.CallbackAfterSendMsg",
];

/// A short string: a length byte (0..16) and that many bytes, as far as they are UTF-8.
fn short<'a>(u: &mut Unstructured<'a>) -> arbitrary::Result<&'a str> {
    let n = usize::from(u8::arbitrary(u)? % 16).min(u.len());
    let b = u.bytes(n)?;
    Ok(match std::str::from_utf8(b) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&b[..e.valid_up_to()]).unwrap(),
    })
}

/// Layout: five choice bytes (token, SdkAppid, RequestTime, Sign, CallbackCommand), a window
/// (u16), a skew (i16), the short strings the choices ask for, then the body: so that the
/// samples of events/im-callback/ are seeds behind a fixed header.
fn input<'a>(u: &mut Unstructured<'a>) -> arbitrary::Result<Input<'a>> {
    let c: [u8; 5] = u.arbitrary()?;
    let window: u16 = u.arbitrary()?;
    let skew = i64::from(i16::arbitrary(u)?);
    let token = match c[0] % 3 {
        0 => None,
        1 => Some(IM_TOKEN),
        _ => Some(short(u)?),
    };
    let appid = match c[1] % 5 {
        0 | 1 => AppId::Ours,
        2 => AppId::Padded,
        3 => AppId::Other(u64::from(u32::arbitrary(u)?)),
        _ if c[1] & 0x80 == 0 => AppId::Text(short(u)?),
        _ => AppId::Missing,
    };
    let time = match c[2] % 4 {
        0 | 1 => Time::Skew(skew),
        2 => Time::Text(short(u)?),
        _ => Time::Missing,
    };
    let sign = match c[3] % 6 {
        0 | 1 => Sign::Right,
        2 => Sign::Upper,
        3 => Sign::OneOff(c[3] / 6),
        4 => Sign::Text(short(u)?),
        _ => Sign::Missing,
    };
    let command = match c[4] % 6 {
        0 | 1 => None,
        2 => Some(short(u)?),
        n => Some(COMMANDS[usize::from(n - 3 + c[4] / 6 % 2)]),
    };
    let n = u.len();
    Ok(Input {
        token,
        window,
        appid,
        time,
        sign,
        command,
        body: u.bytes(n)?,
    })
}

fn expected(i: &Input<'_>, req: &Request) -> Result<(), AuthError> {
    let appid = req.query("SdkAppid").ok_or(AuthError::WrongAppId)?;
    if appid.trim().parse::<u64>().ok() != Some(IM_SDKAPPID) {
        return Err(AuthError::WrongAppId);
    }
    let Some(token) = i.token else { return Ok(()) };
    let (Some(sign), Some(time)) = (req.query("Sign"), req.query("RequestTime")) else {
        return Err(AuthError::MissingSign);
    };
    let t: i128 = time
        .trim()
        .parse::<i64>()
        .map_err(|_| AuthError::Stale)?
        .into();
    if (i128::from(NOW) - t).abs() > i128::from(i.window) {
        return Err(AuthError::Stale);
    }
    if !sign.eq_ignore_ascii_case(&im_sign(token, time)) {
        return Err(AuthError::BadSign);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Ok(i) = input(&mut Unstructured::new(data)) else {
        return;
    };
    let time = match i.time {
        Time::Skew(s) => Some((NOW + s).to_string()),
        Time::Text(t) => Some(t.to_owned()),
        Time::Missing => None,
    };
    let token = i.token.unwrap_or("");
    let right = im_sign(token, time.as_deref().unwrap_or(""));
    let mut query: Vec<(String, String)> = vec![];
    match &i.appid {
        AppId::Ours => query.push(("SdkAppid".into(), IM_SDKAPPID.to_string())),
        AppId::Padded => query.push(("SdkAppid".into(), format!(" {IM_SDKAPPID}\t"))),
        AppId::Other(n) => query.push(("SdkAppid".into(), n.to_string())),
        AppId::Text(t) => query.push(("SdkAppid".into(), (*t).to_owned())),
        AppId::Missing => {}
    }
    if let Some(t) = &time {
        query.push(("RequestTime".into(), t.clone()));
    }
    let sign = match &i.sign {
        Sign::Right => Some(right.clone()),
        Sign::Upper => Some(right.to_ascii_uppercase()),
        Sign::OneOff(at) => {
            let mut b = right.clone().into_bytes();
            let k = usize::from(*at) % b.len();
            b[k] = if b[k] == b'0' { b'1' } else { b'0' };
            Some(String::from_utf8(b).unwrap())
        }
        Sign::Text(t) => Some((*t).to_owned()),
        Sign::Missing => None,
    };
    if let Some(s) = sign {
        query.push(("Sign".into(), s));
    }
    if let Some(c) = i.command {
        query.push(("CallbackCommand".into(), c.to_owned()));
    }
    let mut req = Request::new("POST", "/im/callback");
    req.query = query;
    req.body = i.body.to_vec();

    let im = im_config(i.token, i64::from(i.window));
    assert_eq!(callback::authenticate(&im, &req, NOW), expected(&i, &req));

    let parsed = callback::parse(i.command, i.body);
    if let Ok(cb) = &parsed {
        match cb {
            Callback::C2cBeforeSend(m) | Callback::C2cAfterSend(m) => {
                assert!(!m.from.is_empty() && !m.to.is_empty());
                let key = m.idempotency_key();
                assert!(key.starts_with(&format!("{}|{}|", m.from, m.to)));
                let _ = (m.text_summary(), m.preview());
            }
            Callback::StateChange(s) => assert!(!s.user.is_empty() && !s.action.is_empty()),
            Callback::C2cRecall(r) => {
                assert!(!r.from.is_empty() && !r.to.is_empty() && !r.msg_key.is_empty());
                assert!(r.idempotency_key().starts_with(&format!("{}|{}|", r.from, r.to)));
            }
            Callback::C2cRead(r) => assert!(!r.reader.is_empty() && !r.peer.is_empty()),
            Callback::GroupAfterSend(g) => {
                assert!(!g.group_id.is_empty() && !g.from.is_empty());
                assert!(g.at_accounts.iter().all(|a| !a.is_empty()));
                let _ = (g.preview(), g.idempotency_key());
            }
            Callback::Other(_) => {}
        }
    }
    // The query's command and the body's own field name the same thing.
    if i.command.is_none_or(str::is_empty)
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(i.body)
        && let Some(c) = v["CallbackCommand"].as_str()
    {
        assert_eq!(callback::parse(Some(c), i.body), parsed);
    }
});
