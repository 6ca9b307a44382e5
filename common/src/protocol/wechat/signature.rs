//! WeChat request signatures (`signature`, `msg_signature`, reply `MsgSignature`).
//!
//! All three are the same construction: sort the inputs byte-wise, concatenate
//! them without a separator, SHA-1, lowercase hex. The URL `signature` covers
//! `[token, timestamp, nonce]`; the message signatures additionally cover the
//! `Encrypt` ciphertext.

use sha1::{Digest, Sha1};
use std::hint::black_box;

use subtle::{Choice, ConstantTimeEq};

/// Length of a hex-encoded SHA-1 digest.
const HEX_LEN: usize = 40;

/// Callers pass 3 or 4 parts; ordering them in a stack array keeps the
/// GET/POST verification path free of heap allocations.
const INLINE_PARTS: usize = 8;

/// Computes the WeChat signature over `parts`: byte-wise sort, concatenate,
/// SHA-1, 40 lowercase hex characters. `parts[0]` is the secret token, the
/// rest are the request's values; only the token is kept out of branching
/// comparisons.
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
    if let Some((token, public)) = parts.split_first() {
        if public.len() < INLINE_PARTS {
            let mut order = [0usize; INLINE_PARTS];
            hash_in_order(&mut hasher, token, public, &mut order[..public.len()]);
        } else {
            let mut order = vec![0usize; public.len()];
            hash_in_order(&mut hasher, token, public, &mut order);
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

/// Feeds `token` and `public` to the hash in byte-wise order. Every caller passes the secret
/// token first and the request's own values (timestamp, nonce, ciphertext) after it. The
/// public values are sorted the ordinary way; only the token's place among them is found
/// without comparing it byte by byte with a branch: `str`'s `Ord` stops at the first
/// differing byte, which is a comparison oracle on the token for whoever chooses the nonce (a
/// fuzzer with comparison tracing learned the sample token from it in seconds:
/// fuzz/fuzz_targets/push_open.rs). Equal parts concatenate to the same bytes in either
/// order, so ties need no rule.
fn hash_in_order(hasher: &mut Sha1, token: &str, public: &[&str], order: &mut [usize]) {
    for (k, slot) in order.iter_mut().enumerate() {
        *slot = k;
    }
    order.sort_unstable_by_key(|&i| public[i].as_bytes());
    let place: usize = public
        .iter()
        .map(|p| usize::from(blind_less(p.as_bytes(), token.as_bytes()).unwrap_u8()))
        .sum();
    for (k, &i) in order.iter().enumerate() {
        if k == place {
            hasher.update(token.as_bytes());
        }
        hasher.update(public[i].as_bytes());
    }
    if place == order.len() {
        hasher.update(token.as_bytes());
    }
}

/// `a < b` byte-wise (a proper prefix is smaller), in time that depends only on the lengths.
/// Eight bytes at a time are read as a big-endian word, whose numeric order is the byte-wise
/// order of those bytes; each word pair is compared by a 128-bit subtraction on values the
/// optimiser cannot see the range of (`black_box`), so no data-dependent branch or compare
/// instruction is emitted for it. `subtle`'s bit-serial `ct_lt`/`ct_gt` made the 1.4 KB
/// ciphertext of a safe-mode push the costliest step of opening it; a byte per step was still
/// a few percent of a safe-mode reply, a word per step is an eighth of those steps.
fn blind_less(a: &[u8], b: &[u8]) -> Choice {
    // Equal over the shorter length: the shorter one is smaller (lengths are not secret).
    let shorter = u64::from(a.len() < b.len());
    let common = a.len().min(b.len());
    let (a, b) = (&a[..common], &b[..common]);
    let (mut less, mut decided) = (0u64, 0u64);
    let mut step = |x: u64, y: u64| {
        let x = black_box(u128::from(x));
        let y = black_box(u128::from(y));
        // Both are below 2^64, so a wrapped difference has bit 127 set exactly when the
        // subtrahend was the larger.
        let lt = (x.wrapping_sub(y) >> 127) as u64;
        let gt = (y.wrapping_sub(x) >> 127) as u64;
        less |= !decided & lt & 1;
        decided |= lt | gt;
    };
    let (wa, wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (wa.remainder(), wb.remainder());
    for (x, y) in wa.zip(wb) {
        step(be_word(x), be_word(y));
    }
    // The short last piece is zero-filled alike on both sides, which keeps it equal there.
    step(be_word(ra), be_word(rb));
    less |= !decided & shorter & 1;
    Choice::from(black_box(less as u8))
}

/// Up to eight bytes as the high-order bytes of a big-endian word.
fn be_word(bytes: &[u8]) -> u64 {
    match <[u8; 8]>::try_from(bytes) {
        Ok(word) => u64::from_be_bytes(word),
        Err(_) => {
            let mut word = [0u8; 8];
            word[..bytes.len()].copy_from_slice(bytes);
            u64::from_be_bytes(word)
        }
    }
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
    fn the_token_takes_its_byte_wise_place_among_any_values() {
        // Prefixes, equal parts, bytes above 0x7f and the empty string, in every position.
        let pool = ["", "a", "ab", "abc", "b", "B", "é", "a\u{7f}", "ab", "zz"];
        for token in pool {
            for x in pool {
                for y in pool {
                    for z in pool {
                        let mut sorted = [token, x, y, z];
                        sorted.sort_unstable();
                        assert_eq!(
                            sign(&[token, x, y, z]),
                            sign(&[sorted.concat().as_str()]),
                            "{token:?} among {x:?} {y:?} {z:?}"
                        );
                    }
                }
            }
        }
    }

    /// Word-at-a-time comparison against `Ord` for lengths across the 8-byte steps, with the
    /// first difference at every position and on either side of 0x80.
    #[test]
    fn blind_less_is_the_byte_wise_order_across_words() {
        let base: Vec<u8> = (0u8..24).map(|i| b'a' + i).collect();
        for la in 0..=base.len() {
            for lb in 0..=base.len() {
                for at in 0..la.max(lb) {
                    for (x, y) in [(0x00, 0xff), (0x7f, 0x80), (b'A', b'a'), (0xff, 0x00)] {
                        let mut a = base[..la].to_vec();
                        let mut b = base[..lb].to_vec();
                        if at < la {
                            a[at] = x;
                        }
                        if at < lb {
                            b[at] = y;
                        }
                        assert_eq!(bool::from(blind_less(&a, &b)), a < b, "{a:?} < {b:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn empty_input_is_sha1_of_empty_string() {
        assert_eq!(sign(&[]), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(sign(&[""]), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }

    /// The token's blind placement gives the byte-wise order of `str`'s `Ord` (a prefix first,
    /// bytes above 0x7F after ASCII, equal parts in any order), for the shapes WeChat sends and
    /// the edge cases: what `sort_unstable` gives.
    #[test]
    fn the_blind_order_is_the_byte_wise_order() {
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
            assert_eq!(
                sign(parts),
                sign(&[expected.concat().as_str()]),
                "{parts:?}"
            );
        }
    }
}
