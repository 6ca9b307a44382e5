//! A small, defensive reader for the flat `<xml>…</xml>` documents WeChat pushes.
//!
//! WeChat bodies arrive from the internet before anything about them is trusted, so
//! this reader refuses DTDs and custom entities outright (no XXE, no entity
//! expansion), bounds nesting and element count, and never puts more than a
//! fixed description and a byte offset into its errors: bodies carry user
//! messages and openids that must not end up in logs.
//!
//! Names and values borrow from the request body wherever no unescaping was
//! needed, so a typical push costs one vector per element that has children.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::errors::{Error as QxError, IllFormedError, SyntaxError};
use quick_xml::events::{BytesRef, Event};

/// Deepest element nesting accepted, counting `<xml>` itself as level 1.
/// WeChat's deepest documents (subscribe events) use 3.
pub const MAX_DEPTH: usize = 8;

/// Most elements accepted in one document. Real pushes carry a few dozen.
pub const MAX_ELEMENTS: usize = 1000;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Why a push body could not be turned into data.
///
/// Messages are fixed descriptions plus at most a byte offset, a line/column or
/// a field name from our own schema: never bytes copied from the body.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ParseError {
    #[error("empty body")]
    Empty,
    #[error("body is neither XML nor JSON")]
    UnknownFormat,
    #[error("XML document type declarations are not allowed")]
    Doctype,
    #[error("malformed XML: {0}")]
    Xml(String),
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("invalid value in field `{0}`")]
    Invalid(&'static str),
}

/// The content of one element: either its text or its child elements in
/// document order (repeated names such as `<List>` are all kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlValue<'a> {
    Text(Cow<'a, str>),
    Element(Vec<(Cow<'a, str>, XmlValue<'a>)>),
}

impl<'a> XmlValue<'a> {
    pub fn as_text(&self) -> Option<&str> {
        match self {
            XmlValue::Text(t) => Some(t),
            XmlValue::Element(_) => None,
        }
    }

    /// Child elements in document order; empty for a text node.
    pub fn children(&self) -> &[(Cow<'a, str>, XmlValue<'a>)] {
        match self {
            XmlValue::Text(_) => &[],
            XmlValue::Element(children) => children,
        }
    }

    /// First direct child called `name`, whatever its kind.
    pub fn get(&self, name: &str) -> Option<&XmlValue<'a>> {
        find(self.children(), name)
    }

    /// Text of the first direct child called `name` that holds text.
    pub fn text(&self, name: &str) -> Option<&str> {
        find_text(self.children(), name)
    }
}

/// A parsed `<xml>` document: the root's children become fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XmlDoc<'a> {
    fields: Vec<(Cow<'a, str>, XmlValue<'a>)>,
}

impl<'a> XmlDoc<'a> {
    /// The root's children in document order.
    pub fn fields(&self) -> &[(Cow<'a, str>, XmlValue<'a>)] {
        &self.fields
    }

    pub fn into_fields(self) -> Vec<(Cow<'a, str>, XmlValue<'a>)> {
        self.fields
    }

    /// First direct child of the root called `name`, whatever its kind.
    pub fn get(&self, name: &str) -> Option<&XmlValue<'a>> {
        find(&self.fields, name)
    }

    /// Text of the first direct child of the root called `name` that holds text.
    pub fn text(&self, name: &str) -> Option<&str> {
        find_text(&self.fields, name)
    }

    /// Like [`text`](Self::text), but the value itself, still borrowed from the body when it
    /// could be: for a field too large to copy.
    pub fn take_text(self, name: &str) -> Option<Cow<'a, str>> {
        self.fields.into_iter().find_map(|(n, v)| match v {
            XmlValue::Text(text) if n == name => Some(text),
            _ => None,
        })
    }

    /// Every `<List>` element with children, either directly under the root or
    /// one level down inside any wrapper (`<SubscribeMsgPopupEvent>` …), in
    /// document order. Subscribe events have been documented both ways.
    pub fn lists(&self) -> impl Iterator<Item = &XmlValue<'a>> + '_ {
        self.fields.iter().flat_map(|(name, value)| {
            let (own, nested): (Option<&XmlValue<'a>>, &[(Cow<'a, str>, XmlValue<'a>)]) =
                if name == "List" {
                    (Some(value), &[])
                } else {
                    (None, value.children())
                };
            own.into_iter()
                .chain(nested.iter().filter(|(n, _)| n == "List").map(|(_, v)| v))
                .filter(|v| matches!(v, XmlValue::Element(_)))
        })
    }
}

