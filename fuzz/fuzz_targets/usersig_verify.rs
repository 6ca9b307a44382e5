//! UserSig verification (the `/bind` route's proof of an IM identity) against inputs an attacker
//! controls. Two shapes, chosen by the first byte:
//!
//! 0. raw: any string as the sig, checked for the sample app and user;
//! 1. crafted: a TLS document built from fuzzed claims (numbers as JSON numbers or strings,
//!    optional `TLS.ver` and `TLS.userbuf`, a right or a wrong MAC computed by a reference of
//!    tencent-im §1.2), compressed at a fuzzed zlib level and encoded with either alphabet, with
//!    or without padding. The outcome must be exactly what §1.5 says, in its order of checks.
#![no_main]
use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::protocol::im::usersig::{self, UserSigError};
use flate2::{Compress, Compression, FlushCompress, Status};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use wxim_fuzz::*;

const USER: &str = "customer_lin";

thread_local! {
    // A compressor's state is a few hundred KiB; one per level, reset per input, keeps the
    // target's own cost out of the measurement.
    static COMPRESSORS: RefCell<Vec<Compress>> =
        RefCell::new((0..10).map(|l| Compress::new(Compression::new(l), true)).collect());
}

fn zlib(data: &[u8], level: u32) -> Vec<u8> {
    COMPRESSORS.with_borrow_mut(|all| {
        let c = &mut all[level as usize];
        c.reset();
        let mut out = Vec::with_capacity(data.len() + 64);
        loop {
            let done = c.total_in() as usize;
            match c
                .compress_vec(&data[done..], &mut out, FlushCompress::Finish)
                .unwrap()
            {
                Status::StreamEnd => return out,
                _ => out.reserve(out.capacity().max(64)),
            }
        }
    })
}

fn raw(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let now: i64 = u.arbitrary()?;
    let sig = String::from_utf8_lossy(u.bytes(u.len())?);
    let verified = usersig::verify(IM_SDKAPPID, IM_KEY, &sig, USER, now);
    if let Ok(info) = &verified {
        let (decoded, _) = usersig::decode(&sig).expect("a verified sig decodes");
        assert_eq!(&decoded, info);
        assert_eq!(info.identifier, USER);
        assert!(now <= info.expires_at());
    }
    Ok(())
}

#[derive(Arbitrary, Debug)]
struct Claims<'a> {
    identifier: Option<&'a str>,
    other_app: Option<u64>,
    time: i64,
    expire: i64,
    userbuf: Option<&'a [u8]>,
    ver: Option<&'a str>,
    ver_is_2: bool,
    numbers_as_strings: bool,
    tamper: Option<u8>,
    level: u8,
    url_alphabet: bool,
    strip_padding: bool,
    now_skew: i64,
}

fn crafted(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let c = Claims::arbitrary(u)?;
    let identifier = c.identifier.unwrap_or(USER);
    let sdkappid = c.other_app.unwrap_or(IM_SDKAPPID);
    let userbuf = c.userbuf.map(|b| STANDARD.encode(b));
    let mut mac = usersig_mac(
        IM_KEY,
        identifier,
        sdkappid,
        c.time,
        c.expire,
        userbuf.as_deref(),
    );
    if let Some(t) = c.tamper {
        mac[usize::from(t) % 32] ^= 1 << (t % 8);
    }
    let num = |n: String, v: serde_json::Value| {
        if c.numbers_as_strings {
            serde_json::Value::String(n)
        } else {
            v
        }
    };
    let mut doc = serde_json::json!({
        "TLS.identifier": identifier,
        "TLS.sdkappid": num(sdkappid.to_string(), sdkappid.into()),
        "TLS.time": num(c.time.to_string(), c.time.into()),
        "TLS.expire": num(c.expire.to_string(), c.expire.into()),
        "TLS.sig": STANDARD.encode(mac),
    });
    let ver = if c.ver_is_2 { Some("2.0") } else { c.ver };
    if let Some(v) = ver {
        doc["TLS.ver"] = v.into();
    }
    if let Some(ub) = &userbuf {
        doc["TLS.userbuf"] = ub.clone().into();
    }
    let json = doc.to_string();
    let compressed = zlib(json.as_bytes(), u32::from(c.level % 10));
    let mut sig = STANDARD.encode(&compressed);
    if c.url_alphabet {
        sig = sig.replace('+', "*").replace('/', "-").replace('=', "_");
    }
    if c.strip_padding {
        sig = sig.trim_end_matches(['=', '_']).to_owned();
    }
    let now = c.time.saturating_add(c.now_skew % 1_000_000);

    let expected = if sig.len() > 32 * 1024 || json.len() > 16 * 1024 {
        None // refused as too large; which message does not matter
    } else if ver.is_some_and(|v| v != "2.0") {
        Some(Err(UserSigError::Malformed("unsupported TLS.ver")))
    } else if sdkappid != IM_SDKAPPID {
        Some(Err(UserSigError::WrongSdkAppId { found: sdkappid }))
    } else if identifier != USER {
        Some(Err(UserSigError::WrongIdentifier))
    } else if c.tamper.is_some() {
        Some(Err(UserSigError::BadSignature))
    } else if now > c.time.saturating_add(c.expire) {
        Some(Err(UserSigError::Expired {
            expired_at: c.time.saturating_add(c.expire),
        }))
    } else {
        Some(Ok(()))
    };
    let got = usersig::verify(IM_SDKAPPID, IM_KEY, &sig, USER, now);
    match expected {
        None => assert!(matches!(got, Err(UserSigError::Malformed(_))), "{got:?}"),
        Some(Ok(())) => {
            let info = got.unwrap_or_else(|e| panic!("a genuine sig was refused: {e:?}\n{json}"));
            assert_eq!(
                (info.time, info.expire, info.sdkappid),
                (c.time, c.expire, sdkappid)
            );
        }
        Some(Err(e)) => assert_eq!(got, Err(e), "{json}"),
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(mode) = u8::arbitrary(&mut u) else {
        return;
    };
    let _ = if mode % 2 == 0 {
        raw(&mut u)
    } else {
        crafted(&mut u)
    };
});
