//! Subscribe-message template data: keyword normalisation and pattern rendering with fuzzed
//! keys, patterns and runtime values (nicknames and message previews are untrusted text).
//!
//! - lenient normalisation is idempotent, and what it produces passes the strict check
//!   unchanged, so nothing we render can be what WeChat refuses with 47003;
//! - strict normalisation never alters a value;
//! - a pattern accepted at cold start (`validate_pattern`) renders with any runtime values;
//! - `{{`/`}}` escaping round-trips, and substituted values are never rescanned;
//! - rendered data passes `validate_supplied` (the admin route's strict check) unchanged.
#![no_main]
use arbitrary::{Arbitrary, Unstructured};
use common::protocol::wechat::keyword::{self, Mode};
use common::protocol::wechat::render::{self, PLACEHOLDERS, RenderError};
use libfuzzer_sys::fuzz_target;

const KEYS: [&str; 14] = [
    "thing1",
    "number2",
    "letter3",
    "symbol4",
    "character_string5",
    "time6",
    "date7",
    "amount8",
    "phone_number9",
    "car_number10",
    "name11",
    "phrase12",
    "enum13",
    "other14",
];

fn key(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    Ok(if u.ratio(7, 8)? {
        u.choose(&KEYS)?.to_string()
    } else {
        <&str>::arbitrary(u)?.to_owned()
    })
}

fn escape(s: &str) -> String {
    s.replace('{', "{{").replace('}', "}}")
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(k) = key(&mut u) else { return };
    let Ok(value) = <&str>::arbitrary(&mut u) else {
        return;
    };

    // Normalisation, one value.
    if let Ok(out) = keyword::normalise(&k, value, Mode::Lenient) {
        assert_eq!(
            keyword::normalise(&k, &out, Mode::Lenient).as_ref(),
            Ok(&out),
            "lenient is not idempotent"
        );
        assert_eq!(
            keyword::normalise(&k, &out, Mode::Strict).as_ref(),
            Ok(&out),
            "lenient output fails the strict check"
        );
    }
    if let Ok(out) = keyword::normalise(&k, value, Mode::Strict) {
        assert_eq!(out, value, "strict mode altered a value");
    }
    // Escaped text renders to itself, and a value is substituted verbatim.
    assert_eq!(
        keyword::render_pattern(&escape(value), &[]).as_deref(),
        Ok(value)
    );
    assert_eq!(
        keyword::render_pattern(
            &format!("<{{sender}}>{}", escape(value)),
            &[("sender", value)]
        ),
        Ok(format!("<{value}>{value}"))
    );

    // Patterns and runtime values, as NOTIFY_DATA configures them.
    let Ok(n) = u.int_in_range(1..=4) else { return };
    let mut patterns = vec![];
    for _ in 0..n {
        let (Ok(k), Ok(p)) = (key(&mut u), <&str>::arbitrary(&mut u)) else {
            return;
        };
        patterns.push((k, p.to_owned()));
    }
    let mut values = vec![];
    for _ in PLACEHOLDERS {
        let Ok(v) = <&str>::arbitrary(&mut u) else {
            return;
        };
        values.push(v);
    }
    let vars: Vec<(&str, &str)> = PLACEHOLDERS
        .iter()
        .copied()
        .zip(values.iter().copied())
        .collect();
    let valid = patterns
        .iter()
        .all(|(k, p)| render::validate_pattern(k, p).is_ok());
    match render::render(&patterns, &vars) {
        Ok(data) => {
            let obj = data.as_object().unwrap();
            for (k, v) in obj {
                let s = v["value"].as_str().unwrap();
                assert_eq!(keyword::normalise(k, s, Mode::Strict).as_deref(), Ok(s));
            }
            assert_eq!(
                render::validate_supplied(&data).as_ref(),
                Ok(&data),
                "rendered data fails the admin check"
            );
        }
        Err(RenderError::Pattern(e)) => {
            assert!(!valid, "a validated pattern failed to render: {e}")
        }
        Err(_) => {}
    }
});
