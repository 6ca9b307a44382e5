//! All end-to-end tests in one binary: each links the whole stack (AWS SDK, SQLite, reqwest),
//! and one link instead of many keeps the test build fast on 2 cores.

mod admin;
mod bind;
mod deferred;
mod docs;
mod im_callback;
mod kf_agents;
mod kf_allowance;
mod kf_burst;
mod kf_media;
mod kf_mp;
mod kf_recall;
mod lazy_store;
mod notify;
mod oa;
mod sample_events;
mod scale;
mod secrets;
mod seen;
mod serve;
mod spool;
mod store_conformance;
mod wechat_push;
mod wechat_vectors;
