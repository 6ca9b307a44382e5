//! What the fuzz targets share: the sample apps (events/sample.env), and small reference
//! implementations written from the protocol references (not from the code under test), used as
//! oracles: the WeChat AES layout, the callback Sign, the UserSig MAC.

use aes::Aes256;
use aes::cipher::KeyInit;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cbc::cipher::array::Array;
use cbc::cipher::{BlockModeEncrypt, InnerIvInit};
use common::protocol::im::ImConfig;
use common::protocol::secret::Secret;
use common::protocol::wechat::app::{AppKind, WechatApp};
use common::protocol::wechat::crypto::{CryptoError, MessageCrypto};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The mini program of events/sample.env.
pub const MP_APPID: &str = "wx1234567890abcdef";
pub const MP_TOKEN: &str = "wxpushtoken2024";
pub const MP_AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
/// The official account's appid: a well-formed message for the wrong app.
pub const OA_APPID: &str = "wxfedcba0987654321";

/// The IM application of events/sample.env.
pub const IM_SDKAPPID: u64 = 1_400_000_000;
pub const IM_KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
pub const IM_TOKEN: &str = "xxxxyyyy";
pub const IM_ADMIN: &str = "administrator";

/// A fixed "now" for targets whose inputs carry times (2023-11-14).
pub const NOW: i64 = 1_700_000_000;

pub fn mp_app(allow_plaintext: bool) -> WechatApp {
    WechatApp {
        kind: AppKind::Mp,
        appid: MP_APPID.into(),
        secret: Secret::new("sample-mp-app-secret-0000000000"),
        token: Secret::new(MP_TOKEN),
        aes_key: Some(Secret::new(MP_AES_KEY)),
        crypto: Some(MessageCrypto::new(MP_AES_KEY, MP_APPID).expect("sample key")),
        allow_plaintext,
    }
}

pub fn im_config(token: Option<&str>, window: i64) -> ImConfig {
    ImConfig {
        sdkappid: IM_SDKAPPID,
        secret_key: Secret::new(IM_KEY),
        admin_user: IM_ADMIN.into(),
        api_base: "http://127.0.0.1:9".into(),
        callback_token: token.map(Secret::new),
        callback_window_secs: window,
        agents: vec![],
        agents_mp: vec![],
    }
}

