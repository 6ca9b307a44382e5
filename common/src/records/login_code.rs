//! A used `wx.login` code, `code#<digest>`: a digest of (appid, code), so the code itself is
//! never stored. A code lives 5 minutes; its marker outlives it so that a replayed `/bind` is
//! refused even if WeChat were to accept the code again.

use sha1::{Digest, Sha1};

use crate::records::keys;
use crate::store::{Cond, Item, TTL_ATTR, Table, Write};

const MARKER_SECS: i64 = 86_400;

fn key(appid: &str, code: &str) -> String {
    let mut h = Sha1::new();
    h.update(appid.as_bytes());
    h.update([0u8]);
    h.update(code.as_bytes());
    keys::login_code(&hex::encode(h.finalize()))
}

/// The marker's put, conditional on the code not having been used.
pub fn used(appid: &str, code: &str, now: i64) -> Write {
    Write::put(
        Table::State,
        Item::new(key(appid, code), keys::ONE)
            .with("at", now)
            .with(TTL_ATTR, now + MARKER_SECS),
    )
    .when(Cond::NotExists)
}