fn find<'x, 'a>(
    fields: &'x [(Cow<'a, str>, XmlValue<'a>)],
    name: &str,
) -> Option<&'x XmlValue<'a>> {
    fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

fn find_text<'x>(fields: &'x [(Cow<'_, str>, XmlValue<'_>)], name: &str) -> Option<&'x str> {
    fields
        .iter()
        .filter(|(n, _)| n == name)
        .find_map(|(_, v)| v.as_text())
}

/// Parses a WeChat XML body. Text that is not CDATA has surrounding XML
/// whitespace removed (pretty-printed samples indent their numbers); CDATA
/// sections and character references are kept exactly.
pub fn parse(body: &[u8]) -> Result<XmlDoc<'_>, ParseError> {
    parse_impl(body, true)
}

/// Like [`parse`] but keeps every text byte, whitespace included. Used for the
/// `Encrypt` envelope field, whose exact value is covered by `msg_signature`.
pub fn parse_untrimmed(body: &[u8]) -> Result<XmlDoc<'_>, ParseError> {
    parse_impl(body, false)
}

pub(crate) fn strip_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(UTF8_BOM).unwrap_or(body)
}

pub(crate) fn is_xml_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Trims only the four XML whitespace characters: `str::trim` would also eat
/// U+3000 and friends, which are real content in Chinese text.
pub(crate) fn trim_xml_ws(s: &str) -> &str {
    s.trim_matches(is_xml_ws)
}

#[derive(PartialEq, Eq)]
enum Stage {
    Prolog,
    Inside,
    Epilog,
}

fn parse_impl(body: &[u8], trim: bool) -> Result<XmlDoc<'_>, ParseError> {
    let body = strip_bom(body);
    if body.iter().all(|&b| is_xml_ws(char::from(b))) {
        return Err(ParseError::Empty);
    }
    // quick-xml validates UTF-8 chunk by chunk as it emits events; validating
    // the whole body up front as well would double the dominant cost.
    let mut reader = Reader::from_reader(body);
    let mut stack: Vec<Frame<'_>> = Vec::with_capacity(4);
    let mut stage = Stage::Prolog;
    let mut elements = 0usize;
    let mut fields = Vec::new();

    loop {
        let event = reader
            .read_event()
            .map_err(|e| map_reader_error(&reader, &e))?;
        match event {
            Event::Start(_) | Event::Empty(_) if stage == Stage::Epilog => {
                return Err(at(&reader, "content after the root element"));
            }
            Event::Start(start) => {
                admit(&mut elements, stack.len())?;
                let name = reborrow(body, start.name().as_ref());
                if stage == Stage::Prolog {
                    if name != "xml" {
                        return Err(at(&reader, "root element must be <xml>"));
                    }
                    stage = Stage::Inside;
                }
                stack.push(Frame::new(name));
            }
            Event::Empty(start) => {
                admit(&mut elements, stack.len())?;
                let name = reborrow(body, start.name().as_ref());
                match stack.last_mut() {
                    None => {
                        if name != "xml" {
                            return Err(at(&reader, "root element must be <xml>"));
                        }
                        stage = Stage::Epilog;
                    }
                    Some(parent) => {
                        parent.adopt(name, XmlValue::Text(Cow::Borrowed("")));
                    }
                }
            }
            Event::End(_) => {
                // quick-xml has already checked that the end tag matches.
                let Some(frame) = stack.pop() else {
                    return Err(at(&reader, "unmatched end tag"));
                };
                let (name, value) = frame.finish();
                match stack.last_mut() {
                    Some(parent) => parent.adopt(name, value),
                    None => {
                        if let XmlValue::Element(children) = value {
                            fields = children;
                        }
                        stage = Stage::Epilog;
                    }
                }
            }
            Event::Text(text) => match stack.last_mut() {
                Some(frame) => frame.push_text(text.into_inner(), trim),
                None => {
                    if !text.chars().all(is_xml_ws) {
                        return Err(at(&reader, "text outside the root element"));
                    }
                }
            },
            Event::CData(cdata) => match stack.last_mut() {
                Some(frame) => frame.push_exact(cdata.into_inner()),
                None => return Err(at(&reader, "CDATA outside the root element")),
            },
            Event::GeneralRef(reference) => {
                let resolved = resolve_reference(&reference).ok_or_else(|| {
                    at(&reader, "undefined entity or invalid character reference")
                })?;
                match stack.last_mut() {
                    Some(frame) => frame.push_exact(resolved),
                    None => return Err(at(&reader, "reference outside the root element")),
                }
            }
            Event::DocType(_) => return Err(ParseError::Doctype),
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) => {}
            Event::Eof => {
                return match stage {
                    Stage::Epilog => Ok(XmlDoc { fields }),
                    Stage::Prolog => Err(ParseError::Xml("no root element".into())),
                    Stage::Inside => Err(ParseError::Xml("unexpected end of document".into())),
                };
            }
        }
    }
}

