//! An official-account follower's conversation with the agents, `conv#oa#<openid>`: whether it is
//! on (`status`), which agent has it, and when the follower last wrote (the "connecting you"
//! window). Beside it, the round-robin cursor that spreads new conversations across agents.

use crate::records::keys;
use crate::store::{Cond, Item, Store, StoreError, Table, Update, Write};

const OPENID: &str = "openid";
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

/// WeChat refuses the typing state (45080) when no message was exchanged with the follower in
/// this many seconds.
pub const TYPING_EXCHANGE_SECS: i64 = 30;
/// The typing state lasts this long; asking again within it is refused (45081).
pub const TYPING_SECS: i64 = 15;

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
}

impl Conversation {
    fn from_item(i: &Item) -> Conversation {
        Conversation {
            status: i.s(STATUS).and_then(Status::parse),
            agent: i.s(AGENT).map(str::to_owned),
            last_user_msg_at: i.n(LAST_USER_MSG_AT),
            last_reply_at: i.n(LAST_REPLY_AT),
            typing_at: i.n(TYPING_AT),
        }
    }

    /// The last message exchanged with the follower, either way.
    pub fn last_exchange_at(&self) -> Option<i64> {
        self.last_user_msg_at.max(self.last_reply_at)
    }
}

pub async fn get(store: &dyn Store, openid: &str) -> Result<Option<Conversation>, StoreError> {
    Ok(store
        .get(Table::State, &keys::conversation(openid), keys::ONE)
        .await?
        .as_ref()
        .map(Conversation::from_item))
}

/// What a push changes on the conversation (never the agent: only [`assign`] sets it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// A follow: active again, the end forgotten.
    Followed,
    /// An unfollow.
    Unfollowed,
    /// A message from the follower; `greeted` when it was answered "connecting you".
    Wrote { greeted: bool },
}

pub fn touch(openid: &str, what: Touch, now: i64) -> Write {
    let status = match what {
        Touch::Unfollowed => Status::Ended,
        _ => Status::Active,
    };
    let mut u = vec![
        Update::set(OPENID, openid),
        Update::set(STATUS, status.as_str()),
        Update::set(UPDATED_AT, now),
        Update::set_if_absent(CREATED_AT, now),
    ];
    match what {
        Touch::Followed => {
            u.push(Update::set(FOLLOWED_AT, now));
            u.push(Update::remove(ENDED_AT));
        }
        Touch::Unfollowed => u.push(Update::set(ENDED_AT, now)),
        Touch::Wrote { greeted } => {
            // The customer-service window opens with each message the follower sends.
            u.push(Update::set(LAST_USER_MSG_AT, now));
            if greeted {
                u.push(Update::set(CONNECTING_SENT_AT, now));
            }
        }
    }
    Write::update(Table::State, &keys::conversation(openid), keys::ONE, u)
}

/// Gives the conversation to `agent`, only if it still has the agent `held` (none, or one that
/// is no longer listed): racing deliveries for a new follower agree on one agent.
pub fn assign(openid: &str, agent: &str, held: Option<&str>, now: i64) -> Write {
    Write::update(
        Table::State,
        &keys::conversation(openid),
        keys::ONE,
        vec![
            Update::set(AGENT, agent),
            Update::set(OPENID, openid),
            Update::set(ASSIGNED_AT, now),
            Update::set_if_absent(CREATED_AT, now),
        ],
    )
    .when(match held {
        None => Cond::lacks(AGENT),
        Some(old) => Cond::eq(AGENT, old),
    })
}

/// The round-robin cursor's value (`None` before the first assignment).
pub async fn agent_cursor(store: &dyn Store) -> Result<Option<i64>, StoreError> {
    Ok(store
        .get(Table::State, keys::AGENT_CURSOR, keys::ONE)
        .await?
        .and_then(|c| c.n(NEXT)))
}

/// Moves the cursor on by one; when `from` is given, only if it still reads that value.
pub fn advance_cursor(from: Option<Option<i64>>) -> Write {
    let w = Write::update(
        Table::State,
        keys::AGENT_CURSOR,
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
pub fn replied(openid: &str, now: i64) -> Write {
    Write::update(
        Table::State,
        &keys::conversation(openid),
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
pub fn typing(openid: &str, now: i64) -> Write {
    let recent = now - TYPING_EXCHANGE_SECS;
    Write::update(
        Table::State,
        &keys::conversation(openid),
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
