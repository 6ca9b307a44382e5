//! `POST /im/callback`: IM's third-party callbacks. Authenticated (SdkAppid; Sign/RequestTime when
//! a token is configured), answered well inside IM's 2 s, and never blocking a message:
//! `BeforeSendMsg` (any before-callback) is always answered OK, whatever happens here, even when
//! the request is refused as unauthenticated or unreadable.

use tracing::{Instrument, info, warn};

use crate::app::App;
use crate::config::NotifyTrigger;
use crate::http::{Request, Response};
use crate::im::callback::{self, Callback, OK_BODY};
use crate::notify::deliver;
use crate::notify::policy::{self, Decision};
use crate::oa;
use crate::obs;
use crate::presence;

const MAX_BODY_BYTES: usize = 64 * 1024;
const RETRY: &str = "temporarily unable to record the callback";

fn ok() -> Response {
    Response::json_raw(200, OK_BODY)
}

/// Whether a refusal must still answer OK: with the console's "block on failure" policy, any
/// non-OK answer to a before-callback blocks the user's message, and this service never wants to
/// block one. Nothing is done for such a request beyond logging why it was refused.
fn never_blocks(command: Option<&str>) -> bool {
    command.is_some_and(|c| c.contains(".CallbackBefore"))
}

/// The command a request claims to be: IM puts it in the query; the body's copy is only read
/// (without acting on anything) when the query lacks it.
fn claimed_command(req: &Request) -> Option<String> {
    if let Some(c) = req.query("CallbackCommand").filter(|c| !c.is_empty()) {
        return Some(c.to_owned());
    }
    if req.body.len() > MAX_BODY_BYTES {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&req.body).ok()?;
    v["CallbackCommand"].as_str().map(str::to_owned)
}

fn refuse(before: bool, status: u16, code: &str, message: &str) -> Response {
    if before {
        warn!(
            decision = "refused_allowed",
            reason = code,
            status,
            "{message}; answered OK so that IM delivers the message"
        );
        return ok();
    }
    warn!(decision = "refused", reason = code, status, "{message}");
    Response::error(status, code, message)
}

pub async fn callback(req: &Request, app: &App) -> Response {
    let span =
        tracing::info_span!("request", request_id = %req.request_id, function = "im-callback");
    async {
        if req.method != "POST" {
            return Response::error(405, "method_not_allowed", "use POST");
        }
        let before = never_blocks(claimed_command(req).as_deref());
        let Some(im) = &app.config.im else {
            return refuse(before, 404, "im_not_configured", "IM is not configured (IM_SDKAPPID)");
        };
        if req.body.len() > MAX_BODY_BYTES {
            return refuse(before, 413, "body_too_large", "request body exceeds 64 KiB");
        }
        if let Err(e) = callback::authenticate(im, req, app.now()) {
            return refuse(before, 401, e.code(), &e.to_string());
        }
        let cb = match callback::parse(req.query("CallbackCommand"), &req.body) {
            Ok(cb) => cb,
            Err(e) => return refuse(before, 400, "malformed_callback", &e.to_string()),
        };
        let trigger = app.config.notify.as_ref().map(|n| n.trigger);
        match cb {
            Callback::StateChange(sc) => {
                let platform = req.query("OptPlatform");
                match presence::record(&*app.store, &sc, platform, app.now()).await {
                    Ok(applied) => {
                        if applied && sc.action == "Login" {
                            // The user is back: whatever was waiting has now been seen, and the
                            // next offline period starts with a fresh debounce window.
                            let w = deliver::login_reset(&sc.user, app.now());
                            if let Err(e) = app.store.write(w).await {
                                return super::store_failure(&e, RETRY);
                            }
                        }
                        let decision = if applied { "presence_recorded" } else { "presence_stale_ignored" };
                        info!(command = "State.StateChange", action = %sc.action, decision);
                        ok()
                    }
                    Err(e) => super::store_failure(&e, RETRY),
                }
            }
            Callback::C2cAfterSend(m) => {
                match oa::on_im_message(app, &m).await {
                    Ok(Some(decision)) => {
                        if decision == "duplicate_callback" {
                            obs::metric("DedupeHits", &[("Source", "im")], 1.0);
                        }
                        info!(command = "C2C.CallbackAfterSendMsg", decision);
                        return ok();
                    }
                    Ok(None) => {}
                    Err(e) => return super::store_failure(&e, RETRY),
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
                    Err(e) => super::store_failure(&e, RETRY),
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