/// Counts one more element opening below `open_ancestors` others and refuses
/// it past the limits, before any work is spent on it.
fn admit(elements: &mut usize, open_ancestors: usize) -> Result<(), ParseError> {
    *elements += 1;
    if *elements > MAX_ELEMENTS {
        return Err(ParseError::Xml(format!(
            "more than {MAX_ELEMENTS} elements"
        )));
    }
    if open_ancestors >= MAX_DEPTH {
        return Err(ParseError::Xml(format!(
            "elements nested deeper than {MAX_DEPTH} levels"
        )));
    }
    Ok(())
}

/// Only the five predefined entities and character references are honoured:
/// anything else would need a DTD, which is refused.
fn resolve_reference(reference: &BytesRef<'_>) -> Option<Cow<'static, str>> {
    if reference.is_char_ref() {
        let c = reference.resolve_char_ref().ok().flatten()?;
        return is_xml_char(c).then(|| Cow::Owned(c.to_string()));
    }
    quick_xml::escape::resolve_xml_entity(reference).map(Cow::Borrowed)
}

/// XML 1.0 `Char`: control characters other than tab/LF/CR cannot appear even
/// through a character reference.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// The writer's side, for the documents we build (passive replies, sealed pushes): `s` in a
/// CDATA section, a `]]>` in it split across two sections so that text can never close the
/// section early, and the characters XML 1.0 forbids everywhere (most C0 controls, U+FFFE,
/// U+FFFF) dropped: no escape can carry them, and WeChat's parser would refuse the whole
/// document (found by fuzzing).
pub(crate) fn cdata(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 12);
    push_cdata(&mut out, s);
    out
}

/// [`cdata`] appended to `out`, for documents built in one buffer.
pub(crate) fn push_cdata(out: &mut String, s: &str) {
    let s = xml_chars(s);
    out.push_str("<![CDATA[");
    let mut rest = &*s;
    // Most text (base64, ids) has no `]` at all, which a vectorised byte search tells at once.
    while let Some(i) = memchr::memchr(b']', rest.as_bytes()).and_then(|_| rest.find("]]>")) {
        // `]]` ends this section, `>` opens the next: the text reads back unchanged.
        out.push_str(&rest[..i + 2]);
        out.push_str("]]><![CDATA[");
        rest = &rest[i + 2..];
    }
    out.push_str(rest);
    out.push_str("]]>");
}

/// `<name>` + [`cdata`] + `</name>` appended to `out`.
pub(crate) fn push_element(out: &mut String, name: &str, text: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    push_cdata(out, text);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// `s` without the characters XML cannot carry; borrowed when there are none (always, for
/// text WeChat itself sent).
pub(crate) fn xml_chars(s: &str) -> Cow<'_, str> {
    // The only characters XML forbids are C0 controls other than tab/LF/CR, and U+FFFE/U+FFFF
    // (encoded EF BF BE/BF); a byte scan rules both out for nearly all text (base64, ids, most
    // messages), and only text holding an EF byte is checked character by character.
    // (A fold without early exit, so that the scan runs over whole vectors.)
    let plain = s.bytes().fold(true, |ok, b| {
        ok & ((b >= 0x20 && b != 0xEF) | (b == b'\t') | (b == b'\n') | (b == b'\r'))
    });
    if plain || s.chars().all(is_xml_char) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.chars().filter(|&c| is_xml_char(c)).collect())
    }
}

