//! The handlers: plain async functions `(request, &App) -> response` shared by the Lambda
//! binaries, the local command line and the tests.

use std::future::Future;

use tracing::{Instrument, warn};

use crate::app::App;
use crate::http::{Request, Response};
use crate::store::StoreError;

pub mod admin;
pub mod bind;
pub mod dispatch;
pub mod im;
mod input;
pub mod spool;
pub mod wechat;

/// How a webhook reached its handler: from its sender, or from the spool after the store could
/// not take it the first time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    Live,
    /// Replayed by the spool's consumer; its checks are made as of when it was received.
    Replay {
        received_at: i64,
    },
}

impl Arrival {
    /// The time a request's replay window is checked against.
    fn checked_at(self, app: &App) -> i64 {
        match self {
            Arrival::Live => app.now(),
            Arrival::Replay { received_at } => received_at,
        }
    }
}

/// A verified webhook the store could not take: spooled and answered `accepted` (the consumer
/// applies it later), or, when it cannot be spooled (no spool, the spool failing too, a replay
/// from the spool itself), [`store_failure`].
async fn unstored(
    app: &App,
    req: &Request,
    arrival: Arrival,
    function: &'static str,
    e: &StoreError,
    accepted: Response,
    retry_message: &str,
) -> Response {
    let spool = match (&app.spool, arrival, e) {
        (_, _, StoreError::Invalid(_)) | (None, _, _) | (_, Arrival::Replay { .. }, _) => {
            return store_failure(e, retry_message);
        }
        (Some(spool), Arrival::Live, _) => spool,
    };
    match spool::keep(&**spool, function, req, app.now()).await {
        Ok(()) => {
            warn!(decision = "spooled", reason = %e, "store failure: kept in the spool, applied later");
            crate::obs::metric("Spooled", &[("Function", function)], 1.0);
            accepted
        }
        Err(se) => {
            tracing::error!(decision = "retry_later", reason = %e, spool = %se, "store failure and the spool failed too");
            crate::obs::metric("SpoolFailures", &[("Function", function)], 1.0);
            Response::error(503, "store_unavailable", retry_message)
        }
    }
}

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
