//! UserSig generation and verification agree: a sig generated for any user id, app, validity,
//! issue time, key and userbuf verifies for exactly that user and app until it expires (and with
//! `Expired` after), decodes to the claims it was made from, and fails for another user, app or
//! key. Identifiers are bounded by what fits the 16 KiB document limit (IM's own limit is 32 bytes).
#![no_main]
use arbitrary::Arbitrary;
use common::protocol::im::usersig::{self, UserSigError};
use libfuzzer_sys::fuzz_target;
use wxim_fuzz::IM_KEY;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    sdkappid: u64,
    key: Option<&'a str>,
    identifier: &'a str,
    expire: i64,
    now: i64,
    later: i64,
    userbuf: Option<&'a [u8]>,
}

fuzz_target!(|i: Input<'_>| {
    if i.identifier.len() > 1024 || i.userbuf.is_some_and(|b| b.len() > 1024) {
        return;
    }
    let key = i.key.unwrap_or(IM_KEY);
    let sig = match i.userbuf {
        Some(b) => {
            usersig::generate_with_userbuf(i.sdkappid, key, i.identifier, i.expire, i.now, b)
        }
        None => usersig::generate(i.sdkappid, key, i.identifier, i.expire, i.now),
    };
    assert!(
        sig.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"*-_".contains(&b)),
        "a UserSig must be URL-safe as it is"
    );
    let (info, decoded) = usersig::decode(&sig).expect("a generated sig decodes");
    assert_eq!(
        (
            info.identifier.as_str(),
            info.sdkappid,
            info.time,
            info.expire
        ),
        (i.identifier, i.sdkappid, i.now, i.expire)
    );
    assert_eq!(decoded.userbuf.is_some(), i.userbuf.is_some());

    let at = i.now.saturating_add(i.later % 100_000_000);
    let expires_at = i.now.saturating_add(i.expire);
    let got = usersig::verify(i.sdkappid, key, &sig, i.identifier, at);
    if at <= expires_at {
        assert_eq!(got.as_ref(), Ok(&info), "a fresh sig did not verify");
    } else {
        assert_eq!(
            got,
            Err(UserSigError::Expired {
                expired_at: expires_at
            })
        );
    }
    assert_eq!(
        usersig::verify(i.sdkappid, &format!("{key}x"), &sig, i.identifier, i.now).err(),
        Some(UserSigError::BadSignature),
        "another key verified the sig"
    );
    assert_eq!(
        usersig::verify(i.sdkappid, key, &sig, &format!("{}x", i.identifier), i.now).err(),
        Some(UserSigError::WrongIdentifier)
    );
    assert_eq!(
        usersig::verify(i.sdkappid ^ 1, key, &sig, i.identifier, i.now).err(),
        Some(UserSigError::WrongSdkAppId { found: i.sdkappid })
    );
});
