//! WeChat request signatures (`signature`, `msg_signature`, reply `MsgSignature`).
//!
//! All three are the same construction: sort the inputs byte-wise, concatenate
//! them without a separator, SHA-1, lowercase hex. The URL `signature` covers
//! `[token, timestamp, nonce]`; the message signatures additionally cover the
//! `Encrypt` ciphertext.

use sha1::{Digest, Sha1};
use subtle::{Choice, ConstantTimeEq, ConstantTimeGreater, ConstantTimeLess};

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
        let mut order = [0usize; INLINE_PARTS];
        let order = &mut order[..parts.len()];
        sorted_order(parts, order);
        for &i in order.iter() {
            hasher.update(parts[i].as_bytes());
        }
    } else {
        let mut order = vec![0usize; parts.len()];
        sorted_order(parts, &mut order);
        for &i in &order {
            hasher.update(parts[i].as_bytes());
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

/// The byte-wise order of `parts` (`order[k]` is the index of the k-th smallest), found
/// without comparing the token byte by byte against the request's values: a sort with `str`'s
/// `Ord` stops at the first differing byte, which is a comparison oracle on the token for
/// whoever chooses the nonce (a fuzzer with comparison tracing learned the sample token from it
/// in seconds: fuzz/fuzz_targets/push_open.rs). Each part's rank is the number of parts before
/// it in the order, ties broken by position; ranks and the bytes compared are computed in
/// constant time for given lengths.
fn sorted_order(parts: &[&str], order: &mut [usize]) {
    for (i, a) in parts.iter().enumerate() {
        let mut rank = 0usize;
        for (j, b) in parts.iter().enumerate() {
            let before = ct_less(b.as_bytes(), a.as_bytes())
                | (Choice::from(u8::from(j < i)) & b.as_bytes().ct_eq(a.as_bytes()));
            rank += usize::from(before.unwrap_u8());
        }
        order[rank] = i;
    }
}

/// `a < b` byte-wise (a proper prefix is smaller), looking at every byte of the longer one.
fn ct_less(a: &[u8], b: &[u8]) -> Choice {
    let mut less = Choice::from(0);
    let mut decided = Choice::from(0);
    for i in 0..a.len().max(b.len()) {
        // A missing byte counts as below every byte, so that a prefix sorts first.
        let x = a.get(i).map_or(0u16, |&v| u16::from(v) + 1);
        let y = b.get(i).map_or(0u16, |&v| u16::from(v) + 1);
        let lt = x.ct_lt(&y);
        let gt = x.ct_gt(&y);
        less |= !decided & lt;
        decided |= lt | gt;
    }
    less
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

    /// The constant-time order is the byte-wise order of `str`'s `Ord` (a prefix first, bytes
    /// above 0x7F after ASCII, equal parts in any order), for the shapes WeChat sends and the
    /// edge cases: what `sort_unstable` gave before the change.
    #[test]
    fn the_constant_time_order_is_the_byte_wise_order() {
        let cases: [&[&str]; 9] = [
            &["test", "1410685589", "test"],
            &["AAAAA", "1714036504", "1514711492"],
            &["wxpushtoken2024", "1700000000", "100002", "+qdx1OKC/y=="],
            &["b", "ba", "a", ""],
            &["", "", "x"],
            &["é", "e", "f", "\u{7f}"],
            &["abc", "abd", "ab", "abcd", "abc"],
            &["z"],
            &["9", "10", "100", "09", "+", "/", "="],
        ];
        for parts in cases {
            let mut expected = parts.to_vec();
            expected.sort_unstable();
            let mut order = vec![0; parts.len()];
            sorted_order(parts, &mut order);
            let got: Vec<&str> = order.iter().map(|&i| parts[i]).collect();
            assert_eq!(got, expected, "{parts:?}");
            let mut seen = order.clone();
            seen.sort_unstable();
            assert_eq!(seen, (0..parts.len()).collect::<Vec<_>>(), "a permutation");
        }
    }
}
