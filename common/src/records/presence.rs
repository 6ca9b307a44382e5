//! Presence from `State.StateChange`, one item per (user, platform) ordered by `EventTime`: a
//! late, older event never overwrites a newer one. A user is online when any platform's latest
//! state is a fresh Login. The items live in the user's binding partition
//! ([`keys::binding_by_user`]), so [`with_binding`] answers both in one request.

use crate::config::AppKind;
use crate::protocol::im::callback::StateChange;
use crate::records::binding::Binding;
use crate::records::keys;
use crate::store::{Cond, Item, Store, StoreError, Table, Update, Write};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Online,
    Offline,
    /// No record, or only a Login older than the staleness limit: the client may have gone
    /// without the callback reaching us (IM does not retry after-event callbacks, and a
    /// reconnect before the old connection's Disconnect means that Disconnect never comes), so
    /// only `query_online_status` can tell. Clients do report leaving: a mini program's
    /// `Disconnect` (`LinkClose`) comes about 5 s after the user leaves it and about 30 s after
    /// WeChat goes to the background, a dropped network's `TimeOut` up to 400 s later (IM's
    /// State.StateChange documentation, cloud.tencent.com/document/product/269/2570).
    Unknown,
}

impl Presence {
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Online => "online",
            Presence::Offline => "offline",
            Presence::Unknown => "unknown",
        }
    }
}

fn state_of(action: &str) -> &'static str {
    match action {
        "Login" => "online",
        "Logout" => "offline",
        // Disconnect is "offline or in the background": either way not looking at the app.
        _ => "disconnected",
    }
}

fn platform_key(p: &str) -> String {
    let p = p.trim().to_ascii_lowercase();
    if p.is_empty() { "unknown".into() } else { p }
}

/// The writes for one state change: the platform it came from, and any devices a Login kicked
/// off. Each is conditional on being newer than what is stored, so each is written on its own.
pub fn change_writes(sc: &StateChange, platform: Option<&str>, now: i64) -> Vec<Write> {
    let pk = keys::binding_by_user(&sc.user);
    let newer = || {
        Cond::Or(vec![
            Cond::lacks("event_time_ms"),
            Cond::lt("event_time_ms", sc.event_time_ms),
        ])
    };
    let this = keys::presence_sk(&platform_key(platform.unwrap_or("")));
    let mut out = vec![
        Write::update(
            crate::store::Table::State,
            &pk,
            &this,
            vec![
                Update::set("user", sc.user.as_str()),
                Update::set("state", state_of(&sc.action)),
                Update::set("action", sc.action.as_str()),
                Update::set("reason", sc.reason.as_str()),
                Update::set("event_time_ms", sc.event_time_ms),
                Update::set("updated_at", now),
            ],
        )
        .when(newer()),
    ];
    for kicked in &sc.kicked {
        let p = keys::presence_sk(&platform_key(kicked));
        if p != this {
            out.push(
                Write::update(
                    Table::State,
                    &pk,
                    &p,
                    vec![
                        Update::set("user", sc.user.as_str()),
                        Update::set("state", "offline"),
                        Update::set("action", "Kicked"),
                        Update::set("reason", "KickedByLogin"),
                        Update::set("event_time_ms", sc.event_time_ms),
                        Update::set("updated_at", now),
                    ],
                )
                .when(newer()),
            );
        }
    }
    out
}

/// Applies a state change; returns false when it was older than what is stored.
///
/// `with_applied` is written in one transaction with this platform's own (conditional) write:
/// what the change implies (a Login's reset of the notification window) happens exactly when
/// the change is applied. Written apart, a failure between the two would leave the presence
/// recorded and the reset lost, and a retry or a replay from the spool would then see the
/// change as already applied and skip the reset for good.
pub async fn record(
    store: &dyn Store,
    sc: &StateChange,
    platform: Option<&str>,
    now: i64,
    with_applied: Option<Write>,
) -> Result<bool, StoreError> {
    let mut applied = false;
    let mut with_applied = with_applied;
    for (i, w) in change_writes(sc, platform, now).into_iter().enumerate() {
        let result = match with_applied.take().filter(|_| i == 0) {
            Some(extra) => store.transact(vec![w, extra]).await,
            None => store.write(w).await.map(|_| ()),
        };
        match result {
            Ok(()) => applied |= i == 0,
            Err(StoreError::ConditionFailed { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(applied)
}

/// What the callbacks say about a user now.
pub async fn of(
    store: &dyn Store,
    user: &str,
    now: i64,
    stale_secs: i64,
) -> Result<Presence, StoreError> {
    let items = store
        .query(Table::State, &keys::binding_by_user(user), keys::PRESENCE)
        .await?;
    Ok(judge(items.iter(), now, stale_secs))
}

/// The user's binding for `app` and what the callbacks say about them, from one Query of their
/// partition: the offline check of every IM message needs both.
pub async fn with_binding(
    store: &dyn Store,
    user: &str,
    app: AppKind,
    now: i64,
    stale_secs: i64,
) -> Result<(Option<Binding>, Presence), StoreError> {
    let items = store
        .query(Table::State, &keys::binding_by_user(user), "")
        .await?;
    let binding = items
        .iter()
        .find(|i| i.sk == app.as_str())
        .and_then(|i| Binding::from_item(user, app, i));
    let presence = judge(
        items.iter().filter(|i| i.sk.starts_with(keys::PRESENCE)),
        now,
        stale_secs,
    );
    Ok((binding, presence))
}

fn judge<'a>(items: impl Iterator<Item = &'a Item>, now: i64, stale_secs: i64) -> Presence {
    let mut any = false;
    let mut stale_login = false;
    for i in items {
        any = true;
        if i.s("state") == Some("online") {
            let at = i.n("event_time_ms").unwrap_or(0) / 1000;
            if now - at <= stale_secs {
                return Presence::Online;
            }
            stale_login = true;
        }
    }
    if !any || stale_login {
        Presence::Unknown
    } else {
        Presence::Offline
    }
}
