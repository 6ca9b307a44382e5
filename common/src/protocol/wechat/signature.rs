//! WeChat request signatures (`signature`, `msg_signature`, reply `MsgSignature`).
//!
//! All three are the same construction: sort the inputs byte-wise, concatenate
//! them without a separator, SHA-1, lowercase hex. The URL `signature` covers
//! `[token, timestamp, nonce]`; the message signatures additionally cover the
//! `Encrypt` ciphertext.

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// Length of a hex-encoded SHA-1 digest.
const HEX_LEN: usize = 40;

/// Callers pass 3 or 4 parts; sorting them in a stack array keeps the
/// GET/POST verification path free of heap allocations.
const INLINE_PARTS: usize = 8;

/// Computes the WeChat signature over `parts`: byte-wise sort, concatenate,
/// SHA-1, 40 lowercase hex characters.
#[must_use]
pub fn sign(parts: &[&str]) -> String {
    let hex = digest_hex(parts);
    let mut out = String::with_capacity(HEX_LEN);
    out.extend(hex.iter().map(|&b| char::from(b)));
    out
}

/// Checks `expected` against the signature of `parts` in constant time.
///
/// `expected` is compared as given: an uppercase or whitespace-padded value is
/// a mismatch, because WeChat always sends exactly 40 lowercase hex digits and
/// normalising attacker input only widens what is accepted.
#[must_use]
pub fn verify(expected: &str, parts: &[&str]) -> bool {
    let actual = digest_hex(parts);
    // `[u8]::ct_eq` yields false on a length mismatch, and the length of our
    // own digest is public, so no separate length check is needed.
    actual.as_slice().ct_eq(expected.as_bytes()).into()
}

fn digest_hex(parts: &[&str]) -> [u8; HEX_LEN] {
    let mut hasher = Sha1::new();
    if parts.len() <= INLINE_PARTS {
        let mut sorted = [""; INLINE_PARTS];
        let sorted = &mut sorted[..parts.len()];
        sorted.copy_from_slice(parts);
        // `str`'s `Ord` compares the UTF-8 bytes, which is the byte-wise order
        // WeChat uses (so `+` and `/` sort before digits).
        sorted.sort_unstable();
        for part in sorted.iter() {
            hasher.update(part.as_bytes());
        }
    } else {
        let mut sorted = parts.to_vec();
        sorted.sort_unstable();
        for part in &sorted {
            hasher.update(part.as_bytes());
        }
    }
    let digest = hasher.finalize();

    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; HEX_LEN];
    for (pair, byte) in out.chunks_exact_mut(2).zip(digest.iter()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_wechatpy_check_signature() {
        let parts = ["test", "1410685589", "test"];
        assert_eq!(sign(&parts), "f21891de399b4e33a1a93c9a7b8a8fffb5a443ff");
        assert!(verify("f21891de399b4e33a1a93c9a7b8a8fffb5a443ff", &parts));
        // Last hex digit flipped.
        assert!(!verify("f21891de399b4e33a1a93c9a7b8a8fffb5a443fe", &parts));
    }

    #[test]
    fn v2_official_get_verification() {
        let parts = ["AAAAA", "1714036504", "1514711492"];
        assert_eq!(sign(&parts), "f464b24fc39322e44b38aa78f5edd27bd1441696");
        // The documented sorted concatenation hashes to the same value, which
        // pins the sort order independently of `sign`.
        assert_eq!(
            sign(&["15147114921714036504AAAAA"]),
            "f464b24fc39322e44b38aa78f5edd27bd1441696"
        );
        assert!(verify("f464b24fc39322e44b38aa78f5edd27bd1441696", &parts));
    }

    #[test]
    fn v3_official_plaintext_post() {
        let parts = ["AAAAA", "1714037059", "486452656"];
        assert_eq!(sign(&parts), "899cf89e464efb63f54ddac96b0a0a235f53aa78");
        assert!(verify("899cf89e464efb63f54ddac96b0a0a235f53aa78", &parts));
    }

    #[test]
    fn v4_url_signature() {
        let parts = ["AAAAA", "1714112445", "415670741"];
        assert_eq!(sign(&parts), "6c5c811b55cc85e0e1b54100749188c20beb3f5d");
        assert!(verify("6c5c811b55cc85e0e1b54100749188c20beb3f5d", &parts));
    }

    #[test]
    fn v6_url_signature() {
        let parts = ["AAAAA", "1715943329", "1590219412"];
        assert_eq!(sign(&parts), "cc0c594499c1634947d5b502f158ee518947db27");
        assert!(verify("cc0c594499c1634947d5b502f158ee518947db27", &parts));
    }

    #[test]
    fn v11_url_signature() {
        let parts = ["wxpushtoken2024", "1700000001", "987654321"];
        assert_eq!(sign(&parts), "7ea570c7201ecf98783a56920b00d8f6209609a0");
        assert!(verify("7ea570c7201ecf98783a56920b00d8f6209609a0", &parts));
    }

    #[test]
    fn input_order_does_not_matter() {
        let a = sign(&["test", "1410685589", "test"]);
        let b = sign(&["1410685589", "test", "test"]);
        let c = sign(&["test", "test", "1410685589"]);
        assert_eq!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn sort_is_bytewise_not_numeric() {
        // Numerically 9 < 10, byte-wise "10" < "9".
        assert_eq!(sign(&["9", "10"]), sign(&["109"]));
        // Uppercase sorts before lowercase, `+` and `/` before digits.
        assert_eq!(sign(&["a", "B", "1", "+", "/"]), sign(&["+/1Ba"]));
        // Multi-byte UTF-8 sorts after ASCII.
        assert_eq!(sign(&["é", "z"]), sign(&["zé"]));
    }

    #[test]
    fn verify_is_strict_about_format() {
        let parts = ["test", "1410685589", "test"];
        let good = "f21891de399b4e33a1a93c9a7b8a8fffb5a443ff";
        assert!(!verify(&good.to_uppercase(), &parts));
        assert!(!verify(&format!(" {good}"), &parts));
        assert!(!verify(&format!("{good}\n"), &parts));
        assert!(!verify(&good[..39], &parts));
        assert!(!verify("", &parts));
    }

    #[test]
    fn many_parts_use_the_heap_path_consistently() {
        let parts: Vec<String> = (0..20).rev().map(|i| format!("p{i:02}")).collect();
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let mut joined_sorted = refs.clone();
        joined_sorted.sort_unstable();
        let joined = joined_sorted.concat();
        assert_eq!(sign(&refs), sign(&[joined.as_str()]));
        assert!(verify(&sign(&refs), &refs));
    }

    #[test]
    fn empty_input_is_sha1_of_empty_string() {
        assert_eq!(sign(&[]), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(sign(&[""]), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }
}
