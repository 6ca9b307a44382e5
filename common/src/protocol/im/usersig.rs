//! Tencent Cloud IM UserSig v2 (TLSSigAPIv2, HMAC-SHA256) and IM callback `Sign`.
//!
//! Only the HMAC input and the decoded JSON values are stable across the official
//! libraries; key order, whitespace, escaping and the zlib level all differ. So
//! generation is free to pick its own cosmetics, and decoding must accept every
//! official variant (Python spaces, PHP `\/`, Go's trailing newline and stored
//! blocks, C++ level 1).

use std::cell::RefCell;
use std::fmt;

use base64::Engine as _;
use base64::alphabet::{self, Alphabet};
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Inflated JSON above this is refused: a real document is ~200 bytes, and the
/// input is attacker-controlled, so a zip bomb must not be able to make us allocate.
const MAX_INFLATED_LEN: usize = 16 * 1024;

/// Refuse absurd inputs before doing any work. Large enough for a maximal
/// document stored uncompressed (Go's default) and then base64-expanded.
const MAX_ENCODED_LEN: usize = 32 * 1024;

/// Standard alphabet with the two URL-unsafe symbols already substituted, so the
/// final string is produced in one pass instead of encode-then-replace.
const USERSIG_ALPHABET: Alphabet =
    match Alphabet::new("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789*-") {
        Ok(a) => a,
        Err(_) => panic!("invalid UserSig base64 alphabet"),
    };

/// `=` cannot be remapped through an `Alphabet`, so padding is appended by hand.
const USERSIG_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &USERSIG_ALPHABET,
    GeneralPurposeConfig::new().with_encode_padding(false),
);

/// Padding is optional on input: sigs get copied around and `_` is easily lost.
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a UserSig was refused. Messages deliberately never contain the key, the
/// sig or any identifier: these errors end up in logs.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum UserSigError {
    /// Not a structurally valid UserSig v2 (encoding, compression or JSON).
    #[error("malformed UserSig: {0}")]
    Malformed(&'static str),
    /// Well-formed, but issued for another application.
    #[error("UserSig was issued for SDKAppID {found}, which is not the configured one")]
    WrongSdkAppId { found: u64 },
    /// Well-formed, but issued for another user.
    #[error("UserSig identifier does not match the expected user")]
    WrongIdentifier,
    /// The HMAC does not match: wrong key, another app's key, or a tampered sig.
    #[error("UserSig signature is invalid (wrong key or tampered sig)")]
    BadSignature,
    /// Authentic but past its validity.
    #[error("UserSig expired at unix time {expired_at}")]
    Expired { expired_at: i64 },
}

/// The claims of a UserSig; authenticated only when returned by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSigInfo {
    pub identifier: String,
    pub sdkappid: u64,
    /// Issue time, unix seconds.
    pub time: i64,
    /// Validity in seconds from `time`.
    pub expire: i64,
}

impl UserSigInfo {
    /// Last unix second at which the sig is still valid (expiry is `now > this`).
    #[must_use]
    pub fn expires_at(&self) -> i64 {
        self.time.saturating_add(self.expire)
    }
}

/// The parts of a decoded UserSig that are not claims.
#[derive(Clone, PartialEq, Eq)]
pub struct DecodedSig {
    /// `TLS.userbuf` exactly as found (standard base64 text); it is HMAC'd verbatim.
    pub userbuf: Option<String>,
    /// The 32 HMAC-SHA256 bytes carried in `TLS.sig`.
    pub mac: [u8; 32],
}

// The MAC is as good as the bearer credential it authenticates; keep it out of logs.
impl fmt::Debug for DecodedSig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecodedSig")
            .field("userbuf", &self.userbuf)
            .field("mac", &"<redacted>")
            .finish()
    }
}

/// `TLS.sig`: standard base64 of HMAC-SHA256 over the content lines.
///
/// `key` is used as its UTF-8 bytes; the console shows it as hex but every
/// official library signs with the text itself.
#[must_use]
pub fn tls_sig(
    key: &str,
    identifier: &str,
    sdkappid: u64,
    time: i64,
    expire: i64,
    userbuf: Option<&[u8]>,
) -> String {
    let userbuf_b64 = userbuf.map(|b| STANDARD.encode(b));
    let mac = compute_mac(
        key,
        identifier,
        sdkappid,
        time,
        expire,
        userbuf_b64.as_deref(),
    );
    STANDARD.encode(mac)
}

/// A complete UserSig for `identifier`, valid `expire` seconds from `now`.
#[must_use]
pub fn generate(sdkappid: u64, key: &str, identifier: &str, expire: i64, now: i64) -> String {
    generate_inner(sdkappid, key, identifier, expire, now, None)
}

/// Like [`generate`], with a `TLS.userbuf` (only TRTC's PrivateMapKey uses it).
#[must_use]
pub fn generate_with_userbuf(
    sdkappid: u64,
    key: &str,
    identifier: &str,
    expire: i64,
    now: i64,
    userbuf: &[u8],
) -> String {
    let userbuf_b64 = STANDARD.encode(userbuf);
    generate_inner(sdkappid, key, identifier, expire, now, Some(&userbuf_b64))
}

/// Decodes a UserSig, checking only its structure: the claims are not yet
/// authenticated. Use [`verify`] to accept a sig.
///
/// # Errors
/// [`UserSigError::Malformed`] for anything that is not a complete, well-formed
/// UserSig v2 (bad base64, not zlib, inflates past 16 KiB, bad JSON or members).
pub fn decode(sig: &str) -> Result<(UserSigInfo, DecodedSig), UserSigError> {
    if sig.is_empty() {
        return Err(UserSigError::Malformed("empty"));
    }
    if sig.len() > MAX_ENCODED_LEN {
        return Err(UserSigError::Malformed("too long"));
    }
    // Map back byte-wise rather than with a strict URL alphabet so that a sig
    // left in plain standard base64 (as some third-party generators emit) is
    // still accepted, like the official Go verifier does.
    let std_b64: Vec<u8> = sig
        .bytes()
        .map(|b| match b {
            b'*' => b'+',
            b'-' => b'/',
            b'_' => b'=',
            other => other,
        })
        .collect();
    let compressed = STANDARD_LENIENT
        .decode(&std_b64)
        .map_err(|_| UserSigError::Malformed("invalid base64"))?;
    let json = inflate_bounded(&compressed)?;
    let doc: WireDoc = serde_json::from_slice(&json)
        .map_err(|_| UserSigError::Malformed("invalid JSON document"))?;

    if let Some(ver) = &doc.ver
        && ver != "2.0"
    {
        return Err(UserSigError::Malformed("unsupported TLS.ver"));
    }
    let mut mac = [0u8; 32];
    match STANDARD_LENIENT.decode_slice(doc.sig.as_bytes(), &mut mac) {
        Ok(32) => {}
        _ => {
            return Err(UserSigError::Malformed(
                "TLS.sig is not a base64 HMAC-SHA256",
            ));
        }
    }

    Ok((
        UserSigInfo {
            identifier: doc.identifier,
            sdkappid: doc.sdkappid,
            time: doc.time,
            expire: doc.expire,
        },
        DecodedSig {
            userbuf: doc.userbuf,
            mac,
        },
    ))
}

