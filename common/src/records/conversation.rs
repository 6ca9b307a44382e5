//! A user's customer-service conversation with the agents, `conv#<app>#<IM account>` (an
//! official-account follower's IM account is their openid, `conv#oa#<openid>`): whether it is
//! on (`status`), which agent has it, and when the follower last wrote (the "connecting you"
//! window), and the reply allowance WeChat grants ([`Allowance`]). Beside it, the round-robin
//! cursor that spreads new conversations across agents.

use crate::config::AppKind;
use crate::protocol::wechat::allowance::Opening;
use crate::records::keys;
use crate::store::{Cond, Item, Store, StoreError, Table, Update, Write};

const OPENID: &str = "openid";
const IM_USER: &str = "im_user";
const SESSION_FROM: &str = "session_from";
const STATUS: &str = "status";
const AGENT: &str = "agent";
const ASSIGNED_AT: &str = "assigned_at";
const CREATED_AT: &str = "created_at";
const UPDATED_AT: &str = "updated_at";
const FOLLOWED_AT: &str = "followed_at";
const ENDED_AT: &str = "ended_at";
const LAST_USER_MSG_AT: &str = "last_user_msg_at";
const CONNECTING_SENT_AT: &str = "connecting_sent_at";
const NEXT: &str = "next";
const LAST_REPLY_AT: &str = "last_reply_at";
const TYPING_AT: &str = "typing_at";
const ALLOWANCE_BY: &str = "allowance_by";
const ALLOWANCE_AT: &str = "allowance_at";
const ALLOWANCE_LEFT: &str = "allowance_left";
const ALLOWANCE_UNTIL: &str = "allowance_until";
const FALLBACK_FOR: &str = "fallback_for";
const FALLBACK_BY: &str = "fallback_by";

/// The customer-service replies WeChat allows now: opened by the user's last action (`by`, at
/// `at`), `left` of them, until `until`. Written with the push that opens it; a reply spends one
/// with a conditional decrement before it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// `None` when WeChat's refusal (45015/45047) told us it was closed before we knew what
    /// opened it (a conversation older than the allowance's tracking).
    pub by: Option<Opening>,
    pub at: i64,
    pub left: i64,
    pub until: i64,
}

impl Allowance {
    /// Whether a reply may be sent at `now`.
    pub fn open(&self, now: i64) -> bool {
        self.left >= 1 && now < self.until
    }

    fn from_item(i: &Item) -> Option<Allowance> {
        Some(Allowance {
            by: i.s(ALLOWANCE_BY).and_then(Opening::parse),
            at: i.n(ALLOWANCE_AT)?,
            left: i.n(ALLOWANCE_LEFT)?,
            until: i.n(ALLOWANCE_UNTIL)?,
        })
    }
}

/// WeChat refuses the typing state (45080) when no message was exchanged with the follower in
/// this many seconds.
pub const TYPING_EXCHANGE_SECS: i64 = 30;
/// The typing state lasts this long; asking again within it is refused (45081).
pub const TYPING_SECS: i64 = 15;

/// Which conversation: the app, and the IM account that speaks for the user in it (the openid
/// of an official-account follower).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chat<'a> {
    pub app: AppKind,
    pub im_user: &'a str,
    /// The user's openid, where the caller knows it (a push): recorded on the conversation, so
    /// that an agent's reply, which knows only the IM account, finds where to send it.
    pub openid: Option<&'a str>,
}

