//! The subscription ledger: per (app, openid, template) the number of send credits, the last
//! status, and when things happened. Every accept adds one credit; a send spends one with a
//! conditional decrement; a change-event reject or a 43101 zeroes them.

use std::collections::BTreeMap;

use crate::config::AppKind;
use crate::protocol::wechat::message::{SentItem, SubscribeItem};
use crate::records::keys;
use crate::store::{Cond, Item, Store, StoreError, Table, Update, Write};

/// The merged effect of one event's items on one template (an event may list a template twice).
#[derive(Debug, Default)]
struct Tally {
    accepts: i64,
    last_status: String,
}

fn tally(items: &[SubscribeItem]) -> BTreeMap<&str, Tally> {
    let mut m: BTreeMap<&str, Tally> = BTreeMap::new();
    for it in items {
        let t = m.entry(it.template_id.as_str()).or_default();
        if it.status == "accept" {
            t.accepts += 1;
        }
        t.last_status = it.status.clone();
    }
    m
}

fn base(app: AppKind, openid: &str, template_id: &str, now: i64) -> Vec<Update> {
    vec![
        Update::set("app", app.as_str()),
        Update::set("openid", openid),
        Update::set("template_id", template_id),
        Update::set("updated_at", now),
        Update::set_if_absent("created_at", now),
    ]
}

/// `subscribe_msg_popup_event`: each accept adds a credit; other answers (reject, ban, filter)
/// record the refusal but leave earlier credits, which WeChat still honours.
pub fn popup_writes(app: AppKind, openid: &str, items: &[SubscribeItem], now: i64) -> Vec<Write> {
    let pk = keys::subscriptions(app, openid);
    tally(items)
        .into_iter()
        .map(|(tpl, t)| {
            let mut u = base(app, openid, tpl, now);
            u.push(Update::set("status", t.last_status.as_str()));
            if t.accepts > 0 {
                u.push(Update::add("credits", t.accepts));
                u.push(Update::add("accepts", t.accepts));
                u.push(Update::set("last_accept_at", now));
            } else {
                u.push(Update::add("credits", 0));
                u.push(Update::set("last_reject_at", now));
            }
            Write::update(Table::State, &pk, &keys::template(tpl), u)
        })
        .collect()
}

/// `subscribe_msg_change_event`: WeChat only pushes cancellations; a reject zeroes the credits.
pub fn change_writes(app: AppKind, openid: &str, items: &[SubscribeItem], now: i64) -> Vec<Write> {
    let pk = keys::subscriptions(app, openid);
    tally(items)
        .into_iter()
        .map(|(tpl, t)| {
            let mut u = base(app, openid, tpl, now);
            u.push(Update::set("status", t.last_status.as_str()));
            if t.last_status == "reject" {
                u.push(Update::set("credits", 0));
                u.push(Update::set("last_reject_at", now));
            } else {
                u.push(Update::add("credits", 0));
            }
            Write::update(Table::State, &pk, &keys::template(tpl), u)
        })
        .collect()
}

/// `subscribe_msg_sent_event`: the asynchronous delivery result, recorded against the msgid the
/// send returned (and so against the outbox item that send belonged to).
pub fn sent_writes(
    app: AppKind,
    openid: &str,
    items: &[SentItem],
    now: i64,
    retention_secs: i64,
) -> Vec<Write> {
    let mut seen = std::collections::BTreeSet::new();
    items
        .iter()
        .filter(|it| seen.insert(it.msg_id.as_str()))
        .map(|it| {
            Write::update(
                Table::State,
                &keys::wechat_msg(app, &it.msg_id),
                keys::ONE,
                vec![
                    Update::set("openid", openid),
                    Update::set("template_id", it.template_id.as_str()),
                    Update::set("delivery_status", it.error_status.as_str()),
                    Update::set("delivery_errcode", it.error_code),
                    Update::set("delivered_at", now),
                    Update::set(crate::store::TTL_ATTR, now + retention_secs),
                ],
            )
        })
        .collect()
}

/// Spends one credit if there is one; `Ok(false)` when there is none.
pub async fn spend(
    store: &dyn Store,
    app: AppKind,
    openid: &str,
    template_id: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let w = Write::update(
        Table::State,
        &keys::subscriptions(app, openid),
        &keys::template(template_id),
        vec![
            Update::add("credits", -1),
            Update::set("last_spent_at", now),
            Update::set("updated_at", now),
        ],
    )
    .when(Cond::ge("credits", 1));
    match store.write(w).await {
        Ok(_) => Ok(true),
        Err(StoreError::ConditionFailed { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives back a credit spent for a send that WeChat did not accept for a reason that is not the
/// user's (busy, quota): the credit is still theirs.
pub fn refund(app: AppKind, openid: &str, template_id: &str, now: i64) -> Write {
    Write::update(
        Table::State,
        &keys::subscriptions(app, openid),
        &keys::template(template_id),
        vec![Update::add("credits", 1), Update::set("updated_at", now)],
    )
}

/// 43101 from a send: WeChat says there is no subscription, whatever we counted.
pub fn zero(app: AppKind, openid: &str, template_id: &str, now: i64, reason: &str) -> Write {
    Write::update(
        Table::State,
        &keys::subscriptions(app, openid),
        &keys::template(template_id),
        vec![
            Update::set("credits", 0),
            Update::set("zeroed_reason", reason),
            Update::set("updated_at", now),
        ],
    )
}

pub async fn get(
    store: &dyn Store,
    app: AppKind,
    openid: &str,
    template_id: &str,
) -> Result<Option<Item>, StoreError> {
    store
        .get(
            Table::State,
            &keys::subscriptions(app, openid),
            &keys::template(template_id),
        )
        .await
}

pub async fn credits(
    store: &dyn Store,
    app: AppKind,
    openid: &str,
    template_id: &str,
) -> Result<i64, StoreError> {
    Ok(get(store, app, openid, template_id)
        .await?
        .and_then(|i| i.n("credits"))
        .unwrap_or(0))
}