/// Fully verifies `sig` as a UserSig of `identifier` for our app at time `now`.
///
/// Checks run cheapest-and-most-telling first, and expiry is only reported for
/// an authentic sig, so `Expired` never hides a forgery or a wrong key.
///
/// # Errors
/// In order of precedence: [`UserSigError::Malformed`], [`UserSigError::WrongSdkAppId`],
/// [`UserSigError::WrongIdentifier`], [`UserSigError::BadSignature`], and
/// [`UserSigError::Expired`] when `now > time + expire`.
pub fn verify(
    sdkappid: u64,
    key: &str,
    sig: &str,
    identifier: &str,
    now: i64,
) -> Result<UserSigInfo, UserSigError> {
    let (info, decoded) = decode(sig)?;
    if info.sdkappid != sdkappid {
        return Err(UserSigError::WrongSdkAppId {
            found: info.sdkappid,
        });
    }
    if info.identifier != identifier {
        return Err(UserSigError::WrongIdentifier);
    }
    // Recompute from the parsed values, not the JSON text: the HMAC input uses
    // canonical decimals, whatever formatting the generator chose.
    let expected = compute_mac(
        key,
        &info.identifier,
        info.sdkappid,
        info.time,
        info.expire,
        decoded.userbuf.as_deref(),
    );
    if !bool::from(expected.ct_eq(&decoded.mac)) {
        return Err(UserSigError::BadSignature);
    }
    let expired_at = info.expires_at();
    if now > expired_at {
        return Err(UserSigError::Expired { expired_at });
    }
    Ok(info)
}

/// IM callback `Sign`: lowercase hex SHA-256 (plain hash, not HMAC) of the token
/// immediately followed by `RequestTime` exactly as it appeared in the URL.
#[must_use]
pub fn callback_sign(token: &str, request_time: &str) -> String {
    let digest = callback_digest(token, request_time);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(HEX_LOWER[usize::from(b >> 4)]));
        out.push(char::from(HEX_LOWER[usize::from(b & 0x0f)]));
    }
    out
}

/// Constant-time check of a callback `Sign`. Hex case is ignored: the bytes are
/// what is authenticated, and being picky about case buys no security.
#[must_use]
pub fn verify_callback_sign(token: &str, request_time: &str, sign: &str) -> bool {
    let Some(given) = decode_hex32(sign) else {
        return false;
    };
    let expected = callback_digest(token, request_time);
    expected.ct_eq(&given).into()
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

fn callback_digest(token: &str, request_time: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(token.as_bytes())
        .chain_update(request_time.as_bytes())
        .finalize()
        .into()
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// Single source of truth for the signed text, shared by the MAC (streamed, no
/// allocation) and the tests (collected into a `String`).
fn write_content(
    w: &mut impl fmt::Write,
    identifier: &str,
    sdkappid: u64,
    time: i64,
    expire: i64,
    userbuf_b64: Option<&str>,
) -> fmt::Result {
    write!(
        w,
        "TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{time}\nTLS.expire:{expire}\n"
    )?;
    if let Some(ub) = userbuf_b64 {
        writeln!(w, "TLS.userbuf:{ub}")?;
    }
    Ok(())
}

struct MacWriter(HmacSha256);

impl fmt::Write for MacWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

fn compute_mac(
    key: &str,
    identifier: &str,
    sdkappid: u64,
    time: i64,
    expire: i64,
    userbuf_b64: Option<&str>,
) -> [u8; 32] {
    let mut w = MacWriter(
        HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC accepts keys of any length"),
    );
    write_content(&mut w, identifier, sdkappid, time, expire, userbuf_b64)
        .expect("MacWriter never fails");
    w.0.finalize().into_bytes().into()
}

#[derive(Serialize)]
struct OutDoc<'a> {
    #[serde(rename = "TLS.ver")]
    ver: &'static str,
    #[serde(rename = "TLS.identifier")]
    identifier: &'a str,
    #[serde(rename = "TLS.sdkappid")]
    sdkappid: u64,
    #[serde(rename = "TLS.expire")]
    expire: i64,
    #[serde(rename = "TLS.time")]
    time: i64,
    #[serde(rename = "TLS.userbuf", skip_serializing_if = "Option::is_none")]
    userbuf: Option<&'a str>,
    #[serde(rename = "TLS.sig")]
    sig: &'a str,
}

fn generate_inner(
    sdkappid: u64,
    key: &str,
    identifier: &str,
    expire: i64,
    now: i64,
    userbuf_b64: Option<&str>,
) -> String {
    let mac = compute_mac(key, identifier, sdkappid, now, expire, userbuf_b64);
    let mut sig_buf = [0u8; 44];
    let n = STANDARD
        .encode_slice(mac, &mut sig_buf)
        .expect("32 bytes encode to 44 base64 chars");
    let sig = std::str::from_utf8(&sig_buf[..n]).expect("base64 output is ASCII");

    let doc = OutDoc {
        ver: "2.0",
        identifier,
        sdkappid,
        expire,
        time: now,
        userbuf: userbuf_b64,
        sig,
    };
    let mut json = Vec::with_capacity(160 + identifier.len() + userbuf_b64.map_or(0, str::len));
    serde_json::to_writer(&mut json, &doc)
        .expect("serializing plain fields into a Vec cannot fail");

    let compressed = zlib_compress(&json);
    let pad = (3 - compressed.len() % 3) % 3;
    let mut out = String::with_capacity(compressed.len().div_ceil(3) * 4);
    USERSIG_ENGINE.encode_string(&compressed, &mut out);
    out.extend(std::iter::repeat_n('_', pad));
    out
}

/// Stored blocks, as the official Go library emits by default, so the server is
/// known to accept them. The ~170-byte document is mostly base64 and digits:
/// deflating saves ~35 bytes (48 URL chars) but made generate() ~1.6–1.8x
/// slower when measured (~11 µs vs ~17–20 µs), and stored data inflates faster.
const GENERATE_LEVEL: Compression = Compression::none();

thread_local! {
    // miniz_oxide's compressor state is a few hundred KiB; allocating it per
    // call costs ~100 µs, resetting a per-thread one ~10 µs.
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(GENERATE_LEVEL, true));
}