/// quick-xml hands names out tied to the event, although for a slice reader
/// they point into the input. Re-slicing the input at the same address lets the
/// tree keep the name without copying; anything else falls back to a copy.
fn reborrow<'a>(input: &'a [u8], part: &str) -> Cow<'a, str> {
    let offset = (part.as_ptr() as usize).wrapping_sub(input.as_ptr() as usize);
    match input.get(offset..offset.wrapping_add(part.len())) {
        Some(bytes) if bytes.as_ptr() == part.as_ptr() => match std::str::from_utf8(bytes) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => Cow::Owned(part.to_owned()),
        },
        _ => Cow::Owned(part.to_owned()),
    }
}

fn at(reader: &Reader<&[u8]>, what: &str) -> ParseError {
    ParseError::Xml(format!("{what} at byte {}", reader.buffer_position()))
}

/// quick-xml's own messages can quote tag and entity names from the body, so
/// only the kind of failure and its offset are kept.
fn map_reader_error(reader: &Reader<&[u8]>, error: &QxError) -> ParseError {
    let what = match error {
        QxError::Syntax(SyntaxError::UnclosedDoctype)
        | QxError::IllFormed(IllFormedError::MissingDoctypeName) => return ParseError::Doctype,
        QxError::Syntax(SyntaxError::InvalidBangMarkup) => "unknown `<!` markup",
        QxError::Syntax(SyntaxError::UnclosedPI) => "unclosed processing instruction",
        QxError::Syntax(SyntaxError::UnclosedXmlDecl) => "unclosed XML declaration",
        QxError::Syntax(SyntaxError::UnclosedComment) => "unclosed comment",
        QxError::Syntax(SyntaxError::UnclosedCData) => "unclosed CDATA section",
        QxError::Syntax(_) => "unclosed tag",
        QxError::IllFormed(IllFormedError::MissingEndTag(_)) => "missing end tag",
        QxError::IllFormed(IllFormedError::UnmatchedEndTag(_)) => "unmatched end tag",
        QxError::IllFormed(IllFormedError::MismatchedEndTag { .. }) => "mismatched end tag",
        QxError::IllFormed(IllFormedError::UnclosedReference) => "unterminated `&` reference",
        QxError::IllFormed(_) => "ill-formed markup",
        QxError::Escape(_) => "invalid reference",
        QxError::Encoding(_) => "invalid UTF-8",
        _ => "unreadable markup",
    };
    ParseError::Xml(format!("{what} at byte {}", reader.error_position()))
}

/// An element being read. Its text is only materialised once the end tag
/// shows whether it turned out to be a text node.
struct Frame<'a> {
    name: Cow<'a, str>,
    children: Vec<(Cow<'a, str>, XmlValue<'a>)>,
    text: Cow<'a, str>,
    /// Whether anything has been kept yet; leading whitespace is dropped until then.
    started: bool,
    /// Start of trailing whitespace that came from plain text and may be cut at
    /// the end tag. Whitespace inside CDATA or from a reference is never cut.
    soft_tail: Option<usize>,
}

impl<'a> Frame<'a> {
    fn new(name: Cow<'a, str>) -> Self {
        Frame {
            name,
            children: Vec::new(),
            text: Cow::Borrowed(""),
            started: false,
            soft_tail: None,
        }
    }

    /// Most messages and events have fewer than sixteen fields: room for sixteen at the first
    /// child, instead of growing 4 → 8 → 16 (a reallocation and a copy each) on the request path.
    fn adopt(&mut self, name: Cow<'a, str>, value: XmlValue<'a>) {
        if self.children.capacity() == 0 {
            self.children.reserve_exact(16);
        }
        self.children.push((name, value));
    }

