//! The outbox: every outbound call (a notification, a customer-service message, an IM send) is
//! first an item here, written in the same transaction as the webhook's other effects. Its
//! stream invokes the dispatch function. Each item ends `sent`, `skipped` (why) or `failed` (why);
//! nothing leaves the outbox silently.
//!
//! Life of an item: `queued` → `sending` (claimed by one dispatcher; a claim older than
//! [`CLAIM_SECS`] may be taken over) → `sent` / `skipped` / `failed`, or back to `queued` with
//! `last_error` for a retry. A `queued` item with `not_before` in the future is parked (WeChat's
//! daily quota): no claim succeeds before then, and the sweep ([`crate::flows::sweep`]) re-drives it.
//! Every write that queues an item also puts a watch record for it (same transaction), so an item
//! the stream never managed to deliver is re-driven by the sweep.

use crate::config::AppKind;
use crate::records::keys;
pub use crate::records::keys::{id_for, random_id};
pub use crate::records::notice::Notice;
use crate::records::{RecordError, due, read};
use crate::store::{Attr, Cond, Item, Store, StoreError, TTL_ATTR, Table, Update, Write};

/// A claim older than this is presumed dead (its dispatcher crashed mid-send) and may be retaken.
pub const CLAIM_SECS: i64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An IM message to an offline user, as a subscribe message (merged per recipient).
    Notify,
    /// A subscribe message requested through the admin API.
    Send,
    /// An official-account user's message, forwarded to their agent in IM.
    Forward,
    /// Import a follower into IM.
    Import,
    /// Delete (or deactivate) an unfollower's IM account.
    Delete,
    /// An agent's IM reply, delivered as a customer-service message.
    CustomerService,
    /// An IM message from the admin account to an agent.
    AgentNotice,
    /// An agent's typing indicator, shown to the follower as WeChat's typing state.
    Typing,
    /// A passive reply that could not be given (the push was spooled while the store was
    /// down), sent later as a customer-service message.
    LateReply,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Notify,
        Kind::Send,
        Kind::Forward,
        Kind::Import,
        Kind::Delete,
        Kind::CustomerService,
        Kind::AgentNotice,
        Kind::Typing,
        Kind::LateReply,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Notify => "notify",
            Kind::Send => "send",
            Kind::Forward => "forward",
            Kind::Import => "im_import",
            Kind::Delete => "im_delete",
            Kind::CustomerService => "kf",
            Kind::AgentNotice => "agent_notice",
            Kind::Typing => "kf_typing",
            Kind::LateReply => "late_reply",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether performing the job twice could reach someone twice (an IM import or deletion
    /// done twice changes nothing).
    pub fn reaches_someone(self) -> bool {
        !matches!(self, Kind::Import | Kind::Delete)
    }
}

/// What became of an item (or a merged group) after one dispatch attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Ended: sent, skipped or failed, with the reason recorded on the item.
    Done,
    /// Put back in the queue; the stream should retry after a pause.
    Retry { after_secs: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Queued,
    Sending,
    Sent,
    Skipped,
    Failed,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Queued,
        Status::Sending,
        Status::Sent,
        Status::Skipped,
        Status::Failed,
    ];

    /// Whether an item can still leave this status (it has not ended).
    pub fn is_open(self) -> bool {
        matches!(self, Status::Queued | Status::Sending)
    }

    pub fn parse(s: &str) -> Option<Status> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Skipped => "skipped",
            Status::Failed => "failed",
        }
    }
}

// The attributes every item has, and the results a finished one may carry.
const ID: &str = "id";
const KIND: &str = "kind";
const STATUS: &str = "status";
const ATTEMPTS: &str = "attempts";
const CREATED_AT: &str = "created_at";
const UPDATED_AT: &str = "updated_at";
const CLAIMED_AT: &str = "claimed_at";
const FINISHED_AT: &str = "finished_at";
const NOT_BEFORE: &str = "not_before";
const REASON: &str = "reason";
const LAST_ERROR: &str = "last_error";
const MSGID: &str = "msgid";
const MSG_KEY: &str = "msg_key";
const MERGED_COUNT: &str = "merged_count";
const CANCELLED: &str = "cancelled";
const MERGED_INTO: &str = "merged_into";
const DATA: &str = "data";

