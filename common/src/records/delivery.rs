//! A subscribe message WeChat took, `wxmsg#<app>#<msgid>`: which outbox item it came from, and
//! the delivery result WeChat reports later (`subscribe_msg_sent_event`, written by
//! [`crate::records::subscription::sent_writes`]).

use crate::config::AppKind;
use crate::records::keys;
use crate::store::{Item, Store, StoreError, TTL_ATTR, Table, Write};

/// Links a msgid WeChat returned to the outbox item it came from.
pub fn sent(
    kind: AppKind,
    msgid: &str,
    outbox_id: &str,
    openid: &str,
    template_id: &str,
    now: i64,
    retention_secs: i64,
) -> Write {
    Write::put(
        Table::State,
        Item::new(keys::wechat_msg(kind, msgid), keys::ONE)
            .with("outbox_id", outbox_id)
            .with("openid", openid)
            .with("template_id", template_id)
            .with("sent_at", now)
            .with(TTL_ATTR, now + retention_secs),
    )
}

/// What WeChat reported about a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub status: String,
    pub errcode: Option<i64>,
    pub at: Option<i64>,
}

/// The delivery result of `msgid`, once WeChat reported it.
pub async fn reported(
    store: &dyn Store,
    kind: AppKind,
    msgid: &str,
) -> Result<Option<Reported>, StoreError> {
    let rec = store
        .get(Table::State, &keys::wechat_msg(kind, msgid), keys::ONE)
        .await?;
    Ok(rec.and_then(|d| {
        Some(Reported {
            status: d.s("delivery_status")?.to_owned(),
            errcode: d.n("delivery_errcode"),
            at: d.n("delivered_at"),
        })
    }))
}
