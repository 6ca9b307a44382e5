//! IM user ↔ WeChat openid, stored both ways: `bind#im#<user>` (sort key = app) and
//! `bind#<app>#<openid>`. Rebinding moves the openid: the previous owner of either side loses
//! its half in the same transaction, so the two directions never disagree.

use crate::config::AppKind;
use crate::records::keys;
use crate::store::{Cond, Item, Store, StoreError, Table, Update, Write};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub user_id: String,
    pub app: AppKind,
    pub openid: String,
    pub unionid: Option<String>,
    pub bound_at: i64,
}

impl Binding {
    pub(crate) fn from_item(user_id: &str, app: AppKind, i: &Item) -> Option<Binding> {
        Some(Binding {
            user_id: user_id.to_owned(),
            app,
            openid: i.s("openid")?.to_owned(),
            unionid: i.s("unionid").map(str::to_owned),
            bound_at: i.n("bound_at").unwrap_or(0),
        })
    }
}

pub async fn by_user(
    store: &dyn Store,
    user_id: &str,
    app: AppKind,
) -> Result<Option<Binding>, StoreError> {
    let item = store
        .get(Table::State, &keys::binding_by_user(user_id), app.as_str())
        .await?;
    Ok(item.and_then(|i| Binding::from_item(user_id, app, &i)))
}

pub async fn by_openid(
    store: &dyn Store,
    app: AppKind,
    openid: &str,
) -> Result<Option<String>, StoreError> {
    let item = store
        .get(
            Table::State,
            &keys::binding_by_openid(app, openid),
            keys::ONE,
        )
        .await?;
    Ok(item.and_then(|i| owner(&i)))
}

/// The IM user an openid's binding names.
fn owner(i: &Item) -> Option<String> {
    i.s("user_id").map(str::to_owned)
}

/// The writes that bind `user_id` to `openid` for `app`, moving either side away from a previous
/// partner, and the user's previous binding when it pointed elsewhere. The caller commits them in
/// one transaction (with whatever else belongs with them). The two puts are conditional on what
/// was read, so a concurrent rebind makes the transaction fail on a condition instead of leaving
/// the two directions disagreeing.
pub async fn bind_writes(
    store: &dyn Store,
    user_id: &str,
    app: AppKind,
    openid: &str,
    unionid: Option<&str>,
    now: i64,
) -> Result<(Vec<Write>, Option<Binding>), StoreError> {
    // Both directions in one batch read: neither depends on the other.
    let (user_key, openid_key) = (
        keys::binding_by_user(user_id),
        keys::binding_by_openid(app, openid),
    );
    let mut read = store
        .get_many(
            Table::State,
            &[(&user_key, app.as_str()), (&openid_key, keys::ONE)],
        )
        .await?
        .into_iter();
    let previous = read
        .next()
        .flatten()
        .and_then(|i| Binding::from_item(user_id, app, &i));
    let previous_owner = read.next().flatten().and_then(|i| owner(&i));
    let unchanged = |attr: &str, was: Option<&str>| match was {
        Some(v) => Cond::eq(attr, v),
        None => Cond::NotExists,
    };
    let mut ws = vec![
        Write::put(
            Table::State,
            Item::new(keys::binding_by_user(user_id), app.as_str())
                .with("user_id", user_id)
                .with("app", app.as_str())
                .with("openid", openid)
                .with_opt("unionid", unionid)
                .with("bound_at", now),
        )
        .when(unchanged(
            "openid",
            previous.as_ref().map(|p| p.openid.as_str()),
        )),
        Write::put(
            Table::State,
            Item::new(keys::binding_by_openid(app, openid), keys::ONE)
                .with("user_id", user_id)
                .with("app", app.as_str())
                .with("openid", openid)
                .with("bound_at", now),
        )
        .when(unchanged("user_id", previous_owner.as_deref())),
    ];
    if let Some(p) = &previous
        && p.openid != openid
    {
        ws.push(Write::delete(
            Table::State,
            &keys::binding_by_openid(app, &p.openid),
            keys::ONE,
        ));
    }
    if let Some(owner) = &previous_owner
        && owner != user_id
    {
        ws.push(Write::delete(
            Table::State,
            &keys::binding_by_user(owner),
            app.as_str(),
        ));
    }
    Ok((ws, previous.filter(|p| p.openid != openid)))
}

/// Binds `user_id` to `openid` for `app` (see [`bind_writes`]).
pub async fn bind(
    store: &dyn Store,
    user_id: &str,
    app: AppKind,
    openid: &str,
    unionid: Option<&str>,
    now: i64,
) -> Result<Option<Binding>, StoreError> {
    let (ws, previous) = bind_writes(store, user_id, app, openid, unionid, now).await?;
    store.transact(ws).await?;
    Ok(previous)
}

/// An official-account follower's IM identity is their openid: the binding in both directions,
/// with the follower's status (`active`, `ended`).
pub fn follower_writes(openid: &str, status: &str, now: i64) -> Vec<Write> {
    let app = AppKind::Oa;
    let fields = || {
        vec![
            Update::set("user_id", openid),
            Update::set("app", app.as_str()),
            Update::set("openid", openid),
            Update::set("status", status),
            Update::set_if_absent("bound_at", now),
        ]
    };
    vec![
        Write::update(
            Table::State,
            &keys::binding_by_user(openid),
            app.as_str(),
            fields(),
        ),
        Write::update(
            Table::State,
            &keys::binding_by_openid(app, openid),
            keys::ONE,
            fields(),
        ),
    ]
}
