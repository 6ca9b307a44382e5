//! One typed model for what WeChat pushes to a mini-program (MP, XML or JSON)
//! and to an official account (OA, XML only).
//!
//! Both wire formats are first read into the same loosely typed `Raw` record
//! and then validated by one builder, so the JSON and XML paths cannot drift
//! apart. The quirks handled here come from WeChat's docs and peer SDK issues:
//! numbers sent as strings (and vice versa), `List` as an object or an array,
//! with or without a `SubscribeMsg*Event` wrapper, and `MsgID` spelled two ways.
//!
//! A field is only validated when the message at hand needs it, so an odd value
//! in, say, `List` of some future event can never turn that event into an error
//! (and an error here means WeChat retrying, then showing the user a failure).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

pub use super::xml::ParseError;
use super::xml::{self, XmlDoc, XmlValue};

/// Wire format of a push body. MP lets the developer choose; OA is always XML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Xml,
    Json,
}

/// Decides the format from the first non-blank byte (after an optional UTF-8
/// BOM). Content-Type is not used: WeChat's value for JSON is undocumented.
pub fn detect_format(body: &[u8]) -> Result<Format, ParseError> {
    let first = xml::strip_bom(body)
        .iter()
        .find(|&&b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    match first {
        None => Err(ParseError::Empty),
        Some(b'<') => Ok(Format::Xml),
        Some(b'{') => Ok(Format::Json),
        Some(_) => Err(ParseError::UnknownFormat),
    }
}

/// The outer layer of a safe- or compatible-mode push: enough to verify
/// `msg_signature` and decrypt. A plaintext body simply has no `encrypt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub format: Format,
    pub to_user: Option<String>,
    /// Exactly as sent (CDATA extracted or JSON unescaped, nothing trimmed):
    /// `msg_signature` is computed over these bytes. `Some("")` if present but empty.
    /// Borrowed from the body unless unescaping changed it: it is most of a safe-mode push.
    pub encrypt: Option<Cow<'a, str>>,
}

pub fn parse_envelope(body: &[u8]) -> Result<Envelope<'_>, ParseError> {
    let format = detect_format(body)?;
    let (to_user, encrypt) = match format {
        Format::Xml => {
            let doc = xml::parse_untrimmed(body)?;
            let to_user = doc
                .text("ToUserName")
                .map(xml::trim_xml_ws)
                .map(str::to_owned);
            (to_user, doc.take_text("Encrypt"))
        }
        Format::Json => {
            let raw: RawEnvelope<'_> = from_json(body)?;
            let encrypt = match raw.encrypt {
                None => None,
                Some(Scalar::Str(s)) => Some(s),
                // A number cannot be base64 ciphertext; refuse rather than reformat it.
                Some(_) => return Err(ParseError::Invalid("Encrypt")),
            };
            (opt_text(raw.to_user, "ToUserName")?, encrypt)
        }
    };
    Ok(Envelope {
        format,
        to_user: to_user.filter(|s| !s.is_empty()),
        encrypt,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub format: Format,
    /// The account's original id (`gh_…`).
    pub to_user: String,
    /// The user's openid.
    pub from_user: String,
    pub create_time: i64,
    /// Kept as text: it can exceed 2^53 and cloud-function pushes use
    /// non-numeric ids. `None` when absent or empty (events have none).
    pub msg_id: Option<String>,
    pub kind: MessageKind,
}

/// Type-specific content. Fields WeChat sometimes leaves out are empty strings
/// rather than errors, except a text message's `Content`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageKind {
    Text {
        content: String,
    },
    Image {
        pic_url: String,
        media_id: String,
    },
    Voice {
        media_id: String,
        format: String,
        recognition: Option<String>,
    },
    Video {
        media_id: String,
        thumb_media_id: String,
    },
    ShortVideo {
        media_id: String,
        thumb_media_id: String,
    },
    Location {
        x: String,
        y: String,
        scale: String,
        label: String,
    },
    Link {
        title: String,
        description: String,
        url: String,
    },
    MiniProgramPage {
        title: String,
        app_id: String,
        page_path: String,
        thumb_url: String,
        thumb_media_id: String,
    },
    Event(Event),
    Unknown {
        msg_type: String,
    },
}

/// `Option` fields are `None` when the element is absent or empty: an OA
/// follow without a QR scene still carries `<EventKey><![CDATA[]]></EventKey>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    SubscribeMsgPopup(Vec<SubscribeItem>),
    SubscribeMsgChange(Vec<SubscribeItem>),
    SubscribeMsgSent(Vec<SentItem>),
    /// OA follow; a parametric QR gives `qrscene_<scene>`, kept as sent.
    Subscribe {
        event_key: Option<String>,
        ticket: Option<String>,
    },
    Unsubscribe,
    /// Scan of a parametric QR by a user who already follows (scene without prefix).
    Scan {
        event_key: Option<String>,
        ticket: Option<String>,
    },
    UserEnterTempSession {
        session_from: Option<String>,
    },
    /// Any other event (LOCATION, CLICK, VIEW, debug_demo, …): accepted so that
    /// new WeChat events never turn into retries.
    Other {
        event: String,
    },
}