fn zlib_compress(data: &[u8]) -> Vec<u8> {
    COMPRESSOR.with_borrow_mut(|c| {
        c.reset();
        // Input this small always fits in one deflate block; the slack covers
        // the zlib header, block headers and Adler-32 even for incompressible data.
        let mut out = Vec::with_capacity(data.len() + 64);
        loop {
            let consumed = usize::try_from(c.total_in()).expect("input length fits usize");
            match c.compress_vec(&data[consumed..], &mut out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) => return out,
                Ok(_) => out.reserve(out.capacity().max(64)),
                Err(e) => panic!("zlib compression of an in-memory buffer failed: {e}"),
            }
        }
    })
}

/// Inflates a complete zlib stream, refusing truncation, trailing bytes and
/// anything that would exceed [`MAX_INFLATED_LEN`].
fn inflate_bounded(input: &[u8]) -> Result<Vec<u8>, UserSigError> {
    let mut d = Decompress::new(true);
    let mut out = Vec::with_capacity((input.len() * 4).clamp(256, MAX_INFLATED_LEN + 1));
    loop {
        let (in_before, out_before) = (d.total_in(), d.total_out());
        let consumed = usize::try_from(in_before).map_err(|_| UserSigError::Malformed("zlib"))?;
        let status = d
            .decompress_vec(&input[consumed..], &mut out, FlushDecompress::None)
            .map_err(|_| UserSigError::Malformed("invalid zlib stream"))?;
        if out.len() > MAX_INFLATED_LEN {
            return Err(UserSigError::Malformed("inflated document too large"));
        }
        if status == Status::StreamEnd {
            break;
        }
        if out.len() == out.capacity() {
            // Grow geometrically but never past the cap (+1 so overflow is
            // detectable). `room` is ≥ 1 here because len ≤ MAX_INFLATED_LEN.
            let room = MAX_INFLATED_LEN + 1 - out.len();
            out.reserve_exact(out.len().max(256).min(room));
        } else if d.total_in() == in_before && d.total_out() == out_before {
            return Err(UserSigError::Malformed("truncated zlib stream"));
        }
    }
    if usize::try_from(d.total_in()).ok() != Some(input.len()) {
        // No official encoder emits trailing bytes; accepting them would make
        // many distinct strings verify as the same sig.
        return Err(UserSigError::Malformed("trailing data after zlib stream"));
    }
    Ok(out)
}

/// Lenient view of the JSON document: any member order and whitespace, unknown
/// members ignored, numbers as JSON numbers or canonical decimal strings.
/// Duplicate members are rejected (serde's default) so no two parsers can
/// disagree about which value was signed.
#[derive(Deserialize)]
struct WireDoc {
    #[serde(rename = "TLS.ver", default)]
    ver: Option<String>,
    #[serde(rename = "TLS.identifier")]
    identifier: String,
    #[serde(rename = "TLS.sdkappid", deserialize_with = "de_u64")]
    sdkappid: u64,
    #[serde(rename = "TLS.time", deserialize_with = "de_i64")]
    time: i64,
    #[serde(rename = "TLS.expire", deserialize_with = "de_i64")]
    expire: i64,
    #[serde(rename = "TLS.userbuf", default)]
    userbuf: Option<String>,
    #[serde(rename = "TLS.sig")]
    sig: String,
}

/// Integer from a JSON number or a decimal string. Strings must be canonical
/// (no sign, no leading zeros, no spaces) because the HMAC covers the canonical
/// decimal; a non-canonical string would be signed text we cannot reproduce.
struct IntVisitor<T>(std::marker::PhantomData<T>);

impl<T> serde::de::Visitor<'_> for IntVisitor<T>
where
    T: TryFrom<u64> + TryFrom<i64> + std::str::FromStr + fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer or a decimal string")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom("integer out of range"))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom("integer out of range"))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        let n: T = v.parse().map_err(|_| E::custom("not a decimal integer"))?;
        if n.to_string() != v {
            return Err(E::custom("non-canonical decimal string"));
        }
        Ok(n)
    }
}

fn de_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(IntVisitor(std::marker::PhantomData))
}

fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    d.deserialize_any(IntVisitor(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::ZlibEncoder;
    use std::io::Write as _;

    const K1: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
    const K2: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const APP1: u64 = 1_400_000_000;
    const APP2: u64 = 1_400_123_456;
    const T1: i64 = 1_569_910_200;
    const T2: i64 = 1_700_000_000;

    const V1_PY: &str = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkKjIT87NK82CSxSnZiQUFmSlAKUMTAyiAyqVWFGQWpYJkTE1NjRDiJZm5EFEzS0tDAyO4eHFmOsiGdP-81HBD42JDS7f0yjyLoPIc1xL9Ip-scuPyKp9CS1-t4EKnpIgQz7S8QFulWgAoqDP8";
    const V1_NODE: &str = "eJyrVgrxCdYrSy1SslIy0jNQ0gHzM1NS80oy0zLBwhWZiflZpXlQqeKU7MSCgswUJStDEwMogMiUZOamKlkZmppZWhoaGMFEUysKMovA4qamRnC1xZnpSlZK6f75qeGGxsWGlm7plXkWQeU5riX6RT7Z5cblVT6Flr7awYVOSREhnml5gbZKtQCu3TKc";
    const V1_RUST: &str = "eJw9jNEKgjAYhd9lt4U5zWhCN0FBsIhSqFtjc-xZc26rWdG7J8s8d*f7DueNcpoFD65RiqIgRGPfgXFpoQSPWyjqy132yrCqUAoYSvE07PMzFm68o8mMEBxGf8pbBdrzJImGrQHRPYtdzY84NpisxVPOD*66shNNKxe7F23IdpQ1y-Mp35Ryv0CfL67dMpw_";
    const V2_PY: &str = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkElNyM-Myi0uKEkvyi2BKilOyEwsKMlOACgxNDKAAKpdaUZBZlAqUsTAzgQuWZOaChAxNzSwtDQ2M4OLFmekgS9yjgrUrTAJ8fEsLczKTKj3yg10NTLJyksoCghMDDNLCwlKMXE1dLJ3MMxxtlWoBSzQ1IA__";
    const V2_NODE: &str = "eJw1yssKwjAUBNB-uVulJCWtNuBCseiiQiDShbuUpHq1L5NYKuK-C7Wd3ZyZD5wzGfTGAocwILAcO2rTeCxxZKVrbNB5q3xrp4PTD9V1qIFTRqb8F4*1AU6jOEkoCWc1Q4fWAF-HbCaHV*BwuMjFwER2ej0rLN7HVqaE3auiF1IJUua5DtNon*xWt*0Gvj*74DPA";
    const V3_PY: &str = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIk4MLFKdmJBQWZKUBBQxMDKIDKpVYUZBalgmRMTU2NEOIlmbkQUTNLS0MDI7h4cWY6yGzngqxSp5TAYsuo8rxSd0evIIv8vHz-VE-LtPLUCKMyT1-fSEuTTH*vcK9IW6VaAGblMR0_";
    const V3_NODE: &str = "eJyrVgrxCdYrSy1SslIy0jNQ0gHzM1NS80oy0zLBwjDB4pTsxIKCzBQlK0MTAyiAyJRk5qYqWRmamllaGhoYwURTKwoyi8DipqZGcLXFmelKVkrOBVmlTimBxZZR5Xml7o5eQRb5efn*qZ6WaeWpEUZlnr6*kZYmmf5e4V6Rtkq1AAXZL70_";
    const V4_PY: &str = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIk4MLFKdmJBQWZKUBBQxMDKIDKpVYUZBalgmRMTU2NEOIlmbkQUTNLS0MDI7h4aXFqUVJpGsj8yHCvLLgVmekgoSRn41LT5NLinOB0C5dic*9IU4vcjODskKKK0rwit1JTg5TslGznSA*TTAtbpVoA9fY35Q__";
    const V6_PY: &str = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkElNyM-NgUsUp2YkFBZkpQAlDEwMDQyNjE1MzqFxqRUFmUSpQxszAxMLAACpakpkLEjM0N4ACmEmZ6SDT85MtKnICggM90wojtfWNIg3MnU0jPD1DnEuTMwK1tYtD0pxMyyrMi4stDWyVagEgnzGD";
    const V6_NODE: &str = "eJw1ybEOgjAUheF3uSsGb5FSbOIiUxMHCQwyElr0RsFKkTQxvrsJ4NnO93*gPBXhZAaQEIUIm-mTNv1ILc1c6476NTh9r60lDZLFiCzaxTxZykidAckErlvUeEuDAZlgnP7N0RUkPJvUP85FrtpXFWyjCkXGL0qV2bu55UHgyvbIJy*c2*MBvj*thjAj";

    struct Vector {
        key: &'static str,
        app: u64,
        time: i64,
        identifier: &'static str,
        expire: i64,
        userbuf: Option<&'static [u8]>,
        tls_sig: &'static str,
        official: &'static [&'static str],
    }

    const VECTORS: &[Vector] = &[
        Vector {
            key: K1,
            app: APP1,
            time: T1,
            identifier: "xiaojun",
            expire: 15_552_000,
            userbuf: None,
            tls_sig: "gOoeW13s19Fgyn8RwlEt/rLkw3wzLq9M+SqBbXTIfnQ=",
            official: &[V1_PY, V1_NODE, V1_RUST],
        },
        Vector {
            key: K1,
            app: APP1,
            time: T1,
            identifier: "administrator",
            expire: 86_400,
            userbuf: None,
            tls_sig: "GZS+x4PLMuqlibyHoSE04jlbvPSaP0fVVd2E5D9B7hA=",
            official: &[V2_PY, V2_NODE],
        },
        Vector {
            key: K1,
            app: APP1,
            time: T1,
            identifier: "0",
            expire: 15_552_000,
            userbuf: None,
            tls_sig: "CpjuBdQs9ZwnuGAJR8onoOeI9fweX2vIMMY94iOJWJY=",
            official: &[V3_PY, V3_NODE],
        },
        Vector {
            key: K1,
            app: APP1,
            time: T1,
            identifier: "0",
            expire: 15_552_000,
            userbuf: Some(b"abc"),
            tls_sig: "bC3u5cuslSg8Ds7KY58mhSkTrxunrFu50dkdkCYH4i8=",
            official: &[V4_PY],
        },
        Vector {
            key: K1,
            app: APP1,
            time: T1,
            identifier: "xiaojun",
            expire: 15_552_000,
            userbuf: Some(b"abc"),
            tls_sig: "3TxjjQy6zPPaA/ym48DhPp0nXv+HlvvewKWOX4u3upg=",
            official: &[],
        },
        Vector {
            key: K2,
            app: APP2,
            time: T2,
            identifier: "admin",
            expire: 604_800,
            userbuf: None,
            tls_sig: "oc8xlPSQIfqY+/2Y07C5XIITCuchQ++sTfB5vx7ss90=",
            official: &[V6_PY, V6_NODE],
        },
    ];

    fn hex(bytes: &[u8]) -> String {
        hex::encode(bytes)
    }

    fn to_usersig(zlib: &[u8]) -> String {
        STANDARD
            .encode(zlib)
            .chars()
            .map(|c| match c {
                '+' => '*',
                '/' => '-',
                '=' => '_',
                c => c,
            })
            .collect()
    }

    fn zlib(data: &[u8], level: Compression) -> Vec<u8> {
        let mut enc = ZlibEncoder::new(Vec::new(), level);
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn usersig_from_json(json: &str) -> String {
        to_usersig(&zlib(json.as_bytes(), Compression::default()))
    }

    fn inflate(sig: &str) -> String {
        let std: String = sig
            .chars()
            .map(|c| match c {
                '*' => '+',
                '-' => '/',
                '_' => '=',
                c => c,
            })
            .collect();
        let z = STANDARD.decode(std).unwrap();
        String::from_utf8(inflate_bounded(&z).unwrap()).unwrap()
    }

    #[test]
    fn tls_sig_vectors() {
        for v in VECTORS {
            assert_eq!(
                tls_sig(v.key, v.identifier, v.app, v.time, v.expire, v.userbuf),
                v.tls_sig,
                "vector for identifier {:?} userbuf {:?}",
                v.identifier,
                v.userbuf
            );
        }
    }

    #[test]
    fn v1_content_and_hmac_hex() {
        let mut content = String::new();
        write_content(&mut content, "xiaojun", APP1, T1, 15_552_000, None).unwrap();
        assert_eq!(
            content.as_bytes(),
            b"TLS.identifier:xiaojun\nTLS.sdkappid:1400000000\nTLS.time:1569910200\nTLS.expire:15552000\n"
        );
        let mac = compute_mac(K1, "xiaojun", APP1, T1, 15_552_000, None);
        assert_eq!(
            hex(&mac),
            "80ea1e5b5decd7d160ca7f11c2512dfeb2e4c37c332eaf4cf92a816d74c87e74"
        );
    }

    #[test]
    fn v4_content_has_userbuf_line() {
        let mut content = String::new();
        write_content(&mut content, "0", APP1, T1, 15_552_000, Some("YWJj")).unwrap();
        assert_eq!(
            content,
            "TLS.identifier:0\nTLS.sdkappid:1400000000\nTLS.time:1569910200\nTLS.expire:15552000\nTLS.userbuf:YWJj\n"
        );
    }

    #[test]
    fn official_strings_decode_to_inputs() {
        for v in VECTORS {
            for s in v.official {
                let (info, decoded) = decode(s).unwrap();
                assert_eq!(
                    info,
                    UserSigInfo {
                        identifier: v.identifier.to_owned(),
                        sdkappid: v.app,
                        time: v.time,
                        expire: v.expire,
                    }
                );
                assert_eq!(STANDARD.encode(decoded.mac), v.tls_sig);
                assert_eq!(
                    decoded.userbuf.as_deref(),
                    v.userbuf.map(|b| STANDARD.encode(b)).as_deref()
                );
            }
        }
    }

    #[test]
    fn official_strings_verify_with_strict_expiry_boundary() {
        let mut checked = 0;
        for v in VECTORS {
            for s in v.official {
                let end = v.time + v.expire;
                let want = UserSigInfo {
                    identifier: v.identifier.to_owned(),
                    sdkappid: v.app,
                    time: v.time,
                    expire: v.expire,
                };
                assert_eq!(
                    verify(v.app, v.key, s, v.identifier, v.time).as_ref(),
                    Ok(&want)
                );
                assert_eq!(
                    verify(v.app, v.key, s, v.identifier, v.time + 60).as_ref(),
                    Ok(&want)
                );
                assert_eq!(
                    verify(v.app, v.key, s, v.identifier, end).as_ref(),
                    Ok(&want)
                );
                assert_eq!(
                    verify(v.app, v.key, s, v.identifier, end + 1),
                    Err(UserSigError::Expired { expired_at: end })
                );
                assert_eq!(want.expires_at(), end);
                checked += 1;
            }
        }
        assert_eq!(
            checked, 10,
            "9 official Python/Node strings + the flate2 one"
        );
    }

    #[test]
    fn official_strings_json_shapes() {
        // Pins the cosmetic differences that decode() has to tolerate.
        let py = inflate(V1_PY);
        assert_eq!(
            py,
            r#"{"TLS.ver": "2.0", "TLS.identifier": "xiaojun", "TLS.sdkappid": 1400000000, "TLS.expire": 15552000, "TLS.time": 1569910200, "TLS.sig": "gOoeW13s19Fgyn8RwlEt/rLkw3wzLq9M+SqBbXTIfnQ="}"#
        );
        let node = inflate(V1_NODE);
        assert_eq!(
            node,
            r#"{"TLS.ver":"2.0","TLS.identifier":"xiaojun","TLS.sdkappid":1400000000,"TLS.time":1569910200,"TLS.expire":15552000,"TLS.sig":"gOoeW13s19Fgyn8RwlEt/rLkw3wzLq9M+SqBbXTIfnQ="}"#
        );
        assert_eq!(inflate(V1_RUST), node);
    }

    #[test]
    fn generate_round_trip() {
        for v in VECTORS {
            let s = match v.userbuf {
                None => generate(v.app, v.key, v.identifier, v.expire, v.time),
                Some(ub) => generate_with_userbuf(v.app, v.key, v.identifier, v.expire, v.time, ub),
            };
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'_')),
                "URL-safe: {s}"
            );
            let info = verify(v.app, v.key, &s, v.identifier, v.time + 1).unwrap();
            assert_eq!(info.identifier, v.identifier);
            assert_eq!(
                (info.sdkappid, info.time, info.expire),
                (v.app, v.time, v.expire)
            );
            let (_, decoded) = decode(&s).unwrap();
            assert_eq!(STANDARD.encode(decoded.mac), v.tls_sig);
        }
    }

    #[test]
    fn generate_document_shape() {
        let s = generate(APP1, K1, "xiaojun", 15_552_000, T1);
        assert!(s.starts_with("eAE"), "zlib header 78 01, stored blocks");
        let json: serde_json::Value = serde_json::from_str(&inflate(&s)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "TLS.ver": "2.0",
                "TLS.identifier": "xiaojun",
                "TLS.sdkappid": 1_400_000_000u64,
                "TLS.expire": 15_552_000,
                "TLS.time": 1_569_910_200,
                "TLS.sig": "gOoeW13s19Fgyn8RwlEt/rLkw3wzLq9M+SqBbXTIfnQ=",
            })
        );
        let with_ub = generate_with_userbuf(APP1, K1, "0", 15_552_000, T1, b"abc");
        let json: serde_json::Value = serde_json::from_str(&inflate(&with_ub)).unwrap();
        assert_eq!(json["TLS.userbuf"], "YWJj");
        assert_eq!(
            json["TLS.sig"],
            "bC3u5cuslSg8Ds7KY58mhSkTrxunrFu50dkdkCYH4i8="
        );
    }

    #[test]
    fn generate_is_deterministic_and_reuses_compressor_cleanly() {
        let a = generate(APP1, K1, "administrator", 86_400, T1);
        let _ = generate(APP2, K2, &"x".repeat(300), 1, T2);
        let b = generate(APP1, K1, "administrator", 86_400, T1);
        assert_eq!(a, b);
    }

    #[test]
    fn identifier_needing_json_escapes_round_trips() {
        let id = "a\"b\\c/d\u{1}<&>中文";
        let s = generate(APP1, K1, id, 3600, T1);
        assert_eq!(verify(APP1, K1, &s, id, T1).unwrap().identifier, id);
    }

    #[test]
    fn tampered_inner_sig_is_bad_signature() {
        let good = "gOoeW13s19Fgyn8RwlEt/rLkw3wzLq9M+SqBbXTIfnQ=";
        let bad = "hOoeW13s19Fgyn8RwlEt/rLkw3wzLq9M+SqBbXTIfnQ=";
        let json = |sig: &str| {
            format!(
                r#"{{"TLS.ver":"2.0","TLS.identifier":"xiaojun","TLS.sdkappid":1400000000,"TLS.expire":15552000,"TLS.time":1569910200,"TLS.sig":"{sig}"}}"#
            )
        };
        let ok = usersig_from_json(&json(good));
        assert!(verify(APP1, K1, &ok, "xiaojun", T1).is_ok());
        let tampered = usersig_from_json(&json(bad));
        assert_eq!(
            verify(APP1, K1, &tampered, "xiaojun", T1),
            Err(UserSigError::BadSignature)
        );
        // Even long expired: a forgery must never be reported as merely expired.
        assert_eq!(
            verify(APP1, K1, &tampered, "xiaojun", i64::MAX),
            Err(UserSigError::BadSignature)
        );
    }

    #[test]
    fn tampered_claims_are_bad_signature() {
        // Extending the validity without the key must fail.
        let json = r#"{"TLS.ver":"2.0","TLS.identifier":"xiaojun","TLS.sdkappid":1400000000,"TLS.expire":15552001,"TLS.time":1569910200,"TLS.sig":"gOoeW13s19Fgyn8RwlEt/rLkw3wzLq9M+SqBbXTIfnQ="}"#;
        assert_eq!(
            verify(APP1, K1, &usersig_from_json(json), "xiaojun", T1),
            Err(UserSigError::BadSignature)
        );
        // Dropping the userbuf of V4 changes the signed content.
        let json = r#"{"TLS.ver":"2.0","TLS.identifier":"0","TLS.sdkappid":1400000000,"TLS.expire":15552000,"TLS.time":1569910200,"TLS.sig":"bC3u5cuslSg8Ds7KY58mhSkTrxunrFu50dkdkCYH4i8="}"#;
        assert_eq!(
            verify(APP1, K1, &usersig_from_json(json), "0", T1),
            Err(UserSigError::BadSignature)
        );
    }

    #[test]
    fn wrong_key_is_bad_signature() {
        assert_eq!(
            verify(APP1, K2, V1_PY, "xiaojun", T1),
            Err(UserSigError::BadSignature)
        );
        // The key is text, not hex: hex-decoding it must not be what verifies.
        let s = generate(APP1, K1, "xiaojun", 100, T1);
        assert_eq!(
            verify(APP1, &K1.to_uppercase(), &s, "xiaojun", T1),
            Err(UserSigError::BadSignature)
        );
    }

    #[test]
    fn wrong_sdkappid_and_identifier() {
        assert_eq!(
            verify(APP2, K1, V1_PY, "xiaojun", T1),
            Err(UserSigError::WrongSdkAppId { found: APP1 })
        );
        assert_eq!(
            verify(APP1, K1, V1_PY, "xiaojun2", T1),
            Err(UserSigError::WrongIdentifier)
        );
        // Comparison is exact: no case folding or trimming.
        assert_eq!(
            verify(APP1, K1, V1_PY, "Xiaojun", T1),
            Err(UserSigError::WrongIdentifier)
        );
        assert_eq!(
            verify(APP1, K1, V1_PY, "xiaojun ", T1),
            Err(UserSigError::WrongIdentifier)
        );
    }

    #[test]
    fn check_order_is_most_useful_first() {
        // Expired, wrong key, wrong identifier and wrong app all at once: app wins.
        assert_eq!(
            verify(APP2, K2, V1_PY, "other", i64::MAX),
            Err(UserSigError::WrongSdkAppId { found: APP1 })
        );
        // Then identifier, before the HMAC.
        assert_eq!(
            verify(APP1, K2, V1_PY, "other", i64::MAX),
            Err(UserSigError::WrongIdentifier)
        );
        // Then signature, before expiry.
        assert_eq!(
            verify(APP1, K2, V1_PY, "xiaojun", i64::MAX),
            Err(UserSigError::BadSignature)
        );
        assert_eq!(
            verify(APP1, K1, V1_PY, "xiaojun", i64::MAX),
            Err(UserSigError::Expired {
                expired_at: T1 + 15_552_000
            })
        );
    }

    #[test]
    fn go_style_stored_blocks_verify() {
        // Go: compact, Go key order, trailing newline, zlib.NoCompression.
        let sig = tls_sig(K1, "xiaojun", APP1, T1, 15_552_000, None);
        let json = format!(
            "{{\"TLS.ver\":\"2.0\",\"TLS.identifier\":\"xiaojun\",\"TLS.sdkappid\":1400000000,\"TLS.expire\":15552000,\"TLS.time\":1569910200,\"TLS.sig\":\"{sig}\"}}\n"
        );
        let z = zlib(json.as_bytes(), Compression::none());
        assert_eq!(&z[..2], &[0x78, 0x01]);
        assert_eq!(z[2] & 0b110, 0, "first deflate block is stored (BTYPE=00)");
        let s = to_usersig(&z);
        assert_eq!(
            verify(APP1, K1, &s, "xiaojun", T1).unwrap().expire,
            15_552_000
        );
    }

    #[test]
    fn all_zlib_levels_verify() {
        let sig = tls_sig(K1, "xiaojun", APP1, T1, 15_552_000, None);
        let json = format!(
            r#"{{"TLS.ver":"2.0","TLS.sdkappid":1400000000,"TLS.identifier":"xiaojun","TLS.time":1569910200,"TLS.expire":15552000,"TLS.sig":"{sig}"}}"#
        );
        for level in 0..=9 {
            let s = to_usersig(&zlib(json.as_bytes(), Compression::new(level)));
            assert!(verify(APP1, K1, &s, "xiaojun", T1).is_ok(), "level {level}");
        }
    }

    #[test]
    fn php_style_escaped_slashes_verify() {
        let sig = tls_sig(K1, "xiaojun", APP1, T1, 15_552_000, None).replace('/', "\\/");
        assert!(sig.contains("\\/"));
        let json = format!(
            r#"{{"TLS.ver":"2.0","TLS.identifier":"xiaojun","TLS.sdkappid":1400000000,"TLS.expire":15552000,"TLS.time":1569910200,"TLS.sig":"{sig}"}}"#
        );
        assert!(verify(APP1, K1, &usersig_from_json(&json), "xiaojun", T1).is_ok());
    }

    #[test]
    fn numeric_strings_and_unknown_members_accepted() {
        let sig = tls_sig(K1, "xiaojun", APP1, T1, 15_552_000, None);
        let json = format!(
            r#"{{"TLS.identifier":"xiaojun","TLS.sdkappid":"1400000000","TLS.expire":"15552000","TLS.time":"1569910200","TLS.sig":"{sig}","extra":[1,{{}}]}}"#
        );
        let info = verify(APP1, K1, &usersig_from_json(&json), "xiaojun", T1).unwrap();
        assert_eq!(info.expires_at(), T1 + 15_552_000);
    }

    #[test]
    fn missing_padding_tolerated() {
        let trimmed = V2_PY.trim_end_matches('_');
        assert_ne!(trimmed, V2_PY);
        assert!(verify(APP1, K1, trimmed, "administrator", T1).is_ok());
        // Plain standard base64 (no URL substitution) is accepted too, like Go's verifier.
        let std_b64: String = V2_PY
            .chars()
            .map(|c| match c {
                '*' => '+',
                '-' => '/',
                '_' => '=',
                c => c,
            })
            .collect();
        assert!(verify(APP1, K1, &std_b64, "administrator", T1).is_ok());
    }

    fn malformed(s: &str) -> bool {
        matches!(decode(s), Err(UserSigError::Malformed(_)))
            && matches!(
                verify(APP1, K1, s, "xiaojun", T1),
                Err(UserSigError::Malformed(_))
            )
    }

    fn doc_with(sdkappid: &str, time: &str, ver: &str) -> String {
        let sig = tls_sig(K1, "xiaojun", APP1, T1, 15_552_000, None);
        usersig_from_json(&format!(
            r#"{{"TLS.ver":{ver},"TLS.identifier":"xiaojun","TLS.sdkappid":{sdkappid},"TLS.expire":15552000,"TLS.time":{time},"TLS.sig":"{sig}"}}"#
        ))
    }

    #[test]
    fn garbage_is_malformed() {
        assert_eq!(decode(""), Err(UserSigError::Malformed("empty")));
        assert!(malformed("!!!!"));
        assert!(malformed("eJ yr"));
        assert!(malformed("a"));
        assert!(malformed("____"));
        assert!(malformed(&"A".repeat(MAX_ENCODED_LEN + 1)));
        // base64 of non-zlib bytes
        assert!(malformed(&to_usersig(b"hello world, not zlib")));
        assert!(malformed(&to_usersig(&[0x78, 0x9c])));
        // zlib of non-JSON / wrong JSON shape
        assert!(malformed(&usersig_from_json("not json")));
        assert!(malformed(&usersig_from_json("")));
        assert!(malformed(&usersig_from_json("[]")));
        assert!(malformed(&usersig_from_json("null")));
        assert!(malformed(&usersig_from_json("{}")));
        assert!(malformed(&usersig_from_json(r#"{"TLS.ver":"2.0"}"#)));
        // raw deflate and gzip are not zlib
        let json = inflate(V1_NODE);
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
        raw.write_all(json.as_bytes()).unwrap();
        assert!(malformed(&to_usersig(&raw.finish().unwrap())));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(json.as_bytes()).unwrap();
        assert!(malformed(&to_usersig(&gz.finish().unwrap())));
        // Sanity check of the helper itself.
        assert!(decode(&doc_with("1400000000", "1569910200", "\"2.0\"")).is_ok());
    }

    #[test]
    fn each_missing_member_is_malformed() {
        let full: serde_json::Value = serde_json::from_str(&inflate(V1_NODE)).unwrap();
        for member in [
            "TLS.identifier",
            "TLS.sdkappid",
            "TLS.expire",
            "TLS.time",
            "TLS.sig",
        ] {
            let mut doc = full.clone();
            doc.as_object_mut().unwrap().remove(member);
            assert!(malformed(&usersig_from_json(&doc.to_string())), "{member}");
        }
        let mut doc = full.clone();
        doc.as_object_mut().unwrap().remove("TLS.ver");
        assert!(
            decode(&usersig_from_json(&doc.to_string())).is_ok(),
            "TLS.ver is optional"
        );
    }

    #[test]
    fn bad_member_values_are_malformed() {
        let cases = [
            ("-1400000000", "1569910200", "\"2.0\""),
            ("1400000000.0", "1569910200", "\"2.0\""),
            ("\"01400000000\"", "1569910200", "\"2.0\""),
            ("\"+1400000000\"", "1569910200", "\"2.0\""),
            ("\" 1400000000\"", "1569910200", "\"2.0\""),
            ("\"\"", "1569910200", "\"2.0\""),
            ("18446744073709551616", "1569910200", "\"2.0\""),
            ("null", "1569910200", "\"2.0\""),
            ("true", "1569910200", "\"2.0\""),
            ("1400000000", "9223372036854775808", "\"2.0\""),
            ("1400000000", "1.5e9", "\"2.0\""),
            ("1400000000", "\"1569910200x\"", "\"2.0\""),
            ("1400000000", "1569910200", "\"1.0\""),
            ("1400000000", "1569910200", "2.0"),
        ];
        for (app, time, ver) in cases {
            assert!(malformed(&doc_with(app, time, ver)), "{app} {time} {ver}");
        }
        let dup = r#"{"TLS.ver":"2.0","TLS.identifier":"xiaojun","TLS.identifier":"admin","TLS.sdkappid":1400000000,"TLS.expire":15552000,"TLS.time":1569910200,"TLS.sig":"gOoeW13s19Fgyn8RwlEt/rLkw3wzLq9M+SqBbXTIfnQ="}"#;
        assert!(malformed(&usersig_from_json(dup)), "duplicate member");
        let id_number = r#"{"TLS.identifier":0,"TLS.sdkappid":1400000000,"TLS.expire":15552000,"TLS.time":1569910200,"TLS.sig":"CpjuBdQs9ZwnuGAJR8onoOeI9fweX2vIMMY94iOJWJY="}"#;
        assert!(
            malformed(&usersig_from_json(id_number)),
            "identifier must be a string"
        );
    }

    #[test]
    fn inner_sig_must_be_32_bytes_of_base64() {
        for sig in [
            "",
            "not base64!",
            "AAAA",
            "gOoeW13s19Fgyn8RwlEt/rLkw3wzLq9M+SqBbXTIfnQ=AAAA",
        ] {
            let json = format!(
                r#"{{"TLS.identifier":"xiaojun","TLS.sdkappid":1400000000,"TLS.expire":15552000,"TLS.time":1569910200,"TLS.sig":"{sig}"}}"#
            );
            assert!(malformed(&usersig_from_json(&json)), "{sig:?}");
        }
    }

    #[test]
    fn zlib_framing_is_strict() {
        let z = {
            let std: String = V1_NODE
                .chars()
                .map(|c| match c {
                    '*' => '+',
                    '-' => '/',
                    '_' => '=',
                    c => c,
                })
                .collect();
            STANDARD.decode(std).unwrap()
        };
        assert!(decode(&to_usersig(&z)).is_ok());
        // Missing Adler-32 / truncated deflate data.
        for cut in [1, 2, 4, 10] {
            assert!(malformed(&to_usersig(&z[..z.len() - cut])), "cut {cut}");
        }
        // Corrupted Adler-32.
        let mut bad = z.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(malformed(&to_usersig(&bad)));
        // Trailing garbage after a complete stream.
        let mut trailing = z.clone();
        trailing.push(0);
        assert!(malformed(&to_usersig(&trailing)));
    }

    #[test]
    fn zip_bomb_refused() {
        let sig = tls_sig(K1, "xiaojun", APP1, T1, 15_552_000, None);
        let pad = " ".repeat(MAX_INFLATED_LEN);
        let json = format!(
            r#"{{"TLS.identifier":"xiaojun","TLS.sdkappid":1400000000,"TLS.expire":15552000,"TLS.time":1569910200,"TLS.sig":"{sig}"}}{pad}"#
        );
        let s = usersig_from_json(&json);
        assert!(s.len() < 1024, "compresses well");
        assert_eq!(
            decode(&s),
            Err(UserSigError::Malformed("inflated document too large"))
        );
        let big = to_usersig(&zlib(&vec![0u8; 10 << 20], Compression::best()));
        assert_eq!(
            decode(&big),
            Err(UserSigError::Malformed("inflated document too large"))
        );
        // Every growth path of the output buffer must end in an error, not a panic.
        for n in [MAX_INFLATED_LEN + 1, 20_000, 1 << 16, 1 << 20] {
            for level in [1, 6, 9] {
                let z = zlib(&vec![b' '; n], Compression::new(level));
                assert_eq!(
                    decode(&to_usersig(&z)),
                    Err(UserSigError::Malformed("inflated document too large")),
                    "{n} bytes at level {level} ({} compressed)",
                    z.len()
                );
            }
        }
        let z = zlib(&[b' '; MAX_INFLATED_LEN], Compression::best());
        assert_eq!(inflate_bounded(&z).unwrap().len(), MAX_INFLATED_LEN);
        // Just under the cap is fine.
        let json = format!(
            r#"{{"TLS.identifier":"xiaojun","TLS.sdkappid":1400000000,"TLS.expire":15552000,"TLS.time":1569910200,"TLS.sig":"{sig}"}}"#
        );
        let fill = " ".repeat(MAX_INFLATED_LEN - json.len());
        assert!(verify(APP1, K1, &usersig_from_json(&(json + &fill)), "xiaojun", T1).is_ok());
    }

    #[test]
    fn mutations_never_panic() {
        let good = generate(APP1, K1, "xiaojun", 100, T1);
        let pad = good.bytes().rev().take_while(|&b| b == b'_').count();
        for cut in 0..good.len() - pad {
            assert!(malformed(&good[..cut]), "prefix {cut}");
        }
        // Byte-level damage reaches the inflater and JSON parser directly.
        for official in [V1_NODE, V1_PY, V2_PY, &good] {
            let std: String = official
                .chars()
                .map(|c| match c {
                    '*' => '+',
                    '-' => '/',
                    '_' => '=',
                    c => c,
                })
                .collect();
            let z = STANDARD.decode(std).unwrap();
            for cut in 0..z.len() {
                assert!(malformed(&to_usersig(&z[..cut])), "cut {cut}");
            }
            for i in 0..z.len() {
                for flip in [0x01, 0x10, 0x80, 0xff] {
                    let mut m = z.clone();
                    m[i] ^= flip;
                    // Flipping the unused padding bits after the final deflate
                    // block is invisible to every inflater; anything that still
                    // verifies must carry exactly the original claims.
                    if let Ok(info) = verify(APP1, K1, &to_usersig(&m), "xiaojun", T1) {
                        assert_eq!(
                            Ok(info),
                            verify(APP1, K1, official, "xiaojun", T1),
                            "byte {i}"
                        );
                    }
                }
            }
        }
        let alphabet = b"AZaz09*-_+/=!";
        for i in 0..good.len() {
            for &c in alphabet {
                let mut m = good.clone().into_bytes();
                m[i] = c;
                let m = String::from_utf8(m).unwrap();
                let _ = verify(APP1, K1, &m, "xiaojun", T1);
            }
        }
    }

    #[test]
    fn error_messages_leak_nothing() {
        let errs = [
            verify(APP1, K1, "", "xiaojun", T1).unwrap_err(),
            verify(APP2, K1, V1_PY, "xiaojun", T1).unwrap_err(),
            verify(APP1, K1, V1_PY, "someone", T1).unwrap_err(),
            verify(APP1, K2, V1_PY, "xiaojun", T1).unwrap_err(),
            verify(APP1, K1, V1_PY, "xiaojun", i64::MAX).unwrap_err(),
            verify(APP1, K1, &doc_with("\"x\"", "0", "\"2.0\""), "xiaojun", T1).unwrap_err(),
        ];
        for e in errs {
            let msg = e.to_string();
            for secret in [K1, K2, V1_PY, "xiaojun", "someone", "gOoeW13s", "eJ"] {
                assert!(!msg.contains(secret), "{msg:?} contains {secret:?}");
            }
        }
        assert_eq!(
            UserSigError::WrongSdkAppId { found: APP1 }.to_string(),
            "UserSig was issued for SDKAppID 1400000000, which is not the configured one"
        );
        assert_eq!(
            UserSigError::Expired { expired_at: 5 }.to_string(),
            "UserSig expired at unix time 5"
        );
        let (_, d) = decode(V1_PY).unwrap();
        assert!(
            !format!("{d:?}").contains("128"),
            "MAC bytes are redacted in Debug"
        );
    }

    #[test]
    fn expires_at_saturates() {
        let info = UserSigInfo {
            identifier: String::new(),
            sdkappid: 1,
            time: i64::MAX - 1,
            expire: 10,
        };
        assert_eq!(info.expires_at(), i64::MAX);
    }

    #[test]
    fn callback_sign_vectors() {
        const T: &str = "1669872112";
        assert_eq!(
            callback_sign("xxxxyyyy", T),
            "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061"
        );
        assert_eq!(
            callback_sign("xxxyyy", T),
            "e78a85473bed2cdc8d6fa8c4d5a4ba4735fd64156e15a99516b9890293e135de"
        );
        assert_eq!(
            callback_sign("abc123", "1569910200"),
            "76dd84f7ab134c3f270621bb6ea3d93f21de7515a658c46bc929f1ec30a7109f"
        );
    }

    #[test]
    fn callback_sign_doc_typo_trap() {
        // The IM overview page prints Token=xxxyyy next to this hash; it belongs to xxxxyyyy.
        let printed = "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061";
        assert_ne!(callback_sign("xxxyyy", "1669872112"), printed);
        assert!(!verify_callback_sign("xxxyyy", "1669872112", printed));
        assert!(verify_callback_sign("xxxxyyyy", "1669872112", printed));
    }

    #[test]
    fn verify_callback_sign_cases() {
        let t = "1569910200";
        let good = "76dd84f7ab134c3f270621bb6ea3d93f21de7515a658c46bc929f1ec30a7109f";
        assert!(verify_callback_sign("abc123", t, good));
        assert!(verify_callback_sign("abc123", t, &good.to_uppercase()));
        assert!(!verify_callback_sign("abc123", "1569910201", good));
        assert!(!verify_callback_sign("abc12", t, good));
        assert!(!verify_callback_sign("abc123", t, ""));
        assert!(!verify_callback_sign("abc123", t, &good[..63]));
        assert!(!verify_callback_sign("abc123", t, &format!("{good}0")));
        assert!(!verify_callback_sign(
            "abc123",
            t,
            &format!("{}g", &good[..63])
        ));
        assert!(!verify_callback_sign(
            "abc123",
            t,
            &format!(" {}", &good[..63])
        ));
        // A multi-byte char must not panic the hex decoder.
        assert!(!verify_callback_sign(
            "abc123",
            t,
            &format!("é{}", &good[..62])
        ));
        // Plain concatenation, no separator: only the joined bytes matter.
        assert!(verify_callback_sign("abc", "1231569910200", good));
    }
}
