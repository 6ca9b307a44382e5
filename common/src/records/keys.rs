//! Every key of the single-table design in one place, so that their shapes are documented once
//! and cannot drift between writers and readers.

use sha1::{Digest, Sha1};

use crate::config::AppKind;

/// Sort key of the items that are alone under their partition key.
pub const ONE: &str = "-";

/// A delivery already applied: `dedupe#<app>#<sha1 of the delivery key>`.
pub fn dedupe(scope: &str, digest: &str) -> String {
    format!("dedupe#{scope}#{digest}")
}

/// The subscription ledger of one user: one item per template under it.
pub fn subscriptions(app: AppKind, openid: &str) -> String {
    format!("sub#{app}#{openid}")
}

pub fn template(template_id: &str) -> String {
    format!("tpl#{template_id}")
}

/// A subscribe message WeChat accepted, by its msgid, for the delivery result event.
pub fn wechat_msg(app: AppKind, msgid: &str) -> String {
    format!("wxmsg#{app}#{msgid}")
}

/// The cached access token and its refresh lease.
pub fn access_token(app: AppKind) -> String {
    format!("token#{app}")
}

/// IM user → WeChat openid (sort key = app), and the same user's presence (sort keys
/// [`presence_sk`]): one partition, so that the offline check reads both in one strongly
/// consistent Query (one round trip and one read unit instead of two of each). The partition
/// keeps its `bind#im#` name because the bindings are the durable half; presence is rebuilt by
/// the next state change.
pub fn binding_by_user(user_id: &str) -> String {
    format!("bind#im#{user_id}")
}

/// What every presence sort key starts with, under [`binding_by_user`].
pub const PRESENCE: &str = "presence#";

/// The sort key of one platform's presence, from `State.StateChange`.
pub fn presence_sk(platform: &str) -> String {
    format!("{PRESENCE}{platform}")
}

/// WeChat openid → IM user.
pub fn binding_by_openid(app: AppKind, openid: &str) -> String {
    format!("bind#{app}#{openid}")
}

/// The notification merge state of one recipient.
pub fn notify_state(user_id: &str) -> String {
    format!("notify#{user_id}")
}

/// The notifications waiting for one recipient, one item per message (see
/// [`crate::records::waiting`]).
pub fn waiting(user_id: &str) -> String {
    format!("wait#{user_id}")
}

/// An official-account follower's conversation with the agents.
pub fn conversation(openid: &str) -> String {
    conversation_of(AppKind::Oa, openid)
}

/// A user's customer-service conversation with the agents of `app`, by the IM account that
/// speaks for them (an official-account follower's openid; a mini-program user's bound IM
/// user, or their openid).
pub fn conversation_of(app: AppKind, im_user: &str) -> String {
    format!("conv#{app}#{im_user}")
}

/// The agent replies to a follower waiting to be merged into one customer-service message.
pub fn kf_burst(app: AppKind, im_user: &str) -> String {
    format!("kfq#{app}#{im_user}")
}

/// Round-robin counter that spreads new conversations across agents.
pub const AGENT_CURSOR: &str = "agents#cursor";

/// The round-robin counter of `app`'s agents (the official account's keeps its older key).
pub fn agent_cursor(app: AppKind) -> String {
    match app {
        AppKind::Oa => AGENT_CURSOR.to_owned(),
        AppKind::Mp => format!("{AGENT_CURSOR}#{app}"),
    }
}

/// A used `wx.login` code.
pub fn login_code(digest: &str) -> String {
    format!("code#{digest}")
}

/// An outbox item.
pub fn outbox(id: &str) -> String {
    format!("out#{id}")
}

/// Deferred work due in one minute (UTC `yyyymmddhhmm`); the sort key is an outbox id.
pub fn due(bucket: &str) -> String {
    format!("due#{bucket}")
}

/// One shard of a minute's due records: `due#<yyyymmddhhmm>#<shard>`.
pub fn due_shard(bucket: &str, shard: u32) -> String {
    format!("due#{bucket}#{shard:02}")
}

/// How far the sweep has got through the due records.
pub const SWEEP_CURSOR: &str = "sweep#cursor";

/// A deterministic id from what makes a job unique, so that a retried webhook writes the same
/// item and the conditional put turns the retry into a no-op.
pub fn id_for(parts: &[&str]) -> String {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..16])
}

/// A fresh random id (for admin sends, which have no natural key).
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}