impl Event {
    /// The `Event` value as WeChat sends it.
    pub fn name(&self) -> &str {
        match self {
            Event::SubscribeMsgPopup(_) => "subscribe_msg_popup_event",
            Event::SubscribeMsgChange(_) => "subscribe_msg_change_event",
            Event::SubscribeMsgSent(_) => "subscribe_msg_sent_event",
            Event::Subscribe { .. } => "subscribe",
            Event::Unsubscribe => "unsubscribe",
            Event::Scan { .. } => "SCAN",
            Event::UserEnterTempSession { .. } => "user_enter_tempsession",
            Event::Other { event } => event,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeItem {
    pub template_id: String,
    /// `accept` / `reject` (change events only ever push `reject`).
    pub status: String,
    /// MP: `0`; OA: `1` H5 page, `2` article. Absent in change events.
    pub popup_scene: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentItem {
    pub template_id: String,
    /// The `msgid` returned by the send call, as text.
    pub msg_id: String,
    pub error_code: i64,
    pub error_status: String,
}

impl Message {
    pub fn event_name(&self) -> Option<&str> {
        match &self.kind {
            MessageKind::Event(event) => Some(event.name()),
            _ => None,
        }
    }

    /// The `MsgType` value as WeChat sent it.
    pub fn msg_type(&self) -> &str {
        match &self.kind {
            MessageKind::Text { .. } => "text",
            MessageKind::Image { .. } => "image",
            MessageKind::Voice { .. } => "voice",
            MessageKind::Video { .. } => "video",
            MessageKind::ShortVideo { .. } => "shortvideo",
            MessageKind::Location { .. } => "location",
            MessageKind::Link { .. } => "link",
            MessageKind::MiniProgramPage { .. } => "miniprogrampage",
            MessageKind::Event(_) => "event",
            MessageKind::Unknown { msg_type } => msg_type,
        }
    }
}

/// Parses a plaintext (or already decrypted) push body of either format.
pub fn parse_message(body: &[u8]) -> Result<Message, ParseError> {
    match detect_format(body)? {
        Format::Xml => {
            let doc = xml::parse(body)?;
            build(Format::Xml, raw_from_xml(&doc))
        }
        // detect_format saw `{`, so serde's derived structs only meet an object.
        Format::Json => build(Format::Json, from_json(body)?),
    }
}

fn build(format: Format, mut raw: Raw<'_>) -> Result<Message, ParseError> {
    let to_user = req_text(raw.to_user.take(), "ToUserName")?;
    let from_user = req_text(raw.from_user.take(), "FromUserName")?;
    // An openid is 28 characters; a longer one is not WeChat's and would only make oversized keys.
    if from_user.len() > MAX_ID_BYTES {
        return Err(ParseError::Invalid("FromUserName"));
    }
    let create_time = required(raw.create_time.take(), "CreateTime")?.to_i64("CreateTime")?;
    let msg_type = required(raw.msg_type.take(), "MsgType")?.into_text("MsgType")?;
    let msg_id = match non_empty(raw.msg_id.take()).or(non_empty(raw.msg_id_upper.take())) {
        Some(id) => Some(id.into_id("MsgId")?),
        None => None,
    };

    let kind = match &*msg_type {
        "text" => MessageKind::Text {
            // Present-but-empty is kept: only absence is an error.
            content: raw
                .content
                .take()
                .ok_or(ParseError::Missing("Content"))?
                .into_text("Content")?
                .into_owned(),
        },
        "image" => MessageKind::Image {
            pic_url: text_or_empty(raw.pic_url.take(), "PicUrl")?,
            media_id: text_or_empty(raw.media_id.take(), "MediaId")?,
        },
        "voice" => MessageKind::Voice {
            media_id: text_or_empty(raw.media_id.take(), "MediaId")?,
            format: text_or_empty(raw.format.take(), "Format")?,
            recognition: opt_text(raw.recognition.take(), "Recognition")?,
        },
        "video" => MessageKind::Video {
            media_id: text_or_empty(raw.media_id.take(), "MediaId")?,
            thumb_media_id: text_or_empty(raw.thumb_media_id.take(), "ThumbMediaId")?,
        },
        "shortvideo" => MessageKind::ShortVideo {
            media_id: text_or_empty(raw.media_id.take(), "MediaId")?,
            thumb_media_id: text_or_empty(raw.thumb_media_id.take(), "ThumbMediaId")?,
        },
        "location" => MessageKind::Location {
            x: text_or_empty(raw.location_x.take(), "Location_X")?,
            y: text_or_empty(raw.location_y.take(), "Location_Y")?,
            scale: text_or_empty(raw.scale.take(), "Scale")?,
            label: text_or_empty(raw.label.take(), "Label")?,
        },
        "link" => MessageKind::Link {
            title: text_or_empty(raw.title.take(), "Title")?,
            description: text_or_empty(raw.description.take(), "Description")?,
            url: text_or_empty(raw.url.take(), "Url")?,
        },
        "miniprogrampage" => MessageKind::MiniProgramPage {
            title: text_or_empty(raw.title.take(), "Title")?,
            app_id: text_or_empty(raw.app_id.take(), "AppId")?,
            page_path: text_or_empty(raw.page_path.take(), "PagePath")?,
            thumb_url: text_or_empty(raw.thumb_url.take(), "ThumbUrl")?,
            thumb_media_id: text_or_empty(raw.thumb_media_id.take(), "ThumbMediaId")?,
        },
        "event" => MessageKind::Event(build_event(&mut raw)?),
        _ => MessageKind::Unknown {
            msg_type: msg_type.into_owned(),
        },
    };

    Ok(Message {
        format,
        to_user,
        from_user,
        create_time,
        msg_id,
        kind,
    })
}

fn build_event(raw: &mut Raw<'_>) -> Result<Event, ParseError> {
    let name = required(raw.event.take(), "Event")?.into_text("Event")?;
    // WeChat's own spelling, case-sensitive: `SCAN` is upper case, `subscribe` is not.
    Ok(match &*name {
        "subscribe_msg_popup_event" => {
            Event::SubscribeMsgPopup(subscribe_items(raw.take_items()?)?)
        }
        "subscribe_msg_change_event" => {
            Event::SubscribeMsgChange(subscribe_items(raw.take_items()?)?)
        }
        "subscribe_msg_sent_event" => Event::SubscribeMsgSent(sent_items(raw.take_items()?)?),
        "subscribe" => Event::Subscribe {
            event_key: opt_text(raw.event_key.take(), "EventKey")?,
            ticket: opt_text(raw.ticket.take(), "Ticket")?,
        },
        "unsubscribe" => Event::Unsubscribe,
        "SCAN" => Event::Scan {
            event_key: opt_text(raw.event_key.take(), "EventKey")?,
            ticket: opt_text(raw.ticket.take(), "Ticket")?,
        },
        "user_enter_tempsession" => Event::UserEnterTempSession {
            session_from: opt_text(raw.session_from.take(), "SessionFrom")?,
        },
        _ => Event::Other {
            event: name.into_owned(),
        },
    })
}

/// Identifiers WeChat sends (openids, template ids, msgids) are short; anything longer is refused
/// as malformed rather than carried into storage keys.
const MAX_ID_BYTES: usize = 128;
/// A popup lists the templates of one `wx.requestSubscribeMessage` call (a handful); the ledger
/// applies a list in one transaction, which DynamoDB caps at 100 writes.
const MAX_LIST_ITEMS: usize = 20;

fn check_list<T>(items: &[T]) -> Result<(), ParseError> {
    match items.len() {
        0 => Err(ParseError::Missing("List")),
        n if n > MAX_LIST_ITEMS => Err(ParseError::Invalid("List")),
        _ => Ok(()),
    }
}

fn template_id(value: Option<Scalar<'_>>) -> Result<String, ParseError> {
    let t = req_text(value, "TemplateId")?;
    if t.len() > MAX_ID_BYTES {
        return Err(ParseError::Invalid("TemplateId"));
    }
    Ok(t)
}

fn subscribe_items(items: Vec<RawItem<'_>>) -> Result<Vec<SubscribeItem>, ParseError> {
    check_list(&items)?;
    items
        .into_iter()
        .map(|item| {
            Ok(SubscribeItem {
                template_id: template_id(item.template_id)?,
                status: req_text(item.status, "SubscribeStatusString")?,
                popup_scene: opt_text(item.popup_scene, "PopupScene")?,
            })
        })
        .collect()
}

fn sent_items(items: Vec<RawItem<'_>>) -> Result<Vec<SentItem>, ParseError> {
    check_list(&items)?;
    items
        .into_iter()
        .map(|item| {
            // `MsgID` is the documented spelling; `MsgId` has been seen in SDK samples.
            let msg_id = non_empty(item.msg_id_upper).or(non_empty(item.msg_id));
            let msg_id = required(msg_id, "MsgID")?.into_id("MsgID")?;
            if msg_id.len() > MAX_ID_BYTES {
                return Err(ParseError::Invalid("MsgID"));
            }
            Ok(SentItem {
                template_id: template_id(item.template_id)?,
                msg_id,
                // No default: a made-up 0 would report a failed delivery as success.
                error_code: required(item.error_code, "ErrorCode")?.to_i64("ErrorCode")?,
                error_status: text_or_empty(item.error_status, "ErrorStatus")?,
            })
        })
        .collect()
}

fn non_empty(value: Option<Scalar<'_>>) -> Option<Scalar<'_>> {
    value.filter(|v| !v.is_empty())
}

/// Absent, `null` and `""` all count as missing.
fn required<'a>(value: Option<Scalar<'a>>, field: &'static str) -> Result<Scalar<'a>, ParseError> {
    non_empty(value).ok_or(ParseError::Missing(field))
}

fn req_text(value: Option<Scalar<'_>>, field: &'static str) -> Result<String, ParseError> {
    Ok(required(value, field)?.into_text(field)?.into_owned())
}

fn opt_text(value: Option<Scalar<'_>>, field: &'static str) -> Result<Option<String>, ParseError> {
    non_empty(value)
        .map(|v| v.into_text(field).map(Cow::into_owned))
        .transpose()
}

fn text_or_empty(value: Option<Scalar<'_>>, field: &'static str) -> Result<String, ParseError> {
    Ok(opt_text(value, field)?.unwrap_or_default())
}

/// A leaf value that may arrive as a JSON string or number; XML text is
/// always `Str`. Kept borrowed from the body until a field is materialised.
#[derive(Debug)]
enum Scalar<'a> {
    Str(Cow<'a, str>),
    /// Wide enough for every integer serde_json hands out (i64 and u64).
    Int(i128),
    /// serde_json's fallback for non-integers and integers beyond u64: not exact.
    Float(f64),
    /// A boolean, object or array: skipped, and an error only if the field is used.
    Unusable,
}

impl<'a> Scalar<'a> {
    fn is_empty(&self) -> bool {
        matches!(self, Scalar::Str(s) if s.is_empty())
    }

    fn into_text(self, field: &'static str) -> Result<Cow<'a, str>, ParseError> {
        match self {
            Scalar::Str(s) => Ok(s),
            Scalar::Int(n) => Ok(Cow::Owned(n.to_string())),
            Scalar::Float(f) => Ok(Cow::Owned(f.to_string())),
            Scalar::Unusable => Err(ParseError::Invalid(field)),
        }
    }

    fn to_i64(&self, field: &'static str) -> Result<i64, ParseError> {
        match self {
            Scalar::Str(s) => s.parse().map_err(|_| ParseError::Invalid(field)),
            Scalar::Int(n) => i64::try_from(*n).map_err(|_| ParseError::Invalid(field)),
            Scalar::Float(_) | Scalar::Unusable => Err(ParseError::Invalid(field)),
        }
    }

    /// Ids are used for dedupe and correlation, so one that already lost
    /// digits in a float is refused rather than stored wrong.
    fn into_id(self, field: &'static str) -> Result<String, ParseError> {
        match self {
            Scalar::Float(_) => Err(ParseError::Invalid(field)),
            other => Ok(other.into_text(field)?.into_owned()),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor<'a>(PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for ScalarVisitor<'a> {
            type Value = Scalar<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::Int(i128::from(v)))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Int(i128::from(v)))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Float(v))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Unusable)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Unusable)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Unusable)
            }
        }

        deserializer.deserialize_any(ScalarVisitor(PhantomData))
    }
}

/// A value that should be an object (`List` item, wrapper) or, for `List`, an
/// array of objects: one template gives an object, several an array. Anything
/// else is remembered as `Unusable` instead of failing the whole body.
enum Shaped<T> {
    Object(T),
    Array(Vec<T>),
    Unusable,
}

impl<T> Shaped<T> {
    fn into_objects(self, field: &'static str) -> Result<Vec<T>, ParseError> {
        match self {
            Shaped::Object(one) => Ok(vec![one]),
            Shaped::Array(many) => Ok(many),
            Shaped::Unusable => Err(ParseError::Invalid(field)),
        }
    }

    /// For wrappers, which are only ever documented as a single object.
    fn into_object(self, field: &'static str) -> Result<T, ParseError> {
        match self {
            Shaped::Object(one) => Ok(one),
            Shaped::Array(_) | Shaped::Unusable => Err(ParseError::Invalid(field)),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Shaped<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ShapedVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ShapedVisitor<T> {
            type Value = Shaped<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                // Derived structs read a map and skip its unknown keys.
                T::deserialize(MapAccessDeserializer::new(map)).map(Shaped::Object)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut objects = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
                let mut usable = true;
                // Nesting is bounded by serde_json's recursion limit.
                while let Some(element) = seq.next_element::<Shaped<T>>()? {
                    match element {
                        Shaped::Object(one) if usable => objects.push(one),
                        _ => usable = false,
                    }
                }
                Ok(if usable {
                    Shaped::Array(objects)
                } else {
                    Shaped::Unusable
                })
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Shaped::Unusable)
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Shaped::Unusable)
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Shaped::Unusable)
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Shaped::Unusable)
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Shaped::Unusable)
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Shaped::Unusable)
            }
        }

        deserializer.deserialize_any(ShapedVisitor(PhantomData))
    }
}