/// A subscribe message an operator asked for (`POST /notify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSend {
    pub app: AppKind,
    pub openid: String,
    pub template_id: String,
    /// The validated template data, as JSON text.
    pub data: String,
    /// What makes two requests the same (for the idempotency key).
    pub fingerprint: String,
    pub requested_by: String,
    pub user_id: Option<String>,
    pub page: Option<String>,
    pub miniprogram_state: Option<String>,
    pub lang: Option<String>,
}

/// What a job does: its kind and the attributes that kind needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    Notify(Notice),
    Send(AdminSend),
    /// A follower's message to their agent in IM (`to` is absent when no agent was configured:
    /// the message is kept, not forwarded).
    Forward {
        from: String,
        to: Option<String>,
        text: String,
        /// A user's image (its `PicUrl`): sent as an IM image element, `text` its summary.
        image_url: Option<String>,
    },
    Import {
        user_id: String,
        nick: Option<String>,
    },
    Delete {
        user_id: String,
    },
    /// An agent's reply to a user, as `app`'s customer-service message: to `openid`, in the
    /// conversation of the IM account `im_user` (an official-account follower's openid).
    CustomerService {
        app: AppKind,
        im_user: String,
        openid: String,
        agent: String,
        text: String,
        /// The agent's image (the URL of its original in IM): sent as an image message, `text`
        /// its summary (sent instead when the image cannot go).
        image_url: Option<String>,
    },
    /// A notice from the admin account to an agent.
    AgentNotice {
        to: String,
        text: String,
    },
    /// WeChat's typing state for a follower, while their agent types in IM (never retried).
    Typing {
        app: AppKind,
        im_user: String,
        openid: String,
        agent: String,
    },
    /// A passive reply given late, as a customer-service message from `app` to `openid`.
    LateReply {
        app: AppKind,
        openid: String,
        text: String,
    },
    /// A stored item this version cannot read (an unknown kind, a missing attribute): ended
    /// failed by the dispatcher with this reason, never retried.
    Unreadable(String),
}

impl Job {
    pub fn kind(&self) -> Option<Kind> {
        Some(match self {
            Job::Notify(_) => Kind::Notify,
            Job::Send(_) => Kind::Send,
            Job::Forward { .. } => Kind::Forward,
            Job::Import { .. } => Kind::Import,
            Job::Delete { .. } => Kind::Delete,
            Job::CustomerService { .. } => Kind::CustomerService,
            Job::AgentNotice { .. } => Kind::AgentNotice,
            Job::Typing { .. } => Kind::Typing,
            Job::LateReply { .. } => Kind::LateReply,
            Job::Unreadable(_) => return None,
        })
    }

