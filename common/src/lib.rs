//! wxim-bridge's shared crate: every rule lives here, in one-way layers (each imports only the
//! ones above it in this list; `scripts/check-layers.py` enforces it):
//!
//! - `clock`, `obs`, `http`: time, logs and metrics, the framework-neutral request/response;
//! - [`protocol`]: WeChat's and IM's wire formats, signatures, crypto and API clients (pure);
//! - [`config`]: typed configuration from the environment;
//! - [`store`]: the persistence port and its DynamoDB and embedded SQLite implementations;
//! - [`records`]: one module per stored record (keys, attributes, reads, writes);
//! - [`app`]: what a flow runs with (configuration, store, clock, API clients);
//! - [`flows`]: what happens for each event (ingest, policy, deliver, jobs, dispatch, sweep);
//! - [`handlers`]: adapters that parse a request, call a flow and map the outcome;
//! - `lambda` (feature `lambda`): the `lambda_http` glue of the function binaries.

pub mod clock;
pub mod http;
pub mod obs;

pub mod protocol;

pub mod config;

pub mod store;

pub mod records;

pub mod app;

pub mod flows;

pub mod handlers;

#[cfg(feature = "lambda")]
pub mod lambda;

pub use app::App;
