//! The IM server REST API (`v4/...`): admin UserSig generated and cached in-process, renewed
//! before expiry and on 70001; a fresh 32-bit `random` per call; every error classified
//! (reference §3).

use std::sync::Mutex;

use serde_json::{Value, json};

use super::ImConfig;
use super::usersig;
use crate::clock::Clock;
use crate::protocol::secret::Secret;
use crate::protocol::wechat::api::Http;

/// Members asked for per `get_group_member_info` call (IM's recommended page size).
pub const MEMBER_PAGE: usize = 100;

/// Lifetime of the admin UserSig; it is renewed after 80% of it.
const ADMIN_SIG_SECS: i64 = 7 * 86_400;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImError {
    #[error("IM error {code}: {info}")]
    Im { code: i64, info: String },
    #[error("IM answered HTTP {0}")]
    Http(u16),
    #[error("IM did not answer in time")]
    Timeout,
    #[error("cannot reach IM ({0})")]
    Network(&'static str),
    #[error("unexpected answer from IM: {0}")]
    Protocol(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImErrorClass {
    /// Worth another try later (busy, rate limited, network).
    Retryable,
    /// The admin UserSig was refused as expired: renew it and retry once.
    Resign,
    /// The user's IM account does not exist yet: import it, then retry.
    NeedsImport,
    /// Will not succeed by retrying.
    Permanent,
}

impl ImError {
    pub fn code(&self) -> Option<i64> {
        match self {
            ImError::Im { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn class(&self) -> ImErrorClass {
        match self {
            ImError::Im { code, .. } => match code {
                70001 | 20002 | 60004 | 60005 => ImErrorClass::Resign,
                70107 | 20003 | 90012 | 90048 => ImErrorClass::NeedsImport,
                70169 | 70202 | 70500 | 70050 | 20004 | 20005 | 90992 | 90994 | 90995 | 91000
                | 60007 | 60011 | 60018 | 60019 | 60008 | 80003 | 10002 => ImErrorClass::Retryable,
                _ => ImErrorClass::Permanent,
            },
            ImError::Http(s) if *s >= 500 || *s == 429 => ImErrorClass::Retryable,
            ImError::Http(_) => ImErrorClass::Permanent,
            ImError::Timeout | ImError::Network(_) | ImError::Protocol(_) => {
                ImErrorClass::Retryable
            }
        }
    }

    pub fn reason(&self) -> String {
        match self {
            ImError::Im { code, .. } => format!("im_{code}"),
            ImError::Http(s) => format!("http_{s}"),
            ImError::Timeout => "timeout".into(),
            ImError::Network(_) => "network".into(),
            ImError::Protocol(_) => "protocol".into(),
        }
    }
}

/// reqwest's messages include the URL, which carries the admin UserSig: rebuild from the kind.
fn transport(e: reqwest::Error) -> ImError {
    if e.is_timeout() {
        ImError::Timeout
    } else if e.is_connect() {
        ImError::Network("connection failed")
    } else {
        ImError::Network("request failed")
    }
}

/// Online status as `query_online_status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnlineStatus {
    /// Connected (including an app in the background whose process is alive).
    Online,
    /// Mobile process killed or network lost: reachable only by offline push.
    PushOnline,
    Offline,
}

/// What happened to an account deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    /// The account did not exist.
    NotFound,
    /// The IM edition does not allow deleting accounts (71000): it is kept.
    NotAllowed,
}

pub struct ImApi {
    http: Http,
    base: String,
    sdkappid: u64,
    key: Secret,
    admin: String,
    sig: Mutex<Option<(String, i64)>>,
}

impl std::fmt::Debug for ImApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImApi")
            .field("base", &self.base)
            .field("sdkappid", &self.sdkappid)
            .field("admin", &self.admin)
            .finish()
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    u32::from_be_bytes(b)
}

impl ImApi {
    pub fn new(http: Http, im: &ImConfig) -> Self {
        ImApi {
            http,
            base: im.api_base.trim_end_matches('/').to_owned(),
            sdkappid: im.sdkappid,
            key: im.secret_key.clone(),
            admin: im.admin_user.clone(),
            sig: Mutex::new(None),
        }
    }

    pub fn admin(&self) -> &str {
        &self.admin
    }

    fn admin_sig(&self, clock: &dyn Clock, renew: bool) -> String {
        let now = clock.now();
        let mut slot = self.sig.lock().unwrap_or_else(|p| p.into_inner());
        if !renew
            && let Some((sig, issued)) = slot.as_ref()
            && now < issued + ADMIN_SIG_SECS * 4 / 5
        {
            return sig.clone();
        }
        let sig = usersig::generate(
            self.sdkappid,
            self.key.expose(),
            &self.admin,
            ADMIN_SIG_SECS,
            now,
        );
        *slot = Some((sig.clone(), now));
        sig
    }

    async fn post_once(&self, path: &str, body: &Value, sig: &str) -> Result<Value, ImError> {
        let random = random_u32().to_string();
        let sdkappid = self.sdkappid.to_string();
        let resp = self
            .http
            .post(format!("{}/v4/{path}", self.base))
            .query(&[
                ("sdkappid", sdkappid.as_str()),
                ("identifier", self.admin.as_str()),
                ("usersig", sig),
                ("random", random.as_str()),
                ("contenttype", "json"),
            ])
            .json(body)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(ImError::Http(status));
        }
        let v: Value = serde_json::from_slice(&resp.bytes().await.map_err(transport)?)
            .map_err(|_| ImError::Protocol("body is not JSON"))?;
        let code = v["ErrorCode"].as_i64().unwrap_or(0);
        if code != 0 || v["ActionStatus"].as_str() == Some("FAIL") {
            return Err(ImError::Im {
                code,
                info: v["ErrorInfo"]
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .take(160)
                    .collect(),
            });
        }
        Ok(v)
    }

    /// One call; an expired admin sig is renewed and the call retried once.
    pub async fn call(
        &self,
        path: &str,
        body: &Value,
        clock: &dyn Clock,
    ) -> Result<Value, ImError> {
        let sig = self.admin_sig(clock, false);
        match self.post_once(path, body, &sig).await {
            Err(e) if e.class() == ImErrorClass::Resign => {
                let sig = self.admin_sig(clock, true);
                self.post_once(path, body, &sig).await
            }
            other => other,
        }
    }

    /// Online status of up to 500 users; users IM does not know are reported `Offline`.
    pub async fn query_online_status(
        &self,
        users: &[&str],
        clock: &dyn Clock,
    ) -> Result<Vec<(String, OnlineStatus)>, ImError> {
        let mut out = vec![];
        for chunk in users.chunks(500) {
            let v = self
                .call(
                    "openim/query_online_status",
                    &json!({ "To_Account": chunk, "IsNeedDetail": 1 }),
                    clock,
                )
                .await?;
            for r in v["QueryResult"].as_array().into_iter().flatten() {
                let user = r["To_Account"].as_str().unwrap_or("").to_owned();
                // The English doc sample says State (the old querystate API), the table Status.
                let s = r["Status"]
                    .as_str()
                    .or_else(|| r["State"].as_str())
                    .unwrap_or("");
                let status = match s {
                    "Online" => OnlineStatus::Online,
                    "PushOnline" => OnlineStatus::PushOnline,
                    _ => OnlineStatus::Offline,
                };
                out.push((user, status));
            }
            for e in v["ErrorList"].as_array().into_iter().flatten() {
                if let Some(u) = e["To_Account"].as_str() {
                    out.push((u.to_owned(), OnlineStatus::Offline));
                }
            }
        }
        Ok(out)
    }

    /// The members of a group, at most `max`, as `group_get_member_info` lists them
    /// (cloud.tencent.com/document/product/269/1629, the API the docs also call group_get_member_info): pages of up to [`MEMBER_PAGE`] by
    /// `Limit`/`Offset`, or for a Community group by `Next` (which does not take `Offset`; the
    /// first call sends `""`, each next one the `Next` the answer gave, until it is empty).
    pub async fn group_members(
        &self,
        group_id: &str,
        community: bool,
        max: usize,
        clock: &dyn Clock,
    ) -> Result<Vec<String>, ImError> {
        let mut out: Vec<String> = vec![];
        let mut next = String::new();
        while out.len() < max {
            let limit = (max - out.len()).min(MEMBER_PAGE);
            let mut body = json!({
                "GroupId": group_id,
                "Limit": limit,
                "MemberInfoFilter": ["Role"],
            });
            if community {
                body["Next"] = Value::String(next.clone());
            } else {
                body["Offset"] = json!(out.len());
            }
            let v = self
                .call("group_open_http_svc/get_group_member_info", &body, clock)
                .await?;
            let page: Vec<String> = v["MemberList"]
                .as_array()
                .ok_or(ImError::Protocol(
                    "get_group_member_info answered without a MemberList",
                ))?
                .iter()
                .filter_map(|m| m["Member_Account"].as_str().filter(|a| !a.is_empty()))
                .map(str::to_owned)
                .collect();
            let got = page.len();
            out.extend(page);
            let total = v["MemberNum"].as_u64().map(|t| t as usize);
            next = v["Next"].as_str().unwrap_or("").to_owned();
            let more = if community {
                !next.is_empty()
            } else {
                got == limit && total.is_none_or(|t| out.len() < t)
            };
            if got == 0 || !more {
                break;
            }
        }
        out.truncate(max);
        Ok(out)
    }

    /// A group's name (`get_group_info` with only `Name` in its `GroupBaseInfoFilter`);
    /// `None` when the group has none or IM reports an error for it.
    pub async fn group_name(
        &self,
        group_id: &str,
        clock: &dyn Clock,
    ) -> Result<Option<String>, ImError> {
        let v = self
            .call(
                "group_open_http_svc/get_group_info",
                &json!({
                    "GroupIdList": [group_id],
                    "ResponseFilter": { "GroupBaseInfoFilter": ["Name"] },
                }),
                clock,
            )
            .await?;
        Ok(v["GroupInfo"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|g| g["GroupId"].as_str() == Some(group_id))
            .filter(|g| g["ErrorCode"].as_i64().unwrap_or(0) == 0)
            .and_then(|g| g["Name"].as_str())
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned))
    }

    /// Imports an account; one that already exists is not an error.
    pub async fn account_import(
        &self,
        user_id: &str,
        nick: Option<&str>,
        clock: &dyn Clock,
    ) -> Result<(), ImError> {
        let mut body = json!({ "UserID": user_id });
        if let Some(n) = nick {
            body["Nick"] = Value::String(n.to_owned());
        }
        self.call("im_open_login_svc/account_import", &body, clock)
            .await
            .map(|_| ())
    }

    pub async fn account_delete(
        &self,
        user_id: &str,
        clock: &dyn Clock,
    ) -> Result<Deletion, ImError> {
        match self
            .call(
                "im_open_login_svc/account_delete",
                &json!({ "DeleteItem": [{ "UserID": user_id }] }),
                clock,
            )
            .await
        {
            // The call succeeds as a whole even when the item failed: only the item's own
            // ResultCode says whether this account was deleted.
            Ok(v) => deletion_result(&v, user_id),
            Err(ImError::Im { code: 71000, .. }) => Ok(Deletion::NotAllowed),
            Err(ImError::Im { code: 70107, .. }) => Ok(Deletion::NotFound),
            Err(e) => Err(e),
        }
    }

    /// A one-to-one text message. `from` None sends as the admin account. A retry with the same
    /// `msg_random` lets IM recognise the duplicate.
    pub async fn send_text(
        &self,
        from: Option<&str>,
        to: &str,
        text: &str,
        msg_random: u32,
        clock: &dyn Clock,
    ) -> Result<String, ImError> {
        let mut body = json!({
            "SyncOtherMachine": 1,
            "To_Account": to,
            "MsgRandom": msg_random,
            "MsgBody": [{ "MsgType": "TIMTextElem", "MsgContent": { "Text": text } }],
            // Our own sends must not come back to us as callbacks that would bridge them again.
            "ForbidCallbackControl": ["ForbidBeforeSendMsgCallback", "ForbidAfterSendMsgCallback"],
        });
        if let Some(f) = from {
            body["From_Account"] = Value::String(f.to_owned());
        }
        let v = self.call("openim/sendmsg", &body, clock).await?;
        Ok(v["MsgKey"].as_str().unwrap_or("").to_owned())
    }

    /// The MsgKey of the one-to-one message `from` (None: the admin) → `to` carrying
    /// `msg_random`, if IM holds one sent at or after `since`: whether an earlier attempt of a
    /// send whose answer was lost arrived after all. IM's own deduplication of a resend reaches
    /// only within the same second (reference §3.2); this reaches as far as the history does.
    ///
    /// `v4/openim/admin_getroammsg` (cloud.tencent.com/document/product/269/42794): read from
    /// the receiver's side (`Operator_Account` = `to`), which holds the message whatever
    /// `SyncOtherMachine` said; pages of newest-first messages, continued with `MaxTime` =
    /// `LastMsgTime` and `LastMsgKey` while `Complete` is 0. Recalled messages are listed too
    /// (flagged in `MsgFlagBits`): one of those was sent as well.
    pub async fn find_message(
        &self,
        from: Option<&str>,
        to: &str,
        msg_random: u32,
        since: i64,
        clock: &dyn Clock,
    ) -> Result<Option<String>, ImError> {
        let from = from.unwrap_or(&self.admin);
        let mut body = json!({
            "Operator_Account": to,
            "Peer_Account": from,
            "MaxCnt": 100,
            "MinTime": since.max(0),
            // Ahead of our clock by as much as `since` is behind it: IM's clock is its own.
            "MaxTime": clock.now() + HISTORY_SLACK_SECS,
        });
        for _ in 0..HISTORY_PAGES {
            let v = self.call("openim/admin_getroammsg", &body, clock).await?;
            let list = v["MsgList"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            if let Some(m) = list.iter().find(|m| {
                m["MsgRandom"].as_u64() == Some(u64::from(msg_random))
                    && m["From_Account"].as_str() == Some(from)
                    && m["To_Account"].as_str() == Some(to)
            }) {
                return Ok(Some(m["MsgKey"].as_str().unwrap_or("").to_owned()));
            }
            let more = v["Complete"].as_i64() == Some(0) && !list.is_empty();
            match (more, v["LastMsgTime"].as_i64(), v["LastMsgKey"].as_str()) {
                (true, Some(t), Some(k)) => {
                    body["MaxTime"] = t.into();
                    body["LastMsgKey"] = k.into();
                }
                _ => return Ok(None),
            }
        }
        // A conversation this busy since the first attempt: not knowing is not "not sent".
        Err(ImError::Protocol(
            "admin_getroammsg: history too long to search",
        ))
    }
}

/// How far before the first attempt (and after now) the history is searched: clock skew
/// between us and IM, which stamps messages with its own time.
pub const HISTORY_SLACK_SECS: i64 = 300;
/// Pages of up to 100 messages (IM caps a page at 13 KB) searched before giving up.
const HISTORY_PAGES: usize = 10;

impl ImApi {
    /// A picture from `from` (a user's, by the URL WeChat gave it) as an IM image element, which
    /// IM clients show as a picture. The sizes are not known without downloading it, so they
    /// are given as 0; the one URL serves as original, large and thumbnail.
    pub async fn send_image(
        &self,
        from: Option<&str>,
        to: &str,
        url: &str,
        msg_random: u32,
        clock: &dyn Clock,
    ) -> Result<String, ImError> {
        let info = |t: u8| json!({ "Type": t, "Size": 0, "Width": 0, "Height": 0, "URL": url });
        let uuid: String = {
            use sha1::{Digest, Sha1};
            hex::encode(&Sha1::digest(url.as_bytes())[..16])
        };
        let mut body = json!({
            "SyncOtherMachine": 1,
            "To_Account": to,
            "MsgRandom": msg_random,
            "MsgBody": [{ "MsgType": "TIMImageElem", "MsgContent": {
                "UUID": uuid,
                // 255: "other" (WeChat's PicUrl does not say; IM clients read the image itself).
                "ImageFormat": 255,
                "ImageInfoArray": [info(1), info(2), info(3)],
            } }],
            "ForbidCallbackControl": ["ForbidBeforeSendMsgCallback", "ForbidAfterSendMsgCallback"],
        });
        if let Some(f) = from {
            body["From_Account"] = Value::String(f.to_owned());
        }
        let v = self.call("openim/sendmsg", &body, clock).await?;
        Ok(v["MsgKey"].as_str().unwrap_or("").to_owned())
    }
}

/// The outcome for one account from an `account_delete` answer's `ResultItem` list.
fn deletion_result(v: &Value, user_id: &str) -> Result<Deletion, ImError> {
    let items = v["ResultItem"].as_array();
    let item = items
        .and_then(|a| {
            a.iter()
                .find(|i| i["UserID"].as_str() == Some(user_id))
                // Lenient with an answer that leaves out the UserID of its only item.
                .or_else(|| {
                    a.iter()
                        .find(|i| i["UserID"].is_null())
                        .filter(|_| a.len() == 1)
                })
        })
        .ok_or(ImError::Protocol(
            "account_delete answered without a ResultItem",
        ))?;
    let code = match &item["ResultCode"] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or(ImError::Protocol(
        "account_delete ResultItem without a ResultCode",
    ))?;
    match code {
        0 => Ok(Deletion::Deleted),
        70107 => Ok(Deletion::NotFound),
        71000 => Ok(Deletion::NotAllowed),
        code => Err(ImError::Im {
            code,
            info: item["ResultInfo"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(160)
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn im(code: i64) -> ImError {
        ImError::Im {
            code,
            info: String::new(),
        }
    }

    #[test]
    fn classification_follows_the_reference_table() {
        assert_eq!(im(70001).class(), ImErrorClass::Resign);
        assert_eq!(im(70107).class(), ImErrorClass::NeedsImport);
        assert_eq!(im(90012).class(), ImErrorClass::NeedsImport);
        for c in [70169, 70500, 20004, 60008, 60007] {
            assert_eq!(im(c).class(), ImErrorClass::Retryable, "{c}");
        }
        for c in [70009, 70013, 70398, 71000, 93000, 80001, 20006] {
            assert_eq!(im(c).class(), ImErrorClass::Permanent, "{c}");
        }
        assert_eq!(ImError::Http(502).class(), ImErrorClass::Retryable);
        assert_eq!(ImError::Timeout.class(), ImErrorClass::Retryable);
    }

    #[test]
    fn a_deletion_is_judged_by_its_own_result_item() {
        let ok = |items: Value| deletion_result(&json!({ "ResultItem": items }), "u1");
        assert_eq!(
            ok(json!([{"ResultCode": 0, "ResultInfo": "", "UserID": "u1"}])),
            Ok(Deletion::Deleted)
        );
        assert_eq!(
            ok(json!([{"ResultCode": 70107, "UserID": "u1"}])),
            Ok(Deletion::NotFound)
        );
        assert_eq!(
            ok(json!([{"ResultCode": "71000", "UserID": "u1"}])),
            Ok(Deletion::NotAllowed)
        );
        let e = ok(json!([{"ResultCode": 70500, "ResultInfo": "internal", "UserID": "u1"}]))
            .unwrap_err();
        assert_eq!(
            (e.code(), e.class()),
            (Some(70500), ImErrorClass::Retryable)
        );
        let e = ok(json!([{"ResultCode": 70402, "UserID": "u1"}])).unwrap_err();
        assert_eq!(e.class(), ImErrorClass::Permanent);
        assert!(matches!(ok(json!([])), Err(ImError::Protocol(_))));
        assert!(matches!(
            deletion_result(&json!({}), "u1"),
            Err(ImError::Protocol(_))
        ));
        assert_eq!(ok(json!([{"ResultCode": 0}])), Ok(Deletion::Deleted));
        // Another account's item is not this one's answer.
        assert!(matches!(
            ok(json!([{"ResultCode": 0, "UserID": "u2"}])),
            Err(ImError::Protocol(_))
        ));
    }
}
