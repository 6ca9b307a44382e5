//! Passive replies: the plaintext text reply, and the encrypted envelope (XML or JSON) that safe
//! mode requires (reference §2.4, §3.5).

use super::crypto::MessageCrypto;
use super::message::Format;
use super::signature;
use super::xml::{push_element, xml_chars};

/// A text reply to a user. `to_user` is the user's openid and `from_user` the account's original
/// id (the inbound message's To/From swapped). The element order and LF separators are those of
/// wechatpy's renderer, which the published V13 vector was produced with.
pub fn text_xml(to_user: &str, from_user: &str, create_time: i64, content: &str) -> String {
    let mut out = String::with_capacity(200 + content.len() + to_user.len() + from_user.len());
    out.push_str("<xml>\n");
    push_element(&mut out, "MsgType", "text");
    out.push('\n');
    push_element(&mut out, "Content", content);
    out.push('\n');
    push_element(&mut out, "FromUserName", from_user);
    out.push('\n');
    push_element(&mut out, "ToUserName", to_user);
    out.push_str("\n<CreateTime>");
    out.push_str(itoa::Buffer::new().format(create_time));
    out.push_str("</CreateTime>\n</xml>");
    out
}

/// The fields of an encrypted passive reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedReply {
    pub encrypt: String,
    pub msg_signature: String,
    pub timestamp: i64,
    pub nonce: String,
}

impl EncryptedReply {
    /// Encrypts `plaintext` with our appid as the tail and signs it; `random` is fixed only by
    /// tests reproducing published vectors.
    pub fn seal(
        crypto: &MessageCrypto,
        token: &str,
        plaintext: &[u8],
        timestamp: i64,
        nonce: &str,
        random: Option<&[u8; 16]>,
    ) -> Self {
        let encrypt = match random {
            Some(r) => crypto.encrypt_with_random(plaintext, r),
            None => crypto.encrypt(plaintext),
        };
        Self::sign(token, encrypt, timestamp, nonce)
    }

    /// Signs an already encrypted payload. The nonce echoes the push's; characters an XML reply
    /// cannot carry are dropped before signing, so the signature always covers the nonce the
    /// reply shows (in both formats, which then agree).
    pub fn sign(token: &str, encrypt: String, timestamp: i64, nonce: &str) -> Self {
        let mut ts = itoa::Buffer::new();
        let nonce = xml_chars(nonce).into_owned();
        let msg_signature = signature::sign(&[token, ts.format(timestamp), &nonce, &encrypt]);
        EncryptedReply {
            encrypt,
            msg_signature,
            timestamp,
            nonce,
        }
    }

    pub fn to_xml(&self) -> String {
        // Markup and signature are 173 bytes, the timestamp at most 20: one allocation.
        let mut out = String::with_capacity(self.encrypt.len() + self.nonce.len() + 193);
        out.push_str("<xml>");
        push_element(&mut out, "Encrypt", &self.encrypt);
        push_element(&mut out, "MsgSignature", &self.msg_signature);
        out.push_str("<TimeStamp>");
        out.push_str(itoa::Buffer::new().format(self.timestamp));
        out.push_str("</TimeStamp>");
        push_element(&mut out, "Nonce", &self.nonce);
        out.push_str("</xml>");
        out
    }

