//! The XML reader on its own: DTDs and entities refused, nesting and size bounded, and the
//! trimmed and untrimmed readings (the message parser and the `Encrypt` envelope) always agree
//! on the document's shape and on whether it is well-formed.
#![no_main]
use common::protocol::wechat::xml::{self, ParseError, XmlValue};
use libfuzzer_sys::fuzz_target;

fn shape(
    fields: &[(std::borrow::Cow<'_, str>, XmlValue<'_>)],
    depth: usize,
    out: &mut Vec<(usize, String, bool)>,
) {
    for (name, value) in fields {
        out.push((
            depth,
            name.to_string(),
            matches!(value, XmlValue::Element(_)),
        ));
        shape(value.children(), depth + 1, out);
    }
}

fuzz_target!(|body: &[u8]| {
    let trimmed = xml::parse(body);
    let untrimmed = xml::parse_untrimmed(body);
    match (&trimmed, &untrimmed) {
        (Ok(a), Ok(b)) => {
            let (mut sa, mut sb) = (vec![], vec![]);
            shape(a.fields(), 1, &mut sa);
            shape(b.fields(), 1, &mut sb);
            assert_eq!(sa, sb, "the two readings disagree on the shape");
            assert!(sa.len() < xml::MAX_ELEMENTS);
            assert!(sa.iter().all(|(d, _, _)| *d < xml::MAX_DEPTH));
            // Trimming only removes XML whitespace at the ends of plain text.
            for ((_, va), (_, vb)) in a.fields().iter().zip(b.fields()) {
                if let (Some(ta), Some(tb)) = (va.as_text(), vb.as_text()) {
                    assert!(
                        tb.contains(ta),
                        "trimmed text is not part of the untrimmed text"
                    );
                }
            }
            let _ = a.lists().count();
        }
        (Err(ea), Err(eb)) => {
            assert_eq!(
                matches!(ea, ParseError::Doctype),
                matches!(eb, ParseError::Doctype)
            );
        }
        _ => panic!(
            "trimmed {:?} vs untrimmed {:?}",
            trimmed.is_ok(),
            untrimmed.is_ok()
        ),
    }
    // A DOCTYPE in the prolog (after an optional BOM, whitespace and XML declaration).
    let mut prolog = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    prolog = prolog.trim_ascii_start();
    if prolog.starts_with(b"<?xml")
        && let Some(end) = prolog.windows(2).position(|w| w == b"?>")
    {
        prolog = prolog[end + 2..].trim_ascii_start();
    }
    if prolog.starts_with(b"<!DOCTYPE") {
        assert!(trimmed.is_err(), "a document with a DOCTYPE was accepted");
    }
});
