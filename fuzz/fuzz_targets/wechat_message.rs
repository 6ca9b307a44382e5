//! Untrusted push bodies, as bytes: format detection, the safe-mode envelope and the message
//! parser (XML and JSON). Never a panic; what parses obeys the model's own limits.
#![no_main]
use common::protocol::wechat::message::{self, Event, Format, MessageKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let format = message::detect_format(body);
    if let Ok(env) = message::parse_envelope(body) {
        assert_eq!(Ok(env.format), format);
        assert!(env.to_user.as_deref() != Some(""));
    }
    if let Ok(m) = message::parse_message(body) {
        assert_eq!(Ok(m.format), format);
        assert!(!m.to_user.is_empty() && !m.from_user.is_empty());
        assert!(
            m.from_user.len() <= 128,
            "an openid longer than the limit was accepted"
        );
        assert!(m.msg_id.as_deref() != Some(""));
        if let MessageKind::Event(e) = &m.kind {
            match e {
                Event::SubscribeMsgPopup(items) | Event::SubscribeMsgChange(items) => {
                    assert!((1..=20).contains(&items.len()));
                    assert!(
                        items
                            .iter()
                            .all(|i| !i.template_id.is_empty() && i.template_id.len() <= 128)
                    );
                }
                Event::SubscribeMsgSent(items) => {
                    assert!((1..=20).contains(&items.len()));
                    assert!(
                        items
                            .iter()
                            .all(|i| !i.msg_id.is_empty() && i.msg_id.len() <= 128)
                    );
                }
                _ => {}
            }
            assert_eq!(m.event_name(), Some(e.name()));
        }
        let _ = m.msg_type();
        if m.format == Format::Xml {
            // Whatever the message parser read, the XML layer read too.
            assert!(common::protocol::wechat::xml::parse(body).is_ok());
        }
    }
});