    fn attrs(&self) -> Vec<(&'static str, Attr)> {
        fn opt(out: &mut Vec<(&'static str, Attr)>, name: &'static str, v: &Option<String>) {
            if let Some(v) = v {
                out.push((name, Attr::from(v.as_str())));
            }
        }
        let mut a = vec![];
        match self {
            Job::Notify(n) => a = n.attrs(),
            Job::Send(s) => {
                a.push(("app", Attr::from(s.app.as_str())));
                a.push(("openid", Attr::from(s.openid.as_str())));
                a.push(("template_id", Attr::from(s.template_id.as_str())));
                a.push((DATA, Attr::from(s.data.as_str())));
                a.push(("fingerprint", Attr::from(s.fingerprint.as_str())));
                a.push(("requested_by", Attr::from(s.requested_by.as_str())));
                opt(&mut a, "user_id", &s.user_id);
                opt(&mut a, "page", &s.page);
                opt(&mut a, "miniprogram_state", &s.miniprogram_state);
                opt(&mut a, "lang", &s.lang);
            }
            Job::Forward {
                from,
                to,
                text,
                image_url,
            } => {
                a.push(("from", Attr::from(from.as_str())));
                opt(&mut a, "to", to);
                a.push(("text", Attr::from(text.as_str())));
                opt(&mut a, "image_url", image_url);
            }
            Job::Import { user_id, nick } => {
                a.push(("user_id", Attr::from(user_id.as_str())));
                opt(&mut a, "nick", nick);
            }
            Job::Delete { user_id } => a.push(("user_id", Attr::from(user_id.as_str()))),
            Job::CustomerService {
                app,
                im_user,
                openid,
                agent,
                text,
                image_url,
            } => {
                opt(&mut a, "image_url", image_url);
                a.push(("app", Attr::from(app.as_str())));
                a.push(("im_user", Attr::from(im_user.as_str())));
                a.push(("openid", Attr::from(openid.as_str())));
                a.push(("agent", Attr::from(agent.as_str())));
                a.push(("text", Attr::from(text.as_str())));
            }
            Job::AgentNotice { to, text } => {
                a.push(("to", Attr::from(to.as_str())));
                a.push(("text", Attr::from(text.as_str())));
            }
            Job::Typing {
                app,
                im_user,
                openid,
                agent,
            } => {
                a.push(("app", Attr::from(app.as_str())));
                a.push(("im_user", Attr::from(im_user.as_str())));
                a.push(("openid", Attr::from(openid.as_str())));
                a.push(("agent", Attr::from(agent.as_str())));
            }
            Job::LateReply { app, openid, text } => {
                a.push(("app", Attr::from(app.as_str())));
                a.push(("openid", Attr::from(openid.as_str())));
                a.push(("text", Attr::from(text.as_str())));
            }
            Job::Unreadable(_) => {}
        }
        a
    }

    fn from_item(kind: Kind, i: &Item) -> Result<Job, RecordError> {
        Ok(match kind {
            Kind::Notify => Job::Notify(Notice::from_item(i)?),
            Kind::Send => Job::Send(AdminSend {
                app: read::app(i, "app")?,
                openid: read::s(i, "openid")?,
                template_id: read::s(i, "template_id")?,
                data: read::s(i, DATA)?,
                fingerprint: read::opt_s(i, "fingerprint").unwrap_or_default(),
                requested_by: read::opt_s(i, "requested_by").unwrap_or_default(),
                user_id: read::opt_s(i, "user_id"),
                page: read::opt_s(i, "page"),
                miniprogram_state: read::opt_s(i, "miniprogram_state"),
                lang: read::opt_s(i, "lang"),
            }),
            Kind::Forward => Job::Forward {
                from: read::s(i, "from")?,
                to: read::opt_s(i, "to"),
                text: read::opt_s(i, "text").unwrap_or_default(),
                image_url: read::opt_s(i, "image_url"),
            },
            Kind::Import => Job::Import {
                user_id: read::s(i, "user_id")?,
                nick: read::opt_s(i, "nick"),
            },
            Kind::Delete => Job::Delete {
                user_id: read::s(i, "user_id")?,
            },
            Kind::CustomerService => Job::CustomerService {
                // Replies queued before the mini program had customer service are the official
                // account's, in the conversation of the openid.
                app: read::app(i, "app").unwrap_or(AppKind::Oa),
                im_user: read::opt_s(i, "im_user").map_or_else(|| read::s(i, "openid"), Ok)?,
                openid: read::s(i, "openid")?,
                agent: read::opt_s(i, "agent").unwrap_or_default(),
                text: read::opt_s(i, "text").unwrap_or_default(),
                image_url: read::opt_s(i, "image_url"),
            },
            Kind::AgentNotice => Job::AgentNotice {
                to: read::s(i, "to")?,
                text: read::opt_s(i, "text").unwrap_or_default(),
            },
            Kind::Typing => Job::Typing {
                app: read::app(i, "app").unwrap_or(AppKind::Oa),
                im_user: read::opt_s(i, "im_user").map_or_else(|| read::s(i, "openid"), Ok)?,
                openid: read::s(i, "openid")?,
                agent: read::opt_s(i, "agent").unwrap_or_default(),
            },
            Kind::LateReply => Job::LateReply {
                app: read::app(i, "app")?,
                openid: read::s(i, "openid")?,
                text: read::opt_s(i, "text").unwrap_or_default(),
            },
        })
    }
}

/// An outbox item as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: String,
    pub status: Status,
    pub attempts: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub claimed_at: Option<i64>,
    /// Parked until then (WeChat's daily quota).
    pub not_before: Option<i64>,
    pub reason: Option<String>,
    pub last_error: Option<String>,
    /// What WeChat returned for a subscribe message it took.
    pub msgid: Option<String>,
    /// Why the message no longer needs telling (`recalled`, `read`), marked by
    /// [`withdraw`]: a dispatcher that claims the item afterwards ends it with this reason.
    pub cancelled: Option<String>,
    pub job: Job,
}

