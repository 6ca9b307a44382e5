//! `GET /wechat/{app}` (URL verification) and `POST /wechat/{app}` (message push).

use tracing::{Instrument, info, warn};

use crate::app::App;
use crate::config::{AppKind, WechatApp};
use crate::dedupe;
use crate::http::{Request, Response};
use crate::keys;
use crate::ledger;
use crate::oa;
use crate::obs;
use crate::store::{StoreError, Table, Write};
use crate::wechat::message::{Event, Format, MessageKind};
use crate::wechat::push::{self, Inbound, Mode, PushError};
use crate::wechat::reply::{self, EncryptedReply};

const RETRY: &str = "temporarily unable to record the push; WeChat will retry";

fn resolve<'a>(req: &Request, app: &'a App) -> Result<&'a WechatApp, Response> {
    let name = req.path_param("app", "/wechat/").unwrap_or_default();
    let kind = AppKind::parse(&name).ok_or_else(|| {
        Response::error(
            404,
            "unknown_app",
            "no such WeChat app (use /wechat/mp or /wechat/oa)",
        )
    })?;
    app.config.app(kind).ok_or_else(|| {
        warn!(
            app = kind.as_str(),
            decision = "refused",
            reason = "app_not_configured"
        );
        Response::error(
            404,
            "app_not_configured",
            "this WeChat app is not configured",
        )
    })
}

fn refuse(e: &PushError, app: AppKind) -> Response {
    warn!(
        app = app.as_str(),
        decision = "refused",
        reason = e.code(),
        status = e.status(),
        "{e}"
    );
    Response::error(e.status(), e.code(), &e.to_string())
}

/// URL verification: answers the raw `echostr` as `text/plain` when the signature holds.
pub async fn verify(req: &Request, app: &App) -> Response {
    let span =
        tracing::info_span!("request", request_id = %req.request_id, function = "wechat-verify");
    async {
        if req.method != "GET" {
            return Response::error(405, "method_not_allowed", "use GET for URL verification");
        }
        let wapp = match resolve(req, app) {
            Ok(a) => a,
            Err(r) => return r,
        };
        match push::verify_url(wapp, req) {
            Ok(echostr) => {
                info!(app = wapp.kind.as_str(), decision = "verified");
                Response::text(200, echostr.as_bytes().to_vec())
            }
            Err(e) => refuse(&e, wapp.kind),
        }
    }
    .instrument(span)
    .await
}

/// What a push leads to: writes applied atomically with the dedupe marker, and the passive
/// reply text (if any).
#[derive(Debug, Default)]
pub struct Plan {
    pub writes: Vec<Write>,
    pub reply: Option<String>,
    pub decision: &'static str,
}