    fn push_text(&mut self, chunk: Cow<'a, str>, trim: bool) {
        if !trim {
            self.append(chunk);
            return;
        }
        let chunk = if self.started {
            chunk
        } else {
            match chunk {
                Cow::Borrowed(s) => Cow::Borrowed(s.trim_start_matches(is_xml_ws)),
                Cow::Owned(s) => Cow::Owned(s.trim_start_matches(is_xml_ws).to_owned()),
            }
        };
        if chunk.is_empty() {
            return;
        }
        let before = self.text.len();
        let kept = chunk.trim_end_matches(is_xml_ws).len();
        self.soft_tail = if kept == 0 {
            self.soft_tail.or(Some(before))
        } else if kept < chunk.len() {
            Some(before + kept)
        } else {
            None
        };
        self.append(chunk);
    }

    fn push_exact(&mut self, piece: Cow<'a, str>) {
        self.append(piece);
        self.soft_tail = None;
    }

    fn append(&mut self, piece: Cow<'a, str>) {
        if !self.children.is_empty() {
            // Once children appear the text is discarded; don't keep building it.
            return;
        }
        self.started = true;
        if self.text.is_empty() {
            self.text = piece;
        } else if !piece.is_empty() {
            self.text.to_mut().push_str(&piece);
        }
    }