/// `base64_decode(EncodingAESKey + "=")` with the surplus bits ignored (reference §2.3).
pub fn raw_aes_key(encoding_aes_key: &str) -> [u8; 32] {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits: u64 = 0;
    let mut nbits = 0;
    let mut out = Vec::with_capacity(33);
    for c in encoding_aes_key.bytes() {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .expect("base64 symbol") as u64;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    out.truncate(32);
    out.try_into().expect("a 43-character key holds 32 bytes")
}

/// Raw AES-256-CBC (IV = first 16 key bytes) over `buf`, which must be whole blocks, then
/// standard base64: lets a target choose every decrypted byte, padding and length field included.
pub fn cbc_encrypt_raw(key: &[u8; 32], mut buf: Vec<u8>) -> String {
    assert_eq!(buf.len() % 16, 0);
    let mut iv = [0u8; 16];
    iv.copy_from_slice(&key[..16]);
    let cipher = Aes256::new(&Array::from(*key));
    let (blocks, _) = Array::slice_as_chunks_mut(&mut buf);
    let mut mode = cbc::Encryptor::<Aes256>::inner_iv_init(cipher, &Array::from(iv));
    mode.encrypt_blocks(blocks);
    STANDARD.encode(&buf)
}

/// What decrypting `plain` (the CBC plaintext, whole blocks) must give, from reference §2.3:
/// last byte = pad in 1..=32, all pad bytes equal, ≥ 20 bytes left, `20 + msg_len` fits, and the
/// tail is the appid.
pub fn reference_open(plain: &[u8], appid: &str) -> Result<Vec<u8>, CryptoError> {
    if plain.is_empty() || plain.len() % 16 != 0 {
        return Err(CryptoError::BlockLength);
    }
    let pad = usize::from(*plain.last().unwrap());
    if !(1..=32).contains(&pad) || pad > plain.len() {
        return Err(CryptoError::Padding);
    }
    let (full, padding) = plain.split_at(plain.len() - pad);
    if padding.iter().any(|&b| usize::from(b) != pad) {
        return Err(CryptoError::Padding);
    }
    if full.len() < 20 {
        return Err(CryptoError::Layout);
    }
    let len = u32::from_be_bytes(full[16..20].try_into().unwrap()) as u64;
    if 20 + len > full.len() as u64 {
        return Err(CryptoError::Layout);
    }
    let end = 20 + len as usize;
    if &full[end..] != appid.as_bytes() {
        return Err(CryptoError::AppIdMismatch);
    }
    Ok(full[20..end].to_vec())
}

/// `hex(sha1(join(sort(parts))))` (reference §1). The parts are ordered without comparing them
/// byte by byte with branches: libFuzzer's comparison tracing would otherwise learn the token
/// from the oracle itself and print it in its logs (which scripts/scan-logs.py scans). Each
/// part goes where the count of smaller parts (ties by position) puts it, over all parts alike
/// (the code under test places only the token blindly, so this is a different construction).
pub fn wechat_signature(parts: &[&str]) -> String {
    let mut slots: Vec<Option<&str>> = vec![None; parts.len()];
    for (i, a) in parts.iter().enumerate() {
        let mut rank = 0;
        for (j, b) in parts.iter().enumerate() {
            let (less, greater) = blind_order(b.as_bytes(), a.as_bytes());
            let tie_before = u32::from(j < i) & !less & !greater;
            rank += ((less | tie_before) & 1) as usize;
        }
        slots[rank] = Some(a);
    }
    let joined: String = slots
        .into_iter()
        .map(|s| s.expect("ranks are a permutation"))
        .collect();
    hex(&Sha1::digest(joined.as_bytes()))
}

/// (`a < b`, `a > b`) byte-wise as 0/1: the first differing byte decides, else the shorter is
/// smaller. Bytes are compared by subtracting values hidden from the optimiser.
fn blind_order(a: &[u8], b: &[u8]) -> (u32, u32) {
    let (mut less, mut greater, mut done) = (0u32, 0u32, 0u32);
    for (&x, &y) in a.iter().zip(b) {
        let x = std::hint::black_box(u32::from(x));
        let y = std::hint::black_box(u32::from(y));
        let lt = x.wrapping_sub(y) >> 31;
        let gt = y.wrapping_sub(x) >> 31;
        less |= !done & lt;
        greater |= !done & gt;
        done |= lt | gt;
    }
    less |= !done & u32::from(a.len() < b.len());
    greater |= !done & u32::from(a.len() > b.len());
    (less & 1, greater & 1)
}

/// `hex(sha256(token ‖ RequestTime))` (tencent-im §2.3).
pub fn im_sign(token: &str, request_time: &str) -> String {
    hex(&Sha256::digest(format!("{token}{request_time}").as_bytes()))
}

/// `TLS.sig` bytes: HMAC-SHA256 over the four (or five) content lines (tencent-im §1.2).
pub fn usersig_mac(
    key: &str,
    identifier: &str,
    sdkappid: u64,
    time: i64,
    expire: i64,
    userbuf_b64: Option<&str>,
) -> [u8; 32] {
    let mut content = format!(
        "TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{time}\nTLS.expire:{expire}\n"
    );
    if let Some(ub) = userbuf_b64 {
        content.push_str(&format!("TLS.userbuf:{ub}\n"));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(content.as_bytes());
    mac.finalize().into_bytes().into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// XML 1.0 `Char`: what a conforming parser (WeChat's) accepts anywhere in a document.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// A CDATA section holding `s` exactly (a `]]>` is split across two sections).
pub fn cdata(s: &str) -> String {
    format!("<![CDATA[{}]]>", s.replace("]]>", "]]]]><![CDATA[>"))
}

/// A string of XML characters from fuzz input (others dropped).
pub fn xml_text(s: &str) -> String {
    s.chars().filter(|&c| is_xml_char(c)).collect()
}