/// Every field this module reads, from either format. Unknown JSON keys are
/// skipped; a repeated known key is a JSON error (serde's duplicate check).
#[derive(Default, Deserialize)]
struct Raw<'a> {
    #[serde(rename = "ToUserName", borrow)]
    to_user: Option<Scalar<'a>>,
    #[serde(rename = "FromUserName", borrow)]
    from_user: Option<Scalar<'a>>,
    #[serde(rename = "CreateTime", borrow)]
    create_time: Option<Scalar<'a>>,
    #[serde(rename = "MsgType", borrow)]
    msg_type: Option<Scalar<'a>>,
    #[serde(rename = "MsgId", borrow)]
    msg_id: Option<Scalar<'a>>,
    /// OA template-send results spell it this way at the top level.
    #[serde(rename = "MsgID", borrow)]
    msg_id_upper: Option<Scalar<'a>>,
    #[serde(rename = "Content", borrow)]
    content: Option<Scalar<'a>>,
    #[serde(rename = "PicUrl", borrow)]
    pic_url: Option<Scalar<'a>>,
    #[serde(rename = "MediaId", borrow)]
    media_id: Option<Scalar<'a>>,
    #[serde(rename = "Format", borrow)]
    format: Option<Scalar<'a>>,
    #[serde(rename = "Recognition", borrow)]
    recognition: Option<Scalar<'a>>,
    #[serde(rename = "ThumbMediaId", borrow)]
    thumb_media_id: Option<Scalar<'a>>,
    #[serde(rename = "Location_X", borrow)]
    location_x: Option<Scalar<'a>>,
    #[serde(rename = "Location_Y", borrow)]
    location_y: Option<Scalar<'a>>,
    #[serde(rename = "Scale", borrow)]
    scale: Option<Scalar<'a>>,
    #[serde(rename = "Label", borrow)]
    label: Option<Scalar<'a>>,
    #[serde(rename = "Title", borrow)]
    title: Option<Scalar<'a>>,
    #[serde(rename = "Description", borrow)]
    description: Option<Scalar<'a>>,
    #[serde(rename = "Url", borrow)]
    url: Option<Scalar<'a>>,
    #[serde(rename = "AppId", borrow)]
    app_id: Option<Scalar<'a>>,
    #[serde(rename = "PagePath", borrow)]
    page_path: Option<Scalar<'a>>,
    #[serde(rename = "ThumbUrl", borrow)]
    thumb_url: Option<Scalar<'a>>,
    #[serde(rename = "Event", borrow)]
    event: Option<Scalar<'a>>,
    #[serde(rename = "EventKey", borrow)]
    event_key: Option<Scalar<'a>>,
    #[serde(rename = "Ticket", borrow)]
    ticket: Option<Scalar<'a>>,
    #[serde(rename = "SessionFrom", borrow)]
    session_from: Option<Scalar<'a>>,
    #[serde(rename = "List", borrow)]
    list: Option<Shaped<RawItem<'a>>>,
    #[serde(rename = "SubscribeMsgPopupEvent", borrow)]
    popup_wrapper: Option<Shaped<Wrapper<'a>>>,
    #[serde(rename = "SubscribeMsgChangeEvent", borrow)]
    change_wrapper: Option<Shaped<Wrapper<'a>>>,
    #[serde(rename = "SubscribeMsgSentEvent", borrow)]
    sent_wrapper: Option<Shaped<Wrapper<'a>>>,
}

impl<'a> Raw<'a> {
    /// Items from a top-level `List` and from any wrapper: the docs have shown
    /// both shapes and no payload mixes them.
    fn take_items(&mut self) -> Result<Vec<RawItem<'a>>, ParseError> {
        let mut items = match self.list.take() {
            Some(list) => list.into_objects("List")?,
            None => Vec::new(),
        };
        let wrappers = [
            (self.popup_wrapper.take(), "SubscribeMsgPopupEvent"),
            (self.change_wrapper.take(), "SubscribeMsgChangeEvent"),
            (self.sent_wrapper.take(), "SubscribeMsgSentEvent"),
        ];
        for (wrapper, field) in wrappers {
            let Some(wrapper) = wrapper else {
                continue;
            };
            if let Some(list) = wrapper.into_object(field)?.list {
                items.extend(list.into_objects("List")?);
            }
        }
        Ok(items)
    }
}

#[derive(Deserialize)]
struct Wrapper<'a> {
    #[serde(rename = "List", borrow)]
    list: Option<Shaped<RawItem<'a>>>,
}

#[derive(Default, Deserialize)]
struct RawItem<'a> {
    #[serde(rename = "TemplateId", borrow)]
    template_id: Option<Scalar<'a>>,
    #[serde(rename = "SubscribeStatusString", borrow)]
    status: Option<Scalar<'a>>,
    #[serde(rename = "PopupScene", borrow)]
    popup_scene: Option<Scalar<'a>>,
    #[serde(rename = "MsgID", borrow)]
    msg_id_upper: Option<Scalar<'a>>,
    #[serde(rename = "MsgId", borrow)]
    msg_id: Option<Scalar<'a>>,
    #[serde(rename = "ErrorCode", borrow)]
    error_code: Option<Scalar<'a>>,
    #[serde(rename = "ErrorStatus", borrow)]
    error_status: Option<Scalar<'a>>,
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(rename = "ToUserName", borrow)]
    to_user: Option<Scalar<'a>>,
    #[serde(rename = "Encrypt", borrow)]
    encrypt: Option<Scalar<'a>>,
}

fn raw_from_xml<'d>(doc: &'d XmlDoc<'_>) -> Raw<'d> {
    let mut raw = Raw::default();
    for (name, value) in doc.fields() {
        let Some(text) = value.as_text() else {
            continue;
        };
        let slot = match name.as_ref() {
            "ToUserName" => &mut raw.to_user,
            "FromUserName" => &mut raw.from_user,
            "CreateTime" => &mut raw.create_time,
            "MsgType" => &mut raw.msg_type,
            "MsgId" => &mut raw.msg_id,
            "MsgID" => &mut raw.msg_id_upper,
            "Content" => &mut raw.content,
            "PicUrl" => &mut raw.pic_url,
            "MediaId" => &mut raw.media_id,
            "Format" => &mut raw.format,
            "Recognition" => &mut raw.recognition,
            "ThumbMediaId" => &mut raw.thumb_media_id,
            "Location_X" => &mut raw.location_x,
            "Location_Y" => &mut raw.location_y,
            "Scale" => &mut raw.scale,
            "Label" => &mut raw.label,
            "Title" => &mut raw.title,
            "Description" => &mut raw.description,
            "Url" => &mut raw.url,
            "AppId" => &mut raw.app_id,
            "PagePath" => &mut raw.page_path,
            "ThumbUrl" => &mut raw.thumb_url,
            "Event" => &mut raw.event,
            "EventKey" => &mut raw.event_key,
            "Ticket" => &mut raw.ticket,
            "SessionFrom" => &mut raw.session_from,
            _ => continue,
        };
        fill(slot, text);
    }
    let items: Vec<RawItem<'d>> = doc.lists().map(item_from_xml).collect();
    if !items.is_empty() {
        raw.list = Some(Shaped::Array(items));
    }
    raw
}

fn item_from_xml<'d>(list: &'d XmlValue<'_>) -> RawItem<'d> {
    let mut item = RawItem::default();
    for (name, value) in list.children() {
        let Some(text) = value.as_text() else {
            continue;
        };
        let slot = match name.as_ref() {
            "TemplateId" => &mut item.template_id,
            "SubscribeStatusString" => &mut item.status,
            "PopupScene" => &mut item.popup_scene,
            "MsgID" => &mut item.msg_id_upper,
            "MsgId" => &mut item.msg_id,
            "ErrorCode" => &mut item.error_code,
            "ErrorStatus" => &mut item.error_status,
            _ => continue,
        };
        fill(slot, text);
    }
    item
}

/// The first occurrence wins, matching [`XmlDoc::text`].
fn fill<'d>(slot: &mut Option<Scalar<'d>>, text: &'d str) {
    if slot.is_none() {
        *slot = Some(Scalar::Str(Cow::Borrowed(text)));
    }
}

fn from_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ParseError> {
    serde_json::from_slice(xml::strip_bom(body)).map_err(|e| json_error(&e))
}

