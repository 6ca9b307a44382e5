//! The same message written as XML and as JSON must parse to the same model (or fail in both):
//! one builder serves both formats, so they must never drift apart. The fields, their values,
//! the event, the `List` items and where the list sits (top level or inside the event's
//! wrapper, one item as an object or an array) all come from the fuzzer.
#![no_main]
use arbitrary::{Arbitrary, Unstructured};
use common::protocol::wechat::message::{self, Format};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use wxim_fuzz::{cdata, xml_text};

const FIELDS: [&str; 26] = [
    "ToUserName",
    "FromUserName",
    "CreateTime",
    "MsgType",
    "MsgId",
    "MsgID",
    "Content",
    "PicUrl",
    "MediaId",
    "Format",
    "Recognition",
    "ThumbMediaId",
    "Location_X",
    "Location_Y",
    "Scale",
    "Label",
    "Title",
    "Description",
    "Url",
    "AppId",
    "PagePath",
    "ThumbUrl",
    "Event",
    "EventKey",
    "Ticket",
    "SessionFrom",
];
const ITEM_FIELDS: [&str; 7] = [
    "TemplateId",
    "SubscribeStatusString",
    "PopupScene",
    "MsgID",
    "MsgId",
    "ErrorCode",
    "ErrorStatus",
];
const TYPES: [&str; 10] = [
    "text",
    "image",
    "voice",
    "video",
    "shortvideo",
    "location",
    "link",
    "miniprogrampage",
    "event",
    "debug",
];
const EVENTS: [&str; 8] = [
    "subscribe_msg_popup_event",
    "subscribe_msg_change_event",
    "subscribe_msg_sent_event",
    "subscribe",
    "unsubscribe",
    "SCAN",
    "user_enter_tempsession",
    "CLICK",
];
const WRAPPERS: [&str; 3] = [
    "SubscribeMsgPopupEvent",
    "SubscribeMsgChangeEvent",
    "SubscribeMsgSentEvent",
];

/// A value: text, or (in JSON) the same text as a number when it is a canonical integer.
struct Val {
    text: String,
    as_number: bool,
}

impl Val {
    fn new(u: &mut Unstructured<'_>) -> arbitrary::Result<Self> {
        let text = match u.int_in_range(0..=3)? {
            0 => u.int_in_range(-2i64..=99_999_999_999)?.to_string(),
            1 => u64::arbitrary(u)?.to_string(),
            _ => xml_text(<&str>::arbitrary(u)?),
        };
        Ok(Val {
            text,
            as_number: bool::arbitrary(u)?,
        })
    }

    fn json(&self) -> Value {
        if self.as_number
            && let Ok(n) = self.text.parse::<i128>()
            && n.to_string() == self.text
        {
            if let Ok(i) = i64::try_from(n) {
                return Value::from(i);
            }
            if let Ok(u) = u64::try_from(n) {
                return Value::from(u);
            }
        }
        Value::String(self.text.clone())
    }

    fn xml(&self, name: &str) -> String {
        // Numbers are plain text in WeChat's XML (surrounding whitespace is trimmed there).
        if self.as_number
            && !self.text.is_empty()
            && self.text.bytes().all(|b| b.is_ascii_digit() || b == b'-')
        {
            format!("<{name}>{}</{name}>", self.text)
        } else {
            format!("<{name}>{}</{name}>", cdata(&self.text))
        }
    }
}

fn fields(
    u: &mut Unstructured<'_>,
    names: &[&'static str],
) -> arbitrary::Result<Vec<(&'static str, Val)>> {
    let mut out = vec![];
    for &name in names {
        if u.ratio(3, 4)? {
            out.push((name, Val::new(u)?));
        }
    }
    Ok(out)
}

fn input(u: &mut Unstructured<'_>) -> arbitrary::Result<(String, String)> {
    let mut top = fields(u, &FIELDS)?;
    // Mostly a real type and event, so the deep builders are reached.
    for (name, v) in top.iter_mut() {
        if *name == "MsgType" && u.ratio(7, 8)? {
            v.text = u.choose(&TYPES)?.to_string();
        }
        if *name == "Event" && u.ratio(7, 8)? {
            v.text = u.choose(&EVENTS)?.to_string();
        }
    }
    let n_items = u.int_in_range(0..=3)?;
    let mut items = vec![];
    for _ in 0..n_items {
        items.push(fields(u, &ITEM_FIELDS)?);
    }
    let wrapper: Option<&str> = if u.arbitrary()? {
        Some(u.choose(&WRAPPERS)?)
    } else {
        None
    };
    let single_as_object: bool = u.arbitrary()?;

    let mut xml = String::from("<xml>");
    let mut obj = Map::new();
    for (name, v) in &top {
        xml.push_str(&v.xml(name));
        obj.insert((*name).to_owned(), v.json());
    }
    if !items.is_empty() {
        let mut xml_items = String::new();
        let mut json_items = vec![];
        for item in &items {
            xml_items.push_str("<List>");
            let mut o = Map::new();
            for (name, v) in item {
                xml_items.push_str(&v.xml(name));
                o.insert((*name).to_owned(), v.json());
            }
            // An XML <List> without children is text, not an item; JSON has no such thing.
            if item.is_empty() {
                return Err(arbitrary::Error::IncorrectFormat);
            }
            xml_items.push_str("</List>");
            json_items.push(Value::Object(o));
        }
        let list = if json_items.len() == 1 && single_as_object {
            json_items.pop().unwrap()
        } else {
            Value::Array(json_items)
        };
        match wrapper {
            Some(w) => {
                xml.push_str(&format!("<{w}>{xml_items}</{w}>"));
                let mut wo = Map::new();
                wo.insert("List".into(), list);
                obj.insert(w.to_owned(), Value::Object(wo));
            }
            None => {
                xml.push_str(&xml_items);
                obj.insert("List".into(), list);
            }
        }
    }
    xml.push_str("</xml>");
    Ok((xml, Value::Object(obj).to_string()))
}

fuzz_target!(|data: &[u8]| {
    let Ok((xml, json)) = input(&mut Unstructured::new(data)) else {
        return;
    };
    let from_xml = message::parse_message(xml.as_bytes());
    let from_json = message::parse_message(json.as_bytes());
    match (from_xml, from_json) {
        (Ok(mut a), Ok(b)) => {
            assert_eq!(a.format, Format::Xml);
            assert_eq!(b.format, Format::Json);
            a.format = Format::Json;
            assert_eq!(
                a, b,
                "XML and JSON parse differently\nxml: {xml}\njson: {json}"
            );
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!(
            "XML {:?} but JSON {:?}\nxml: {xml}\njson: {json}",
            a.map(|_| "ok"),
            b.map(|_| "ok")
        ),
    }
});