impl OutboxItem {
    pub fn from_item(i: &Item) -> Result<OutboxItem, RecordError> {
        let key = || format!("{}/{}", i.pk, i.sk);
        let id = id_from_pk(&i.pk)
            .ok_or_else(|| RecordError::new(key(), "pk", "is not an outbox key"))?
            .to_owned();
        let status_s = read::s(i, STATUS)?;
        let status = Status::parse(&status_s)
            .ok_or_else(|| RecordError::new(key(), STATUS, "is not a known status"))?;
        let job = match read::s(i, KIND).map(|k| Kind::parse(&k)) {
            Ok(Some(kind)) => {
                Job::from_item(kind, i).unwrap_or_else(|e| Job::Unreadable(e.to_string()))
            }
            Ok(None) => Job::Unreadable("unknown_kind".into()),
            Err(e) => Job::Unreadable(e.to_string()),
        };
        Ok(OutboxItem {
            id,
            status,
            attempts: i.n(ATTEMPTS).unwrap_or(0),
            created_at: i.n(CREATED_AT).unwrap_or(0),
            updated_at: i.n(UPDATED_AT).unwrap_or(0),
            claimed_at: i.n(CLAIMED_AT),
            not_before: i.n(NOT_BEFORE),
            reason: read::opt_s(i, REASON),
            last_error: read::opt_s(i, LAST_ERROR),
            msgid: read::opt_s(i, MSGID).filter(|m| !m.is_empty()),
            cancelled: read::opt_s(i, CANCELLED),
            job,
        })
    }

    pub fn kind(&self) -> Option<Kind> {
        self.job.kind()
    }

    /// The kind as logged and counted (`unreadable` for items this version cannot read).
    pub fn kind_str(&self) -> &'static str {
        self.kind().map_or("unreadable", Kind::as_str)
    }

    /// The recipient of a notification, the key dispatch merges on.
    pub fn recipient(&self) -> Option<&str> {
        match &self.job {
            Job::Notify(n) => Some(&n.recipient),
            _ => None,
        }
    }

    /// What the dispatcher sends together when a batch holds several: a recipient's
    /// notifications, or one agent's replies to one follower (a burst).
    pub fn merge_key(&self) -> Option<String> {
        match &self.job {
            Job::Notify(n) => Some(format!("notify|{}", n.recipient)),
            // An image goes as a message of its own.
            Job::CustomerService {
                image_url: Some(_), ..
            } => None,
            Job::CustomerService {
                app,
                im_user,
                agent,
                ..
            } => Some(format!("kf|{app}|{im_user}|{agent}")),
            _ => None,
        }
    }

    /// Parked until a time still ahead of `now`.
    pub fn parked_at(&self, now: i64) -> Option<i64> {
        self.not_before.filter(|t| *t > now)
    }
}

/// What queueing needs to know: the time, how long items are kept, and when an unfinished item
/// is due for the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queueing {
    pub now: i64,
    pub retention_secs: i64,
    /// The watch record falls due this long after the item is queued.
    pub watch_after_secs: i64,
}

