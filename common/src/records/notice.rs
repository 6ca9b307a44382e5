//! What a notification says: the message (or, for a follow-up, the latest held message) it
//! speaks for. A `notify` outbox job carries it, and so does a follow-up due record.

use crate::config::AppKind;
use crate::records::{RecordError, read};
use crate::store::{Attr, Item};

const MSG_KEY: &str = "msg_key";

/// An IM message that may notify its offline recipient (a `notify` job), or what a follow-up
/// speaks for. The same fields ride on the follow-up due record ([`due::followup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub recipient: String,
    pub sender: String,
    pub preview: String,
    /// When the message was sent (seconds).
    pub msg_time: i64,
    pub app: AppKind,
    pub openid: String,
    pub template_id: String,
    /// IM's key of the message (absent on follow-ups).
    pub msg_key: Option<String>,
    /// Presence when the message was seen (`online`/`offline`/`unknown`), for the record.
    pub presence: Option<String>,
    /// Queued by the sweep when a hold ended, not for a message of its own.
    pub followup: bool,
    /// The IM group the message was sent in (an @-mention); `None` for one-to-one messages.
    pub group: Option<String>,
}

impl Notice {
    /// The attributes a follow-up due record carries over to its notification.
    pub const CARRIED: [&'static str; 8] = [
        "recipient",
        "sender",
        "preview",
        "msg_time",
        "app",
        "openid",
        "template_id",
        "group",
    ];

    pub(crate) fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let mut a = vec![
            ("recipient", Attr::from(self.recipient.as_str())),
            ("sender", Attr::from(self.sender.as_str())),
            ("preview", Attr::from(self.preview.as_str())),
            ("msg_time", Attr::N(self.msg_time)),
            ("app", Attr::from(self.app.as_str())),
            ("openid", Attr::from(self.openid.as_str())),
            ("template_id", Attr::from(self.template_id.as_str())),
        ];
        if let Some(k) = &self.msg_key {
            a.push((MSG_KEY, Attr::from(k.as_str())));
        }
        if let Some(p) = &self.presence {
            a.push(("presence", Attr::from(p.as_str())));
        }
        if self.followup {
            a.push(("followup", Attr::Bool(true)));
        }
        if let Some(g) = &self.group {
            a.push(("group", Attr::from(g.as_str())));
        }
        a
    }

    pub(crate) fn from_item(i: &Item) -> Result<Notice, RecordError> {
        Ok(Notice {
            recipient: read::s(i, "recipient")?,
            sender: read::opt_s(i, "sender").unwrap_or_default(),
            preview: read::opt_s(i, "preview").unwrap_or_default(),
            msg_time: i.n("msg_time").unwrap_or(0),
            app: read::app(i, "app")?,
            openid: read::s(i, "openid")?,
            template_id: read::s(i, "template_id")?,
            msg_key: read::opt_s(i, MSG_KEY),
            presence: read::opt_s(i, "presence"),
            followup: i.bool("followup") == Some(true),
            group: read::opt_s(i, "group"),
        })
    }
}
