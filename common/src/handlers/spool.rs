//! Verified webhooks the store could not take, kept in the spool ([`crate::store::spool`]) and
//! replayed by its consumer (notify-dispatch's SQS event source in AWS, `wxim serve` locally).
//!
//! What is kept is the request as it arrived (function, path, query, body) and when: a replay
//! goes through the very handler a first delivery does, its signatures checked again as of the
//! time it was received, and its effect committed with the same dedupe markers and conditional
//! writes. So a replay of an event that was applied after all (a WeChat retry that got through,
//! SQS delivering a message twice) changes nothing, and every callback kind a handler knows is
//! spooled without knowing anything here. Headers and the caller are not kept: neither WeChat's
//! nor IM's checks use them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use tracing::{Instrument, error, info, warn};

use super::{Arrival, im, wechat};
use crate::app::App;
use crate::http::{Request, Response};
use crate::store::spool::{self as port, Received, Spool, SpoolError};

/// The format version of a spooled message.
const VERSION: u32 = 1;

/// A spooled webhook, as a message body (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spooled {
    pub v: u32,
    /// `wechat-event` or `im-callback`.
    pub function: String,
    pub path: String,
    pub path_params: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    /// The raw body, base64.
    pub body: String,
    /// When it was received (seconds): its replay window is checked as of then.
    pub received_at: i64,
    pub request_id: String,
}

impl Spooled {
    pub fn of(function: &str, req: &Request, received_at: i64) -> Spooled {
        Spooled {
            v: VERSION,
            function: function.to_owned(),
            path: req.path.clone(),
            path_params: req.path_params.clone(),
            query: req.query.clone(),
            body: B64.encode(&req.body),
            received_at,
            request_id: req.request_id.clone(),
        }
    }

    pub fn parse(body: &str) -> Result<Spooled, String> {
        let s: Spooled =
            serde_json::from_str(body).map_err(|e| format!("not a spooled webhook: {e}"))?;
        if s.v != VERSION {
            return Err(format!("spooled webhook format {} is not {VERSION}", s.v));
        }
        Ok(s)
    }

    /// The request as it arrived.
    pub fn request(&self) -> Result<Request, String> {
        Ok(Request {
            method: "POST".into(),
            path: self.path.clone(),
            query: self.query.clone(),
            headers: vec![],
            path_params: self.path_params.clone(),
            body: B64
                .decode(&self.body)
                .map_err(|_| "the spooled body is not base64".to_owned())?,
            request_id: self.request_id.clone(),
            principal: None,
        })
    }
}

/// Keeps a verified request that the store could not take.
pub async fn keep(
    spool: &dyn Spool,
    function: &str,
    req: &Request,
    now: i64,
) -> Result<(), SpoolError> {
    let msg = Spooled::of(function, req, now);
    let body = serde_json::to_string(&msg).map_err(|e| SpoolError(e.to_string()))?;
    spool.send(&body).await
}

/// What a replay came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// Applied now, or found applied already (the dedupe markers).
    Applied,
    /// The store still cannot take it: try again later.
    Retry(String),
    /// It can never be applied: unreadable, or refused by the handler's checks (which it
    /// passed when it was received, so it was altered, or forged into the queue). Logged and
    /// dropped, as a refusal at the edge is.
    Refused(String),
}

