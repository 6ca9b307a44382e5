//! IM third-party callbacks: authentication (SdkAppid, and Sign = sha256(token ‖ RequestTime)
//! within a replay window) and a lenient model of the commands this service acts on. Unknown
//! fields are ignored and numbers may arrive as strings (reference §2).

use serde::Deserialize;

use super::ImConfig;
use super::loose::{List, Loose, Object};
use super::usersig;
use crate::http::Request;

/// The answer IM expects to every accepted callback (anything else counts as a failure).
pub const OK_BODY: &str = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("SdkAppid is missing or is not this application's")]
    WrongAppId,
    #[error("Sign and RequestTime are required when a callback token is configured")]
    MissingSign,
    #[error("RequestTime is outside the accepted window")]
    Stale,
    #[error("Sign does not match")]
    BadSign,
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::WrongAppId => "wrong_sdkappid",
            AuthError::MissingSign => "missing_sign",
            AuthError::Stale => "stale_request",
            AuthError::BadSign => "bad_sign",
        }
    }
}

/// Checks the query IM appends. The window guards against replays of a captured request; the
/// Sign itself is compared in constant time.
pub fn authenticate(im: &ImConfig, req: &Request, now: i64) -> Result<(), AuthError> {
    let appid = req.query("SdkAppid").ok_or(AuthError::WrongAppId)?;
    if appid.trim().parse::<u64>().ok() != Some(im.sdkappid) {
        return Err(AuthError::WrongAppId);
    }
    let Some(token) = &im.callback_token else {
        return Ok(());
    };
    let (Some(sign), Some(time)) = (req.query("Sign"), req.query("RequestTime")) else {
        return Err(AuthError::MissingSign);
    };
    let t: i64 = time.trim().parse().map_err(|_| AuthError::Stale)?;
    // `abs_diff` cannot overflow: RequestTime is attacker-controlled and checked before the
    // Sign, so `i64::MIN` must be refused as stale rather than panic the function.
    if now.abs_diff(t) > im.callback_window_secs.unsigned_abs() {
        return Err(AuthError::Stale);
    }
    if !usersig::verify_callback_sign(token.expose(), time, sign) {
        return Err(AuthError::BadSign);
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("body is not a JSON object")]
    NotJson,
    #[error("missing or invalid field {0}")]
    Field(&'static str),
}

/// One element of a message body, reduced to what notifications and the bridge need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Element {
    Text(String),
    Custom {
        desc: String,
        data: String,
    },
    Image {
        url: Option<String>,
    },
    Face {
        index: i64,
    },
    Location {
        desc: String,
        latitude: String,
        longitude: String,
    },
    Sound {
        url: Option<String>,
        seconds: i64,
    },
    File {
        url: Option<String>,
        name: String,
    },
    Video {
        url: Option<String>,
    },
    Other(String),
}

impl Element {
    /// A one-line human summary, used as the notification preview and for agent replies that
    /// WeChat can only carry as text.
    pub fn summary(&self) -> String {
        match self {
            Element::Text(t) => t.clone(),
            Element::Custom { desc, .. } if !desc.is_empty() => format!("[自定义消息] {desc}"),
            Element::Custom { .. } => "[自定义消息]".into(),
            Element::Image { url: Some(u) } => format!("[图片] {u}"),
            Element::Image { url: None } => "[图片]".into(),
            Element::Face { .. } => "[表情]".into(),
            Element::Location {
                desc,
                latitude,
                longitude,
            } => format!("[位置] {desc} ({latitude}, {longitude})").replace("  ", " "),
            // The URL is the only way the listener gets the audio where just text travels (a
            // customer-service text to a WeChat follower), as for images and files.
            Element::Sound {
                seconds,
                url: Some(u),
            } => format!("[语音] {seconds}\" {u}"),
            Element::Sound { seconds, url: None } => format!("[语音] {seconds}\""),
            Element::File { name, url } => match url {
                Some(u) => format!("[文件] {name} {u}"),
                None => format!("[文件] {name}"),
            },
            Element::Video { url: Some(u) } => format!("[视频] {u}"),
            Element::Video { url: None } => "[视频]".into(),
            Element::Other(t) => format!("[{t}]"),
        }
    }

    /// The short label for previews, where a URL would only waste the 20 characters.
    pub fn preview(&self) -> String {
        match self {
            Element::Text(t) => t.clone(),
            Element::Image { .. } => "[图片]".into(),
            Element::Sound { .. } => "[语音]".into(),
            Element::Video { .. } => "[视频]".into(),
            Element::File { name, .. } => format!("[文件] {name}"),
            other => other.summary(),
        }
    }
}