/// serde_json's messages can quote string values from the body, so only the
/// category and position are kept.
fn json_error(error: &serde_json::Error) -> ParseError {
    use serde_json::error::Category;
    let what = match error.classify() {
        Category::Io => "read error",
        Category::Syntax => "syntax error",
        Category::Data => "unexpected value or shape",
        Category::Eof => "unexpected end of input",
    };
    ParseError::Json(format!(
        "{what} at line {} column {}",
        error.line(),
        error.column()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Message {
        parse_message(body.as_bytes()).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    fn event(body: &str) -> Event {
        match parse(body).kind {
            MessageKind::Event(e) => e,
            other => panic!("not an event: {other:?}"),
        }
    }

    fn err(body: &str) -> ParseError {
        match parse_message(body.as_bytes()) {
            Ok(m) => panic!("accepted: {m:?}"),
            Err(e) => e,
        }
    }

    fn popup(template_id: &str, status: &str, scene: Option<&str>) -> SubscribeItem {
        SubscribeItem {
            template_id: template_id.into(),
            status: status.into(),
            popup_scene: scene.map(Into::into),
        }
    }

    // ---- Official vectors (reference §4) ----

    const V4_JSON: &str = r#"{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY","CreateTime":1714112445,"MsgType":"event","Event":"debug_demo","debug_str":"hello world"}"#;

    const V6_XML: &str = "<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>\n<FromUserName><![CDATA[o9AgO5Kd5ggOC-bXrbNODIiE3bGY]]></FromUserName>\n<CreateTime>1715943329</CreateTime>\n<MsgType><![CDATA[event]]></MsgType>\n<Event><![CDATA[debug_demo]]></Event>\n<debug_str><![CDATA[hello world]]></debug_str>\n</xml>";

    const V10_XML: &str = "<xml><ToUserName><![CDATA[gh_abcdef123456]]></ToUserName><FromUserName><![CDATA[oUSER_openid_0001]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好 hello]]></Content><MsgId>24000000000000001</MsgId></xml>";

    const V11_JSON: &str = r#"{"ToUserName":"gh_123456789abc","FromUserName":"otFpruAK8D-E6EfStSYonYSBZ8_4","CreateTime":1700000001,"MsgType":"event","Event":"subscribe_msg_popup_event","List":[{"TemplateId":"VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc","SubscribeStatusString":"accept","PopupScene":"0"},{"TemplateId":"9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI","SubscribeStatusString":"reject","PopupScene":"0"}]}"#;

    #[test]
    fn v4_json_debug_demo() {
        let m = parse(V4_JSON);
        assert_eq!(
            m,
            Message {
                format: Format::Json,
                to_user: "gh_97417a04a28d".into(),
                from_user: "o9AgO5Kd5ggOC-bXrbNODIiE3bGY".into(),
                create_time: 1714112445,
                msg_id: None,
                kind: MessageKind::Event(Event::Other {
                    event: "debug_demo".into()
                }),
            }
        );
        assert_eq!(m.msg_type(), "event");
        assert_eq!(m.event_name(), Some("debug_demo"));
    }

    #[test]
    fn v6_xml_debug_demo() {
        let m = parse(V6_XML);
        assert_eq!(m.format, Format::Xml);
        assert_eq!(m.to_user, "gh_97417a04a28d");
        assert_eq!(m.from_user, "o9AgO5Kd5ggOC-bXrbNODIiE3bGY");
        assert_eq!(m.create_time, 1715943329);
        assert_eq!(m.event_name(), Some("debug_demo"));
    }

    #[test]
    fn v10_xml_text() {
        let m = parse(V10_XML);
        assert_eq!(
            m,
            Message {
                format: Format::Xml,
                to_user: "gh_abcdef123456".into(),
                from_user: "oUSER_openid_0001".into(),
                create_time: 1700000000,
                msg_id: Some("24000000000000001".into()),
                kind: MessageKind::Text {
                    content: "你好 hello".into()
                },
            }
        );
        assert_eq!(m.msg_type(), "text");
        assert_eq!(m.event_name(), None);
    }

    #[test]
    fn v11_json_popup_array() {
        let m = parse(V11_JSON);
        assert_eq!(m.create_time, 1700000001);
        assert_eq!(m.event_name(), Some("subscribe_msg_popup_event"));
        assert_eq!(
            m.kind,
            MessageKind::Event(Event::SubscribeMsgPopup(vec![
                popup(
                    "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc",
                    "accept",
                    Some("0")
                ),
                popup(
                    "9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI",
                    "reject",
                    Some("0")
                ),
            ]))
        );
    }

    // ---- WxJava WxMaMessageTest fixtures (MP) ----

    const WXJAVA_POPUP_XML: &str = "<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName>\n<FromUserName><![CDATA[otFpruAK8D-E6EfStSYonYSBZ8_4]]></FromUserName>\n<CreateTime>1610969440</CreateTime>\n<MsgType><![CDATA[event]]></MsgType>\n<Event><![CDATA[subscribe_msg_popup_event]]></Event>\n<SubscribeMsgPopupEvent>\n <List>\n   <TemplateId><![CDATA[VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc]]></TemplateId>\n   <SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString>\n   <PopupScene>0</PopupScene>\n </List>\n</SubscribeMsgPopupEvent></xml>";

    const WXJAVA_POPUP_JSON_OBJECT: &str = "{\n  \"ToUserName\": \"gh_123456789abc\",\n  \"FromUserName\": \"otFpruAK8D-E6EfStSYonYSBZ8_4\",\n  \"CreateTime\": \"1610969440\",\n  \"MsgType\": \"event\",\n  \"Event\": \"subscribe_msg_popup_event\",\n  \"List\": {\n        \"TemplateId\": \"VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc\",\n        \"SubscribeStatusString\": \"accept\",\n        \"PopupScene\": \"0\"\n    }\n }";

    const WXJAVA_POPUP_JSON_ARRAY: &str = "{\n  \"ToUserName\": \"gh_123456789abc\",\n  \"FromUserName\": \"otFpruAK8D-E6EfStSYonYSBZ8_4\",\n  \"CreateTime\": \"1610969440\",\n  \"MsgType\": \"event\",\n  \"Event\": \"subscribe_msg_popup_event\",\n  \"List\": [{\n        \"TemplateId\": \"VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc\",\n        \"SubscribeStatusString\": \"accept\",\n        \"PopupScene\": \"0\"\n    }]\n }";

    fn assert_wxjava_popup(m: &Message) {
        assert_eq!(m.to_user, "gh_123456789abc");
        assert_eq!(m.from_user, "otFpruAK8D-E6EfStSYonYSBZ8_4");
        assert_eq!(m.create_time, 1610969440);
        assert_eq!(m.msg_type(), "event");
        assert_eq!(
            m.kind,
            MessageKind::Event(Event::SubscribeMsgPopup(vec![popup(
                "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc",
                "accept",
                Some("0")
            )]))
        );
    }

    #[test]
    fn wxjava_popup_all_shapes() {
        for body in [
            WXJAVA_POPUP_XML.to_owned(),
            WXJAVA_POPUP_JSON_OBJECT.to_owned(),
            WXJAVA_POPUP_JSON_ARRAY.to_owned(),
            // Older doc copy / royalrick/weapp#63: wrapper object in JSON too.
            WXJAVA_POPUP_JSON_OBJECT
                .replace("\"List\": {", "\"SubscribeMsgPopupEvent\": {\"List\": {")
                .replace("    }\n }", "    }}\n }"),
            // Numbers as numbers.
            WXJAVA_POPUP_JSON_ARRAY
                .replace("\"1610969440\"", "1610969440")
                .replace("\"PopupScene\": \"0\"", "\"PopupScene\": 0"),
            // Repeated <List> directly under the root, no wrapper.
            WXJAVA_POPUP_XML
                .replace("<SubscribeMsgPopupEvent>\n", "")
                .replace("</SubscribeMsgPopupEvent>", ""),
        ] {
            let m = parse(&body);
            assert_wxjava_popup(&m);
        }
    }

    #[test]
    fn popup_xml_repeated_list() {
        let body = WXJAVA_POPUP_XML.replace(
            " </List>\n",
            " </List>\n <List><TemplateId><![CDATA[9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI]]></TemplateId><SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString><PopupScene>0</PopupScene></List>\n",
        );
        assert_eq!(
            event(&body),
            Event::SubscribeMsgPopup(vec![
                popup(
                    "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc",
                    "accept",
                    Some("0")
                ),
                popup(
                    "9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI",
                    "reject",
                    Some("0")
                ),
            ])
        );
    }

    const WXJAVA_CHANGE_XML: &str = "<xml>\n    <ToUserName><![CDATA[gh_123456789abc]]></ToUserName>\n    <FromUserName><![CDATA[o7esq5OI1Uej6Xixw1lA2H7XDVbc]]></FromUserName>\n    <CreateTime>1610968440</CreateTime>\n    <MsgType><![CDATA[event]]></MsgType>\n    <Event><![CDATA[subscribe_msg_change_event]]></Event>\n    <SubscribeMsgChangeEvent>\n        <List>             <TemplateId><![CDATA[BEwX0BOT3MqK3Uc5oTU3CGBqzjpndk2jzUf7VfExd8]]></TemplateId>\n            <SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString>\n        </List>\n    </SubscribeMsgChangeEvent>\n</xml>";

    const WXJAVA_CHANGE_JSON_OBJECT: &str = "{\n      \"ToUserName\": \"gh_123456789abc\",\n      \"FromUserName\": \"o7esq5OI1Uej6Xixw1lA2H7XDVbc\",\n      \"CreateTime\": \"1610968440\",\n      \"MsgType\": \"event\",\n      \"Event\": \"subscribe_msg_change_event\",\n      \"List\": {\n                \"TemplateId\":\"BEwX0BOT3MqK3Uc5oTU3CGBqzjpndk2jzUf7VfExd8\",\n                \"SubscribeStatusString\": \"reject\"\n      }\n}\n";

    const WXJAVA_CHANGE_JSON_ARRAY: &str = "{\n      \"ToUserName\": \"gh_123456789abc\",\n      \"FromUserName\": \"o7esq5OI1Uej6Xixw1lA2H7XDVbc\",\n      \"CreateTime\": \"1610968440\",\n      \"MsgType\": \"event\",\n      \"Event\": \"subscribe_msg_change_event\",\n      \"List\": [  {\n                \"TemplateId\":\"BEwX0BOT3MqK3Uc5oTU3CGBqzjpndk2jzUf7VfExd8\",\n                \"SubscribeStatusString\": \"reject\"\n      }]}";

    #[test]
    fn wxjava_change_all_shapes() {
        for body in [
            WXJAVA_CHANGE_XML.to_owned(),
            WXJAVA_CHANGE_JSON_OBJECT.to_owned(),
            WXJAVA_CHANGE_JSON_ARRAY.to_owned(),
            WXJAVA_CHANGE_JSON_ARRAY
                .replace("\"List\": [", "\"SubscribeMsgChangeEvent\": {\"List\": [")
                + "}",
            WXJAVA_CHANGE_XML
                .replace("<SubscribeMsgChangeEvent>", "")
                .replace("</SubscribeMsgChangeEvent>", ""),
        ] {
            let m = parse(&body);
            assert_eq!(m.to_user, "gh_123456789abc");
            assert_eq!(m.from_user, "o7esq5OI1Uej6Xixw1lA2H7XDVbc");
            assert_eq!(m.create_time, 1610968440);
            assert_eq!(m.event_name(), Some("subscribe_msg_change_event"));
            assert_eq!(
                m.kind,
                MessageKind::Event(Event::SubscribeMsgChange(vec![popup(
                    "BEwX0BOT3MqK3Uc5oTU3CGBqzjpndk2jzUf7VfExd8",
                    "reject",
                    None
                )]))
            );
        }
    }

    const WXJAVA_SENT_XML: &str = "<xml>\n    <ToUserName><![CDATA[gh_123456789abc]]></ToUserName>\n    <FromUserName><![CDATA[o7esq5PHRGBQYmeNyfG064wEFVpQ]]></FromUserName>\n    <CreateTime>1620963428</CreateTime>\n    <MsgType><![CDATA[event]]></MsgType>\n    <Event><![CDATA[subscribe_msg_sent_event]]></Event>\n    <SubscribeMsgSentEvent>\n        <List>             <TemplateId><![CDATA[BEwX0BO-T3MqK3Uc5oTU3CGBqzjpndk2jzUf7VfExd8]]></TemplateId>\n            <MsgID>1864323726461255680</MsgID>\n            <ErrorCode>0</ErrorCode>\n            <ErrorStatus><![CDATA[success]]></ErrorStatus>\n        </List>\n    </SubscribeMsgSentEvent>\n</xml>";

    const WXJAVA_SENT_JSON_OBJECT: &str = "{\n    \"ToUserName\": \"gh_123456789abc\",\n    \"FromUserName\": \"o7esq5PHRGBQYmeNyfG064wEFVpQ\",\n    \"CreateTime\": \"1620963428\",\n    \"MsgType\": \"event\",\n    \"Event\": \"subscribe_msg_sent_event\",\n    \"List\": {\n        \"TemplateId\": \"BEwX0BO-T3MqK3Uc5oTU3CGBqzjpndk2jzUf7VfExd8\",\n        \"MsgID\": \"1864323726461255680\",\n        \"ErrorCode\": \"0\",\n        \"ErrorStatus\": \"success\"\n      }\n}";

    fn wxjava_sent_item() -> SentItem {
        SentItem {
            template_id: "BEwX0BO-T3MqK3Uc5oTU3CGBqzjpndk2jzUf7VfExd8".into(),
            msg_id: "1864323726461255680".into(),
            error_code: 0,
            error_status: "success".into(),
        }
    }

    #[test]
    fn wxjava_sent_all_shapes() {
        for body in [
            WXJAVA_SENT_XML.to_owned(),
            WXJAVA_SENT_JSON_OBJECT.to_owned(),
            // Array form.
            WXJAVA_SENT_JSON_OBJECT
                .replace("\"List\": {", "\"List\": [{")
                .replace("      }\n}", "      }]\n}"),
            // Older doc copy: wrapper in JSON.
            WXJAVA_SENT_JSON_OBJECT
                .replace("\"List\": {", "\"SubscribeMsgSentEvent\": {\"List\": {")
                .replace("      }\n}", "      }}\n}"),
            // Numbers as numbers; MsgID above 2^53 stays exact as a u64.
            WXJAVA_SENT_JSON_OBJECT
                .replace("\"1864323726461255680\"", "1864323726461255680")
                .replace("\"ErrorCode\": \"0\"", "\"ErrorCode\": 0")
                .replace("\"1620963428\"", "1620963428"),
            // `MsgId` spelling accepted too.
            WXJAVA_SENT_JSON_OBJECT.replace("\"MsgID\"", "\"MsgId\""),
            WXJAVA_SENT_XML.replace("MsgID>", "MsgId>"),
            // No wrapper in XML.
            WXJAVA_SENT_XML
                .replace("<SubscribeMsgSentEvent>", "")
                .replace("</SubscribeMsgSentEvent>", ""),
        ] {
            let m = parse(&body);
            assert_eq!(m.to_user, "gh_123456789abc");
            assert_eq!(m.from_user, "o7esq5PHRGBQYmeNyfG064wEFVpQ");
            assert_eq!(m.create_time, 1620963428);
            assert_eq!(m.msg_id, None, "item MsgID is not the message's");
            assert_eq!(
                m.kind,
                MessageKind::Event(Event::SubscribeMsgSent(vec![wxjava_sent_item()])),
                "{body}"
            );
        }
    }

    #[test]
    fn sent_event_failure_codes_and_multiple_items() {
        let body = r#"{"ToUserName":"gh_1","FromUserName":"o1","CreateTime":1,"MsgType":"event","Event":"subscribe_msg_sent_event","List":[{"TemplateId":"t1","MsgID":"1","ErrorCode":"10005","ErrorStatus":"fail"},{"TemplateId":"t2","MsgID":18446744073709551615,"ErrorCode":-1}]}"#;
        assert_eq!(
            event(body),
            Event::SubscribeMsgSent(vec![
                SentItem {
                    template_id: "t1".into(),
                    msg_id: "1".into(),
                    error_code: 10005,
                    error_status: "fail".into(),
                },
                SentItem {
                    template_id: "t2".into(),
                    msg_id: "18446744073709551615".into(),
                    error_code: -1,
                    error_status: String::new(),
                },
            ])
        );
    }

    #[test]
    fn wxjava_from_xml_text_with_extra_fields() {
        // WxMaMessageTest.testFromXml: MsgType text carrying every MP kf field.
        let body = "<xml>\n   <ToUserName><![CDATA[toUser]]></ToUserName>\n   <FromUserName><![CDATA[fromUser]]></FromUserName>\n   <CreateTime>1482048670</CreateTime>\n   <MsgType><![CDATA[text]]></MsgType>\n   <Content><![CDATA[this is a test]]></Content>\n   <MsgId>1234567890123456</MsgId>\n   <PicUrl><![CDATA[this is a url]]></PicUrl>\n   <MediaId><![CDATA[media_id]]></MediaId>\n   <Title><![CDATA[Title]]></Title>\n   <AppId><![CDATA[AppId]]></AppId>\n   <PagePath><![CDATA[PagePath]]></PagePath>\n   <ThumbUrl><![CDATA[ThumbUrl]]></ThumbUrl>\n   <ThumbMediaId><![CDATA[ThumbMediaId]]></ThumbMediaId>\n   <Event><![CDATA[user_enter_tempsession]]></Event>\n   <SessionFrom><![CDATA[sessionFrom]]></SessionFrom>\n</xml>";
        let m = parse(body);
        assert_eq!(m.to_user, "toUser");
        assert_eq!(m.from_user, "fromUser");
        assert_eq!(m.create_time, 1482048670);
        assert_eq!(m.msg_id.as_deref(), Some("1234567890123456"));
        assert_eq!(
            m.kind,
            MessageKind::Text {
                content: "this is a test".into()
            }
        );
        assert_eq!(m.event_name(), None);

        let mp_page = body.replace("[CDATA[text]]", "[CDATA[miniprogrampage]]");
        assert_eq!(
            parse(&mp_page).kind,
            MessageKind::MiniProgramPage {
                title: "Title".into(),
                app_id: "AppId".into(),
                page_path: "PagePath".into(),
                thumb_url: "ThumbUrl".into(),
                thumb_media_id: "ThumbMediaId".into(),
            }
        );

        let enter = body.replace("[CDATA[text]]", "[CDATA[event]]");
        let m = parse(&enter);
        assert_eq!(m.event_name(), Some("user_enter_tempsession"));
        assert_eq!(
            m.kind,
            MessageKind::Event(Event::UserEnterTempSession {
                session_from: Some("sessionFrom".into())
            })
        );
    }

    #[test]
    fn mp_json_kf_messages() {
        let text = r#"{"ToUserName":"gh_1","FromUserName":"o1","CreateTime":1482048670,"MsgType":"text","Content":"line1\nline2 \"q\" \u4f60\u597d","MsgId":1234567890123456}"#;
        let m = parse(text);
        assert_eq!(
            m.kind,
            MessageKind::Text {
                content: "line1\nline2 \"q\" 你好".into()
            }
        );
        assert_eq!(m.msg_id.as_deref(), Some("1234567890123456"));

        let enter = r#"{"ToUserName":"gh_1","FromUserName":"o1","CreateTime":1,"MsgType":"event","Event":"user_enter_tempsession","SessionFrom":"sessionFrom"}"#;
        assert_eq!(
            event(enter),
            Event::UserEnterTempSession {
                session_from: Some("sessionFrom".into())
            }
        );
        let enter_bare = r#"{"ToUserName":"gh_1","FromUserName":"o1","CreateTime":1,"MsgType":"event","Event":"user_enter_tempsession"}"#;
        assert_eq!(
            event(enter_bare),
            Event::UserEnterTempSession { session_from: None }
        );
    }

    // ---- OA XML messages (wechatpy tests/test_parser.py, test_messages.py) ----

    fn oa(msg_type: &str, extra: &str) -> String {
        format!(
            "<xml>\n        <ToUserName><![CDATA[toUser]]></ToUserName>\n        <FromUserName><![CDATA[fromUser]]></FromUserName>\n        <CreateTime>1348831860</CreateTime>\n        <MsgType><![CDATA[{msg_type}]]></MsgType>\n        {extra}\n        </xml>"
        )
    }

    #[test]
    fn oa_text() {
        let m = parse(&oa(
            "text",
            "<Content><![CDATA[this is a test]]></Content>\n        <MsgId>1234567890123456</MsgId>",
        ));
        assert_eq!(m.to_user, "toUser");
        assert_eq!(m.from_user, "fromUser");
        assert_eq!(m.create_time, 1348831860);
        assert_eq!(m.msg_id.as_deref(), Some("1234567890123456"));
        assert_eq!(
            m.kind,
            MessageKind::Text {
                content: "this is a test".into()
            }
        );
    }

    #[test]
    fn oa_image() {
        let m = parse(&oa(
            "image",
            "<PicUrl><![CDATA[this is a url]]></PicUrl>\n        <MediaId><![CDATA[media_id]]></MediaId>\n        <MsgId>1234567890123456</MsgId>",
        ));
        assert_eq!(m.msg_type(), "image");
        assert_eq!(
            m.kind,
            MessageKind::Image {
                pic_url: "this is a url".into(),
                media_id: "media_id".into()
            }
        );
    }

    #[test]
    fn oa_voice_with_and_without_recognition() {
        let with = parse(&oa(
            "voice",
            "<MediaId><![CDATA[123456]]></MediaId>\n        <Format><![CDATA[aac]]></Format>\n        <Recognition><![CDATA[test]]></Recognition>\n        <MsgId>1234567890123456</MsgId>",
        ));
        assert_eq!(
            with.kind,
            MessageKind::Voice {
                media_id: "123456".into(),
                format: "aac".into(),
                recognition: Some("test".into())
            }
        );
        let without = parse(&oa(
            "voice",
            "<MediaId><![CDATA[media_id]]></MediaId>\n        <Format><![CDATA[Format]]></Format>\n        <MsgId>1234567890123456</MsgId>",
        ));
        assert_eq!(
            without.kind,
            MessageKind::Voice {
                media_id: "media_id".into(),
                format: "Format".into(),
                recognition: None
            }
        );
    }

    #[test]
    fn oa_video_and_shortvideo() {
        let extra = "<MediaId><![CDATA[media_id]]></MediaId>\n        <ThumbMediaId><![CDATA[thumb_media_id]]></ThumbMediaId>\n        <MsgId>1234567890123456</MsgId>";
        let video = parse(&oa("video", extra));
        assert_eq!(
            video.kind,
            MessageKind::Video {
                media_id: "media_id".into(),
                thumb_media_id: "thumb_media_id".into()
            }
        );
        let short = parse(&oa("shortvideo", extra));
        assert_eq!(short.msg_type(), "shortvideo");
        assert_eq!(
            short.kind,
            MessageKind::ShortVideo {
                media_id: "media_id".into(),
                thumb_media_id: "thumb_media_id".into()
            }
        );
    }

    #[test]
    fn oa_location() {
        let m = parse(&oa(
            "location",
            "<Location_X>23.134521</Location_X>\n        <Location_Y>113.358803</Location_Y>\n        <Scale>20</Scale>\n        <Label><![CDATA[位置信息]]></Label>\n        <MsgId>1234567890123456</MsgId>",
        ));
        assert_eq!(
            m.kind,
            MessageKind::Location {
                x: "23.134521".into(),
                y: "113.358803".into(),
                scale: "20".into(),
                label: "位置信息".into()
            }
        );
    }

    #[test]
    fn oa_link() {
        let m = parse(&oa(
            "link",
            "<Title><![CDATA[公众平台官网链接]]></Title>\n        <Description><![CDATA[公众平台官网链接]]></Description>\n        <Url><![CDATA[url]]></Url>\n        <MsgId>1234567890123456</MsgId>",
        ));
        assert_eq!(
            m.kind,
            MessageKind::Link {
                title: "公众平台官网链接".into(),
                description: "公众平台官网链接".into(),
                url: "url".into()
            }
        );
    }

    #[test]
    fn typed_messages_default_missing_optional_fields_to_empty() {
        let m = parse(&oa("image", "<MsgId>1</MsgId>"));
        assert_eq!(
            m.kind,
            MessageKind::Image {
                pic_url: String::new(),
                media_id: String::new()
            }
        );
        let m = parse(&oa("miniprogrampage", ""));
        assert_eq!(
            m.kind,
            MessageKind::MiniProgramPage {
                title: String::new(),
                app_id: String::new(),
                page_path: String::new(),
                thumb_url: String::new(),
                thumb_media_id: String::new(),
            }
        );
        assert_eq!(m.msg_id, None);
    }

    fn oa_event(name: &str, extra: &str) -> String {
        format!(
            "<xml>\n        <ToUserName><![CDATA[toUser]]></ToUserName>\n        <FromUserName><![CDATA[FromUser]]></FromUserName>\n        <CreateTime>123456789</CreateTime>\n        <MsgType><![CDATA[event]]></MsgType>\n        <Event><![CDATA[{name}]]></Event>\n        {extra}\n        </xml>"
        )
    }

    #[test]
    fn oa_subscribe_with_qr_scene() {
        let m = parse(&oa_event(
            "subscribe",
            "<EventKey><![CDATA[qrscene_123123]]></EventKey>\n        <Ticket><![CDATA[TICKET]]></Ticket>",
        ));
        assert_eq!(m.create_time, 123456789);
        assert_eq!(m.event_name(), Some("subscribe"));
        assert_eq!(
            m.kind,
            MessageKind::Event(Event::Subscribe {
                event_key: Some("qrscene_123123".into()),
                ticket: Some("TICKET".into())
            })
        );
    }

    #[test]
    fn oa_plain_subscribe_and_unsubscribe() {
        assert_eq!(
            event(&oa_event("subscribe", "")),
            Event::Subscribe {
                event_key: None,
                ticket: None
            }
        );
        assert_eq!(
            event(&oa_event("subscribe", "<EventKey><![CDATA[]]></EventKey>")),
            Event::Subscribe {
                event_key: None,
                ticket: None
            }
        );
        assert_eq!(
            event(&oa_event(
                "subscribe",
                "<EventKey><![CDATA[last_trade_no_4008072001201701105817415015]]></EventKey>"
            )),
            Event::Subscribe {
                event_key: Some("last_trade_no_4008072001201701105817415015".into()),
                ticket: None
            }
        );
        let m = parse(&oa_event(
            "unsubscribe",
            "<EventKey><![CDATA[]]></EventKey>",
        ));
        assert_eq!(m.kind, MessageKind::Event(Event::Unsubscribe));
        assert_eq!(m.event_name(), Some("unsubscribe"));
    }

    #[test]
    fn oa_scan() {
        let m = parse(&oa_event(
            "SCAN",
            "<EventKey><![CDATA[123123]]></EventKey>\n        <Ticket><![CDATA[TICKET]]></Ticket>",
        ));
        assert_eq!(m.event_name(), Some("SCAN"));
        assert_eq!(
            m.kind,
            MessageKind::Event(Event::Scan {
                event_key: Some("123123".into()),
                ticket: Some("TICKET".into())
            })
        );
    }

    #[test]
    fn other_events_are_accepted() {
        for (name, extra) in [
            (
                "LOCATION",
                "<Latitude>23.137466</Latitude>\n<Longitude>113.352425</Longitude>\n<Precision>119.385040</Precision>",
            ),
            ("CLICK", "<EventKey><![CDATA[EVENTKEY]]></EventKey>"),
            ("VIEW", "<EventKey><![CDATA[www.qq.com]]></EventKey>"),
            (
                "scancode_push",
                "<EventKey><![CDATA[6]]></EventKey><ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType><ScanResult><![CDATA[1]]></ScanResult></ScanCodeInfo>",
            ),
            (
                "TEMPLATESENDJOBFINISH",
                "<MsgID>200163836</MsgID><Status><![CDATA[success]]></Status>",
            ),
            ("brand_new_event_2030", ""),
            // Event names are case-sensitive.
            ("Subscribe", ""),
            ("scan", ""),
            ("SUBSCRIBE_MSG_POPUP_EVENT", ""),
        ] {
            let m = parse(&oa_event(name, extra));
            assert_eq!(m.event_name(), Some(name));
            assert_eq!(
                m.kind,
                MessageKind::Event(Event::Other { event: name.into() })
            );
        }
        // Top-level MsgID (template job results) still reaches msg_id.
        let m = parse(&oa_event(
            "TEMPLATESENDJOBFINISH",
            "<MsgID>200163836</MsgID>",
        ));
        assert_eq!(m.msg_id.as_deref(), Some("200163836"));
    }

    #[test]
    fn unknown_msg_type_is_accepted() {
        let m = parse(&oa("notsure", "<MsgId>1234567890123456</MsgId>"));
        assert_eq!(
            m.kind,
            MessageKind::Unknown {
                msg_type: "notsure".into()
            }
        );
        assert_eq!(m.msg_type(), "notsure");
        assert_eq!(m.event_name(), None);
        // Case matters here too: WeChat sends lower case.
        let m = parse(&oa("TEXT", "<Content>x</Content>"));
        assert_eq!(m.msg_type(), "TEXT");
    }

    #[test]
    fn content_is_taken_exactly_and_decoded_once() {
        let m = parse(&oa(
            "text",
            "<Content><![CDATA[  spaced\r\n &amp; <b>not markup</b>  ]]></Content>",
        ));
        assert_eq!(
            m.kind,
            MessageKind::Text {
                content: "  spaced\r\n &amp; <b>not markup</b>  ".into()
            }
        );
        let m = parse(&oa("text", "<Content>a &amp;amp; b &lt;</Content>"));
        assert_eq!(
            m.kind,
            MessageKind::Text {
                content: "a &amp; b <".into()
            }
        );
        let m = parse(
            r#"{"ToUserName":"a","FromUserName":"b","CreateTime":1,"MsgType":"text","Content":"  \\u0041 &amp; "}"#,
        );
        assert_eq!(
            m.kind,
            MessageKind::Text {
                content: "  \\u0041 &amp; ".into()
            }
        );
        // Present but empty is a (strange) message, not a missing field.
        let m = parse(&oa("text", "<Content><![CDATA[]]></Content>"));
        assert_eq!(
            m.kind,
            MessageKind::Text {
                content: String::new()
            }
        );
    }

    // ---- MsgId handling ----

    fn json_with_msg_id(id: &str) -> String {
        format!(
            r#"{{"ToUserName":"gh_1","FromUserName":"o1","CreateTime":1700000000,"MsgType":"text","Content":"x","MsgId":{id}}}"#
        )
    }

    #[test]
    fn msg_id_keeps_every_digit() {
        for (raw, expected) in [
            ("9007199254740993", "9007199254740993"), // 2^53 + 1: lost by f64
            ("24000000000000001", "24000000000000001"),
            ("18446744073709551615", "18446744073709551615"), // u64::MAX
            ("-9223372036854775808", "-9223372036854775808"),
            ("0", "0"),
            ("\"9007199254740993\"", "9007199254740993"),
            (
                "\"49d72d67b16d115e7935ac386f2f0fa41535298877_1555684067\"",
                "49d72d67b16d115e7935ac386f2f0fa41535298877_1555684067",
            ),
        ] {
            let m = parse(&json_with_msg_id(raw));
            assert_eq!(m.msg_id.as_deref(), Some(expected), "{raw}");
        }
        assert_eq!(parse(&json_with_msg_id("null")).msg_id, None);
        assert_eq!(parse(&json_with_msg_id("\"\"")).msg_id, None);
        let xml = oa(
            "text",
            "<Content>x</Content><MsgId>49d72d67b16d115e7935ac386f2f0fa41535298877_1555684067</MsgId>",
        );
        assert_eq!(
            parse(&xml).msg_id.as_deref(),
            Some("49d72d67b16d115e7935ac386f2f0fa41535298877_1555684067")
        );
    }

    #[test]
    fn msg_id_that_lost_precision_is_refused() {
        for raw in [
            "18446744073709551616",
            "1.5",
            "1e3",
            "123456789012345678901234567890",
        ] {
            assert_eq!(
                err(&json_with_msg_id(raw)),
                ParseError::Invalid("MsgId"),
                "{raw}"
            );
        }
        let sent =
            WXJAVA_SENT_JSON_OBJECT.replace("\"1864323726461255680\"", "1.864323726461256e18");
        assert_eq!(err(&sent), ParseError::Invalid("MsgID"));
    }

    // ---- Required fields and validation ----

    #[test]
    fn missing_required_fields() {
        let full = r#"{"ToUserName":"gh_1","FromUserName":"o1","CreateTime":1,"MsgType":"text","Content":"x"}"#;
        assert!(parse_message(full.as_bytes()).is_ok());
        for field in ["ToUserName", "FromUserName", "CreateTime", "MsgType"] {
            let v: serde_json::Value = serde_json::from_str(full).unwrap();
            let mut map = v.as_object().unwrap().clone();
            map.remove(field);
            let body = serde_json::to_string(&map).unwrap();
            assert_eq!(err(&body), ParseError::Missing(field));
            map.insert(field.into(), serde_json::Value::Null);
            let body = serde_json::to_string(&map).unwrap();
            assert_eq!(err(&body), ParseError::Missing(field));
            map.insert(field.into(), serde_json::Value::String(String::new()));
            let body = serde_json::to_string(&map).unwrap();
            assert_eq!(err(&body), ParseError::Missing(field));
        }
        assert_eq!(err(&oa("text", "")), ParseError::Missing("Content"));
        assert_eq!(
            err(r#"{"ToUserName":"gh_1","FromUserName":"o1","CreateTime":1,"MsgType":"event"}"#),
            ParseError::Missing("Event")
        );
        assert_eq!(
            err("<xml><FromUserName>o</FromUserName></xml>"),
            ParseError::Missing("ToUserName")
        );
        assert_eq!(err("<xml/>"), ParseError::Missing("ToUserName"));
        // A nested element where text is expected does not count as the field.
        assert_eq!(
            err("<xml><ToUserName><a>1</a></ToUserName></xml>"),
            ParseError::Missing("ToUserName")
        );
    }

    #[test]
    fn subscribe_events_need_a_list() {
        for name in [
            "subscribe_msg_popup_event",
            "subscribe_msg_change_event",
            "subscribe_msg_sent_event",
        ] {
            let base = format!(
                r#"{{"ToUserName":"gh_1","FromUserName":"o1","CreateTime":"1","MsgType":"event","Event":"{name}""#
            );
            for tail in [
                "}".to_owned(),
                r#","List":[]}"#.to_owned(),
                r#","List":null}"#.to_owned(),
                r#","SubscribeMsgPopupEvent":{}}"#.to_owned(),
                r#","SubscribeMsgSentEvent":{"List":[]}}"#.to_owned(),
            ] {
                assert_eq!(
                    err(&(base.clone() + &tail)),
                    ParseError::Missing("List"),
                    "{name}{tail}"
                );
            }
            let xml = oa_event(name, "");
            assert_eq!(err(&xml), ParseError::Missing("List"));
            let xml = oa_event(
                name,
                "<SubscribeMsgPopupEvent></SubscribeMsgPopupEvent><List/>",
            );
            assert_eq!(err(&xml), ParseError::Missing("List"));
        }
    }

    #[test]
    fn subscribe_items_need_their_keys() {
        let popup = |item: &str| {
            format!(
                r#"{{"ToUserName":"gh_1","FromUserName":"o1","CreateTime":1,"MsgType":"event","Event":"subscribe_msg_popup_event","List":{item}}}"#
            )
        };
        assert_eq!(err(&popup("{}")), ParseError::Missing("TemplateId"));
        assert_eq!(
            err(&popup(r#"{"TemplateId":"t"}"#)),
            ParseError::Missing("SubscribeStatusString")
        );
        assert_eq!(
            event(&popup(
                r#"{"TemplateId":"t","SubscribeStatusString":"ban","Extra":[1,{"a":2}]}"#
            )),
            Event::SubscribeMsgPopup(vec![SubscribeItem {
                template_id: "t".into(),
                status: "ban".into(),
                popup_scene: None
            }])
        );
        let sent = |item: &str| {
            format!(
                r#"{{"ToUserName":"gh_1","FromUserName":"o1","CreateTime":1,"MsgType":"event","Event":"subscribe_msg_sent_event","List":{item}}}"#
            )
        };
        assert_eq!(
            err(&sent(r#"{"TemplateId":"t","ErrorCode":0}"#)),
            ParseError::Missing("MsgID")
        );
        assert_eq!(
            err(&sent(r#"{"TemplateId":"t","MsgID":"1"}"#)),
            ParseError::Missing("ErrorCode")
        );
        assert_eq!(
            err(&sent(r#"{"TemplateId":"t","MsgID":"1","ErrorCode":"ok"}"#)),
            ParseError::Invalid("ErrorCode")
        );
        assert_eq!(
            err(&sent(r#"{"TemplateId":"t","MsgID":"1","ErrorCode":0.5}"#)),
            ParseError::Invalid("ErrorCode")
        );
    }

    #[test]
    fn create_time_must_be_an_integer() {
        let body = |t: &str| {
            format!(
                r#"{{"ToUserName":"a","FromUserName":"b","CreateTime":{t},"MsgType":"text","Content":"x"}}"#
            )
        };
        assert_eq!(parse(&body("\"-5\"")).create_time, -5);
        for bad in [
            "\"abc\"",
            "1.5",
            "\" 1\"",
            "9223372036854775808",
            "\"9223372036854775808\"",
            "true",
        ] {
            let e = err(&body(bad));
            assert!(
                e == ParseError::Invalid("CreateTime") || matches!(e, ParseError::Json(_)),
                "{bad}: {e:?}"
            );
        }
        assert_eq!(
            err(&oa("text", "<Content>x</Content>").replace("1348831860", "soon")),
            ParseError::Invalid("CreateTime")
        );
    }

    // ---- Malformed input ----

    #[test]
    fn malformed_json_is_refused() {
        for body in [
            "{",
            "{}}",
            r#"{"ToUserName":"a",}"#,
            r#"{"ToUserName":"a"} trailing"#,
            r#"{"ToUserName":"a","ToUserName":"b","FromUserName":"b","CreateTime":1,"MsgType":"text","Content":"x"}"#,
            r#"{"ToUserName":"a","FromUserName":"b","CreateTime":1,"MsgType":"text","Content":"x",}"#,
            r#"{"ToUserName":"a","FromUserName":"b","CreateTime":01,"MsgType":"text","Content":"x"}"#,
            r#"{"ToUserName":'a',"FromUserName":"b","CreateTime":1,"MsgType":"text","Content":"x"}"#,
        ] {
            assert!(matches!(err(body), ParseError::Json(_)), "{body}");
        }
        assert!(matches!(
            parse_message(b"{\"ToUserName\":\"a\xff\"}"),
            Err(ParseError::Json(_))
        ));
        // Known fields refuse nesting at once; unknown ones are skipped by
        // serde_json without recursion, so depth there cannot blow the stack.
        let deep_known = format!(
            r#"{{"ToUserName":"a","List":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(matches!(err(&deep_known), ParseError::Json(_)));
        let deep_unknown = format!(
            r#"{{"x":{}1{},"ToUserName":"a","FromUserName":"b","CreateTime":1,"MsgType":"text","Content":"c"}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(parse_message(deep_unknown.as_bytes()).is_ok());
    }

    #[test]
    fn wrong_shapes_fail_only_where_the_field_is_used() {
        let base = r#""FromUserName":"b","CreateTime":1,"MsgType":"event""#;
        let popup = r#""Event":"subscribe_msg_popup_event""#;
        for (extra, field) in [
            (r#""ToUserName":{"x":1}"#, "ToUserName"),
            (r#""ToUserName":true"#, "ToUserName"),
            (r#""ToUserName":["a"]"#, "ToUserName"),
            (r#""ToUserName":"a","List":"oops""#, "List"),
            (r#""ToUserName":"a","List":7"#, "List"),
            // Positional arrays are not items.
            (r#""ToUserName":"a","List":[["t","accept","0"]]"#, "List"),
            (
                r#""ToUserName":"a","List":[{"TemplateId":"t","SubscribeStatusString":"accept"},"x"]"#,
                "List",
            ),
            (
                r#""ToUserName":"a","SubscribeMsgPopupEvent":[{"List":{}}]"#,
                "SubscribeMsgPopupEvent",
            ),
            (
                r#""ToUserName":"a","SubscribeMsgPopupEvent":{"List":"x"}"#,
                "List",
            ),
            (
                r#""ToUserName":"a","List":{"TemplateId":{"a":1},"SubscribeStatusString":"accept"}"#,
                "TemplateId",
            ),
        ] {
            let body = format!("{{{extra},{base},{popup}}}");
            assert_eq!(err(&body), ParseError::Invalid(field), "{body}");
        }
        let event_key =
            format!(r#"{{"ToUserName":"a",{base},"Event":"subscribe","EventKey":{{"k":1}}}}"#);
        assert_eq!(err(&event_key), ParseError::Invalid("EventKey"));
        let content = r#"{"ToUserName":"a","FromUserName":"b","CreateTime":1,"MsgType":"text","Content":["x"]}"#;
        assert_eq!(err(content), ParseError::Invalid("Content"));

        // The same odd values are harmless where nothing reads them.
        for extra in [
            r#""List":"oops""#,
            r#""List":[1,[2],{"TemplateId":{}}]"#,
            r#""SubscribeMsgSentEvent":42"#,
            r#""EventKey":{"nested":{"deeper":[1,2,3]}},"Ticket":false"#,
            r#""Content":{"rich":true},"MediaId":[1]"#,
        ] {
            let unknown = format!(r#"{{"ToUserName":"a",{base},"Event":"future_event",{extra}}}"#);
            assert_eq!(
                parse(&unknown).event_name(),
                Some("future_event"),
                "{unknown}"
            );
            let text = format!(
                r#"{{"ToUserName":"a","FromUserName":"b","CreateTime":1,"MsgType":"location","Location_X":23.134521,{extra}}}"#
            );
            assert_eq!(
                parse(&text).kind,
                MessageKind::Location {
                    x: "23.134521".into(),
                    y: String::new(),
                    scale: String::new(),
                    label: String::new()
                },
                "{text}"
            );
        }
    }

    #[test]
    fn malformed_xml_and_unknown_formats_are_refused() {
        assert_eq!(err(""), ParseError::Empty);
        assert_eq!(err(" \n\t "), ParseError::Empty);
        assert_eq!(err("success"), ParseError::UnknownFormat);
        assert_eq!(err("[1,2]"), ParseError::UnknownFormat);
        assert_eq!(err("ToUserName=gh"), ParseError::UnknownFormat);
        assert!(matches!(
            err("<xml><ToUserName>a</xml>"),
            ParseError::Xml(_)
        ));
        assert!(matches!(
            err(&(V10_XML.to_owned() + "<x/>")),
            ParseError::Xml(_)
        ));
        let xxe = V10_XML.replace(
            "<xml>",
            "<!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><xml>",
        );
        assert_eq!(err(&xxe), ParseError::Doctype);
        let entity = V10_XML.replace("<![CDATA[你好 hello]]>", "&xxe;");
        assert!(matches!(err(&entity), ParseError::Xml(_)));
        let deep = oa(
            "text",
            &format!(
                "<Content>x</Content>{}{}",
                "<a>".repeat(20),
                "</a>".repeat(20)
            ),
        );
        assert!(matches!(err(&deep), ParseError::Xml(m) if m.contains("deeper")));
    }

    #[test]
    fn errors_never_echo_the_body() {
        let secret = "SECRET_user_text_o9AgO5Kd5gg";
        for body in [
            format!(r#"{{"ToUserName":"{secret}","FromUserName":{{"a":1}}}}"#),
            format!(
                r#"{{"ToUserName":"a","FromUserName":"b","CreateTime":"{secret}","MsgType":"text"}}"#
            ),
            format!(r#"{{"ToUserName":"a","List":"{secret}"}}"#),
            format!(r#"{{"ToUserName":"a","SubscribeMsgSentEvent":"{secret}"}}"#),
            format!(r#"{{"ToUserName":"{secret}"#),
            format!(r#"{{"{secret}":1,"{secret}":x}}"#),
            format!("<xml><Content>{secret}</Content><{secret}></xml>"),
            format!("<xml><ToUserName>a</ToUserName></xml>{secret}"),
            secret.to_owned(),
        ] {
            let message = parse_message(body.as_bytes());
            assert!(message.is_err(), "{body}");
            let envelope = parse_envelope(body.as_bytes());
            for e in [message.err(), envelope.err()].into_iter().flatten() {
                let shown = format!("{e} {e:?}");
                assert!(!shown.contains("SECRET"), "{shown}");
            }
        }
    }

    // ---- Format detection and envelopes ----

    #[test]
    fn detects_format_from_first_non_blank_byte() {
        assert_eq!(detect_format(b"<xml/>"), Ok(Format::Xml));
        assert_eq!(detect_format(b" \r\n\t{}"), Ok(Format::Json));
        assert_eq!(detect_format(b"\xEF\xBB\xBF  <xml/>"), Ok(Format::Xml));
        assert_eq!(detect_format(b"\xEF\xBB\xBF{}"), Ok(Format::Json));
        assert_eq!(detect_format(b""), Err(ParseError::Empty));
        assert_eq!(detect_format(b"\xEF\xBB\xBF \n"), Err(ParseError::Empty));
        assert_eq!(detect_format(b"success"), Err(ParseError::UnknownFormat));
        assert_eq!(
            detect_format(b"\xEF\xBB<xml/>"),
            Err(ParseError::UnknownFormat)
        );
        assert_eq!(detect_format(b"\x00<xml/>"), Err(ParseError::UnknownFormat));
        // A BOM in front of JSON or XML must not stop parsing either.
        assert_eq!(parse(&format!("\u{feff}{V4_JSON}")).create_time, 1714112445);
        assert_eq!(
            parse(&format!("\u{feff}\n{V10_XML}\n")).create_time,
            1700000000
        );
    }

    const V4_ENCRYPT: &str = "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04=";

    const V10_ENCRYPT: &str = "Q3stYC6hdFzMh9T8HCvyDPW++0NimYftA4VGyWArLGls2dVk5OQx/YcERDGWIg8ILOgfa3ycbWvSqc+em+8o/pgkd4Xhmt4cIaD8hbZwWSLaaaUyIzszj6UDQIm/VBIYkaTLfLLdi6CmYMK/hlsLow64snWLaPBa4AcDfXzrj1L38hQ69PBsGhzz1AowPbeAqXftL4f9BR4miQ0PFBeRhcubW4MI/QK0A5H1sjvZpWYoIrtCqoq864hZM+DM9RcLPXmYWVl3CzI6OnOwhAJdjbeMWPD4GkYx8sTWYYoYRvPi/r1r8HTP/XiuVNvgI10H31fRcoEB3uJkW5eYUSNwcDDkxXYuQhD7tZip6kQVRbsxQnhjifunMtaCvrv2n63+Ox19bBF+emE/QS43k3tOmHx+DTVD18SoVLuInWjQLns=";

    #[test]
    fn envelope_json_safe_mode_v4() {
        let body = format!(r#"{{"ToUserName":"gh_97417a04a28d","Encrypt":"{V4_ENCRYPT}"}}"#);
        assert_eq!(
            parse_envelope(body.as_bytes()),
            Ok(Envelope {
                format: Format::Json,
                to_user: Some("gh_97417a04a28d".into()),
                encrypt: Some(V4_ENCRYPT.into()),
            })
        );
        // JSON may escape '/' as "\/": the value after unescaping is what was signed.
        let escaped = body.replace('/', "\\/");
        assert_eq!(
            parse_envelope(escaped.as_bytes())
                .unwrap()
                .encrypt
                .as_deref(),
            Some(V4_ENCRYPT)
        );
        // Whitespace inside the string is kept, never trimmed.
        let spaced = format!(r#"{{"ToUserName":"gh_1","Encrypt":" {V4_ENCRYPT}\n"}}"#);
        assert_eq!(
            parse_envelope(spaced.as_bytes()).unwrap().encrypt,
            Some(format!(" {V4_ENCRYPT}\n").into())
        );
    }

    #[test]
    fn envelope_xml_safe_mode_v10() {
        let body = format!(
            "<xml><ToUserName><![CDATA[gh_abcdef123456]]></ToUserName><Encrypt><![CDATA[{V10_ENCRYPT}]]></Encrypt></xml>"
        );
        assert_eq!(
            parse_envelope(body.as_bytes()),
            Ok(Envelope {
                format: Format::Xml,
                to_user: Some("gh_abcdef123456".into()),
                encrypt: Some(V10_ENCRYPT.into()),
            })
        );
        let pretty = format!(
            "<xml>\n  <ToUserName>\n    gh_abcdef123456\n  </ToUserName>\n  <Encrypt><![CDATA[ {V10_ENCRYPT} ]]></Encrypt>\n</xml>\n"
        );
        let env = parse_envelope(pretty.as_bytes()).unwrap();
        assert_eq!(env.to_user.as_deref(), Some("gh_abcdef123456"));
        assert_eq!(env.encrypt, Some(format!(" {V10_ENCRYPT} ").into()));
    }

    #[test]
    fn envelope_compat_and_plain_bodies() {
        // Compatible mode: plaintext fields plus Encrypt.
        let compat = V10_XML.replace(
            "</xml>",
            &format!("<Encrypt><![CDATA[{V10_ENCRYPT}]]></Encrypt></xml>"),
        );
        let env = parse_envelope(compat.as_bytes()).unwrap();
        assert_eq!(env.encrypt.as_deref(), Some(V10_ENCRYPT));
        assert_eq!(env.to_user.as_deref(), Some("gh_abcdef123456"));
        assert_eq!(
            parse(&compat).kind,
            MessageKind::Text {
                content: "你好 hello".into()
            }
        );

        let plain = parse_envelope(V10_XML.as_bytes()).unwrap();
        assert_eq!(plain.encrypt, None);
        let plain = parse_envelope(V11_JSON.as_bytes()).unwrap();
        assert_eq!(plain.format, Format::Json);
        assert_eq!(plain.to_user.as_deref(), Some("gh_123456789abc"));
        assert_eq!(plain.encrypt, None);

        assert_eq!(
            parse_envelope(br#"{"ToUserName":"gh","Encrypt":12}"#),
            Err(ParseError::Invalid("Encrypt"))
        );
        assert_eq!(parse_envelope(b""), Err(ParseError::Empty));
        assert_eq!(parse_envelope(b"success"), Err(ParseError::UnknownFormat));
        assert_eq!(
            parse_envelope(b"<!DOCTYPE x><xml><Encrypt>a</Encrypt></xml>"),
            Err(ParseError::Doctype)
        );
        assert!(matches!(
            parse_envelope(b"{\"Encrypt\":\"a\""),
            Err(ParseError::Json(_))
        ));
    }

    // ---- Robustness and speed ----

    #[test]
    fn random_and_mutated_input_never_panics() {
        // xorshift64: deterministic, and no extra crate for a no-panic sweep.
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds: [&[u8]; 6] = [
            V4_JSON.as_bytes(),
            V6_XML.as_bytes(),
            V10_XML.as_bytes(),
            V11_JSON.as_bytes(),
            WXJAVA_SENT_XML.as_bytes(),
            WXJAVA_SENT_JSON_OBJECT.as_bytes(),
        ];
        let alphabet = b"{}[]\":,0123456789.eE+-<>/![]CDATA&#;\\u \n";
        for round in 0..2000 {
            let len = (next() % 256) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 3 == 0 && !bytes.is_empty() {
                bytes[0] = if round % 2 == 0 { b'{' } else { b'<' };
            }
            let _ = parse_message(&bytes);
            let _ = parse_envelope(&bytes);

            let mut mutated = seeds[round % seeds.len()].to_vec();
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
            let _ = parse_message(&mutated);
            let _ = parse_envelope(&mutated);
        }
    }

    /// Run with `cargo test --release -- --ignored --nocapture` to see timings.
    #[test]
    fn oversized_identifiers_and_lists_are_refused() {
        let item = |t: &str| format!(r#"{{"TemplateId":"{t}","SubscribeStatusString":"accept"}}"#);
        let popup = |from: &str, list: &str| {
            format!(
                r#"{{"ToUserName":"gh_1","FromUserName":"{from}","CreateTime":1,"MsgType":"event","Event":"subscribe_msg_popup_event","List":{list}}}"#
            )
        };
        let many = format!("[{}]", vec![item("t"); 21].join(","));
        assert_eq!(
            parse_message(popup("o1", &many).as_bytes()).unwrap_err(),
            ParseError::Invalid("List")
        );
        let twenty = format!("[{}]", vec![item("t"); 20].join(","));
        assert!(parse_message(popup("o1", &twenty).as_bytes()).is_ok());
        assert_eq!(
            parse_message(popup("o1", &item(&"t".repeat(129))).as_bytes()).unwrap_err(),
            ParseError::Invalid("TemplateId")
        );
        assert_eq!(
            parse_message(popup(&"o".repeat(129), &item("t")).as_bytes()).unwrap_err(),
            ParseError::Invalid("FromUserName")
        );
    }
}
