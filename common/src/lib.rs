//! wxim-bridge's shared crate: every rule lives here. The Lambda types appear only in the
//! `lambda` adapter (feature `lambda`); the embedded store only with feature `embedded`.

pub mod app;
pub mod clock;
pub mod config;
pub mod dedupe;
pub mod handlers;
pub mod http;
pub mod im;
pub mod keys;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod ledger;
pub mod notify;
pub mod obs;
pub mod store;
pub mod wechat;

pub use app::App;
