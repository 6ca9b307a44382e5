//! Validation and normalisation of WeChat subscribe-message keyword values.
//!
//! WeChat rejects a whole send with errcode 47003 when any `data.<key>.value`
//! breaks the rule of its keyword type (the key prefix before the trailing
//! digits). Such a failure is permanent and the notification is lost, so
//! every value is checked here before it leaves the process, and runtime
//! text (nicknames, message previews) is coerced into shape where that can be
//! done without changing its meaning.
//!
//! Where the official rule table is vague, the checks pick the narrower
//! reading: refusing a value WeChat would have taken costs one notification,
//! while sending one it refuses costs the same plus a confusing error.

use std::borrow::Cow;

/// Keyword type, taken from the prefix of a template data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeywordType {
    Thing,
    Number,
    Letter,
    Symbol,
    CharacterString,
    Time,
    Date,
    Amount,
    PhoneNumber,
    CarNumber,
    Name,
    Phrase,
    Enum,
    /// A prefix missing from the official table (or a malformed key).
    Unknown,
}

/// Returns the keyword type of a template data key such as `thing1` or
/// `character_string12`.
pub fn keyword_type(key: &str) -> KeywordType {
    let prefix = key.trim_end_matches(|c: char| c.is_ascii_digit());
    // WeChat always numbers its keys; a bare or digit-only key is not one of
    // theirs, so guessing its type would only hide a configuration mistake.
    if prefix.is_empty() || prefix.len() == key.len() {
        return KeywordType::Unknown;
    }
    match prefix {
        "thing" => KeywordType::Thing,
        "number" => KeywordType::Number,
        "letter" => KeywordType::Letter,
        "symbol" => KeywordType::Symbol,
        "character_string" => KeywordType::CharacterString,
        "time" => KeywordType::Time,
        "date" => KeywordType::Date,
        "amount" => KeywordType::Amount,
        "phone_number" => KeywordType::PhoneNumber,
        "car_number" => KeywordType::CarNumber,
        "name" => KeywordType::Name,
        "phrase" => KeywordType::Phrase,
        "enum" => KeywordType::Enum,
        _ => KeywordType::Unknown,
    }
}

/// How much `normalise` may change a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Runtime text: clean up whitespace and control characters and truncate
    /// where the type allows it; refuse what cannot be made valid.
    Lenient,
    /// Admin-supplied business text: validate only, never alter.
    Strict,
}

/// Why a value cannot be sent. Messages name the key and the rule, never the
/// value, because values may carry private message text into logs.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KeywordError {
    #[error("{key}: must not be empty")]
    Empty { key: String },
    #[error("{key}: at most {max} characters")]
    TooLong { key: String, max: usize },
    #[error("{key}: {rule}")]
    Invalid { key: String, rule: &'static str },
}

/// A configuration pattern that cannot be rendered.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PatternError {
    #[error("pattern: unknown placeholder {{{name}}}")]
    UnknownPlaceholder { name: String },
    #[error("pattern: unmatched brace at byte {position}")]
    UnmatchedBrace { position: usize },
}

const THING_MAX: usize = 20;
const NUMBER_MAX: usize = 32;
const LETTER_MAX: usize = 32;
const SYMBOL_MAX: usize = 5;
const CHARACTER_STRING_MAX: usize = 32;
const PHONE_MAX: usize = 17;
const CAR_MAX: usize = 8;
const NAME_CHINESE_MAX: usize = 10;
const NAME_LATIN_MAX: usize = 20;
const PHRASE_MAX: usize = 5;
const ENUM_MAX: usize = 20;
const UNKNOWN_MAX: usize = 20;
const AMOUNT_DIGITS_MAX: usize = 10;

/// Only the symbols the table's own examples and common practice show; an
/// exotic sign such as `₿` may well be refused by WeChat.
const CURRENCY_SYMBOLS: [char; 5] = ['¥', '￥', '$', '€', '£'];

const RULE_CONTROL: &str = "no newlines or control characters";
const RULE_NUMBER: &str = "digits with an optional single decimal point";
const RULE_LETTER: &str = "ASCII letters only";
const RULE_SYMBOL: &str = "symbols only (no letters, digits, Chinese or spaces)";
const RULE_CHARACTER_STRING: &str = "ASCII letters, digits and symbols only";
const RULE_TIME: &str =
    "24 h HH:MM or HH:MM:SS, optionally after a full date; a range joins two with ~";
const RULE_DATE: &str = "a date (y年m月d日, y年m月, m月d日 or joined by - / .), optionally with a 24 h time after a day; a range joins two with ~";
const RULE_AMOUNT: &str =
    "one currency symbol, then at most 10 digits with optional decimals, optionally ending in 元";
const RULE_PHONE: &str = "digits and symbols only";
const RULE_CAR: &str = "ASCII letters and digits; only the first and last may be Chinese";
const RULE_NAME: &str = "Chinese, ASCII letters, spaces and symbols only (no digits)";
const RULE_PHRASE: &str = "Chinese characters only";

/// Validates `value` for the keyword `key` and, in lenient mode, first
/// coerces it into the shape the keyword type requires.
pub fn normalise(key: &str, value: &str, mode: Mode) -> Result<String, KeywordError> {
    let kind = keyword_type(key);
    let value = match mode {
        Mode::Strict => Cow::Borrowed(value),
        Mode::Lenient => Cow::Owned(prepare(kind, value)),
    };
    // Whitespace-only counts as empty: WeChat shows nothing useful for it and
    // the doc lists an empty value as a 47003 cause.
    if value.trim().is_empty() {
        return Err(KeywordError::Empty {
            key: key.to_owned(),
        });
    }
    if value.chars().any(is_forbidden_control) {
        return Err(invalid(key, RULE_CONTROL));
    }
    check(kind, key, &value)?;
    Ok(value.into_owned())
}