/// A new job and its watch record. This is the only way to queue a job, and it can only be
/// committed as both writes together, so no job is ever queued without the sweep's safety net
/// (an item the stream never delivers is re-driven when its watch falls due).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a queued job must be committed (with its watch)"]
pub struct Enqueue {
    id: String,
    item: Write,
    watch: Write,
}

impl Enqueue {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The conditional put of the item, then its watch record, for one transaction.
    pub fn writes(self) -> [Write; 2] {
        [self.item, self.watch]
    }
}

fn new_item(id: &str, job: &Job, now: i64, retention_secs: i64) -> Item {
    let mut item = Item::new(keys::outbox(id), keys::ONE)
        .with(ID, id)
        .with(KIND, job.kind().map_or("unreadable", Kind::as_str))
        .with(STATUS, Status::Queued.as_str())
        .with(ATTEMPTS, 0i64)
        .with(CREATED_AT, now)
        .with(UPDATED_AT, now)
        .with(TTL_ATTR, now + retention_secs);
    for (k, v) in job.attrs() {
        item.attrs.insert(k.to_owned(), v);
    }
    item
}

/// A new job (the put is conditional, so a retried webhook queues it once), with its watch.
pub fn enqueue(id: &str, job: &Job, q: Queueing) -> Enqueue {
    queue(id, job, q, None)
}

fn queue(id: &str, job: &Job, q: Queueing, not_before: Option<i64>) -> Enqueue {
    let item = new_item(id, job, q.now, q.retention_secs).with_opt(NOT_BEFORE, not_before);
    Enqueue {
        id: id.to_owned(),
        item: Write::put(Table::Outbox, item).when(Cond::NotExists),
        watch: due::due(
            id,
            q.now + q.watch_after_secs,
            due::Why::Watch,
            q.retention_secs,
        ),
    }
}

/// A new job held until `not_before` (an agent's reply waiting for the rest of its burst), with
/// its watch. No claim succeeds before then, except [`take_for_merge`]'s.
pub fn enqueue_held(id: &str, job: &Job, q: Queueing, not_before: i64) -> Enqueue {
    queue(id, job, q, Some(not_before))
}

