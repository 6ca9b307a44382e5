//! `POST /notify` and `GET /notify/{id}`: an operator's subscribe message ("your work order is
//! done") to a user named by IM user id or openid. It goes through the same outbox as the offline
//! notifications, so the same rules hold: validated data, one credit spent per send, retries with
//! backoff, and an end state (sent with msgid, skipped or failed with the reason) that
//! `GET /notify/{id}` answers.
//!
//! Only authenticated callers get here: API Gateway's `AWS_IAM` authorizer in production (the
//! verified principal arrives in the request context), or a bearer token equal to
//! `WXIM_ADMIN_TOKEN` (what `wxim serve` requires, since nothing vouches for a local socket).

use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use super::input;
use crate::app::App;
use crate::config::AppKind;
use crate::flows::admin_send::{self, Recipient, Refused, SendState};
use crate::http::{Request, Response};
use crate::protocol::wechat::render;
use crate::records::outbox::{self, AdminSend, Status};

const MAX_BODY_BYTES: usize = 16 * 1024;
const RETRY: &str = "temporarily unable to reach the store; try again";
const STATES: [&str; 3] = ["developer", "trial", "formal"];
const LANGS: [&str; 4] = ["zh_CN", "en_US", "zh_HK", "zh_TW"];

fn refuse(status: u16, code: &str, message: &str) -> Response {
    warn!(decision = "refused", reason = code, status, "{message}");
    Response::error(status, code, message)
}

/// Who is asking: the platform-verified principal, or a holder of the admin bearer token. A
/// bearer token that is presented must be right, whatever else the request carries.
fn authorize(req: &Request, app: &App) -> Result<String, Response> {
    let bearer = req.header("authorization").and_then(|h| {
        let (scheme, token) = h.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    let expected = app
        .config
        .admin_token
        .as_ref()
        .map(|t| t.expose().as_bytes());
    match (bearer, expected) {
        (Some(given), Some(want)) if bool::from(given.as_bytes().ct_eq(want)) => {
            Ok("bearer-token".into())
        }
        (Some(_), _) => {
            let mut r = refuse(401, "unauthorized", "the bearer token is not valid");
            r.headers.push(("www-authenticate".into(), "Bearer".into()));
            Err(r)
        }
        (None, _) => req.principal.clone().ok_or_else(|| {
            let mut r = refuse(
                401,
                "unauthorized",
                "admin routes need an IAM-signed request (SigV4 through API Gateway) or, locally, \
                 Authorization: Bearer <WXIM_ADMIN_TOKEN>",
            );
            r.headers.push(("www-authenticate".into(), "Bearer".into()));
            r
        }),
    }
}

/// The admin-notify function: both routes.
pub async fn notify(req: &Request, app: &App) -> Response {
    super::traced(&req.request_id, "admin-notify", async {
        let caller = match authorize(req, app) {
            Ok(c) => c,
            Err(r) => return r,
        };
        match (req.method.as_str(), req.path_param("id", "/notify/")) {
            ("POST", None) => submit(req, app, &caller).await,
            ("GET", Some(id)) => status(&id, app).await,
            ("GET", None) => Response::error(405, "method_not_allowed", "use GET /notify/{id}"),
            _ => Response::error(
                405,
                "method_not_allowed",
                "use POST /notify or GET /notify/{id}",
            ),
        }
    })
    .await
}

/// A validated send request.
struct SendRequest<'a> {
    app: AppKind,
    user_id: Option<&'a str>,
    openid: Option<&'a str>,
    template_id: &'a str,
    data: Value,
    page: Option<&'a str>,
    state: Option<&'a str>,
    lang: Option<&'a str>,
}

impl<'a> SendRequest<'a> {
    fn parse(body: &'a input::Object, app: &App) -> Result<SendRequest<'a>, Response> {
        let to = body
            .get("to")
            .and_then(Value::as_object)
            .ok_or_else(invalid_recipient)?;
        let user_id = input::opt_string(to, "userId", 32)?;
        let openid = input::opt_string(to, "openid", 128)?;
        if user_id.is_some() == openid.is_some() || to.len() != 1 {
            return Err(invalid_recipient());
        }
        let kind = match input::opt_choice(body, "app", &["mp", "oa"])? {
            Some(a) => AppKind::parse(a).unwrap_or(AppKind::Mp),
            None => app
                .config
                .notify
                .as_ref()
                .map(|n| n.app)
                .unwrap_or(AppKind::Mp),
        };
        if app.config.app(kind).is_none() {
            return Err(Response::error(
                422,
                "app_not_configured",
                &format!("the WeChat app {kind} is not configured"),
            ));
        }
        let template_id = input::string(body, "templateId", 128)?;
        if !template_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Response::error(
                400,
                "invalid_field",
                "\"templateId\" must be a WeChat template id (letters, digits, _ and -)",
            ));
        }
        let data = body.get("data").unwrap_or(&Value::Null);
        let data = render::validate_supplied(data)
            .map_err(|e| Response::error(400, "invalid_data", &e.to_string()))?;
        let state = input::opt_choice(body, "miniprogramState", &STATES)?;
        if state.is_some() && kind != AppKind::Mp {
            return Err(Response::error(
                400,
                "invalid_field",
                "\"miniprogramState\" applies to mini-program messages only",
            ));
        }
        Ok(SendRequest {
            app: kind,
            user_id,
            openid,
            template_id,
            data,
            page: input::opt_string(body, "page", 1024)?,
            state,
            lang: input::opt_choice(body, "lang", &LANGS)?,
        })
    }

    /// What makes two requests the same request, for the idempotency key.
    fn fingerprint(&self, openid: &str) -> String {
        let mut data: Vec<(&String, &Value)> =
            self.data.as_object().into_iter().flatten().collect();
        data.sort_by_key(|(k, _)| *k);
        let data = serde_json::to_string(&data).unwrap_or_default();
        outbox::id_for(&[
            self.app.as_str(),
            openid,
            self.template_id,
            &data,
            self.page.unwrap_or(""),
            self.state.unwrap_or(""),
            self.lang.unwrap_or(""),
        ])
    }
}