/// A one-to-one message (before or after send).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct C2cMessage {
    pub from: String,
    pub to: String,
    pub msg_seq: u64,
    pub msg_random: u64,
    pub msg_time: i64,
    pub msg_key: String,
    pub online_only: bool,
    /// After-send only: 0 when delivered.
    pub send_result: Option<i64>,
    pub unread: Option<i64>,
    pub body: Vec<Element>,
    /// The sender's own data for its app: carried, never shown to anyone.
    pub cloud_custom_data: Option<String>,
    /// The sender's offline-push settings (`OfflinePushInfo`), when the message has them.
    pub push: OfflinePush,
}

/// A message's `OfflinePushInfo`: what the sender asked offline pushes to do with it. Only the
/// two fields that decide a notification are kept (reference, "Callback semantics"). Unconfirmed
/// for callbacks: the after-send callback pages (cloud.tencent.com/document/product/269/2716,
/// 269/2661) show no `OfflinePushInfo` in their samples as far as the searches reached; it is the
/// `sendmsg` field, and it is read here whenever a callback carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfflinePush {
    /// `PushFlag` 1: the sender asked for no offline push.
    pub no_push: bool,
    /// `Desc`: the text an offline push shows instead of the message.
    pub desc: Option<String>,
}

impl C2cMessage {
    pub fn text_summary(&self) -> String {
        self.body
            .iter()
            .map(Element::summary)
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn preview(&self) -> String {
        self.body
            .iter()
            .map(Element::preview)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// TUIKit's typing indicator: an online-only message with a custom element whose `Data` is
    /// JSON with `"businessID":"user_typing_status"`. `Some(true)` while typing, `Some(false)`
    /// when the indicator stops (`typingStatus` 0), `None` for any other message.
    pub fn typing(&self) -> Option<bool> {
        if !self.online_only {
            return None;
        }
        self.body.iter().find_map(|e| match e {
            Element::Custom { data, .. } => {
                let v = serde_json::from_str::<Object<RawTyping<'_>>>(data).ok()?;
                let v = v.or_default();
                (v.businessID.as_str() == Some("user_typing_status"))
                    .then(|| v.typingStatus.int() != Some(0))
            }
            _ => None,
        })
    }

    /// What identifies the message across retries: IM's MsgKey, scoped by the two parties.
    pub fn idempotency_key(&self) -> String {
        let key = if self.msg_key.is_empty() {
            format!("{}_{}_{}", self.msg_seq, self.msg_random, self.msg_time)
        } else {
            self.msg_key.clone()
        };
        format!("{}|{}|{key}", self.from, self.to)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    pub user: String,
    /// `Login`, `Logout` or `Disconnect`.
    pub action: String,
    pub reason: String,
    /// Milliseconds.
    pub event_time_ms: i64,
    /// Platforms of other devices this login kicked off.
    pub kicked: Vec<String>,
}

/// `C2C.CallbackAfterMsgWithDraw`: `from` recalled its message `msg_key` to `to`
/// (cloud.tencent.com/document/product/269/61697: `From_Account`, `To_Account`, `MsgKey`,
/// `EventTime` in ms; the international page also lists `UnreadMsgNum`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recall {
    pub from: String,
    pub to: String,
    pub msg_key: String,
    /// Milliseconds, when IM sends it.
    pub event_time_ms: Option<i64>,
}

impl Recall {
    /// The key of the recalled message as [`C2cMessage::idempotency_key`] spells it, so the
    /// recall finds whatever the message queued.
    pub fn idempotency_key(&self) -> String {
        format!("{}|{}|{}", self.from, self.to, self.msg_key)
    }
}

/// `C2C.CallbackAfterMsgReport` (a read report): `reader` has read every message of its
/// conversation with `peer` sent up to `last_read_time` (cloud.tencent.com/document/product/
/// 269/61696: `Report_Account`, `Peer_Account`, `LastReadTime` in seconds, `UnreadMsgNum`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadReport {
    pub reader: String,
    pub peer: String,
    /// Seconds: messages of the conversation up to this time are read.
    pub last_read_time: i64,
    pub unread: Option<i64>,
}

/// `Group.CallbackAfterSendMsg` (cloud.tencent.com/document/product/269/2661): a message sent
/// to a group. Who it @-mentions is `GroupAtInfo`, an array of `{"GroupAtAllFlag": 1}` (@all)
/// or `{"GroupAtAllFlag": 0, "GroupAt_Account": "<UserID>"}`, in the order of the @ in the text;
/// the text itself ("@brennan …" shows a nickname, not an id) is never read for mentions. The
/// page lists no group name among the fields (`GroupId`, `Type`, `From_Account`,
/// `Operator_Account`, `Random`, `MsgSeq`, `MsgId`, `MsgTime`, `OnlineOnlyFlag`, `MsgBody`,
/// `CloudCustomData`, `TopicId`, `EventTime`, `GroupAtInfo`); a `GroupName` is read only in case
/// IM sends one, and `OfflinePushInfo` likewise (neither is confirmed by the page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMessage {
    pub group_id: String,
    pub group_type: String,
    pub group_name: Option<String>,
    pub topic_id: Option<String>,
    pub from: String,
    /// Per group, strictly increasing: with the group id, what identifies the message.
    pub msg_seq: u64,
    pub random: u64,
    pub msg_time: i64,
    pub online_only: bool,
    pub body: Vec<Element>,
    pub cloud_custom_data: Option<String>,
    pub push: OfflinePush,
    /// `GroupAtInfo` has an entry with `GroupAtAllFlag` 1.
    pub at_all: bool,
    /// The UserIDs `GroupAtInfo` names, in order, without repeats.
    pub at_accounts: Vec<String>,
}