/// Message push: verify, decrypt, dedupe, apply, reply.
pub async fn event(req: &Request, app: &App) -> Response {
    let span =
        tracing::info_span!("request", request_id = %req.request_id, function = "wechat-event");
    async {
        if req.method != "POST" {
            return Response::error(405, "method_not_allowed", "use POST for message push");
        }
        let wapp = match resolve(req, app) {
            Ok(a) => a,
            Err(r) => return r,
        };
        let inbound = match push::open(wapp, req, app.now(), app.config.push_window_secs) {
            Ok(i) => i,
            Err(e) => return refuse(&e, wapp.kind),
        };
        let msg = &inbound.message;
        let key = dedupe::delivery_key(msg);
        let plan = match plan(wapp.kind, &inbound, &key, app).await {
            Ok(p) => p,
            Err(e) => return super::store_failure(&e, RETRY),
        };
        let fields = (
            wapp.kind.as_str(),
            msg.msg_type(),
            msg.event_name().unwrap_or(""),
        );
        if plan.writes.is_empty() && plan.reply.is_none() {
            info!(
                app = fields.0,
                msg_type = fields.1,
                event = fields.2,
                mode = inbound.mode.as_str(),
                decision = plan.decision
            );
            return Response::text(200, "success");
        }
        let now = app.now();
        let mut writes = vec![dedupe::marker(
            wapp.kind.as_str(),
            &key,
            now,
            app.config.dedupe_ttl_secs,
            plan.reply.as_deref(),
        )];
        writes.extend(plan.writes);
        crate::due::watch_new(app, &mut writes);
        let reply_text = match app.store.transact(writes).await {
            Ok(()) => {
                info!(
                    app = fields.0,
                    msg_type = fields.1,
                    event = fields.2,
                    mode = inbound.mode.as_str(),
                    decision = plan.decision
                );
                plan.reply
            }
            Err(StoreError::ConditionFailed { index: 0 }) => {
                obs::metric("DedupeHits", &[("Source", "wechat")], 1.0);
                let marker = app
                    .store
                    .get(
                        Table::State,
                        &keys::dedupe(wapp.kind.as_str(), &dedupe::digest(&key)),
                        keys::ONE,
                    )
                    .await
                    .ok()
                    .flatten();
                info!(
                    app = fields.0,
                    msg_type = fields.1,
                    event = fields.2,
                    decision = "duplicate",
                    "retry already applied"
                );
                marker.and_then(|m| m.s("reply").map(str::to_owned))
            }
            Err(e) => return super::store_failure(&e, RETRY),
        };
        match reply_text {
            Some(text) => render_reply(wapp, &inbound, &text, now),
            None => Response::text(200, "success"),
        }
    }
    .instrument(span)
    .await
}

/// A passive text reply, encrypted when the push was (safe mode requires it).
fn render_reply(wapp: &WechatApp, inbound: &Inbound, text: &str, now: i64) -> Response {
    let m = &inbound.message;
    let plain = reply::text_xml(&m.from_user, &m.to_user, now, text);
    match (inbound.mode, &wapp.crypto) {
        (Mode::Aes, Some(crypto)) => {
            let sealed = EncryptedReply::seal(
                crypto,
                wapp.token.expose(),
                plain.as_bytes(),
                now,
                &inbound.nonce,
                None,
            );
            match inbound.format {
                Format::Json => Response::new(200, "application/json", sealed.to_json()),
                Format::Xml => Response::xml(sealed.to_xml()),
            }
        }
        _ => Response::xml(plain),
    }
}

/// Decides the effect of a verified push. Reads happen here; writes are returned so that they
/// commit atomically with the dedupe marker.
async fn plan(
    app_kind: AppKind,
    inbound: &Inbound,
    delivery: &str,
    app: &App,
) -> Result<Plan, StoreError> {
    let msg = &inbound.message;
    let now = app.now();
    let openid = msg.from_user.as_str();
    Ok(match &msg.kind {
        MessageKind::Event(Event::SubscribeMsgPopup(items)) => Plan {
            writes: ledger::popup_writes(app_kind, openid, items, now),
            decision: "ledger_popup",
            ..Default::default()
        },
        MessageKind::Event(Event::SubscribeMsgChange(items)) => Plan {
            writes: ledger::change_writes(app_kind, openid, items, now),
            decision: "ledger_change",
            ..Default::default()
        },
        MessageKind::Event(Event::SubscribeMsgSent(items)) => Plan {
            writes: ledger::sent_writes(
                app_kind,
                openid,
                items,
                now,
                app.config.outbox_retention_secs,
            ),
            decision: "delivery_recorded",
            ..Default::default()
        },
        MessageKind::Event(Event::Subscribe { .. }) if app_kind == AppKind::Oa => {
            oa::on_follow(app, msg, delivery).await?
        }
        MessageKind::Event(Event::Unsubscribe) if app_kind == AppKind::Oa => {
            oa::on_unfollow(app, msg, delivery).await?
        }
        MessageKind::Event(_) => Plan {
            decision: "ignored_event",
            ..Default::default()
        },
        _ if app_kind == AppKind::Oa => oa::on_user_message(app, msg, delivery).await?,
        MessageKind::Unknown { .. } => Plan {
            decision: "ignored_unknown",
            ..Default::default()
        },
        _ => Plan {
            decision: "accepted",
            ..Default::default()
        },
    })
}
