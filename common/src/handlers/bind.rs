//! `POST /bind`: a mini-program user proves both identities in one request — the IM one with a
//! UserSig that only the IM secret key can make, the WeChat one with a fresh `wx.login` code that
//! only WeChat can turn into an openid — and the pair is stored as one binding, both ways.
//!
//! Nothing is stored unless both proofs hold. The login code, the UserSig and WeChat's
//! `session_key` are credentials: none of them is returned, logged or kept.

use tracing::{info, warn};

use super::input;
use crate::app::App;
use crate::config::AppKind;
use crate::flows;
use crate::flows::bind::Refused;
use crate::http::{Request, Response};
use crate::protocol::im::usersig::{self, UserSigError};
use crate::protocol::wechat::api::{ApiError, ErrorClass};

const MAX_BODY_BYTES: usize = 8 * 1024;
const RETRY: &str = "temporarily unable to store the binding; call wx.login and try again";

fn refuse(status: u16, code: &str, message: &str) -> Response {
    warn!(decision = "refused", reason = code, status, "{message}");
    Response::error(status, code, message)
}

/// What a failed `jscode2session` means for the mini program that asked.
fn exchange_refusal(e: &ApiError) -> Response {
    match e.errcode() {
        Some(40029) => refuse(
            400,
            "invalid_code",
            "WeChat says the login code is invalid or expired (40029); call wx.login again",
        ),
        Some(40163) => refuse(
            409,
            "code_used",
            "this login code has already been used (40163); call wx.login again",
        ),
        Some(40226) => refuse(
            403,
            "user_blocked",
            "WeChat blocks this user as high-risk (40226)",
        ),
        Some(45011) => {
            let mut r = refuse(
                429,
                "rate_limited",
                "WeChat's per-minute limit is reached (45011); try again in a minute",
            );
            r.headers.push(("retry-after".into(), "60".into()));
            r
        }
        _ => match e.class() {
            ErrorClass::Retryable { after_secs } => {
                let mut r = refuse(
                    503,
                    "wechat_unavailable",
                    &format!("WeChat is not answering ({}); try again", e.reason()),
                );
                r.headers
                    .push(("retry-after".into(), after_secs.to_string()));
                r
            }
            _ => refuse(
                502,
                "wechat_refused",
                &format!(
                    "WeChat refused the login code exchange ({}); check WECHAT_MP_APPID and WECHAT_MP_SECRET",
                    e.reason()
                ),
            ),
        },
    }
}

pub async fn bind(req: &Request, app: &App) -> Response {
    super::traced(&req.request_id, "bind", async {
        if let Err(r) = super::require(req, "POST", "use POST") {
            return r;
        }
        let (Some(im), Some(mp)) = (&app.config.im, app.config.app(AppKind::Mp)) else {
            return refuse(
                404,
                "not_configured",
                "binding needs IM (IM_SDKAPPID, IM_SECRET_KEY) and the mini program (WECHAT_MP_APPID)",
            );
        };
        let body = match input::object(&req.body, MAX_BODY_BYTES) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let fields = input::string(&body, "code", 128).and_then(|code| {
            Ok((
                code,
                input::string(&body, "userId", 32)?,
                input::string(&body, "userSig", 2048)?,
            ))
        });
        let (code, user_id, sig) = match fields {
            Ok(f) => f,
            Err(r) => {
                warn!(decision = "refused", reason = "bad_request");
                return r;
            }
        };
        let now = app.now();

        // The IM identity first: it costs no call, and a forged request never reaches WeChat.
        match usersig::verify(im.sdkappid, im.secret_key.expose(), sig, user_id, now) {
            Ok(_) => {}
            Err(UserSigError::Expired { .. }) => {
                return refuse(
                    401,
                    "usersig_expired",
                    "the UserSig has expired; get a fresh one for this user",
                );
            }
            Err(e) => return refuse(401, "invalid_usersig", &e.to_string()),
        }

        let session = match app
            .wechat
            .jscode2session(&mp.appid, &mp.secret, code)
            .await
        {
            Ok(s) => s,
            Err(e) => return exchange_refusal(&e),
        };

        let unionid = session.unionid.as_deref();
        match flows::bind::bind(app, &mp.appid, code, user_id, &session.openid, unionid).await {
            Ok(previous) => {
                info!(
                    user_id,
                    decision = "bound",
                    moved = previous.is_some(),
                    has_unionid = unionid.is_some()
                );
                Response::json(
                    200,
                    &serde_json::json!({ "bound": true, "userId": user_id, "app": "mp" }),
                )
            }
            Err(Refused::CodeUsed) => refuse(
                409,
                "code_used",
                "this login code has already been used; call wx.login again",
            ),
            Err(Refused::Conflict) => refuse(
                409,
                "binding_conflict",
                "this user or openid was bound by another request at the same moment; call wx.login and try again",
            ),
            Err(Refused::Store(e)) => super::store_failure(&e, RETRY),
        }
    })
    .await
}
