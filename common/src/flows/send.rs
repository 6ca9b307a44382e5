//! One subscribe message, the way every path sends it (merged notifications, admin sends, the
//! customer-service fallback): spend a credit first (conditional decrement), send, and settle the
//! credit by the answer — kept when WeChat took the message, zeroed on 43101, given back when the
//! failure was not the user's.
//!
//! **Ambiguous failures are neither refunded nor retried.** WeChat's send has no idempotency key:
//! when the request may have reached it but no answer came back (a timeout after the request
//! went out, a connection broken mid-way, an unreadable answer, a gateway's 504), a retry could
//! deliver the same notification twice. Such a send ends `failed` with the reason
//! `maybe_sent: <what happened>`: the credit stays spent (WeChat may have consumed it), and for
//! merged notifications the debounce window and the count are treated as told. The cost of the
//! rare case where WeChat did not deliver is one missed notification, bounded by the next one;
//! the alternative would be duplicates that also consume the user's credits. Failures that prove
//! nothing was done (a refused connection, an errcode, HTTP 502/503) are retried as before.

use serde_json::Value;
use tracing::{info, warn};

use crate::app::{App, CallError};
use crate::config::AppKind;
use crate::obs;
use crate::protocol::wechat::api::ErrorClass;
use crate::records::subscription;
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    Sent {
        msgid: String,
    },
    /// No credit for (openid, template): nothing was sent.
    NoCredit,
    /// WeChat refused for good (the reason is its errcode or our validation).
    Failed {
        reason: String,
    },
    /// Worth another attempt; the credit has been given back.
    Retry {
        reason: String,
        after_secs: u64,
    },
    /// WeChat's daily quota is used up (45009): the credit has been given back, and the send
    /// waits for the quota's reset at `until` (the caller parks the item).
    Parked {
        reason: String,
        until: i64,
    },
    /// WeChat may have delivered it (see the module docs): not refunded, never retried.
    MaybeSent {
        reason: String,
    },
}

/// The request body for WeChat: mini-program `subscribe/send`, or the official account's
/// `subscribe/bizsend` (订阅通知), which takes the same data.
pub fn body(
    openid: &str,
    template_id: &str,
    data: &Value,
    page: Option<&str>,
    state: Option<&str>,
    lang: Option<&str>,
) -> Value {
    let mut b = serde_json::json!({ "touser": openid, "template_id": template_id, "data": data });
    if let Some(p) = page.filter(|p| !p.is_empty()) {
        b["page"] = Value::String(p.to_owned());
    }
    if let Some(s) = state {
        b["miniprogram_state"] = Value::String(s.to_owned());
    }
    if let Some(l) = lang {
        b["lang"] = Value::String(l.to_owned());
    }
    b
}

pub async fn send(
    app: &App,
    kind: AppKind,
    openid: &str,
    template_id: &str,
    body: &Value,
) -> Result<SendOutcome, StoreError> {
    let store = &*app.store;
    let now = app.now();
    if !subscription::spend(store, kind, openid, template_id, now).await? {
        return Ok(SendOutcome::NoCredit);
    }
    let api = &app.wechat;
    let result = app
        .wechat_call(kind, |token| async move {
            match kind {
                AppKind::Mp => api.send_subscribe(&token, body).await,
                AppKind::Oa => api.send_oa_subscribe(&token, body).await,
            }
        })
        .await;
    Ok(match result {
        Ok(msgid) => {
            info!(
                app = kind.as_str(),
                decision = "subscribe_sent",
                template_id,
                "sent"
            );
            SendOutcome::Sent { msgid }
        }
        Err(e) => settle(app, kind, openid, template_id, &e).await?,
    })
}

async fn settle(
    app: &App,
    kind: AppKind,
    openid: &str,
    template_id: &str,
    e: &CallError,
) -> Result<SendOutcome, StoreError> {
    let store = &*app.store;
    let now = app.now();
    let reason = e.reason();
    warn!(app = kind.as_str(), decision = "subscribe_failed", reason = %reason, "{e}");
    if e.errcode() == Some(43101) {
        // WeChat says there is no subscription, whatever was counted: trust it.
        store
            .write(subscription::zero(kind, openid, template_id, now, "43101"))
            .await?;
        return Ok(SendOutcome::Failed { reason });
    }
    if let CallError::Api(api) = e
        && api.may_have_been_delivered()
    {
        return Ok(SendOutcome::MaybeSent {
            reason: format!("maybe_sent: {reason}"),
        });
    }
    store
        .write(subscription::refund(kind, openid, template_id, now))
        .await?;
    if e.errcode() == Some(45009) {
        let until = crate::records::due::next_quota_reset(now);
        warn!(app = kind.as_str(), decision = "parked", reason = %reason, until, "WeChat's daily send quota is used up; sends wait for its reset");
        return Ok(SendOutcome::Parked { reason, until });
    }
    Ok(match e.class() {
        ErrorClass::Retryable { after_secs } => SendOutcome::Retry { reason, after_secs },
        _ => {
            obs::metric("SendFailures", &[("ErrCode", &reason)], 1.0);
            SendOutcome::Failed { reason }
        }
    })
}