/// Replays one spooled message through its handler.
pub async fn replay(app: &App, body: &str) -> Replayed {
    let msg = match Spooled::parse(body) {
        Ok(m) => m,
        Err(why) => return refused(why),
    };
    let req = match msg.request() {
        Ok(r) => r,
        Err(why) => return refused(why),
    };
    let arrival = Arrival::Replay {
        received_at: msg.received_at,
    };
    let resp = match msg.function.as_str() {
        "wechat-event" => wechat::event_as(&req, app, arrival).await,
        "im-callback" => im::callback_as(&req, app, arrival).await,
        other => return refused(format!("no spooled function {other:?}")),
    };
    let outcome = match resp.status {
        200..=299 => Replayed::Applied,
        500..=599 => Replayed::Retry(error_code(&resp)),
        _ => Replayed::Refused(error_code(&resp)),
    };
    let waited = app.now() - msg.received_at;
    match &outcome {
        Replayed::Applied => {
            info!(function = %msg.function, decision = "spool_applied", waited_secs = waited);
            crate::obs::metric("SpoolApplied", &[("Function", &msg.function)], 1.0);
        }
        Replayed::Retry(why) => {
            warn!(function = %msg.function, decision = "spool_retry", reason = %why, waited_secs = waited)
        }
        Replayed::Refused(why) => {
            error!(function = %msg.function, decision = "spool_refused", reason = %why, "dropped");
            crate::obs::metric("SpoolRefused", &[("Function", &msg.function)], 1.0);
        }
    }
    outcome
}

fn refused(why: String) -> Replayed {
    error!(decision = "spool_refused", reason = %why, "dropped");
    crate::obs::metric("SpoolRefused", &[("Function", "unknown")], 1.0);
    Replayed::Refused(why)
}

fn error_code(resp: &Response) -> String {
    serde_json::from_slice::<serde_json::Value>(&resp.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("status {}", resp.status))
}

/// What one pass over the spool did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    pub applied: usize,
    pub retried: usize,
    pub refused: usize,
}

impl Drained {
    pub fn received(&self) -> usize {
        self.applied + self.retried + self.refused
    }
}

/// Settles one received message: deleted once applied or refused, otherwise due again after its
/// backoff (first pause `SPOOL_RETRY_SECS`, doubling per receive); the spool's redrive moves it
/// to the dead-letter queue after its last receive.
pub async fn settle(app: &App, spool: &dyn Spool, m: &Received, outcome: &Replayed) {
    let result = match outcome {
        Replayed::Applied | Replayed::Refused(_) => spool.delete(&m.handle).await,
        Replayed::Retry(_) => {
            let secs = port::backoff_secs(app.config.spool_retry_secs, m.receive_count);
            spool.retry_after(&m.handle, secs).await
        }
    };
    if let Err(e) = result {
        // The message comes back after its visibility timeout; a replay is idempotent.
        warn!(decision = "spool_settle_failed", reason = %e);
    }
}

/// One pass of a consumer that receives itself (`wxim serve`, the one-shot commands, the
/// tests): up to `max` due messages received, replayed and settled.
pub async fn drain_once(app: &App, max: usize) -> Result<Drained, SpoolError> {
    let Some(spool) = app.spool.clone() else {
        return Ok(Drained::default());
    };
    let span = tracing::info_span!("request", request_id = "spool-drain", function = "spool");
    async {
        let mut done = Drained::default();
        while done.received() < max {
            let got = spool.receive((max - done.received()).min(10)).await?;
            if got.is_empty() {
                break;
            }
            for m in &got {
                let outcome = replay(app, &m.body).await;
                settle(app, &*spool, m, &outcome).await;
                match outcome {
                    Replayed::Applied => done.applied += 1,
                    Replayed::Retry(_) => done.retried += 1,
                    Replayed::Refused(_) => done.refused += 1,
                }
            }
        }
        Ok(done)
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_survives_the_spool_byte_for_byte() {
        let mut req = Request::new("POST", "/wechat/oa?signature=s&timestamp=1&nonce=n%26")
            .with_body(vec![0xff, b'<', b'x', 0x00]);
        req.path_params = vec![("app".into(), "oa".into())];
        req.request_id = "r1".into();
        let body = serde_json::to_string(&Spooled::of("wechat-event", &req, 42)).unwrap();
        let back = Spooled::parse(&body).unwrap();
        assert_eq!(back.received_at, 42);
        let again = back.request().unwrap();
        assert_eq!(
            (&again.path, &again.query, &again.body, &again.path_params),
            (&req.path, &req.query, &req.body, &req.path_params)
        );
        assert!(Spooled::parse("{}").is_err());
        assert!(Spooled::parse(&body.replace("\"v\":1", "\"v\":9")).is_err());
    }
}
