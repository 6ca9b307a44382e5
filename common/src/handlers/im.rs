//! `POST /im/callback`: IM's third-party callbacks. Authenticated (SdkAppid; Sign/RequestTime when
//! a token is configured), answered well inside IM's 2 s, and never blocking a message:
//! `BeforeSendMsg` is always allowed, whatever happens here.

use tracing::{Instrument, info, warn};

use crate::app::App;
use crate::config::NotifyTrigger;
use crate::http::{Request, Response};
use crate::im::callback::{self, Callback, OK_BODY};
use crate::keys;
use crate::notify::policy::{self, Decision};
use crate::oa;
use crate::presence;
use crate::store::{StoreError, Table, Update, Write};

const MAX_BODY_BYTES: usize = 64 * 1024;

fn ok() -> Response {
    Response::json_raw(200, OK_BODY)
}

fn unavailable(e: &StoreError) -> Response {
    warn!(decision = "retry_later", reason = %e, "store failure");
    Response::error(
        503,
        "store_unavailable",
        "temporarily unable to record the callback",
    )
}

pub async fn callback(req: &Request, app: &App) -> Response {
    let span =
        tracing::info_span!("request", request_id = %req.request_id, function = "im-callback");
    async {
        if req.method != "POST" {
            return Response::error(405, "method_not_allowed", "use POST");
        }
        let Some(im) = &app.config.im else {
            warn!(decision = "refused", reason = "im_not_configured");
            return Response::error(404, "im_not_configured", "IM is not configured (IM_SDKAPPID)");
        };
        if req.body.len() > MAX_BODY_BYTES {
            warn!(decision = "refused", reason = "body_too_large");
            return Response::error(413, "body_too_large", "request body exceeds 64 KiB");
        }
        if let Err(e) = callback::authenticate(im, req, app.now()) {
            warn!(decision = "refused", reason = e.code(), "{e}");
            return Response::error(401, e.code(), &e.to_string());
        }
        let cb = match callback::parse(req.query("CallbackCommand"), &req.body) {
            Ok(cb) => cb,
            Err(e) => {
                warn!(decision = "refused", reason = "malformed_callback", "{e}");
                return Response::error(400, "malformed_callback", &e.to_string());
            }
        };
        let trigger = app.config.notify.as_ref().map(|n| n.trigger);
        match cb {
            Callback::StateChange(sc) => {
                let platform = req.query("OptPlatform");
                match presence::record(&*app.store, &sc, platform, app.now()).await {
                    Ok(applied) => {
                        if applied && sc.action == "Login" {
                            // The user is back: whatever was waiting has now been seen.
                            let w = Write::update(
                                Table::State,
                                &keys::notify_state(&sc.user),
                                keys::ONE,
                                vec![Update::set("pending", 0)],
                            );
                            if let Err(e) = app.store.write(w).await {
                                return unavailable(&e);
                            }
                        }
                        let decision = if applied { "presence_recorded" } else { "presence_stale_ignored" };
                        info!(command = "State.StateChange", action = %sc.action, decision);
                        ok()
                    }
                    Err(e) => unavailable(&e),
                }
            }
            Callback::C2cAfterSend(m) => {
                match oa::on_im_message(app, &m).await {
                    Ok(Some(decision)) => {
                        info!(command = "C2C.CallbackAfterSendMsg", decision);
                        return ok();
                    }
                    Ok(None) => {}
                    Err(e) => return unavailable(&e),
                }
                if trigger != Some(NotifyTrigger::AfterSend) && trigger.is_some() {
                    info!(command = "C2C.CallbackAfterSendMsg", decision = "trigger_is_before_send");
                    return ok();
                }
                match policy::on_message(app, &m).await {
                    Ok(d) => {
                        log_decision("C2C.CallbackAfterSendMsg", &d);
                        ok()
                    }
                    Err(e) => unavailable(&e),
                }
            }
            Callback::C2cBeforeSend(m) => {
                if trigger == Some(NotifyTrigger::BeforeSend) {
                    match policy::on_message(app, &m).await {
                        Ok(d) => log_decision("C2C.CallbackBeforeSendMsg", &d),
                        // Never block delivery: the message goes through whatever happened here.
                        Err(e) => warn!(command = "C2C.CallbackBeforeSendMsg", decision = "allowed_despite_error", reason = %e),
                    }
                } else {
                    info!(command = "C2C.CallbackBeforeSendMsg", decision = "allowed");
                }
                ok()
            }
            Callback::Other(command) => {
                info!(command = %command, decision = "acknowledged_unhandled");
                ok()
            }
        }
    }
    .instrument(span)
    .await
}

fn log_decision(command: &str, d: &Decision) {
    match d {
        Decision::Queued { id } => {
            info!(command, decision = "notification_queued", outbox_id = %id)
        }
        Decision::Skipped(reason) => info!(command, decision = "notification_skipped", reason),
    }
}