/// Replaces `{name}` placeholders with values from `vars`; `{{` and `}}`
/// stand for literal braces. Substituted values are not rescanned, so a
/// nickname containing `{count}` stays literal.
pub fn render_pattern(pattern: &str, vars: &[(&str, &str)]) -> Result<String, PatternError> {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let position = pattern.len() - rest.len() + i;
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if tail.starts_with('}') {
            return Err(PatternError::UnmatchedBrace { position });
        } else {
            let inner = &tail[1..];
            let end = inner
                .find(['{', '}'])
                .filter(|&j| inner.as_bytes()[j] == b'}')
                .ok_or(PatternError::UnmatchedBrace { position })?;
            let name = &inner[..end];
            let value = vars
                .iter()
                .find(|(n, _)| *n == name)
                .map(|&(_, v)| v)
                .ok_or_else(|| PatternError::UnknownPlaceholder {
                    name: name.to_owned(),
                })?;
            out.push_str(value);
            rest = &inner[end + 1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn invalid(key: &str, rule: &'static str) -> KeywordError {
    KeywordError::Invalid {
        key: key.to_owned(),
        rule,
    }
}

fn too_long(key: &str, max: usize) -> KeywordError {
    KeywordError::TooLong {
        key: key.to_owned(),
        max,
    }
}

/// Lenient coercion. Truncation is applied only where a shortened value still
/// means roughly the same thing; numbers, amounts, phones, plates and enum
/// values would silently become different facts, so they are left to fail.
fn prepare(kind: KeywordType, value: &str) -> String {
    let cleaned = clean(value);
    match kind {
        KeywordType::Thing => truncate(&cleaned, THING_MAX, true),
        KeywordType::Letter => truncate(&cleaned, LETTER_MAX, false),
        KeywordType::Symbol => truncate(&cleaned, SYMBOL_MAX, false),
        KeywordType::CharacterString => truncate(&cleaned, CHARACTER_STRING_MAX, false),
        KeywordType::Phrase => truncate(&cleaned, PHRASE_MAX, false),
        KeywordType::Unknown => truncate(&cleaned, UNKNOWN_MAX, false),
        KeywordType::Name => {
            let max = if cleaned.chars().any(is_chinese) {
                NAME_CHINESE_MAX
            } else {
                NAME_LATIN_MAX
            };
            truncate(&cleaned, max, false)
        }
        // Formatters often write "a ~ b"; the doc only shows the bare "~".
        KeywordType::Time | KeywordType::Date => cleaned
            .split('~')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("~"),
        KeywordType::Number
        | KeywordType::Amount
        | KeywordType::PhoneNumber
        | KeywordType::CarNumber
        | KeywordType::Enum => cleaned,
    }
}

/// Turns every control character and whitespace run into one space and trims
/// the ends, so multi-line message text reads as one line.
fn clean(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut pending_space = false;
    for c in value.chars() {
        if is_forbidden_control(c) || c.is_whitespace() {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

/// Cuts to `max` characters (Unicode scalar values, as WeChat counts), with
/// the ellipsis counted inside the limit.
fn truncate(value: &str, max: usize, ellipsis: bool) -> String {
    if value.chars().count() <= max {
        return value.to_owned();
    }
    let keep = if ellipsis { max - 1 } else { max };
    let mut out: String = value.chars().take(keep).collect();
    tidy_cut(&mut out);
    if ellipsis {
        out.push('…');
    }
    out
}

/// A cut in the middle of an emoji sequence leaves a joiner or half a flag
/// that renders as garbage, and a cut after a space leaves a stray blank.
fn tidy_cut(s: &mut String) {
    loop {
        let before = s.len();
        s.truncate(s.trim_end().len());
        if s.ends_with('\u{200D}') {
            s.pop();
        }
        let flags = s
            .chars()
            .rev()
            .take_while(|c| ('\u{1F1E6}'..='\u{1F1FF}').contains(c))
            .count();
        if flags % 2 == 1 {
            s.pop();
        }
        if s.len() == before {
            break;
        }
    }
}

fn check(kind: KeywordType, key: &str, v: &str) -> Result<(), KeywordError> {
    let len = v.chars().count();
    let limit = |max: usize| {
        if len > max {
            Err(too_long(key, max))
        } else {
            Ok(())
        }
    };
    let require = |ok: bool, rule: &'static str| if ok { Ok(()) } else { Err(invalid(key, rule)) };
    match kind {
        KeywordType::Thing => limit(THING_MAX),
        KeywordType::Enum => limit(ENUM_MAX),
        KeywordType::Unknown => limit(UNKNOWN_MAX),
        KeywordType::Number => {
            limit(NUMBER_MAX)?;
            require(is_decimal(v), RULE_NUMBER)
        }
        KeywordType::Letter => {
            limit(LETTER_MAX)?;
            require(v.chars().all(|c| c.is_ascii_alphabetic()), RULE_LETTER)
        }
        KeywordType::Symbol => {
            limit(SYMBOL_MAX)?;
            require(v.chars().all(|c| classify(c) == Class::Symbol), RULE_SYMBOL)
        }
        KeywordType::CharacterString => {
            limit(CHARACTER_STRING_MAX)?;
            let ok = v.chars().all(|c| {
                matches!(
                    classify(c),
                    Class::AsciiLetter | Class::AsciiDigit | Class::Symbol
                )
            });
            require(ok, RULE_CHARACTER_STRING)
        }
        KeywordType::Time => require(is_range(v, is_time_point), RULE_TIME),
        KeywordType::Date => require(is_range(v, is_date_point), RULE_DATE),
        KeywordType::Amount => require(is_amount(v), RULE_AMOUNT),
        KeywordType::PhoneNumber => {
            limit(PHONE_MAX)?;
            // A digit-free run of dashes passes the letter of the rule but is
            // no phone number, and WeChat's own check is undocumented here.
            let ok = v.chars().any(|c| c.is_ascii_digit())
                && v.chars()
                    .all(|c| matches!(classify(c), Class::AsciiDigit | Class::Symbol));
            require(ok, RULE_PHONE)
        }
        KeywordType::CarNumber => {
            limit(CAR_MAX)?;
            let last = len - 1;
            let ok = v.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphanumeric() || ((i == 0 || i == last) && is_chinese(c))
            });
            require(ok, RULE_CAR)
        }
        KeywordType::Name => {
            // Mixed Chinese and Latin is judged as a Chinese name (doc).
            if v.chars().any(is_chinese) {
                limit(NAME_CHINESE_MAX)?;
            } else {
                limit(NAME_LATIN_MAX)?;
            }
            // Nicknames such as "John Smith" are the common case for a sender's name; a
            // single inner space reads as the symbol WeChat allows there.
            let ok = v.chars().all(|c| {
                matches!(
                    classify(c),
                    Class::Chinese | Class::AsciiLetter | Class::Symbol | Class::Space
                )
            });
            require(ok, RULE_NAME)
        }
        KeywordType::Phrase => {
            limit(PHRASE_MAX)?;
            require(v.chars().all(is_chinese), RULE_PHRASE)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Control,
    Space,
    Chinese,
    AsciiLetter,
    AsciiDigit,
    OtherLetter,
    OtherDigit,
    Symbol,
}

/// The doc's "symbol" is "common characters other than Chinese, English
/// letters and digits"; non-ASCII letters and digits are kept apart from it
/// so that neither `é` nor `１` sneaks into a letters/digits/symbols field.
fn classify(c: char) -> Class {
    if is_forbidden_control(c) {
        Class::Control
    } else if is_chinese(c) {
        Class::Chinese
    } else if c.is_whitespace() {
        Class::Space
    } else if c.is_ascii_alphabetic() {
        Class::AsciiLetter
    } else if c.is_ascii_digit() {
        Class::AsciiDigit
    } else if c.is_alphabetic() {
        Class::OtherLetter
    } else if c.is_numeric() {
        Class::OtherDigit
    } else {
        Class::Symbol
    }
}

fn is_chinese(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}')
}

/// Beyond C0/C1 controls, line/paragraph separators act as newlines and bidi
/// overrides can make a notification display text other than what was sent.
fn is_forbidden_control(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}'
        )
}

/// ASCII digits with an optional single interior decimal point. A sign is
/// refused because the doc says "只能数字，可带小数" and mentions none.
fn is_decimal(s: &str) -> bool {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    digits(int) && frac.is_none_or(digits)
}

/// The doc reads "1个币种符号+10位以内纯数字，可带小数": the symbol is required,
/// and the 10-digit cap is applied to all digits, decimals included, which
/// satisfies either reading of where the cap applies.
fn is_amount(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(symbol) = chars.next() else {
        return false;
    };
    if !CURRENCY_SYMBOLS.contains(&symbol) {
        return false;
    }
    let rest = chars.as_str();
    let number = rest.strip_suffix('元').unwrap_or(rest);
    is_decimal(number) && number.bytes().filter(u8::is_ascii_digit).count() <= AMOUNT_DIGITS_MAX
}

/// The doc allows "two points joined by ~", so at most one `~`.
fn is_range(s: &str, point: fn(&str) -> bool) -> bool {
    match s.split_once('~') {
        None => point(s),
        Some((from, to)) => point(from) && point(to),
    }
}

/// `time` is "24 h time (may add 年月日)": a bare clock, or a clock after a
/// date with year, month and day separated by exactly one space.
fn is_time_point(s: &str) -> bool {
    if let Some(rest) = take_clock(s) {
        return rest.is_empty();
    }
    let Some((date, rest)) = take_date(s) else {
        return false;
    };
    date.is_valid()
        && date.year.is_some()
        && date.day.is_some()
        && rest.strip_prefix(' ').and_then(take_clock) == Some("")
}

/// `date` is a date, optionally followed by a clock; a clock only makes sense
/// after a day, so `2018年1月 10:00` is refused.
fn is_date_point(s: &str) -> bool {
    let Some((date, rest)) = take_date(s) else {
        return false;
    };
    if !date.is_valid() {
        return false;
    }
    rest.is_empty()
        || (date.day.is_some() && rest.strip_prefix(' ').and_then(take_clock) == Some(""))
}

struct Ymd {
    year: Option<u32>,
    month: u32,
    day: Option<u32>,
}

impl Ymd {
    fn is_valid(&self) -> bool {
        if !(1..=12).contains(&self.month) {
            return false;
        }
        let Some(day) = self.day else {
            return true;
        };
        let max = match self.month {
            2 => match self.year {
                // Without a year, 2月29日 may be a leap day.
                Some(y) if !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)) => 28,
                _ => 29,
            },
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        (1..=max).contains(&day)
    }
}

/// Consumes a maximal run of ASCII digits whose length lies in `min..=max`.
fn take_number(s: &str, min: usize, max: usize) -> Option<(u32, &str)> {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    if n < min || n > max {
        return None;
    }
    Some((s[..n].parse().ok()?, &s[n..]))
}

fn take_suffixed(s: &str, min: usize, max: usize, unit: char) -> Option<(u32, &str)> {
    let (n, rest) = take_number(s, min, max)?;
    Some((n, rest.strip_prefix(unit)?))
}

/// Two-digit fields only: the doc's examples are all zero-padded and `9:05`
/// is not shown to be accepted.
fn take_clock(s: &str) -> Option<&str> {
    let (hour, rest) = take_number(s, 2, 2)?;
    let (minute, rest) = take_number(rest.strip_prefix(':')?, 2, 2)?;
    if hour > 23 || minute > 59 {
        return None;
    }
    match rest.strip_prefix(':') {
        Some(after) => {
            let (second, rest) = take_number(after, 2, 2)?;
            (second <= 59).then_some(rest)
        }
        None => Some(rest),
    }
}

fn take_date(s: &str) -> Option<(Ymd, &str)> {
    take_cjk_date(s).or_else(|| take_joined_date(s))
}

/// `y年m月d日`, `y年m月`, `m月d日`; the doc's own examples mix `10月1日` and
/// `01月05日`, so one or two digits are accepted for month and day.
fn take_cjk_date(s: &str) -> Option<(Ymd, &str)> {
    if let Some((year, rest)) = take_suffixed(s, 4, 4, '年') {
        let (month, rest) = take_suffixed(rest, 1, 2, '月')?;
        return Some(match take_suffixed(rest, 1, 2, '日') {
            Some((day, rest)) => (
                Ymd {
                    year: Some(year),
                    month,
                    day: Some(day),
                },
                rest,
            ),
            None => (
                Ymd {
                    year: Some(year),
                    month,
                    day: None,
                },
                rest,
            ),
        });
    }
    let (month, rest) = take_suffixed(s, 1, 2, '月')?;
    let (day, rest) = take_suffixed(rest, 1, 2, '日')?;
    Some((
        Ymd {
            year: None,
            month,
            day: Some(day),
        },
        rest,
    ))
}

/// `yyyy-mm-dd`, `yyyy-mm`, `mm-dd` with one of `-`, `/`, `.` used
/// throughout. Fields are fixed width because every doc example is padded
/// and the width is what tells `2018-01` from `01-01`.
fn take_joined_date(s: &str) -> Option<(Ymd, &str)> {
    let (first, rest) = take_number(s, 2, 4)?;
    let lead_width = s.len() - rest.len();
    let sep = rest
        .chars()
        .next()
        .filter(|&c| matches!(c, '-' | '/' | '.'))?;
    let (second, rest) = take_number(&rest[1..], 2, 2)?;
    match lead_width {
        4 => match rest.strip_prefix(sep) {
            Some(after) => {
                let (day, rest) = take_number(after, 2, 2)?;
                Some((
                    Ymd {
                        year: Some(first),
                        month: second,
                        day: Some(day),
                    },
                    rest,
                ))
            }
            None => Some((
                Ymd {
                    year: Some(first),
                    month: second,
                    day: None,
                },
                rest,
            )),
        },
        2 => Some((
            Ymd {
                year: None,
                month: first,
                day: Some(second),
            },
            rest,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        "custom14",
    ];

    fn empty(key: &str) -> Result<String, KeywordError> {
        Err(KeywordError::Empty { key: key.into() })
    }

    fn long(key: &str, max: usize) -> Result<String, KeywordError> {
        Err(too_long(key, max))
    }

    fn bad(key: &str, rule: &'static str) -> Result<String, KeywordError> {
        Err(invalid(key, rule))
    }

    #[test]
    fn keyword_type_from_key() {
        let cases = [
            ("thing1", KeywordType::Thing),
            ("number01", KeywordType::Number),
            ("letter2", KeywordType::Letter),
            ("symbol3", KeywordType::Symbol),
            ("character_string12", KeywordType::CharacterString),
            ("time22", KeywordType::Time),
            ("date4", KeywordType::Date),
            ("amount5", KeywordType::Amount),
            ("phone_number6", KeywordType::PhoneNumber),
            ("car_number7", KeywordType::CarNumber),
            ("name8", KeywordType::Name),
            ("phrase3", KeywordType::Phrase),
            ("enum9", KeywordType::Enum),
            ("const3", KeywordType::Unknown),
            ("enum_string8", KeywordType::Unknown),
            ("thing", KeywordType::Unknown),
            ("12", KeywordType::Unknown),
            ("", KeywordType::Unknown),
            ("thing1a", KeywordType::Unknown),
            ("Thing1", KeywordType::Unknown),
            ("thing_1", KeywordType::Unknown),
        ];
        for (key, expected) in cases {
            assert_eq!(keyword_type(key), expected, "{key}");
        }
    }

    #[test]
    fn strict_accepts_table_examples_unchanged() {
        let twenty = "一二三四五六七八九十一二三四五六七八九十";
        let digits32 = "12345678901234567890123456789012";
        let cases: &[(&str, &[&str])] = &[
            (
                "thing1",
                &[twenty, "你好，世界", "Order #123 已发货!", "😀 emoji"],
            ),
            (
                "number2",
                &[
                    "0",
                    "12",
                    "3.14",
                    "007",
                    digits32,
                    "1234567890123456789012345678.901",
                ],
            ),
            ("letter3", &["abcXYZ", "Z"]),
            ("symbol4", &["+-*/", "%", "!?。", "★"]),
            (
                "character_string5",
                &["ORD-2024_001#A", "a1", "12345678901234567890123456789012"],
            ),
            (
                "time6",
                &[
                    "15:01",
                    "00:00",
                    "23:59:59",
                    "2019年10月1日 15:01",
                    "2015年01月05日 08:00:00",
                    "2019-10-01 15:01",
                    "2019/10/01 15:01",
                    "2019.10.01 15:01:05",
                    "15:01~16:00",
                    "2019年10月1日 15:01~2019年10月2日 09:00",
                    "2024-02-29 12:00",
                ],
            ),
            (
                "date7",
                &[
                    "2019年10月1日",
                    "2015年01月05日",
                    "2019年10月",
                    "10月1日",
                    "2018-01-01",
                    "2018/01/01",
                    "2018.01.01",
                    "2018-01",
                    "01-01",
                    "2018/01",
                    "01.01",
                    "2019年10月1日 15:01",
                    "2018-01-01 08:00:30",
                    "10月1日 15:01",
                    "2018-01-01~2018-01-31",
                    "2018-01-01 08:00~2018-01-02 09:30",
                    "2024-02-29",
                    "02-29",
                ],
            ),
            (
                "amount8",
                &[
                    "¥100.50元",
                    "¥100",
                    "$0.99",
                    "€1234567890",
                    "£5元",
                    "￥8.6",
                    "¥12345678.90",
                ],
            ),
            (
                "phone_number9",
                &[
                    "+86-0766-66888866",
                    "10086",
                    "(020)12345678",
                    "12345678901234567",
                ],
            ),
            (
                "car_number10",
                &["粤A8Z888挂", "京A12345", "粤BD12345", "AB12345"],
            ),
            (
                "name11",
                &[
                    "张三",
                    "欧阳娜娜",
                    "一二三四五六七八九十",
                    "阿卜杜·热合曼",
                    "张John",
                    "John",
                    "O'Brien",
                    "Mary-Jane",
                    "ABCDEFGHIJKLMNOPQRST",
                ],
            ),
            ("phrase12", &["配送中", "货物配送中", "好"]),
            ("enum13", &["已完成", "Pending"]),
            ("custom14", &["anything goes 1!"]),
        ];
        for (key, values) in cases {
            for value in *values {
                assert_eq!(
                    normalise(key, value, Mode::Strict).as_deref(),
                    Ok(*value),
                    "{key} = {value:?}"
                );
                // Valid input is already in shape, so lenient must not touch it.
                assert_eq!(
                    normalise(key, value, Mode::Lenient).as_deref(),
                    Ok(*value),
                    "{key} = {value:?} (lenient)"
                );
            }
        }
    }

    #[test]
    fn strict_rejects() {
        let k = |key: &'static str, value: String, expected| (key, value, expected);
        let s = |v: &str| v.to_owned();
        let cases = vec![
            k("thing1", "一".repeat(21), long("thing1", 20)),
            k("thing1", s("第一行\n第二行"), bad("thing1", RULE_CONTROL)),
            k("thing1", s("a\u{202E}b"), bad("thing1", RULE_CONTROL)),
            k("thing1", s("a\u{2028}b"), bad("thing1", RULE_CONTROL)),
            k("thing1", s(""), empty("thing1")),
            k("thing1", s(" \u{3000} "), empty("thing1")),
            k("number2", s("12a"), bad("number2", RULE_NUMBER)),
            k("number2", s("-1"), bad("number2", RULE_NUMBER)),
            k("number2", s("+1"), bad("number2", RULE_NUMBER)),
            k("number2", s("1.2.3"), bad("number2", RULE_NUMBER)),
            k("number2", s(".5"), bad("number2", RULE_NUMBER)),
            k("number2", s("5."), bad("number2", RULE_NUMBER)),
            k("number2", s("1,000"), bad("number2", RULE_NUMBER)),
            k("number2", s(" 12"), bad("number2", RULE_NUMBER)),
            k("number2", s("１２"), bad("number2", RULE_NUMBER)),
            k("number2", "1".repeat(33), long("number2", 32)),
            k("letter3", s("abc1"), bad("letter3", RULE_LETTER)),
            k("letter3", s("ab c"), bad("letter3", RULE_LETTER)),
            k("letter3", s("café"), bad("letter3", RULE_LETTER)),
            k("letter3", "a".repeat(33), long("letter3", 32)),
            k("symbol4", s("ab"), bad("symbol4", RULE_SYMBOL)),
            k("symbol4", s("1"), bad("symbol4", RULE_SYMBOL)),
            k("symbol4", s("中"), bad("symbol4", RULE_SYMBOL)),
            k("symbol4", s("- -"), bad("symbol4", RULE_SYMBOL)),
            k("symbol4", s("!!!!!!"), long("symbol4", 5)),
            k(
                "character_string5",
                s("订单123"),
                bad("character_string5", RULE_CHARACTER_STRING),
            ),
            k(
                "character_string5",
                s("AB 12"),
                bad("character_string5", RULE_CHARACTER_STRING),
            ),
            k(
                "character_string5",
                s("né"),
                bad("character_string5", RULE_CHARACTER_STRING),
            ),
            k(
                "character_string5",
                "x".repeat(33),
                long("character_string5", 32),
            ),
            k("time6", s("24:00"), bad("time6", RULE_TIME)),
            k("time6", s("12:60"), bad("time6", RULE_TIME)),
            k("time6", s("12:00:60"), bad("time6", RULE_TIME)),
            k("time6", s("9:05"), bad("time6", RULE_TIME)),
            k("time6", s("15:01:"), bad("time6", RULE_TIME)),
            k("time6", s("1501"), bad("time6", RULE_TIME)),
            k("time6", s("2019-10-01"), bad("time6", RULE_TIME)),
            k("time6", s("2019-10-01T15:01"), bad("time6", RULE_TIME)),
            k("time6", s("2019-10-01  15:01"), bad("time6", RULE_TIME)),
            k("time6", s("2019年13月1日 15:01"), bad("time6", RULE_TIME)),
            k("time6", s("2019-02-29 15:01"), bad("time6", RULE_TIME)),
            k("time6", s("10月1日 15:01"), bad("time6", RULE_TIME)),
            k("time6", s("2019年10月 15:01"), bad("time6", RULE_TIME)),
            k("time6", s("15:01~"), bad("time6", RULE_TIME)),
            k("time6", s("~15:01"), bad("time6", RULE_TIME)),
            k("time6", s("15:01~16:00~17:00"), bad("time6", RULE_TIME)),
            k("time6", s("15:01 ~ 16:00"), bad("time6", RULE_TIME)),
            k("date7", s("2018-13-01"), bad("date7", RULE_DATE)),
            k("date7", s("2018-00-01"), bad("date7", RULE_DATE)),
            k("date7", s("2018-01-32"), bad("date7", RULE_DATE)),
            k("date7", s("2018-01-00"), bad("date7", RULE_DATE)),
            k("date7", s("2018-04-31"), bad("date7", RULE_DATE)),
            k("date7", s("2019-02-29"), bad("date7", RULE_DATE)),
            k("date7", s("2018-1-1"), bad("date7", RULE_DATE)),
            k("date7", s("18-01-01"), bad("date7", RULE_DATE)),
            k("date7", s("2018-01/01"), bad("date7", RULE_DATE)),
            k("date7", s("01-01-2018"), bad("date7", RULE_DATE)),
            k("date7", s("2018"), bad("date7", RULE_DATE)),
            k("date7", s("2018年"), bad("date7", RULE_DATE)),
            k("date7", s("2018年1月 10:00"), bad("date7", RULE_DATE)),
            k("date7", s("2018-01 10:00"), bad("date7", RULE_DATE)),
            k("date7", s("2018-01-01 25:00"), bad("date7", RULE_DATE)),
            k("date7", s("2018-01-01 "), bad("date7", RULE_DATE)),
            k("date7", s("10月32日"), bad("date7", RULE_DATE)),
            k("amount8", s("100"), bad("amount8", RULE_AMOUNT)),
            k("amount8", s("100元"), bad("amount8", RULE_AMOUNT)),
            k("amount8", s("¥"), bad("amount8", RULE_AMOUNT)),
            k("amount8", s("¥元"), bad("amount8", RULE_AMOUNT)),
            k("amount8", s("¥12345678901"), bad("amount8", RULE_AMOUNT)),
            k("amount8", s("¥123456789.01"), bad("amount8", RULE_AMOUNT)),
            k("amount8", s("¥1,000"), bad("amount8", RULE_AMOUNT)),
            k("amount8", s("-¥5"), bad("amount8", RULE_AMOUNT)),
            k("amount8", s("¥-5"), bad("amount8", RULE_AMOUNT)),
            k("amount8", s("¥1."), bad("amount8", RULE_AMOUNT)),
            k("amount8", s("US$5"), bad("amount8", RULE_AMOUNT)),
            k("amount8", s("¥ 5"), bad("amount8", RULE_AMOUNT)),
            k("amount8", s("¥5元元"), bad("amount8", RULE_AMOUNT)),
            k("amount8", s("5¥"), bad("amount8", RULE_AMOUNT)),
            k(
                "phone_number9",
                s("+86 0766"),
                bad("phone_number9", RULE_PHONE),
            ),
            k(
                "phone_number9",
                s("tel:123"),
                bad("phone_number9", RULE_PHONE),
            ),
            k(
                "phone_number9",
                s("电话123"),
                bad("phone_number9", RULE_PHONE),
            ),
            k("phone_number9", s("---"), bad("phone_number9", RULE_PHONE)),
            k("phone_number9", "1".repeat(18), long("phone_number9", 17)),
            k("car_number10", s("粤A8Z888挂1"), long("car_number10", 8)),
            k("car_number10", s("粤A8Z-88"), bad("car_number10", RULE_CAR)),
            k("car_number10", s("A粤8888"), bad("car_number10", RULE_CAR)),
            k("car_number10", s("粤A 8888"), bad("car_number10", RULE_CAR)),
            k("name11", s("张三1"), bad("name11", RULE_NAME)),
            k("name11", s("John2"), bad("name11", RULE_NAME)),
            k("name11", s("José"), bad("name11", RULE_NAME)),
            k("name11", "张".repeat(11), long("name11", 10)),
            k("name11", s("张Johnathan1"), long("name11", 10)),
            k("name11", s("张Johnathanx"), long("name11", 10)),
            k("name11", "a".repeat(21), long("name11", 20)),
            k("phrase12", s("配送中ab"), bad("phrase12", RULE_PHRASE)),
            k("phrase12", s("配 送"), bad("phrase12", RULE_PHRASE)),
            k("phrase12", s("已经配送完成了"), long("phrase12", 5)),
            k("enum13", "e".repeat(21), long("enum13", 20)),
            k("enum13", s("a\tb"), bad("enum13", RULE_CONTROL)),
            k("custom14", "u".repeat(21), long("custom14", 20)),
            k("custom14", s("\u{7}bell"), bad("custom14", RULE_CONTROL)),
        ];
        for (key, value, expected) in cases {
            assert_eq!(
                normalise(key, &value, Mode::Strict),
                expected,
                "{key} = {value:?}"
            );
        }
    }

    #[test]
    fn lenient_thing_truncates_mixed_text_on_char_boundaries() {
        let value: String = "消息😀".repeat(17); // 51 chars, emoji are 4 bytes each
        assert!(value.chars().count() >= 50);
        let out = normalise("thing1", &value, Mode::Lenient).unwrap();
        assert_eq!(out.chars().count(), 20);
        assert!(out.ends_with('…'));
        let kept = out.strip_suffix('…').unwrap();
        assert!(value.starts_with(kept));
        assert_eq!(
            normalise("thing1", &out, Mode::Strict).as_deref(),
            Ok(out.as_str())
        );
    }

    #[test]
    fn lenient_thing_does_not_leave_half_an_emoji_sequence() {
        // The cut at 19 chars falls right after the joiner of a family emoji.
        let family = "👨\u{200D}👩\u{200D}👧";
        let value = format!("{}{}", "字".repeat(17), family);
        let out = normalise("thing1", &value, Mode::Lenient).unwrap();
        assert_eq!(out, format!("{}👨…", "字".repeat(17)));

        // Likewise a flag is a pair of regional indicators.
        let value = format!("{}🇨🇳🇯🇵", "字".repeat(17));
        let out = normalise("thing1", &value, Mode::Lenient).unwrap();
        assert_eq!(out, format!("{}🇨🇳…", "字".repeat(17)));
        let value = format!("{}🇨🇳🇯🇵", "字".repeat(18));
        let out = normalise("thing1", &value, Mode::Lenient).unwrap();
        assert_eq!(out, format!("{}…", "字".repeat(18)));
    }

    #[test]
    fn lenient_cases() {
        let cases: &[(&str, &str, Result<&str, KeywordError>)] = &[
            (
                "thing1",
                "第一行\n第二行\r\n\t第三行",
                Ok("第一行 第二行 第三行"),
            ),
            (
                "thing1",
                "  hello \u{3000}  world \u{0} ",
                Ok("hello world"),
            ),
            ("thing1", "\u{FEFF}bom\u{202E}rtl", Ok("bom rtl")),
            (
                "thing1",
                "abcdefghijklmnopqrs tuvwxyz",
                Ok("abcdefghijklmnopqrs…"),
            ),
            (
                "thing1",
                "abcdefghijklmnopqr tuvwxyz",
                Ok("abcdefghijklmnopqr…"),
            ),
            ("number2", " 42 \n", Ok("42")),
            ("number2", "4 2", Err(invalid("number2", RULE_NUMBER))),
            ("number2", "abc", Err(invalid("number2", RULE_NUMBER))),
            (
                "number2",
                "123456789012345678901234567890123",
                Err(too_long("number2", 32)),
            ),
            (
                "letter3",
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ",
                Ok("abcdefghijklmnopqrstuvwxyzABCDEF"),
            ),
            ("letter3", "abc1", Err(invalid("letter3", RULE_LETTER))),
            ("symbol4", "!!!!!!!", Ok("!!!!!")),
            (
                "character_string5",
                "ORDER-0123456789-0123456789-0123456789",
                Ok("ORDER-0123456789-0123456789-0123"),
            ),
            ("time6", " 15:01 ~ 16:00 ", Ok("15:01~16:00")),
            ("time6", "2019-10-01   15:01", Ok("2019-10-01 15:01")),
            ("time6", "2019-10-01\n15:01", Ok("2019-10-01 15:01")),
            (
                "date7",
                "2018-01-01 ~ 2018-01-31",
                Ok("2018-01-01~2018-01-31"),
            ),
            ("date7", "yesterday", Err(invalid("date7", RULE_DATE))),
            ("amount8", "  ¥5 ", Ok("¥5")),
            ("amount8", "5", Err(invalid("amount8", RULE_AMOUNT))),
            (
                "phone_number9",
                " +86-0766-66888866 ",
                Ok("+86-0766-66888866"),
            ),
            (
                "phone_number9",
                "123456789012345678",
                Err(too_long("phone_number9", 17)),
            ),
            ("car_number10", " 粤A8Z888挂 ", Ok("粤A8Z888挂")),
            (
                "name11",
                "一二三四五六七八九十一二三四五",
                Ok("一二三四五六七八九十"),
            ),
            (
                "name11",
                "ABCDEFGHIJKLMNOPQRSTUVWXY",
                Ok("ABCDEFGHIJKLMNOPQRST"),
            ),
            ("name11", "张Johnathan-Smith", Ok("张Johnathan")),
            ("name11", "John3", Err(invalid("name11", RULE_NAME))),
            ("name11", "John\nSmith", Ok("John Smith")),
            ("phrase12", "货物正在配送中", Ok("货物正在配")),
            ("phrase12", " 配送中 ", Ok("配送中")),
            (
                "phrase12",
                "配送中ab",
                Err(invalid("phrase12", RULE_PHRASE)),
            ),
            (
                "enum13",
                "a-twenty-five-char-value!",
                Err(too_long("enum13", 20)),
            ),
            ("enum13", " 已完成\n", Ok("已完成")),
            (
                "custom14",
                "abcdefghijklmnopqrstuvwxyz",
                Ok("abcdefghijklmnopqrst"),
            ),
            ("custom14", "a\u{0}b", Ok("a b")),
        ];
        for (key, value, expected) in cases {
            let expected = expected.clone().map(str::to_owned);
            assert_eq!(
                normalise(key, value, Mode::Lenient),
                expected,
                "{key} = {value:?}"
            );
        }
    }

    #[test]
    fn lenient_output_always_passes_strict() {
        let inputs = [
            "第一行\n第二行😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀",
            "   ",
            "ABC def 123 !!!",
            "一二三四五六七八九十一二三四五",
            "15:01 ~ 16:00",
        ];
        for key in KEYS {
            for input in inputs {
                if let Ok(out) = normalise(key, input, Mode::Lenient) {
                    assert_eq!(normalise(key, &out, Mode::Strict), Ok(out.clone()), "{key}");
                }
            }
        }
    }

    #[test]
    fn empty_after_normalisation_is_empty_for_every_type() {
        for key in KEYS {
            for value in ["", " ", "\n\t\r", "\u{3000}", "\u{0}\u{1F}"] {
                assert_eq!(
                    normalise(key, value, Mode::Lenient),
                    empty(key),
                    "{key} = {value:?}"
                );
            }
            assert_eq!(normalise(key, " \n", Mode::Strict), empty(key), "{key}");
        }
    }

    #[test]
    fn errors_never_contain_the_value() {
        let secret = "SECRETsecret机密";
        let long_secret = secret.repeat(4);
        let with_newline = format!("{secret}\n");
        for key in KEYS {
            for value in [secret, long_secret.as_str(), with_newline.as_str()] {
                for mode in [Mode::Strict, Mode::Lenient] {
                    if let Err(e) = normalise(key, value, mode) {
                        let shown = format!("{e} {e:?}");
                        assert!(!shown.contains("SECRET"), "{key}: {shown}");
                        assert!(!shown.contains("机密"), "{key}: {shown}");
                        assert!(shown.contains(key), "{key}: {shown}");
                    }
                }
            }
        }
    }

    #[test]
    fn error_messages_name_key_and_rule() {
        let e = normalise("thing1", &"字".repeat(21), Mode::Strict).unwrap_err();
        assert_eq!(e.to_string(), "thing1: at most 20 characters");
        let e = normalise("number4", "x", Mode::Strict).unwrap_err();
        assert_eq!(
            e.to_string(),
            "number4: digits with an optional single decimal point"
        );
        let e = normalise("phrase3", "", Mode::Strict).unwrap_err();
        assert_eq!(e.to_string(), "phrase3: must not be empty");
    }

    #[test]
    fn render_pattern_fills_all_four_placeholders() {
        let vars = [
            ("sender", "小明"),
            ("preview", "晚上一起吃饭吗？"),
            ("time", "2024-05-01 18:30"),
            ("count", "3"),
        ];
        let pattern =
            r#"{"thing1":"{sender}","thing2":"{preview}","time3":"{time}","number4":"{count}"}"#;
        assert_eq!(
            render_pattern(pattern, &vars),
            Err(PatternError::UnmatchedBrace { position: 0 }),
            "JSON braces must be escaped in a pattern"
        );
        let pattern =
            r#"{{"thing1":"{sender}","thing2":"{preview}","time3":"{time}","number4":"{count}"}}"#;
        assert_eq!(
            render_pattern(pattern, &vars).as_deref(),
            Ok(
                r#"{"thing1":"小明","thing2":"晚上一起吃饭吗？","time3":"2024-05-01 18:30","number4":"3"}"#
            )
        );
        // The per-key patterns callers normally hold.
        for (key, pattern, expected) in [
            ("thing1", "{sender}", "小明"),
            ("thing2", "{preview}", "晚上一起吃饭吗？"),
            ("time3", "{time}", "2024-05-01 18:30"),
            ("number4", "{count}", "3"),
            ("thing5", "{sender}: {count} 条新消息", "小明: 3 条新消息"),
        ] {
            let rendered = render_pattern(pattern, &vars).unwrap();
            assert_eq!(
                normalise(key, &rendered, Mode::Lenient).as_deref(),
                Ok(expected)
            );
        }
    }

    #[test]
    fn render_pattern_errors_and_escapes() {
        let vars = [("sender", "Alice"), ("count", "{count}")];
        assert_eq!(
            render_pattern("hi {nobody}", &vars),
            Err(PatternError::UnknownPlaceholder {
                name: "nobody".into()
            })
        );
        assert_eq!(
            render_pattern("{nobody}", &vars).unwrap_err().to_string(),
            "pattern: unknown placeholder {nobody}"
        );
        assert_eq!(
            render_pattern("{}", &vars),
            Err(PatternError::UnknownPlaceholder { name: "".into() })
        );
        assert_eq!(
            render_pattern("{{sender}} is {sender}", &vars).as_deref(),
            Ok("{sender} is Alice")
        );
        assert_eq!(
            render_pattern("{{{sender}}}", &vars).as_deref(),
            Ok("{Alice}")
        );
        assert_eq!(
            render_pattern("no braces", &vars).as_deref(),
            Ok("no braces")
        );
        assert_eq!(render_pattern("", &vars).as_deref(), Ok(""));
        // Values are inserted verbatim, never expanded again.
        assert_eq!(render_pattern("{count}", &vars).as_deref(), Ok("{count}"));
        assert_eq!(
            render_pattern("ab {sender", &vars),
            Err(PatternError::UnmatchedBrace { position: 3 })
        );
        assert_eq!(
            render_pattern("a}b", &vars),
            Err(PatternError::UnmatchedBrace { position: 1 })
        );
        assert_eq!(
            render_pattern("{a{b}", &vars),
            Err(PatternError::UnmatchedBrace { position: 0 })
        );
        assert_eq!(
            render_pattern("{sender}}", &vars),
            Err(PatternError::UnmatchedBrace { position: 8 })
        );
    }
}