/// Takes a queued job into another's send (a reply merged into its burst's message), whether or
/// not it is still held; `None` when it is not queued (sent already, or claimed by another
/// dispatcher, which then sends it itself).
pub async fn take_for_merge(
    store: &dyn Store,
    id: &str,
    now: i64,
) -> Result<Option<OutboxItem>, StoreError> {
    let w = Write::update(
        Table::Outbox,
        &keys::outbox(id),
        keys::ONE,
        vec![
            Update::set(STATUS, Status::Sending.as_str()),
            Update::set(CLAIMED_AT, now),
            Update::set(UPDATED_AT, now),
            Update::add(ATTEMPTS, 1),
        ],
    )
    .when(Cond::eq(STATUS, Status::Queued.as_str()));
    match store.write(w).await {
        Ok(Some(item)) => Ok(Some(OutboxItem::from_item(&item)?)),
        Ok(None) => Ok(None),
        Err(StoreError::ConditionFailed { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A job that ends as it is recorded: nothing was sent, and why is kept like any job's outcome
/// (the put is conditional, so a retried webhook records it once). Ended jobs need no watch.
pub fn ended(id: &str, job: &Job, status: Status, reason: &str, q: Queueing) -> Write {
    let mut item = new_item(id, job, q.now, q.retention_secs);
    for (k, v) in [
        (STATUS, Attr::from(status.as_str())),
        (REASON, Attr::from(reason)),
        (FINISHED_AT, Attr::from(q.now)),
    ] {
        item.attrs.insert(k.to_owned(), v);
    }
    Write::put(Table::Outbox, item).when(Cond::NotExists)
}

/// Ends a job that is called off before any dispatcher took it (an agent recalled the message it
/// would send): only while it is still `queued`, so a job already being sent is never ended under
/// its dispatcher.
pub fn call_off(id: &str, reason: &str, now: i64) -> Write {
    Write::update(
        Table::Outbox,
        &keys::outbox(id),
        keys::ONE,
        vec![
            Update::set(STATUS, Status::Skipped.as_str()),
            Update::set(REASON, reason),
            Update::set(UPDATED_AT, now),
            Update::set(FINISHED_AT, now),
        ],
    )
    .when(Cond::eq(STATUS, Status::Queued.as_str()))
}

/// The stored item, as it is (for state dumps and tests).
pub async fn get(store: &dyn Store, id: &str) -> Result<Option<Item>, StoreError> {
    store.get(Table::Outbox, &keys::outbox(id), keys::ONE).await
}

/// The item, read.
pub async fn read(store: &dyn Store, id: &str) -> Result<Option<OutboxItem>, StoreError> {
    match get(store, id).await? {
        Some(i) => Ok(Some(OutboxItem::from_item(&i)?)),
        None => Ok(None),
    }
}

/// A job taken for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub item: OutboxItem,
    /// Taken over from a dispatcher whose claim went stale: its attempt may have reached the
    /// API (it died, or is still waiting for an answer), so a side-effecting job must not be
    /// performed again.
    pub retaken: bool,
}

/// Takes a job for sending; `None` when it is not (or no longer) this dispatcher's to send.
/// A queued job is claimed in one conditional write; only when that fails is a stale claim taken
/// over (a second conditional write), so that a retaken claim is known as such.
pub async fn claim(store: &dyn Store, id: &str, now: i64) -> Result<Option<Claim>, StoreError> {
    let take = |cond: Cond| {
        Write::update(
            Table::Outbox,
            &keys::outbox(id),
            keys::ONE,
            vec![
                Update::set(STATUS, Status::Sending.as_str()),
                Update::set(CLAIMED_AT, now),
                Update::set(UPDATED_AT, now),
                Update::add(ATTEMPTS, 1),
            ],
        )
        .when(cond)
    };
    let queued = Cond::And(vec![
        Cond::eq(STATUS, Status::Queued.as_str()),
        Cond::Or(vec![Cond::lacks(NOT_BEFORE), Cond::le(NOT_BEFORE, now)]),
    ]);
    let stale = Cond::And(vec![
        Cond::eq(STATUS, Status::Sending.as_str()),
        Cond::lt(CLAIMED_AT, now - CLAIM_SECS),
    ]);
    for (cond, retaken) in [(queued, false), (stale, true)] {
        match store.write(take(cond)).await {
            Ok(Some(item)) => {
                return Ok(Some(Claim {
                    item: OutboxItem::from_item(&item)?,
                    retaken,
                }));
            }
            Ok(None) => return Ok(None),
            Err(StoreError::ConditionFailed { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// What a finished job records besides its status and reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Results {
    /// The msgid WeChat returned for a subscribe message.
    pub msgid: Option<String>,
    /// IM's key of a message it took.
    pub msg_key: Option<String>,
    /// How many messages a merged notification told of.
    pub merged_count: Option<i64>,
    /// The template data sent, as JSON text.
    pub data: Option<String>,
    /// The item a merged notification went out as.
    pub merged_into: Option<String>,
}

impl Results {
    pub fn msgid(msgid: &str) -> Results {
        Results {
            msgid: Some(msgid.to_owned()),
            ..Default::default()
        }
    }

    pub fn msg_key(key: &str) -> Results {
        Results {
            msg_key: Some(key.to_owned()),
            ..Default::default()
        }
    }

    fn updates(self) -> Vec<Update> {
        let mut u = vec![];
        let mut set = |name: &str, v: Option<Attr>| {
            if let Some(v) = v {
                u.push(Update::Set(name.to_owned(), v));
            }
        };
        set(MSGID, self.msgid.map(Attr::from));
        set(MSG_KEY, self.msg_key.map(Attr::from));
        set(MERGED_COUNT, self.merged_count.map(Attr::N));
        set(DATA, self.data.map(Attr::from));
        set(MERGED_INTO, self.merged_into.map(Attr::from));
        u
    }
}

/// The final state of a claimed job, with its reason and any results.
pub fn finish(id: &str, status: Status, reason: Option<&str>, results: Results, now: i64) -> Write {
    let mut u = vec![
        Update::set(STATUS, status.as_str()),
        Update::set(UPDATED_AT, now),
        Update::set(FINISHED_AT, now),
        Update::remove(CLAIMED_AT),
    ];
    if let Some(r) = reason {
        u.push(Update::set(REASON, r));
    }
    u.extend(results.updates());
    Write::update(Table::Outbox, &keys::outbox(id), keys::ONE, u)
        .when(Cond::eq(STATUS, Status::Sending.as_str()))
}

/// Marks a job's message as no longer needing telling (`reason`: recalled, read), once: the
/// update fails when the item does not exist or is marked already. It returns the item as it is
/// now, so the caller sees where it stands (queued, being sent, held, told).
pub fn withdraw(id: &str, reason: &str, now: i64) -> Write {
    Write::update(
        Table::Outbox,
        &keys::outbox(id),
        keys::ONE,
        vec![Update::set(CANCELLED, reason), Update::set(UPDATED_AT, now)],
    )
    .when(Cond::And(vec![Cond::Exists, Cond::lacks(CANCELLED)]))
}

/// Ends a job nobody has claimed yet (`skipped` with `reason`): fails once a dispatcher holds it.
pub fn end_unclaimed(id: &str, status: Status, reason: &str, now: i64) -> Write {
    Write::update(
        Table::Outbox,
        &keys::outbox(id),
        keys::ONE,
        vec![
            Update::set(STATUS, status.as_str()),
            Update::set(REASON, reason),
            Update::set(UPDATED_AT, now),
            Update::set(FINISHED_AT, now),
            Update::remove(NOT_BEFORE),
        ],
    )
    .when(Cond::eq(STATUS, Status::Queued.as_str()))
}

/// Puts a claimed job back for another attempt, recording why this one failed.
pub fn release(id: &str, error: &str, now: i64) -> Write {
    requeue(id, error, None, now)
}

/// Puts a claimed job back, not to be claimed before `until` (WeChat's daily quota is used up).
pub fn park(id: &str, error: &str, until: i64, now: i64) -> Write {
    requeue(id, error, Some(until), now)
}

fn requeue(id: &str, error: &str, not_before: Option<i64>, now: i64) -> Write {
    Write::update(
        Table::Outbox,
        &keys::outbox(id),
        keys::ONE,
        vec![
            Update::set(STATUS, Status::Queued.as_str()),
            Update::set(LAST_ERROR, error),
            match not_before {
                Some(t) => Update::set(NOT_BEFORE, t),
                None => Update::remove(NOT_BEFORE),
            },
            Update::set(UPDATED_AT, now),
            Update::remove(CLAIMED_AT),
        ],
    )
    .when(Cond::eq(STATUS, Status::Sending.as_str()))
}

/// The attempts made on a group of items (the most any of them had).
pub fn attempts(items: &[OutboxItem]) -> i64 {
    items.iter().map(|i| i.attempts).max().unwrap_or(1).max(1)
}

/// Every job waiting that may be claimed now (parked ones wait for the sweep), oldest first, by
/// reading the whole table: for `wxim dispatch`-style draining and tests, never on a request
/// path.
pub async fn queued(store: &dyn Store, now: i64) -> Result<Vec<OutboxItem>, StoreError> {
    let mut items: Vec<OutboxItem> = vec![];
    for i in store.scan(Table::Outbox).await? {
        // Items this version cannot read are left to the operator (see `wxim state dump`).
        let Ok(item) = OutboxItem::from_item(&i) else {
            continue;
        };
        if item.status == Status::Queued && item.parked_at(now).is_none() {
            items.push(item);
        }
    }
    items.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(items)
}

/// Every item not yet ended, by reading the whole table (`wxim sweep --scan-outbox`).
pub async fn open_items(store: &dyn Store) -> Result<Vec<OutboxItem>, StoreError> {
    let mut out = vec![];
    for i in store.scan(Table::Outbox).await? {
        let Ok(item) = OutboxItem::from_item(&i) else {
            continue;
        };
        if item.status.is_open() {
            out.push(item);
        }
    }
    Ok(out)
}

/// The id of the job a write queues, if it is the put of a new queued item (what a DynamoDB
/// Stream reports as an INSERT that the dispatcher must act on; ended items need no dispatch).
pub fn queued_by(w: &Write) -> Option<&str> {
    match w {
        Write::Put {
            table: Table::Outbox,
            item,
            ..
        } if item.s(STATUS) == Some(Status::Queued.as_str()) => id_from_pk(&item.pk),
        _ => None,
    }
}

/// The id of an outbox item from its partition key.
pub fn id_of(item: &Item) -> &str {
    id_from_pk(&item.pk).unwrap_or(&item.pk)
}

/// The id in an outbox partition key (`out#<id>`), if it is one.
pub fn id_from_pk(pk: &str) -> Option<&str> {
    pk.strip_prefix("out#")
}

/// A queued item of a kind this version does not know, as a newer version would write it.
#[cfg(test)]
pub(crate) fn queued_of_unknown_kind(id: &str, kind: &str) -> Item {
    Item::new(keys::outbox(id), keys::ONE)
        .with(KIND, kind)
        .with(STATUS, Status::Queued.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> Queueing {
        Queueing {
            now: 100,
            retention_secs: 1000,
            watch_after_secs: 600,
        }
    }

    fn stored(job: &Job) -> OutboxItem {
        let [w, _] = enqueue("abc", job, q()).writes();
        let Write::Put { item, .. } = w else {
            panic!("a put")
        };
        OutboxItem::from_item(&item).unwrap()
    }

    #[test]
    fn every_job_reads_back_as_written() {
        let jobs = [
            Job::Forward {
                from: "o1".into(),
                to: Some("agent".into()),
                text: "hi".into(),
                image_url: Some("https://x.myqcloud.com/p.png".into()),
            },
            Job::Import {
                user_id: "o1".into(),
                nick: Some("n".into()),
            },
            Job::Delete {
                user_id: "o1".into(),
            },
            Job::CustomerService {
                app: AppKind::Oa,
                im_user: "o1".into(),
                openid: "o1".into(),
                agent: "a".into(),
                text: "t".into(),
                image_url: None,
            },
            Job::AgentNotice {
                to: "a".into(),
                text: "t".into(),
            },
            Job::Typing {
                app: AppKind::Oa,
                im_user: "o1".into(),
                openid: "o1".into(),
                agent: "a".into(),
            },
            Job::LateReply {
                app: AppKind::Oa,
                openid: "o1".into(),
                text: "welcome".into(),
            },
        ];
        for job in jobs {
            let item = stored(&job);
            assert_eq!(item.job, job);
            assert_eq!(
                (item.status, item.attempts, item.created_at),
                (Status::Queued, 0, 100)
            );
        }
    }

    #[test]
    fn the_watch_is_due_after_the_stale_delay() {
        let [_, watch] = enqueue(
            "abc",
            &Job::Delete {
                user_id: "u".into(),
            },
            q(),
        )
        .writes();
        let (_, pk, sk) = watch.key();
        assert_eq!(sk, format!("{:02}#abc", due::minute_of(700) % 60));
        assert_eq!(pk, due::partition("abc", 700));
        assert!(pk.starts_with(&keys::due(&due::hour_bucket(due::minute_of(700)))));
    }

    #[test]
    fn a_missing_attribute_is_named_with_the_key() {
        let item = Item::new(keys::outbox("x"), keys::ONE)
            .with(KIND, "im_delete")
            .with(STATUS, "queued");
        let read = OutboxItem::from_item(&item).unwrap();
        let Job::Unreadable(why) = read.job else {
            panic!("unreadable")
        };
        assert!(why.contains("out#x/-") && why.contains("user_id"), "{why}");
        let no_status = Item::new(keys::outbox("y"), keys::ONE).with(KIND, "im_delete");
        let e = OutboxItem::from_item(&no_status).unwrap_err();
        assert_eq!((e.key.as_str(), e.attr.as_str()), ("out#y/-", "status"));
    }
}