fn invalid_recipient() -> Response {
    Response::error(
        400,
        "invalid_recipient",
        "\"to\" must be {\"userId\": …} or {\"openid\": …} (exactly one)",
    )
}

async fn submit(req: &Request, app: &App, caller: &str) -> Response {
    let body = match input::object(&req.body, MAX_BODY_BYTES) {
        Ok(b) => b,
        Err(r) => {
            warn!(decision = "refused", reason = "bad_request");
            return r;
        }
    };
    let send = match SendRequest::parse(&body, app) {
        Ok(s) => s,
        Err(r) => {
            warn!(
                decision = "refused",
                reason = "bad_request",
                status = r.status
            );
            return r;
        }
    };
    let key = req.header("idempotency-key").map(str::trim);
    if key.is_some_and(|k| k.is_empty() || k.len() > 255) {
        return refuse(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 characters",
        );
    }
    let to = match (send.user_id, send.openid) {
        (_, Some(o)) => Recipient::Openid(o.to_owned()),
        (Some(u), None) => Recipient::UserId(u.to_owned()),
        (None, None) => return invalid_recipient(),
    };
    let job = AdminSend {
        app: send.app,
        openid: String::new(),
        template_id: send.template_id.to_owned(),
        data: send.data.to_string(),
        fingerprint: String::new(),
        requested_by: caller.to_owned(),
        user_id: send.user_id.map(str::to_owned),
        page: send.page.map(str::to_owned),
        miniprogram_state: send.state.map(str::to_owned),
        lang: send.lang.map(str::to_owned),
    };
    let queued =
        match admin_send::submit(app, &to, job, key, |openid| send.fingerprint(openid)).await {
            Ok(q) => q,
            Err(Refused::NotBound) => {
                return refuse(
                    422,
                    "not_bound",
                    &format!(
                        "this userId has no {} openid binding (POST /bind first)",
                        send.app
                    ),
                );
            }
            Err(Refused::IdempotencyConflict) => {
                return refuse(
                    409,
                    "idempotency_conflict",
                    "this Idempotency-Key was already used for a different request",
                );
            }
            Err(Refused::Store(e)) => return super::store_failure(&e, RETRY),
        };
    let id = queued.id;
    info!(outbox_id = %id, app = send.app.as_str(), template_id = send.template_id, caller, decision = "send_queued");
    let mut r = Response::json(202, &json!({ "id": id, "status": queued.status.as_str() }));
    r.headers.push(("location".into(), format!("/notify/{id}")));
    r
}

async fn status(id: &str, app: &App) -> Response {
    let not_found = || Response::error(404, "not_found", "no such notification");
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return not_found();
    }
    match admin_send::state(app, id).await {
        Ok(Some(st)) => Response::json(200, &view(&st)),
        Ok(None) => not_found(),
        Err(e) => super::store_failure(&e, RETRY),
    }
}

/// The API's picture of a send: its state and, once WeChat reports it
/// (`subscribe_msg_sent_event`), the delivery result.
fn view(st: &SendState) -> Value {
    let (item, send) = (&st.item, &st.send);
    let mut v = json!({
        "id": item.id,
        "status": item.status.as_str(),
        "app": send.app.as_str(),
        "to": { "openid": send.openid },
        "templateId": send.template_id,
        "attempts": item.attempts,
        "createdAt": item.created_at,
        "updatedAt": item.updated_at,
    });
    if let Some(u) = &send.user_id {
        v["to"]["userId"] = json!(u);
    }
    // Parked until WeChat's daily quota resets: when the sweep will send it.
    if item.status == Status::Queued
        && let Some(t) = item.not_before
    {
        v["notBefore"] = json!(t);
    }
    for (value, field) in [
        (&item.msgid, "msgid"),
        (&item.reason, "reason"),
        (&item.last_error, "lastError"),
    ] {
        if let Some(x) = value.as_deref().filter(|x| !x.is_empty()) {
            v[field] = json!(x);
        }
    }
    if let Some(d) = &st.reported {
        v["delivery"] = json!({ "status": d.status, "errcode": d.errcode, "at": d.at });
    }
    v
}
