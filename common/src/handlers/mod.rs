//! The handlers: plain async functions `(request, &App) -> response` shared by the Lambda
//! binaries, the local command line and the tests.

use std::future::Future;

use tracing::{Instrument, warn};

use crate::http::{Request, Response};
use crate::store::StoreError;

pub mod admin;
pub mod bind;
pub mod dispatch;
pub mod im;
mod input;
pub mod wechat;

/// A store failure: 503 so that the sender (WeChat, IM, the client) tries again, saying so in
/// `retry_message` — unless the store refused the write outright (a storage limit), which no
/// retry can fix: 400. The state is as before the request either way.
fn store_failure(e: &StoreError, retry_message: &str) -> Response {
    if let StoreError::Invalid(why) = e {
        warn!(decision = "refused", reason = "unstorable", "{why}");
        return Response::error(400, "unstorable", "the request exceeds a storage limit");
    }
    warn!(decision = "retry_later", reason = %e, "store failure");
    Response::error(503, "store_unavailable", retry_message)
}

/// Runs a handler's body inside the request's span, so every log line carries the request id
/// and the function's name.
async fn traced(
    request_id: &str,
    function: &'static str,
    body: impl Future<Output = Response>,
) -> Response {
    let span = tracing::info_span!("request", request_id = %request_id, function);
    body.instrument(span).await
}

/// A 405 (saying what to use) unless the request uses `method`.
fn require(req: &Request, method: &str, hint: &str) -> Result<(), Response> {
    if req.method == method {
        Ok(())
    } else {
        Err(Response::error(405, "method_not_allowed", hint))
    }
}