impl GroupMessage {
    pub fn preview(&self) -> String {
        self.body
            .iter()
            .map(Element::preview)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// What identifies the message across retries (IM's C2C MsgKey has no group counterpart:
    /// the group and its sequence number do).
    pub fn idempotency_key(&self) -> String {
        let topic = self.topic_id.as_deref().unwrap_or("");
        format!("group|{}|{topic}|{}", self.group_id, self.msg_seq)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callback {
    StateChange(StateChange),
    C2cBeforeSend(C2cMessage),
    C2cAfterSend(C2cMessage),
    C2cRecall(Recall),
    C2cRead(ReadReport),
    GroupAfterSend(GroupMessage),
    /// Any other command: acknowledged, not acted on.
    Other(String),
}

/// A callback body's fields, for every command this service reads (each command uses some of
/// them; IM adds others, which are skipped). Names are IM's own.
#[derive(Deserialize, Default, Clone)]
#[serde(default, bound(deserialize = "'de: 'a"))]
#[allow(non_snake_case)]
struct Body<'a> {
    CallbackCommand: Loose<'a>,
    From_Account: Loose<'a>,
    To_Account: Loose<'a>,
    MsgSeq: Loose<'a>,
    MsgRandom: Loose<'a>,
    MsgTime: Loose<'a>,
    MsgKey: Loose<'a>,
    OnlineOnlyFlag: Loose<'a>,
    SendMsgResult: Loose<'a>,
    UnreadMsgNum: Loose<'a>,
    MsgBody: List<Object<RawElement<'a>>>,
    CloudCustomData: Loose<'a>,
    OfflinePushInfo: Object<RawPush<'a>>,
    Report_Account: Loose<'a>,
    Peer_Account: Loose<'a>,
    LastReadTime: Loose<'a>,
    EventTime: Loose<'a>,
    GroupId: Loose<'a>,
    Type: Loose<'a>,
    GroupName: Loose<'a>,
    TopicId: Loose<'a>,
    Random: Loose<'a>,
    GroupAtInfo: List<Object<RawAt<'a>>>,
    Info: Object<RawInfo<'a>>,
    KickedDevice: List<Object<RawDevice<'a>>>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default, bound(deserialize = "'de: 'a"))]
#[allow(non_snake_case)]
struct RawElement<'a> {
    MsgType: Loose<'a>,
    MsgContent: Object<RawContent<'a>>,
}

/// The members of every element type's `MsgContent` that an [`Element`] keeps.
#[derive(Deserialize, Default, Clone)]
#[serde(default, bound(deserialize = "'de: 'a"))]
#[allow(non_snake_case)]
struct RawContent<'a> {
    Text: Loose<'a>,
    Desc: Loose<'a>,
    Data: Loose<'a>,
    ImageInfoArray: List<Object<RawImage<'a>>>,
    Index: Loose<'a>,
    Latitude: Loose<'a>,
    Longitude: Loose<'a>,
    Url: Loose<'a>,
    Second: Loose<'a>,
    FileName: Loose<'a>,
    VideoUrl: Loose<'a>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default, bound(deserialize = "'de: 'a"))]
#[allow(non_snake_case)]
struct RawImage<'a> {
    Type: Loose<'a>,
    URL: Loose<'a>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default, bound(deserialize = "'de: 'a"))]
#[allow(non_snake_case)]
struct RawPush<'a> {
    PushFlag: Loose<'a>,
    Desc: Loose<'a>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default, bound(deserialize = "'de: 'a"))]
#[allow(non_snake_case)]
struct RawAt<'a> {
    GroupAtAllFlag: Loose<'a>,
    GroupAt_Account: Loose<'a>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default, bound(deserialize = "'de: 'a"))]
#[allow(non_snake_case)]
struct RawInfo<'a> {
    To_Account: Loose<'a>,
    Action: Loose<'a>,
    Reason: Loose<'a>,
}

/// A TUIKit custom element's `Data`, for its typing indicator.
#[derive(Deserialize, Default, Clone)]
#[serde(default, bound(deserialize = "'de: 'a"))]
#[allow(non_snake_case)]
struct RawTyping<'a> {
    businessID: Loose<'a>,
    typingStatus: Loose<'a>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default, bound(deserialize = "'de: 'a"))]
#[allow(non_snake_case)]
struct RawDevice<'a> {
    Platform: Loose<'a>,
}