    fn finish(self) -> (Cow<'a, str>, XmlValue<'a>) {
        if !self.children.is_empty() {
            // Text beside child elements is indentation in every WeChat payload.
            return (self.name, XmlValue::Element(self.children));
        }
        let mut text = self.text;
        if let Some(end) = self.soft_tail {
            match &mut text {
                Cow::Borrowed(s) => *s = &s[..end],
                Cow::Owned(s) => s.truncate(end),
            }
        }
        (self.name, XmlValue::Text(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of<'x>(doc: &'x XmlDoc<'_>, name: &str) -> &'x str {
        doc.text(name)
            .unwrap_or_else(|| panic!("no text field {name}"))
    }

    // V6 (official open-platform sample), the decrypted debug_demo plaintext.
    const V6_XML: &str = "<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>\n<FromUserName><![CDATA[o9AgO5Kd5ggOC-bXrbNODIiE3bGY]]></FromUserName>\n<CreateTime>1715943329</CreateTime>\n<MsgType><![CDATA[event]]></MsgType>\n<Event><![CDATA[debug_demo]]></Event>\n<debug_str><![CDATA[hello world]]></debug_str>\n</xml>";

    #[test]
    fn parses_flat_fields() {
        let doc = parse(V6_XML.as_bytes()).unwrap();
        assert_eq!(doc.fields().len(), 6);
        assert_eq!(text_of(&doc, "ToUserName"), "gh_97417a04a28d");
        assert_eq!(text_of(&doc, "CreateTime"), "1715943329");
        assert_eq!(text_of(&doc, "debug_str"), "hello world");
        assert_eq!(doc.text("Nope"), None);
    }

    #[test]
    fn values_borrow_from_the_body() {
        let doc = parse(V6_XML.as_bytes()).unwrap();
        for (name, value) in doc.fields() {
            assert!(matches!(name, Cow::Borrowed(_)), "{name} was copied");
            assert!(
                matches!(value, XmlValue::Text(Cow::Borrowed(_))),
                "{name} value was copied"
            );
        }
    }

    #[test]
    fn xml_chars_keeps_every_allowed_character_and_drops_the_rest() {
        // Borrowed by the byte scan, or (an EF lead byte) after the character check.
        for ok in [
            "",
            "base64+/=",
            "你好 \t\r\n",
            "\u{7f}\u{85}",
            "\u{F000}\u{FFFD}\u{10FFFF}",
        ] {
            assert!(
                matches!(xml_chars(ok), Cow::Borrowed(s) if s == ok),
                "{ok:?}"
            );
        }
        assert_eq!(
            xml_chars("a\u{0}b\u{1F}c\u{FFFE}d\u{FFFF}e\u{F000}"),
            "abcde\u{F000}"
        );
        assert_eq!(
            cdata("x]]>y]]]>z"),
            "<![CDATA[x]]]]><![CDATA[>y]]]]]><![CDATA[>z]]>"
        );
    }

    #[test]
    fn trims_plain_text_but_not_cdata() {
        let xml = "<xml>\n  <A>\n   42 \n </A>\n  <B><![CDATA[  keep \n me  ]]></B>\n  <C>\n  <![CDATA[ x ]]>\n  </C>\n  <D> a <![CDATA[ b ]]> c </D>\n</xml>";
        let doc = parse(xml.as_bytes()).unwrap();
        assert_eq!(text_of(&doc, "A"), "42");
        assert_eq!(text_of(&doc, "B"), "  keep \n me  ");
        assert_eq!(text_of(&doc, "C"), " x ");
        assert_eq!(text_of(&doc, "D"), "a  b  c");
    }

    #[test]
    fn trim_only_removes_xml_whitespace() {
        let doc = parse("<xml><A>\u{3000}你好\u{3000}</A></xml>".as_bytes()).unwrap();
        assert_eq!(text_of(&doc, "A"), "\u{3000}你好\u{3000}");
    }

    #[test]
    fn untrimmed_keeps_every_byte() {
        let xml = "<xml><Encrypt>\n ab+/= \n</Encrypt><E2>\n<![CDATA[x]]>\n</E2></xml>";
        let doc = parse_untrimmed(xml.as_bytes()).unwrap();
        assert_eq!(text_of(&doc, "Encrypt"), "\n ab+/= \n");
        assert_eq!(text_of(&doc, "E2"), "\nx\n");
    }

    #[test]
    fn adjacent_cdata_sections_join() {
        // The standard way to carry `]]>` inside CDATA is to split the section.
        let doc = parse(b"<xml><A><![CDATA[a]]]]><![CDATA[>b]]></A></xml>").unwrap();
        assert_eq!(text_of(&doc, "A"), "a]]>b");
    }

    #[test]
    fn crlf_inside_cdata_is_not_normalised() {
        let doc = parse(b"<xml><A><![CDATA[a\r\nb]]></A></xml>").unwrap();
        assert_eq!(text_of(&doc, "A"), "a\r\nb");
    }

    #[test]
    fn unescapes_predefined_and_numeric_references_once() {
        let xml = "<xml><A>a &amp; b &lt;c&gt; &quot;&apos; &#20320;&#x597D;</A><B><![CDATA[&amp;&#65;]]></B><C>&amp;amp;</C><D>&#x20;x&#32;</D></xml>";
        let doc = parse(xml.as_bytes()).unwrap();
        assert_eq!(text_of(&doc, "A"), "a & b <c> \"' 你好");
        assert_eq!(text_of(&doc, "B"), "&amp;&#65;");
        assert_eq!(text_of(&doc, "C"), "&amp;");
        // Whitespace written as a reference is deliberate content.
        assert_eq!(text_of(&doc, "D"), " x ");
    }

    #[test]
    fn empty_elements_are_empty_text() {
        let doc = parse(b"<xml><A/><B></B><C><![CDATA[]]></C><D>   </D></xml>").unwrap();
        for name in ["A", "B", "C", "D"] {
            assert_eq!(text_of(&doc, name), "");
        }
        assert_eq!(parse(b"<xml/>").unwrap().fields().len(), 0);
        assert_eq!(parse(b"<xml></xml>").unwrap().fields().len(), 0);
    }

    #[test]
    fn nested_and_repeated_elements_keep_order() {
        // WxJava WxMaMessageTest popup fixture, extended with a second item.
        let xml = "<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName>\n<Event><![CDATA[subscribe_msg_popup_event]]></Event>\n<SubscribeMsgPopupEvent>\n <List>\n   <TemplateId><![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]></TemplateId>\n   <SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString>\n   <PopupScene>0</PopupScene>\n </List>\n <List>\n   <TemplateId><![CDATA[second]]></TemplateId>\n </List>\n</SubscribeMsgPopupEvent></xml>";
        let doc = parse(xml.as_bytes()).unwrap();
        let wrapper = doc.get("SubscribeMsgPopupEvent").unwrap();
        assert_eq!(wrapper.children().len(), 2);
        assert_eq!(wrapper.as_text(), None);
        let lists: Vec<_> = doc.lists().collect();
        assert_eq!(lists.len(), 2);
        assert_eq!(
            lists[0].text("TemplateId"),
            Some("VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc")
        );
        assert_eq!(lists[0].text("PopupScene"), Some("0"));
        assert_eq!(lists[1].text("TemplateId"), Some("second"));
        // A wrapper is not itself text.
        assert_eq!(doc.text("SubscribeMsgPopupEvent"), None);
    }

    #[test]
    fn lists_found_at_root_and_in_any_wrapper_in_order() {
        let xml = "<xml><List><T>1</T></List><W><List><T>2</T></List><Other><List><T>deep</T></List></Other></W><List><T>3</T></List><List/></xml>";
        let doc = parse(xml.as_bytes()).unwrap();
        let ids: Vec<_> = doc.lists().map(|l| l.text("T").unwrap()).collect();
        assert_eq!(ids, ["1", "2", "3"]);
    }

    #[test]
    fn accepts_declaration_comments_bom_and_surrounding_whitespace() {
        let xml = "\u{feff}  <?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- hi --><xml><A>1</A><!-- c --></xml>\n\n";
        let doc = parse(xml.as_bytes()).unwrap();
        assert_eq!(text_of(&doc, "A"), "1");
    }

    #[test]
    fn refuses_doctype() {
        // The classic XXE payload.
        let xxe = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE foo [ <!ENTITY xxe SYSTEM \"file:///etc/passwd\"> ]>\n<xml><ToUserName>&xxe;</ToUserName></xml>";
        assert_eq!(parse(xxe.as_bytes()), Err(ParseError::Doctype));
        // Billion laughs.
        let lol = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">]><xml><A>&lol2;</A></xml>";
        assert_eq!(parse(lol.as_bytes()), Err(ParseError::Doctype));
        for doc in [
            "<!doctype xml><xml/>",
            "<!DOCTYPE xml SYSTEM \"http://example.invalid/x.dtd\"><xml/>",
            "<xml><!DOCTYPE x></xml>",
            "<!DOCTYPE",
            "<!DOCTYPE>",
            "<!DOCTYPE xml [",
        ] {
            assert_eq!(parse(doc.as_bytes()), Err(ParseError::Doctype), "{doc}");
        }
    }

    #[test]
    fn refuses_undefined_entities_and_bad_references() {
        for doc in [
            "<xml><A>&xxe;</A></xml>",
            "<xml><A>&nbsp;</A></xml>",
            "<xml><A>&#0;</A></xml>",
            "<xml><A>&#1;</A></xml>",
            "<xml><A>&#xD800;</A></xml>",
            "<xml><A>&#x110000;</A></xml>",
            "<xml><A>&#xFFFF;</A></xml>",
            "<xml><A>&#-1;</A></xml>",
            "<xml><A>&#;</A></xml>",
            "<xml><A>a & b</A></xml>",
            "<xml><A>&amp</A></xml>",
        ] {
            assert!(
                matches!(parse(doc.as_bytes()), Err(ParseError::Xml(_))),
                "{doc}"
            );
        }
    }

    #[test]
    fn refuses_malformed_documents() {
        for doc in [
            "<xml>",
            "<xml><A>1</A>",
            "<xml><A>1</B></xml>",
            "<xml></xml></xml>",
            "</xml>",
            "<xml><A>1</A></xml>trailing",
            "<xml></xml><xml></xml>",
            "<xml></xml><A/>",
            "<xml></xml><![CDATA[x]]>",
            "<xml></xml>&amp;",
            "junk<xml></xml>",
            "<root><A>1</A></root>",
            "<Xml></Xml>",
            "<xml><A><![CDATA[unclosed</A></xml>",
            "<xml><!-- unclosed </xml>",
            "<xml><A attr=\"x></A></xml>",
            "<xml><A",
            "<",
            "<?xml version=\"1.0\"?>",
            "<!-- only a comment -->",
        ] {
            assert!(
                matches!(parse(doc.as_bytes()), Err(ParseError::Xml(_))),
                "{doc}"
            );
        }
        assert_eq!(parse(b""), Err(ParseError::Empty));
        assert_eq!(parse(b" \r\n\t"), Err(ParseError::Empty));
        assert_eq!(parse(b"\xEF\xBB\xBF"), Err(ParseError::Empty));
        assert!(matches!(
            parse(b"<xml><A>\xff</A></xml>"),
            Err(ParseError::Xml(_))
        ));
    }

    #[test]
    fn limits_depth() {
        let ok = format!(
            "<xml>{}{}</xml>",
            "<a>".repeat(MAX_DEPTH - 1),
            "</a>".repeat(MAX_DEPTH - 1)
        );
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = format!(
            "<xml>{}{}</xml>",
            "<a>".repeat(MAX_DEPTH),
            "</a>".repeat(MAX_DEPTH)
        );
        assert!(matches!(parse(deep.as_bytes()), Err(ParseError::Xml(m)) if m.contains("deeper")));
        let deep_empty = format!(
            "<xml>{}<b/>{}</xml>",
            "<a>".repeat(MAX_DEPTH - 1),
            "</a>".repeat(MAX_DEPTH - 1)
        );
        assert!(
            matches!(parse(deep_empty.as_bytes()), Err(ParseError::Xml(m)) if m.contains("deeper"))
        );
        // Far beyond the limit must fail fast rather than build a tower.
        let huge = "<xml>".to_owned() + &"<a>".repeat(100_000);
        assert!(matches!(parse(huge.as_bytes()), Err(ParseError::Xml(_))));
    }

    #[test]
    fn limits_element_count() {
        let ok = format!("<xml>{}</xml>", "<a>1</a>".repeat(MAX_ELEMENTS - 1));
        assert_eq!(
            parse(ok.as_bytes()).unwrap().fields().len(),
            MAX_ELEMENTS - 1
        );
        let too_many = format!("<xml>{}</xml>", "<a/>".repeat(MAX_ELEMENTS));
        assert!(
            matches!(parse(too_many.as_bytes()), Err(ParseError::Xml(m)) if m.contains("elements"))
        );
    }

    #[test]
    fn errors_never_echo_the_body() {
        let secret = "SECRET_openid_o9AgO5Kd5ggOC";
        for doc in [
            format!("<xml><{secret}>1</{secret}x></xml>"),
            format!("<xml><A>&{secret};</A></xml>"),
            format!("<{secret}></{secret}>"),
            format!("<xml><A>1</A></{secret}>"),
            format!("<xml><A>{secret}</A>"),
            format!("<xml></xml>{secret}"),
            format!("<xml><A b=\"{secret}></A></xml>"),
            format!("<!DOCTYPE {secret}><xml/>"),
        ] {
            let err = parse(doc.as_bytes()).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("SECRET"), "{shown}");
            assert!(err.to_string().len() < 100, "{err}");
        }
    }

    #[test]
    fn ignores_attributes_and_namespaces_prefix_is_part_of_name() {
        let doc = parse(b"<xml a=\"1\"><A b='2'>x</A><p:B>y</p:B></xml>").unwrap();
        assert_eq!(text_of(&doc, "A"), "x");
        assert_eq!(text_of(&doc, "p:B"), "y");
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        // xorshift64: deterministic, and no extra crate for a no-panic sweep.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"<>/![]CDATA&#;x0123456789 \n\"'=?-xmlList\xEF\xBB\xBF\xff";
        for round in 0..2000 {
            let len = (next() % 200) as usize;
            let bytes: Vec<u8> = if round % 2 == 0 {
                (0..len).map(|_| next() as u8).collect()
            } else {
                (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect()
            };
            let _ = parse(&bytes);
            let _ = parse_untrimmed(&bytes);

            let mut mutated = V6_XML.as_bytes().to_vec();
            for _ in 0..(1 + next() % 4) {
                let i = (next() % mutated.len() as u64) as usize;
                match next() % 3 {
                    0 => mutated[i] = next() as u8,
                    1 => {
                        mutated.remove(i);
                    }
                    _ => mutated.insert(i, alphabet[(next() % alphabet.len() as u64) as usize]),
                }
            }
            let _ = parse(&mutated);
        }
    }
}
