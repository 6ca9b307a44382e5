//! What happens for each event: ingest a WeChat push, ingest an IM callback, the notification
//! policy and its merged delivery, the other outbox jobs, the dispatcher that runs them, and the
//! sweep of deferred work. Flows read records and commit their writes; they know nothing of HTTP.

pub mod admin_send;
pub mod bind;
pub mod bridge;
pub mod callback;
pub mod deliver;
pub mod dispatch;
pub mod jobs;
pub mod outcome;
pub mod plan;
pub mod policy;
pub mod push;
pub mod send;
pub mod sweep;
pub mod withdraw;

#[cfg(all(test, feature = "embedded"))]
mod testing;