impl OfflinePush {
    fn from_raw(raw: &Object<RawPush<'_>>) -> OfflinePush {
        let raw = raw.or_default();
        OfflinePush {
            no_push: raw.PushFlag.int() == Some(1),
            desc: raw
                .Desc
                .as_str()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        }
    }
}

fn element(raw: &Object<RawElement<'_>>) -> Element {
    let raw = raw.or_default();
    let c = raw.MsgContent.or_default();
    match raw.MsgType.as_str().unwrap_or("") {
        "TIMTextElem" => Element::Text(c.Text.text()),
        "TIMCustomElem" => Element::Custom {
            desc: c.Desc.text(),
            data: c.Data.text(),
        },
        "TIMImageElem" => {
            // The original image (Type 1) when listed, else the first URL there is.
            let infos = c.ImageInfoArray.items();
            let url = infos
                .iter()
                .find(|i| i.0.as_ref().is_some_and(|i| i.Type.int() == Some(1)))
                .or_else(|| infos.first())
                .and_then(|i| i.or_default().URL.nonempty());
            Element::Image { url }
        }
        "TIMFaceElem" => Element::Face {
            index: c.Index.int().unwrap_or(0),
        },
        "TIMLocationElem" => Element::Location {
            desc: c.Desc.text(),
            latitude: c.Latitude.string().unwrap_or_default(),
            longitude: c.Longitude.string().unwrap_or_default(),
        },
        "TIMSoundElem" => Element::Sound {
            url: c.Url.nonempty(),
            seconds: c.Second.int().unwrap_or(0),
        },
        "TIMFileElem" => Element::File {
            url: c.Url.nonempty(),
            name: c.FileName.text(),
        },
        "TIMVideoFileElem" => Element::Video {
            url: c.VideoUrl.nonempty(),
        },
        other => Element::Other(other.to_owned()),
    }
}

fn account(v: &Loose<'_>, field: &'static str) -> Result<String, ParseError> {
    v.nonempty().ok_or(ParseError::Field(field))
}

fn elements(raw: &List<Object<RawElement<'_>>>) -> Result<Vec<Element>, ParseError> {
    match raw {
        List::Items(items) => Ok(items.iter().map(element).collect()),
        List::Absent => Ok(vec![]),
        List::Other => Err(ParseError::Field("MsgBody")),
    }
}

fn c2c(v: &Body<'_>) -> Result<C2cMessage, ParseError> {
    Ok(C2cMessage {
        from: account(&v.From_Account, "From_Account")?,
        to: account(&v.To_Account, "To_Account")?,
        body: elements(&v.MsgBody)?,
        msg_seq: v.MsgSeq.int().unwrap_or(0) as u64,
        msg_random: v.MsgRandom.int().unwrap_or(0) as u64,
        msg_time: v.MsgTime.int().unwrap_or(0),
        msg_key: v.MsgKey.text(),
        online_only: v.OnlineOnlyFlag.int() == Some(1),
        send_result: v.SendMsgResult.int(),
        unread: v.UnreadMsgNum.int(),
        cloud_custom_data: v.CloudCustomData.nonempty(),
        push: OfflinePush::from_raw(&v.OfflinePushInfo),
    })
}

fn recall(v: &Body<'_>) -> Result<Recall, ParseError> {
    Ok(Recall {
        from: account(&v.From_Account, "From_Account")?,
        to: account(&v.To_Account, "To_Account")?,
        msg_key: account(&v.MsgKey, "MsgKey")?,
        event_time_ms: v.EventTime.int(),
    })
}

fn read_report(v: &Body<'_>) -> Result<ReadReport, ParseError> {
    Ok(ReadReport {
        reader: account(&v.Report_Account, "Report_Account")?,
        peer: account(&v.Peer_Account, "Peer_Account")?,
        last_read_time: v
            .LastReadTime
            .int()
            .ok_or(ParseError::Field("LastReadTime"))?,
        unread: v.UnreadMsgNum.int(),
    })
}

fn group(v: &Body<'_>) -> Result<GroupMessage, ParseError> {
    let mut at_all = false;
    let mut at_accounts: Vec<String> = vec![];
    match &v.GroupAtInfo {
        List::Items(items) => {
            for at in items {
                let at = at.or_default();
                if at.GroupAtAllFlag.int() == Some(1) {
                    at_all = true;
                } else if let Some(u) = at.GroupAt_Account.nonempty()
                    && !at_accounts.contains(&u)
                {
                    at_accounts.push(u);
                }
            }
        }
        List::Absent => {}
        List::Other => return Err(ParseError::Field("GroupAtInfo")),
    }
    Ok(GroupMessage {
        group_id: account(&v.GroupId, "GroupId")?,
        group_type: v.Type.text(),
        group_name: v.GroupName.nonempty(),
        topic_id: v.TopicId.nonempty(),
        from: account(&v.From_Account, "From_Account")?,
        msg_seq: v
            .MsgSeq
            .int()
            .filter(|s| *s >= 0)
            .ok_or(ParseError::Field("MsgSeq"))? as u64,
        random: v.Random.int().unwrap_or(0) as u64,
        msg_time: v.MsgTime.int().unwrap_or(0),
        online_only: v.OnlineOnlyFlag.int() == Some(1),
        body: elements(&v.MsgBody)?,
        cloud_custom_data: v.CloudCustomData.nonempty(),
        push: OfflinePush::from_raw(&v.OfflinePushInfo),
        at_all,
        at_accounts,
    })
}

