//! `GET /wechat/{app}` (URL verification) and `POST /wechat/{app}` (message push).

use tracing::{info, warn};

use crate::app::App;
use crate::config::{AppKind, WechatApp};
use crate::flows;
use crate::http::{Request, Response};
use crate::protocol::wechat::message::Format;
use crate::protocol::wechat::push::{self, Inbound, Mode, PushError};
use crate::protocol::wechat::reply::{self, EncryptedReply};

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

/// The method check, then the app the path names.
fn opening<'a>(
    req: &Request,
    app: &'a App,
    method: &str,
    hint: &str,
) -> Result<&'a WechatApp, Response> {
    super::require(req, method, hint)?;
    resolve(req, app)
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
    super::traced(&req.request_id, "wechat-verify", async {
        let wapp = match opening(req, app, "GET", "use GET for URL verification") {
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
    })
    .await
}

/// Message push: verify, decrypt, then the flow (dedupe, apply), then the reply. A verified push
/// the store cannot take is spooled and answered `success` (see [`super::spool`]).
pub async fn event(req: &Request, app: &App) -> Response {
    event_as(req, app, super::Arrival::Live).await
}

/// [`event`] for a push as it arrived (live, or replayed from the spool).
pub async fn event_as(req: &Request, app: &App, arrival: super::Arrival) -> Response {
    super::traced(&req.request_id, "wechat-event", async {
        let wapp = match opening(req, app, "POST", "use POST for message push") {
            Ok(a) => a,
            Err(r) => return r,
        };
        let checked_at = arrival.checked_at(app);
        let inbound = match push::open(wapp, req, checked_at, app.config.push_window_secs) {
            Ok(i) => i,
            Err(e) => return refuse(&e, wapp.kind),
        };
        let msg = &inbound.message;
        let answer = match arrival {
            super::Arrival::Live => flows::push::Answer::Passive,
            super::Arrival::Replay { .. } => flows::push::Answer::Late,
        };
        let done = match flows::push::ingest_as(app, wapp.kind, msg, answer).await {
            Ok(d) => d,
            Err(e) => {
                let accepted = Response::text(200, "success");
                return super::unstored(app, req, arrival, "wechat-event", &e, accepted, RETRY)
                    .await;
            }
        };
        info!(
            app = wapp.kind.as_str(),
            msg_type = msg.msg_type(),
            event = msg.event_name().unwrap_or(""),
            mode = inbound.mode.as_str(),
            decision = done.decision.as_str()
        );
        match done.reply {
            Some(text) => render_reply(wapp, &inbound, &text, app.now()),
            None => Response::text(200, "success"),
        }
    })
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
