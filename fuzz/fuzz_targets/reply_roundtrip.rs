//! The passive reply, both ways: a text reply built from arbitrary text and ids, encrypted and
//! signed into the XML or JSON envelope, is opened again as WeChat would (parse the envelope,
//! check `MsgSignature` over token, `TimeStamp`, `Nonce` and `Encrypt`, decrypt, check the appid,
//! parse the reply) and must give back exactly what went in. The document must also be one a
//! conforming XML parser accepts (WeChat's): only XML characters, anywhere.
#![no_main]
use arbitrary::Arbitrary;
use common::protocol::wechat::message::{self, Format, MessageKind};
use common::protocol::wechat::reply::{self, EncryptedReply};
use common::protocol::wechat::xml;
use libfuzzer_sys::fuzz_target;
use wxim_fuzz::*;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    json: bool,
    fixed_random: Option<[u8; 16]>,
    create_time: i64,
    timestamp: i64,
    nonce: &'a str,
    to_user: &'a str,
    from_user: &'a str,
    content: &'a str,
}

fn text<'a>(doc: &'a xml::XmlDoc<'_>, name: &str) -> &'a str {
    doc.text(name)
        .unwrap_or_else(|| panic!("the reply has no {name}"))
}

fuzz_target!(|i: Input<'_>| {
    let app = mp_app(false);
    let crypto = app.crypto.as_ref().unwrap();
    let plain = reply::text_xml(i.to_user, i.from_user, i.create_time, i.content);
    assert!(
        plain.chars().all(is_xml_char),
        "the reply holds a character XML forbids: {plain:?}"
    );
    let sealed = EncryptedReply::seal(
        crypto,
        MP_TOKEN,
        plain.as_bytes(),
        i.timestamp,
        i.nonce,
        i.fixed_random.as_ref(),
    );
    let format = if i.json { Format::Json } else { Format::Xml };
    let body = sealed.render(format);
    if format == Format::Xml {
        assert!(
            body.chars().all(is_xml_char),
            "the envelope holds a character XML forbids"
        );
    }

    // Open it as WeChat does.
    let (encrypt, signature, timestamp, nonce) = match format {
        Format::Xml => {
            let doc = xml::parse_untrimmed(body.as_bytes()).expect("the reply envelope is XML");
            (
                text(&doc, "Encrypt").to_owned(),
                text(&doc, "MsgSignature").to_owned(),
                text(&doc, "TimeStamp").to_owned(),
                text(&doc, "Nonce").to_owned(),
            )
        }
        Format::Json => {
            let v: serde_json::Value =
                serde_json::from_str(&body).expect("the reply envelope is JSON");
            assert!(v["TimeStamp"].is_i64(), "TimeStamp is a number");
            (
                v["Encrypt"].as_str().unwrap().to_owned(),
                v["MsgSignature"].as_str().unwrap().to_owned(),
                v["TimeStamp"].to_string(),
                v["Nonce"].as_str().unwrap().to_owned(),
            )
        }
    };
    assert_eq!(timestamp, i.timestamp.to_string());
    assert_eq!(nonce, xml_text(i.nonce));
    assert_eq!(
        signature,
        wechat_signature(&[MP_TOKEN, &timestamp, &nonce, &encrypt]),
        "MsgSignature"
    );
    let opened = crypto.decrypt(&encrypt).expect("our own reply decrypts");
    assert_eq!(opened, plain.as_bytes());

    // And the reply itself reads back as what was said.
    let to = xml_text(i.to_user);
    let from = xml_text(i.from_user);
    match message::parse_message(&opened) {
        Ok(m) => {
            assert_eq!(m.to_user, to);
            assert_eq!(m.from_user, from);
            assert_eq!(m.create_time, i.create_time);
            assert_eq!(
                m.kind,
                MessageKind::Text {
                    content: xml_text(i.content)
                }
            );
        }
        // The parser refuses empty ids and over-long openids; nothing else may fail.
        Err(e) => assert!(
            to.is_empty() || from.is_empty() || from.len() > 128,
            "the reply does not parse: {e:?}"
        ),
    }
});