fn state_change(v: &Body<'_>) -> Result<StateChange, ParseError> {
    let info = v.Info.or_default();
    Ok(StateChange {
        user: account(&info.To_Account, "Info.To_Account")?,
        action: account(&info.Action, "Info.Action")?,
        reason: info.Reason.text(),
        event_time_ms: v.EventTime.int().ok_or(ParseError::Field("EventTime"))?,
        kicked: v
            .KickedDevice
            .items()
            .iter()
            .filter_map(|d| d.or_default().Platform.as_str().map(str::to_owned))
            .collect(),
    })
}

/// Parses a callback body; `command` is the query's `CallbackCommand`, falling back to the
/// body's own field. A member this service reads, named twice in one object, is refused with
/// the rest of malformed JSON: which of the two a reader takes is what a forged body plays on
/// (the Sign covers the query, not the body).
pub fn parse(command: Option<&str>, body: &[u8]) -> Result<Callback, ParseError> {
    let parsed: Object<Body<'_>> = serde_json::from_slice(body).map_err(|_| ParseError::NotJson)?;
    let v = parsed.0.as_ref().ok_or(ParseError::NotJson)?;
    let command = command
        .filter(|c| !c.is_empty())
        .or_else(|| v.CallbackCommand.as_str())
        .ok_or(ParseError::Field("CallbackCommand"))?;
    Ok(match command {
        "State.StateChange" => Callback::StateChange(state_change(v)?),
        "C2C.CallbackBeforeSendMsg" => Callback::C2cBeforeSend(c2c(v)?),
        "C2C.CallbackAfterSendMsg" => Callback::C2cAfterSend(c2c(v)?),
        "C2C.CallbackAfterMsgWithDraw" => Callback::C2cRecall(recall(v)?),
        "C2C.CallbackAfterMsgReport" => Callback::C2cRead(read_report(v)?),
        "Group.CallbackAfterSendMsg" => Callback::GroupAfterSend(group(v)?),
        other => Callback::Other(other.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::secret::Secret;

    fn im(token: Option<&str>) -> ImConfig {
        ImConfig {
            sdkappid: 1400000000,
            secret_key: Secret::new("k"),
            admin_user: "administrator".into(),
            api_base: "http://127.0.0.1:1".into(),
            callback_token: token.map(Secret::new),
            callback_window_secs: 300,
            agents: vec![],
            agents_mp: vec![],
        }
    }

    fn req(q: &str) -> Request {
        Request::new("POST", &format!("/im/callback?{q}"))
    }

    #[test]
    fn official_sign_vector_authenticates() {
        let r = req(
            "SdkAppid=1400000000&CallbackCommand=State.StateChange&Sign=17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061&RequestTime=1669872112",
        );
        assert_eq!(
            authenticate(&im(Some("xxxxyyyy")), &r, 1669872112 + 10),
            Ok(())
        );
        // The IM overview page's typo: the same hash with token "xxxyyy" must not pass.
        assert_eq!(
            authenticate(&im(Some("xxxyyy")), &r, 1669872112),
            Err(AuthError::BadSign)
        );
        assert_eq!(
            authenticate(&im(Some("xxxxyyyy")), &r, 1669872112 + 301),
            Err(AuthError::Stale)
        );
        assert_eq!(
            authenticate(&im(Some("xxxxyyyy")), &r, 1669872112 - 301),
            Err(AuthError::Stale)
        );
    }

    #[test]
    fn extreme_request_times_are_stale_not_a_panic() {
        for t in [i64::MIN.to_string(), i64::MAX.to_string()] {
            let r = req(&format!(
                "SdkAppid=1400000000&Sign={}&RequestTime={t}",
                "0".repeat(64)
            ));
            for now in [0, 1669872112, 4_000_000_000] {
                assert_eq!(authenticate(&im(Some("t")), &r, now), Err(AuthError::Stale));
            }
        }
    }

    #[test]
    fn appid_and_missing_sign() {
        let r = req("SdkAppid=1400000001");
        assert_eq!(authenticate(&im(None), &r, 0), Err(AuthError::WrongAppId));
        let r = req("SdkAppid=1400000000");
        assert_eq!(authenticate(&im(None), &r, 0), Ok(()));
        assert_eq!(
            authenticate(&im(Some("t")), &r, 0),
            Err(AuthError::MissingSign)
        );
        assert_eq!(
            authenticate(&im(None), &req("x=1"), 0),
            Err(AuthError::WrongAppId)
        );
    }

    #[test]
    fn parses_documented_samples_leniently() {
        let s = br#"{"CallbackCommand":"State.StateChange","EventTime":"1629883332497","Info":{"Action":"Login","To_Account":"testuser316","Reason":"Register"},"KickedDevice":[{"Platform":"Windows"},{"Platform":"Android"}],"Extra":1}"#;
        let Callback::StateChange(sc) = parse(None, s).unwrap() else {
            panic!()
        };
        assert_eq!(
            (sc.user.as_str(), sc.action.as_str(), sc.event_time_ms),
            ("testuser316", "Login", 1629883332497)
        );
        assert_eq!(sc.kicked, ["Windows", "Android"]);
        let m = br#"{"CallbackCommand":"C2C.CallbackAfterSendMsg","From_Account":"jared","To_Account":"Jonh","MsgSeq":48374,"MsgRandom":"2837546","MsgTime":1557481126,"MsgKey":"48374_2837546_1557481126","OnlineOnlyFlag":0,"SendMsgResult":0,"ErrorInfo":"send msg succeed","UnreadMsgNum":7,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"red packet"}},{"MsgType":"TIMImageElem","MsgContent":{"UUID":"u","ImageFormat":1,"ImageInfoArray":[{"Type":3,"URL":"https://t"},{"Type":1,"URL":"https://o"}]}},{"MsgType":"TIMNewElem","MsgContent":{}}],"CloudCustomData":"x"}"#;
        let Callback::C2cAfterSend(c) = parse(Some("C2C.CallbackAfterSendMsg"), m).unwrap() else {
            panic!()
        };
        assert_eq!(c.msg_random, 2837546);
        assert_eq!(c.unread, Some(7));
        assert_eq!(c.text_summary(), "red packet [图片] https://o [TIMNewElem]");
        assert_eq!(c.preview(), "red packet [图片] [TIMNewElem]");
        assert_eq!(c.idempotency_key(), "jared|Jonh|48374_2837546_1557481126");
        let v = br#"{"From_Account":"a","To_Account":"b","MsgBody":[{"MsgType":"TIMSoundElem","MsgContent":{"Url":"https://s/v.silk","UUID":"u","Size":9,"Second":3,"Download_Flag":2}},{"MsgType":"TIMSoundElem","MsgContent":{"Second":"2"}}]}"#;
        let Callback::C2cAfterSend(v) = parse(Some("C2C.CallbackAfterSendMsg"), v).unwrap() else {
            panic!()
        };
        assert_eq!(v.text_summary(), "[语音] 3\" https://s/v.silk [语音] 2\"");
        assert_eq!(v.preview(), "[语音] [语音]");
        assert_eq!(
            parse(Some("Group.CallbackBeforeSendMsg"), b"{}").unwrap(),
            Callback::Other("Group.CallbackBeforeSendMsg".into())
        );
        assert_eq!(parse(None, b"[1]").unwrap_err(), ParseError::NotJson);
        assert_eq!(parse(None, b"{").unwrap_err(), ParseError::NotJson);
        assert_eq!(
            parse(Some("C2C.CallbackAfterSendMsg"), b"{}").unwrap_err(),
            ParseError::Field("From_Account")
        );
        assert_eq!(
            parse(
                Some("State.StateChange"),
                br#"{"Info":{"Action":"Login","To_Account":"u"}}"#
            )
            .unwrap_err(),
            ParseError::Field("EventTime")
        );
    }

    #[test]
    fn fields_of_unexpected_types_read_as_absent_and_shapes_are_checked_where_needed() {
        // Each wrong-typed field reads as a value tree would read it: absent, or the default.
        let m = br#"{"From\u005fAccount":"a\u00e9","To_Account":"b","MsgSeq":"x","MsgRandom":[1],"MsgTime":true,"MsgKey":5,"OnlineOnlyFlag":"1","UnreadMsgNum":" 3 ","CloudCustomData":{"a":1},"OfflinePushInfo":"none","MsgBody":[7,{"MsgType":"TIMTextElem","MsgContent":"t"},{"MsgType":"TIMLocationElem","MsgContent":{"Desc":"d","Latitude":39.90498,"Longitude":"116.4"}},{"MsgType":"TIMImageElem","MsgContent":{"ImageInfoArray":["u",{"Type":"2","URL":""},{"Type":1,"URL":"https://o"}]}},{"MsgType":"TIMImageElem","MsgContent":{"ImageInfoArray":{"Type":1}}},{"MsgType":"TIMFaceElem","MsgContent":{"Index":"9"}}]}"#;
        let Callback::C2cAfterSend(c) = parse(Some("C2C.CallbackAfterSendMsg"), m).unwrap() else {
            panic!()
        };
        assert_eq!(
            (c.from.as_str(), c.to.as_str()),
            ("aé", "b"),
            "escaped names and text"
        );
        assert_eq!((c.msg_seq, c.msg_random, c.msg_time), (0, 0, 0));
        assert_eq!(c.msg_key, "");
        assert!(c.online_only);
        assert_eq!(c.unread, Some(3));
        assert_eq!(c.cloud_custom_data, None);
        assert_eq!(c.push, OfflinePush::default());
        assert_eq!(
            c.body,
            [
                Element::Other(String::new()),
                Element::Text(String::new()),
                Element::Location {
                    desc: "d".into(),
                    latitude: "39.90498".into(),
                    longitude: "116.4".into()
                },
                Element::Image {
                    url: Some("https://o".into())
                },
                Element::Image { url: None },
                Element::Face { index: 9 },
            ]
        );
        let first_url = br#"{"From_Account":"a","To_Account":"b","MsgBody":[{"MsgType":"TIMImageElem","MsgContent":{"ImageInfoArray":[{"Type":3,"URL":"https://t"},{"Type":2,"URL":"https://l"}]}}]}"#;
        let Callback::C2cAfterSend(c) = parse(Some("C2C.CallbackAfterSendMsg"), first_url).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            c.body,
            [Element::Image {
                url: Some("https://t".into())
            }]
        );
        // Where a reader needs an array or a text, another shape is the field's error.
        for (body, field) in [
            (
                &br#"{"From_Account":"a","To_Account":"b","MsgBody":{}}"#[..],
                "MsgBody",
            ),
            (
                br#"{"From_Account":"a","To_Account":"b","MsgBody":"x"}"#,
                "MsgBody",
            ),
            (br#"{"From_Account":7,"To_Account":"b"}"#, "From_Account"),
            (br#"{"From_Account":"","To_Account":"b"}"#, "From_Account"),
        ] {
            assert_eq!(
                parse(Some("C2C.CallbackAfterSendMsg"), body).unwrap_err(),
                ParseError::Field(field)
            );
        }
        let null_body = br#"{"From_Account":"a","To_Account":"b","MsgBody":null}"#;
        let Callback::C2cAfterSend(c) = parse(Some("C2C.CallbackAfterSendMsg"), null_body).unwrap()
        else {
            panic!()
        };
        assert!(c.body.is_empty());
        assert_eq!(
            parse(Some("State.StateChange"), br#"{"Info":"x","EventTime":1}"#).unwrap_err(),
            ParseError::Field("Info.To_Account")
        );
        let kicked = br#"{"Info":{"To_Account":"u","Action":"Login"},"EventTime":1,"KickedDevice":[{"Platform":1},"x",{"Platform":"iOS"}]}"#;
        let Callback::StateChange(sc) = parse(Some("State.StateChange"), kicked).unwrap() else {
            panic!()
        };
        assert_eq!(sc.kicked, ["iOS"]);
        // The command falls back to the body's own only when the query has none.
        assert_eq!(
            parse(Some(""), br#"{"CallbackCommand":"X.Y"}"#).unwrap(),
            Callback::Other("X.Y".into())
        );
        assert_eq!(
            parse(None, br#"{"CallbackCommand":1}"#).unwrap_err(),
            ParseError::Field("CallbackCommand")
        );
    }

    #[test]
    fn a_member_named_twice_or_a_body_that_is_no_object_is_refused() {
        for body in [
            &br#"{"From_Account":"a","To_Account":"b","From_Account":"c"}"#[..],
            br#"{"From_Account":"a","To_Account":"b","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"x","Text":"y"}}]}"#,
            b"[]",
            b"\"x\"",
            b"null",
            b"",
            br#"{"From_Account":"a"} {}"#,
        ] {
            assert_eq!(
                parse(Some("C2C.CallbackAfterSendMsg"), body).unwrap_err(),
                ParseError::NotJson,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn offline_push_settings_are_read_and_custom_data_kept_apart() {
        let m = r#"{"From_Account":"a","To_Account":"b","MsgKey":"1_2_3","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"secret body"}}],"CloudCustomData":"{\"orderId\":1}","OfflinePushInfo":{"PushFlag":0,"Title":"t","Desc":" 您有一条新消息 ","Ext":"e"}}"#;
        let Callback::C2cAfterSend(c) =
            parse(Some("C2C.CallbackAfterSendMsg"), m.as_bytes()).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            c.push,
            OfflinePush {
                no_push: false,
                desc: Some("您有一条新消息".into())
            }
        );
        assert_eq!(c.cloud_custom_data.as_deref(), Some(r#"{"orderId":1}"#));
        assert!(!c.preview().contains("orderId"));
        let off = br#"{"From_Account":"a","To_Account":"b","OfflinePushInfo":{"PushFlag":"1","Desc":""}}"#;
        let Callback::C2cAfterSend(c) = parse(Some("C2C.CallbackAfterSendMsg"), off).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            c.push,
            OfflinePush {
                no_push: true,
                desc: None
            }
        );
    }

    #[test]
    fn recall_and_read_report_parse_as_documented() {
        // 269/61697 (with EventTime) and the international page (with UnreadMsgNum).
        let w = br#"{"CallbackCommand":"C2C.CallbackAfterMsgWithDraw","From_Account":"jared","To_Account":"Jonh","MsgKey":"48374_2837546_1557481126","EventTime":1670574414123,"UnreadMsgNum":7}"#;
        let Callback::C2cRecall(r) = parse(None, w).unwrap() else {
            panic!()
        };
        assert_eq!(
            r,
            Recall {
                from: "jared".into(),
                to: "Jonh".into(),
                msg_key: "48374_2837546_1557481126".into(),
                event_time_ms: Some(1670574414123),
            }
        );
        assert_eq!(
            r.idempotency_key(),
            "jared|Jonh|48374_2837546_1557481126",
            "the same key the message's after-send callback gives"
        );
        assert_eq!(
            parse(
                Some("C2C.CallbackAfterMsgWithDraw"),
                br#"{"From_Account":"a","To_Account":"b"}"#
            )
            .unwrap_err(),
            ParseError::Field("MsgKey")
        );
        let r = br#"{"CallbackCommand":"C2C.CallbackAfterMsgReport","Report_Account":"jared","Peer_Account":"Jonh","LastReadTime":"1614754606","EventTime":1670574414123,"UnreadMsgNum":7}"#;
        let Callback::C2cRead(r) = parse(None, r).unwrap() else {
            panic!()
        };
        assert_eq!(
            r,
            ReadReport {
                reader: "jared".into(),
                peer: "Jonh".into(),
                last_read_time: 1614754606,
                unread: Some(7),
            }
        );
        assert_eq!(
            parse(
                Some("C2C.CallbackAfterMsgReport"),
                br#"{"Report_Account":"a","Peer_Account":"b"}"#
            )
            .unwrap_err(),
            ParseError::Field("LastReadTime")
        );
    }

    #[test]
    fn group_mentions_come_from_group_at_info_only() {
        // 269/2661's sample: @all, @brennan, @lucy; the text's "@" names are never read.
        let g = br#"{"CallbackCommand":"Group.CallbackAfterSendMsg","GroupId":"@TGS#2J4SZEAEL","Type":"Public","From_Account":"jared","Operator_Account":"admin","Random":123456,"MsgSeq":123,"MsgId":"144115233406643804-1727580296-4026038328","MsgTime":1490686222,"OnlineOnlyFlag":0,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"@all @brennan @lucy @mallory red packet"}}],"CloudCustomData":"your cloud custom data","EventTime":"1670574414123","GroupAtInfo":[{"GroupAtAllFlag":1},{"GroupAtAllFlag":0,"GroupAt_Account":"brennan"},{"GroupAtAllFlag":"0","GroupAt_Account":"lucy"},{"GroupAtAllFlag":0,"GroupAt_Account":"brennan"}]}"#;
        let Callback::GroupAfterSend(m) = parse(None, g).unwrap() else {
            panic!()
        };
        assert!(m.at_all);
        assert_eq!(m.at_accounts, ["brennan", "lucy"]);
        assert_eq!(
            (m.group_id.as_str(), m.from.as_str(), m.msg_seq, m.msg_time),
            ("@TGS#2J4SZEAEL", "jared", 123, 1490686222)
        );
        assert_eq!(m.group_name, None);
        assert_eq!(m.idempotency_key(), "group|@TGS#2J4SZEAEL||123");
        assert_eq!(m.preview(), "@all @brennan @lucy @mallory red packet");
        let plain = br#"{"GroupId":"g","From_Account":"a","MsgSeq":5,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"@bob hi"}}]}"#;
        let Callback::GroupAfterSend(m) = parse(Some("Group.CallbackAfterSendMsg"), plain).unwrap()
        else {
            panic!()
        };
        assert!(!m.at_all && m.at_accounts.is_empty());
        for (body, field) in [
            (&br#"{"From_Account":"a","MsgSeq":1}"#[..], "GroupId"),
            (br#"{"GroupId":"g","From_Account":"a"}"#, "MsgSeq"),
            (
                br#"{"GroupId":"g","From_Account":"a","MsgSeq":1,"GroupAtInfo":{}}"#,
                "GroupAtInfo",
            ),
        ] {
            assert_eq!(
                parse(Some("Group.CallbackAfterSendMsg"), body).unwrap_err(),
                ParseError::Field(field)
            );
        }
    }
}