impl<'a> Chat<'a> {
    pub fn oa(openid: &'a str) -> Chat<'a> {
        Chat {
            app: AppKind::Oa,
            im_user: openid,
            openid: Some(openid),
        }
    }

    /// A conversation known by its IM account alone (an agent's reply).
    pub fn of(app: AppKind, im_user: &'a str) -> Chat<'a> {
        Chat {
            app,
            im_user,
            openid: (app == AppKind::Oa).then_some(im_user),
        }
    }

    fn ids(&self) -> Vec<Update> {
        let mut u = vec![Update::set(IM_USER, self.im_user)];
        if let Some(o) = self.openid {
            u.push(Update::set(OPENID, o));
        }
        u
    }

    fn key(&self) -> String {
        keys::conversation_of(self.app, self.im_user)
    }
}

/// How long WeChat may take to deliver a push: three tries, 5 s apart (its timeout), and the
/// last one's own 5 s.
pub const DELIVERY_SLACK_SECS: i64 = 20;

/// Whether the follower is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    /// They unfollowed.
    Ended,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Ended => "ended",
        }
    }

    fn parse(s: &str) -> Option<Status> {
        match s {
            "active" => Some(Status::Active),
            "ended" => Some(Status::Ended),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conversation {
    /// `None` when no push of the follower's was ever recorded (an assignment alone may have
    /// been): a follower from before the bridge existed.
    pub status: Option<Status>,
    pub agent: Option<String>,
    pub last_user_msg_at: Option<i64>,
    /// When a customer-service message last reached WeChat.
    pub last_reply_at: Option<i64>,
    /// When the typing state was last asked for.
    pub typing_at: Option<i64>,
    /// `None` until an action of the user's was recorded: WeChat alone then decides.
    pub allowance: Option<Allowance>,
    /// The `at` of the allowance whose exhaustion already had its subscribe-message fallback.
    pub fallback_for: Option<i64>,
    /// Where replies go: the user's openid (an official-account follower's is their IM id).
    pub openid: Option<String>,
    /// The mini program's `SessionFrom` of the session entered, until the user's first message.
    pub session_from: Option<String>,
}

impl Conversation {
    fn from_item(i: &Item) -> Conversation {
        Conversation {
            status: i.s(STATUS).and_then(Status::parse),
            agent: i.s(AGENT).map(str::to_owned),
            last_user_msg_at: i.n(LAST_USER_MSG_AT),
            last_reply_at: i.n(LAST_REPLY_AT),
            typing_at: i.n(TYPING_AT),
            allowance: Allowance::from_item(i),
            fallback_for: i.n(FALLBACK_FOR),
            openid: i.s(OPENID).map(str::to_owned),
            session_from: i.s(SESSION_FROM).map(str::to_owned),
        }
    }

    /// The allowance an action at `at` opens, unless one opened by a later action is already
    /// recorded (a late delivery never shortens the allowance in force). `at` is the push's
    /// `CreateTime`, taken within [`DELIVERY_SLACK_SECS`] before `now`: WeChat delivers a push
    /// within its retries, so an older `CreateTime` is a clock's difference, not a delay.
    pub fn opening(&self, by: Opening, at: i64, now: i64) -> Option<(Opening, i64)> {
        let at = at.clamp(now - DELIVERY_SLACK_SECS, now);
        match self.allowance {
            Some(a) if a.at > at => None,
            _ => Some((by, at)),
        }
    }

    /// The last message exchanged with the follower, either way.
    pub fn last_exchange_at(&self) -> Option<i64> {
        self.last_user_msg_at.max(self.last_reply_at)
    }
}

pub async fn get(store: &dyn Store, c: Chat<'_>) -> Result<Option<Conversation>, StoreError> {
    Ok(store
        .get(Table::State, &c.key(), keys::ONE)
        .await?
        .as_ref()
        .map(Conversation::from_item))
}

/// What a push changes on the conversation (never the agent: only [`assign`] sets it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch<'a> {
    /// A follow: active again, the end forgotten.
    Followed,
    /// An unfollow.
    Unfollowed,
    /// A message from the follower; `greeted` when it was answered "connecting you".
    Wrote { greeted: bool },
    /// A mini-program user entered the customer-service session (`user_enter_tempsession`),
    /// from the page's `session-from` (kept for the agent until their first message).
    EnteredSession { session_from: Option<&'a str> },
}

/// The updates that open an allowance (see [`Conversation::opening`]).
fn open_updates(by: Opening, at: i64) -> Vec<Update> {
    vec![
        Update::set(ALLOWANCE_BY, by.as_str()),
        Update::set(ALLOWANCE_AT, at),
        Update::set(ALLOWANCE_LEFT, by.replies()),
        Update::set(ALLOWANCE_UNTIL, at + by.valid_secs()),
    ]
}

/// `opens` is the allowance the push opens, if any (written in the same update: one item, one
/// write per transaction).
pub fn touch(c: Chat<'_>, what: Touch<'_>, opens: Option<(Opening, i64)>, now: i64) -> Write {
    let status = match what {
        Touch::Unfollowed => Status::Ended,
        _ => Status::Active,
    };
    let mut u = c.ids();
    u.extend([
        Update::set(STATUS, status.as_str()),
        Update::set(UPDATED_AT, now),
        Update::set_if_absent(CREATED_AT, now),
    ]);
    match what {
        Touch::Followed => {
            u.push(Update::set(FOLLOWED_AT, now));
            u.push(Update::remove(ENDED_AT));
        }
        Touch::Unfollowed => u.push(Update::set(ENDED_AT, now)),
        Touch::Wrote { greeted } => {
            u.push(Update::set(LAST_USER_MSG_AT, now));
            if greeted {
                u.push(Update::set(CONNECTING_SENT_AT, now));
            }
            // Passed to the agent with this first message of the session.
            u.push(Update::remove(SESSION_FROM));
        }
        Touch::EnteredSession { session_from } => match session_from {
            Some(f) => u.push(Update::set(SESSION_FROM, f)),
            None => u.push(Update::remove(SESSION_FROM)),
        },
    }
    if let Some((by, at)) = opens {
        u.extend(open_updates(by, at));
    }
    Write::update(Table::State, &c.key(), keys::ONE, u)
}

/// An action that opens an allowance and changes nothing else (a menu click, a QR scan).
pub fn opened(c: Chat<'_>, by: Opening, at: i64, now: i64) -> Write {
    let mut u = c.ids();
    u.extend([
        Update::set(UPDATED_AT, now),
        Update::set_if_absent(CREATED_AT, now),
    ]);
    u.extend(open_updates(by, at));
    Write::update(Table::State, &c.key(), keys::ONE, u)
}

/// Spends one reply of the allowance in force, only if it is still open at `now` (so replies
/// racing for the last one get it once). The allowance as it is after the spend, or `None` when
/// it was closed.
pub async fn spend(
    store: &dyn Store,
    c: Chat<'_>,
    now: i64,
) -> Result<Option<Allowance>, StoreError> {
    let w = Write::update(
        Table::State,
        &c.key(),
        keys::ONE,
        vec![Update::add(ALLOWANCE_LEFT, -1)],
    )
    .when(Cond::And(vec![
        Cond::ge(ALLOWANCE_LEFT, 1),
        Cond::gt(ALLOWANCE_UNTIL, now),
    ]));
    match store.write(w).await {
        Ok(after) => Ok(after.as_ref().and_then(Allowance::from_item)),
        Err(StoreError::ConditionFailed { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Gives back a reply spent on a send WeChat certainly did not take, only to the allowance it was
/// spent from (opened at `at`) and never above its limit.
pub fn give_back(c: Chat<'_>, a: &Allowance) -> Write {
    let limit = a.by.map_or(0, Opening::replies);
    Write::update(
        Table::State,
        &c.key(),
        keys::ONE,
        vec![Update::add(ALLOWANCE_LEFT, 1)],
    )
    .when(Cond::And(vec![
        Cond::eq(ALLOWANCE_AT, a.at),
        Cond::lt(ALLOWANCE_LEFT, limit),
    ]))
}

/// What WeChat's refusal says about the allowance the reply was sent in (`seen`, as read before
/// the send; `None` when none was known): 45047, its count is used up; 45015, it has expired.
/// Only that allowance is corrected, never one a newer action opened since.
pub fn refused(c: Chat<'_>, seen: Option<&Allowance>, errcode: i64, now: i64) -> Write {
    let (u, when) = match seen {
        Some(a) => {
            let u = match errcode {
                45015 => vec![Update::set(ALLOWANCE_UNTIL, now)],
                _ => vec![Update::set(ALLOWANCE_LEFT, 0)],
            };
            (u, Cond::eq(ALLOWANCE_AT, a.at))
        }
        // Nothing known of what opened it: closed now, until the user's next action.
        None => (
            vec![
                Update::set(ALLOWANCE_AT, 0),
                Update::set(ALLOWANCE_LEFT, 0),
                Update::set(ALLOWANCE_UNTIL, now),
            ],
            Cond::lacks(ALLOWANCE_AT),
        ),
    };
    Write::update(Table::State, &c.key(), keys::ONE, u).when(Cond::And(vec![Cond::Exists, when]))
}

/// Takes the one subscribe-message fallback of the allowance opened at `at` for the reply `by`
/// (which keeps it when it runs again after a retryable failure): the replies that find it
/// closed after that tell their agent, but notify the follower no more.
pub fn take_fallback(c: Chat<'_>, at: i64, by: &str) -> Write {
    Write::update(
        Table::State,
        &c.key(),
        keys::ONE,
        vec![Update::set(FALLBACK_FOR, at), Update::set(FALLBACK_BY, by)],
    )
    .when(Cond::And(vec![
        Cond::Exists,
        Cond::Or(vec![Cond::ne(FALLBACK_FOR, at), Cond::eq(FALLBACK_BY, by)]),
    ]))
}

/// Gives the conversation to `agent`, only if it still has the agent `held` (none, or one that
/// is no longer listed): racing deliveries for a new follower agree on one agent.
pub fn assign(c: Chat<'_>, agent: &str, held: Option<&str>, now: i64) -> Write {
    Write::update(Table::State, &c.key(), keys::ONE, {
        let mut u = c.ids();
        u.extend([
            Update::set(AGENT, agent),
            Update::set(ASSIGNED_AT, now),
            Update::set_if_absent(CREATED_AT, now),
        ]);
        u
    })
    .when(match held {
        None => Cond::lacks(AGENT),
        Some(old) => Cond::eq(AGENT, old),
    })
}

/// The round-robin cursor's value (`None` before the first assignment).
pub async fn agent_cursor(store: &dyn Store, app: AppKind) -> Result<Option<i64>, StoreError> {
    Ok(store
        .get(Table::State, &keys::agent_cursor(app), keys::ONE)
        .await?
        .and_then(|c| c.n(NEXT)))
}

/// Moves the cursor on by one; when `from` is given, only if it still reads that value.
pub fn advance_cursor(app: AppKind, from: Option<Option<i64>>) -> Write {
    let w = Write::update(
        Table::State,
        &keys::agent_cursor(app),
        keys::ONE,
        vec![Update::add(NEXT, 1)],
    );
    match from {
        None => w,
        Some(Some(n)) => w.when(Cond::eq(NEXT, n)),
        Some(None) => w.when(Cond::lacks(NEXT)),
    }
}

/// Records that a customer-service message reached WeChat (the typing state needs a recent
/// exchange).
pub fn replied(c: Chat<'_>, now: i64) -> Write {
    Write::update(
        Table::State,
        &c.key(),
        keys::ONE,
        vec![
            Update::set(LAST_REPLY_AT, now),
            Update::set(UPDATED_AT, now),
        ],
    )
    .when(Cond::Exists)
}

/// Takes the typing state for the follower at `now`, only if WeChat would grant it: a message
/// was exchanged within [`TYPING_EXCHANGE_SECS`] and none was asked for within [`TYPING_SECS`]
/// (so concurrent typing callbacks ask WeChat once).
pub fn typing(c: Chat<'_>, now: i64) -> Write {
    let recent = now - TYPING_EXCHANGE_SECS;
    Write::update(
        Table::State,
        &c.key(),
        keys::ONE,
        vec![Update::set(TYPING_AT, now)],
    )
    .when(Cond::And(vec![
        Cond::Or(vec![
            Cond::lacks(TYPING_AT),
            Cond::le(TYPING_AT, now - TYPING_SECS),
        ]),
        Cond::Or(vec![
            Cond::ge(LAST_USER_MSG_AT, recent),
            Cond::ge(LAST_REPLY_AT, recent),
        ]),
    ]))
}