    /// The official JSON shape: capitalised keys, `TimeStamp` a number, `Nonce` a string.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "Encrypt": self.encrypt,
            "MsgSignature": self.msg_signature,
            "TimeStamp": self.timestamp,
            "Nonce": self.nonce,
        })
        .to_string()
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Xml => self.to_xml(),
            Format::Json => self.to_json(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K43A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn r16(s: &str) -> [u8; 16] {
        s.as_bytes().try_into().unwrap()
    }

    #[test]
    fn v5_json_reply() {
        let c = MessageCrypto::new(K43A, "wxba5fad812f8e6fb9").unwrap();
        let r = EncryptedReply::seal(
            &c,
            "AAAAA",
            br#"{"demo_resp":"good luck"}"#,
            1713424427,
            "415670741",
            Some(&r16("707722b803182950")),
        );
        assert_eq!(
            r.encrypt,
            "ELGduP2YcVatjqIS+eZbp80MNLoAUWvzzyJxgGzxZO/5sAvd070Bs6qrLARC9nVHm48Y4hyRbtzve1L32tmxSQ=="
        );
        assert_eq!(r.msg_signature, "1b9339964ed2e271e7c7b6ff2b0ef902fc94dea1");
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["TimeStamp"], 1713424427);
        assert_eq!(v["Nonce"], "415670741");
        assert_eq!(
            v["MsgSignature"],
            "1b9339964ed2e271e7c7b6ff2b0ef902fc94dea1"
        );
    }

    #[test]
    fn v7_xml_reply_for_an_open_platform_id() {
        // V7's trailing id is a third-party platform appid, so the payload is encrypted with
        // that id and then signed through the same path a reply takes.
        let c = MessageCrypto::new(K43A, "wx134c8103faa5a59e").unwrap();
        let enc = c.encrypt_with_random(
            b"<xml><demo_resp>[CDATA[good luck]]</demo_resp></xml>",
            &r16("999951349e8ee746"),
        );
        let r = EncryptedReply::sign("AAAAA", enc, 1713424427, "415670741");
        assert_eq!(
            r.encrypt,
            "hE8R6mGXHkJJjU72KxzKUd1GEkKJaEZq7vRL8XgK3o+00k8JGq6+pZJUIlTSyhsX+bxIBQ72g3GyvDdIZcr6+3HAZbSvPT9t/o11MI7d6WELwqrGd7jMnV0zv3Zc9Nq7"
        );
        assert_eq!(r.msg_signature, "03e0812039325c2712ef5f0f980fd14c70d6e307");
        let xml = r.to_xml();
        assert!(xml.starts_with("<xml><Encrypt><![CDATA[hE8R"));
        assert!(xml.contains("<TimeStamp>1713424427</TimeStamp>"));
    }

    #[test]
    fn v13_text_reply_rendered_then_sealed() {
        let plain = text_xml(
            "oUSER_openid_0001",
            "gh_abcdef123456",
            1700000005,
            "收到：hello",
        );
        assert_eq!(plain.len(), 242);
        let c = MessageCrypto::new(
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
            "wx1234567890abcdef",
        )
        .unwrap();
        let r = EncryptedReply::seal(
            &c,
            "wxpushtoken2024",
            plain.as_bytes(),
            1700000005,
            "1234567890",
            Some(&r16("RANDOM16BYTES_01")),
        );
        assert_eq!(
            r.encrypt,
            "CNSGSYGCENydsGgVT4wQUUfEswjH1sddWImbO7u/f31dgA6YTkYfq+IuuJWJKqqVEkoB1sRCvZpVkwZu8s9OidTzk/0dN7c0Gnx1LxNXpobVilUI5qgPnD8uyRgIDeMrgxX6uiM+GlKK0FwYcqKqq1+e1dGDJeyyDrgSYBcE6EWrTXmqkr7BY3Hm2PihCnYX8Ge2WnrYjrEGSPC4/5T994Zj32SUOe27hBujcPPnNFd2ZGDRAuutzr5OYNR+C9wu1ttOs7vZLpLYADUuqVApPQwoohTHCQPueByYkWKZOz6HmuLFZrlXLLrgalhPAM/ZFObhNnz0kJsIk/J9dlvooPXq2xf20SDfs7jl2ypuhihju+SoMm3BMZWkrl3IMR5Q"
        );
        assert_eq!(r.msg_signature, "5194020a7870c120388812dabe7bf6ab59b5a33b");
    }

    #[test]
    fn cdata_cannot_be_closed_by_user_text() {
        let x = text_xml("u", "gh", 1, "a]]><evil/>");
        assert!(x.contains("<![CDATA[a]]]]><![CDATA[><evil/>]]>"));
    }

    /// Found by fuzzing (fuzz/fuzz_targets/reply_roundtrip.rs): a nonce of two NULs gave an XML
    /// envelope no conforming parser accepts, whose signature also covered bytes the reply
    /// could not show. Characters XML cannot carry are dropped before signing.
    #[test]
    fn a_nonce_xml_cannot_carry_is_dropped_before_signing() {
        let c = MessageCrypto::new(K43A, "wx1234567890abcdef").unwrap();
        let r = EncryptedReply::seal(&c, "AAAAA", b"<xml/>", 576612484908056576, "\0\0", None);
        assert_eq!(r.nonce, "");
        assert_eq!(
            r.msg_signature,
            signature::sign(&["AAAAA", "576612484908056576", "", &r.encrypt])
        );
        let xml = r.to_xml();
        assert!(xml.contains("<Nonce><![CDATA[]]></Nonce>"), "{xml}");
        assert!(!xml.contains('\0'));
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(
            v["Nonce"], "",
            "both formats show the nonce that was signed"
        );
    }

    #[test]
    fn reply_text_xml_cannot_carry_is_dropped() {
        let plain = text_xml(
            "o\u{1}user",
            "gh_\u{FFFE}1",
            1,
            "a\u{0}b\u{B}c]]>d\u{FFFF}\te",
        );
        assert!(!plain.contains(['\u{0}', '\u{1}', '\u{B}', '\u{FFFE}', '\u{FFFF}']));
        let m = crate::protocol::wechat::message::parse_message(plain.as_bytes()).unwrap();
        assert_eq!(m.to_user, "ouser");
        assert_eq!(m.from_user, "gh_1");
        assert_eq!(
            m.kind,
            crate::protocol::wechat::message::MessageKind::Text {
                content: "abc]]>d\te".into()
            }
        );
    }
}
