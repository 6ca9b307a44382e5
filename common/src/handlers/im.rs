//! `POST /im/callback`: IM's third-party callbacks. Authenticated (SdkAppid; Sign/RequestTime when
//! a token is configured), answered well inside IM's 2 s, and never blocking a message:
//! `BeforeSendMsg` (any before-callback) is always answered OK, whatever happens here, even when
//! the request is refused as unauthenticated or unreadable.

use tracing::{info, warn};

use crate::app::App;
use crate::flows;
use crate::flows::callback::Decision;
use crate::flows::policy::Decision as Notification;
use crate::flows::withdraw::Withdrawal;
use crate::http::{Request, Response};
use crate::protocol::im::callback::{self, Callback, OK_BODY};

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
    super::traced(&req.request_id, "im-callback", async {
        if let Err(r) = super::require(req, "POST", "use POST") {
            return r;
        }
        let before = never_blocks(claimed_command(req).as_deref());
        let Some(im) = &app.config.im else {
            return refuse(
                before,
                404,
                "im_not_configured",
                "IM is not configured (IM_SDKAPPID)",
            );
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
        let (command, outcome) = match cb {
            Callback::StateChange(sc) => (
                "State.StateChange",
                flows::callback::state_change(app, &sc, req.query("OptPlatform")).await,
            ),
            Callback::C2cAfterSend(m) => (
                "C2C.CallbackAfterSendMsg",
                flows::callback::after_send(app, &m).await,
            ),
            Callback::C2cBeforeSend(m) => {
                let command = "C2C.CallbackBeforeSendMsg";
                match flows::callback::before_send(app, &m).await {
                    Ok(d) => log_decision(command, &d),
                    // Never block delivery: the message goes through whatever happened here.
                    Err(e) => warn!(command, decision = "allowed_despite_error", reason = %e),
                }
                return ok();
            }
            Callback::C2cRecall(r) => (
                "C2C.CallbackAfterMsgWithDraw",
                flows::callback::recall(app, &r).await,
            ),
            Callback::C2cRead(r) => (
                "C2C.CallbackAfterMsgReport",
                flows::callback::read_report(app, &r).await,
            ),
            Callback::GroupAfterSend(g) => (
                "Group.CallbackAfterSendMsg",
                flows::callback::group_after_send(app, &g).await,
            ),
            Callback::Other(command) => {
                info!(command = %command, decision = "acknowledged_unhandled");
                return ok();
            }
        };
        match outcome {
            Ok(d) => {
                log_decision(command, &d);
                ok()
            }
            Err(e) => super::store_failure(&e, RETRY),
        }
    })
    .await
}

fn log_decision(command: &str, d: &Decision) {
    let decision = d.as_str();
    match d {
        Decision::Notification(Notification::Queued { id }) => {
            info!(command, decision, outbox_id = %id)
        }
        Decision::Notification(Notification::Skipped(reason)) => {
            info!(command, decision, reason = reason.as_str())
        }
        Decision::Withdrawn(w) => info!(
            command,
            decision,
            dropped = w.count(Withdrawal::Dropped),
            uncounted = w.count(Withdrawal::Uncounted),
            already_told = w.count(Withdrawal::AlreadyTold),
            in_flight = w.count(Withdrawal::InFlight),
            duplicate = w.count(Withdrawal::Duplicate),
        ),
        Decision::Group(g) => {
            let reasons: Vec<String> = g
                .decisions
                .iter()
                .map(|(member, d)| match d {
                    Notification::Queued { id } => format!("{member}:queued:{id}"),
                    Notification::Skipped(s) => format!("{member}:{}", s.as_str()),
                })
                .collect();
            info!(
                command,
                decision,
                reason = g.none.map(|s| s.as_str()).unwrap_or(""),
                queued = g.queued(),
                members = %reasons.join(",")
            )
        }
        _ => info!(command, decision),
    }
}
