//! wxim-bridge's shared crate: every rule lives here. The Lambda types appear only in the
//! `lambda` adapter (feature `lambda`); the embedded store only with feature `embedded`.

pub mod app;
pub mod bindings;
pub mod clock;
pub mod config;
pub mod dedupe;
pub mod dispatch;
pub mod due;
pub mod handlers;
pub mod http;
pub mod im;
pub mod jobs;
pub mod keys;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod ledger;
pub mod notify;
pub mod oa;
pub mod obs;
pub mod outbox;
pub mod presence;
pub mod store;
pub mod wechat;

pub use app::App;
