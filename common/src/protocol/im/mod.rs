//! Tencent Cloud IM: UserSig, callbacks and the REST API.

pub mod callback;
pub mod rest;
pub mod usersig;

use crate::protocol::secret::Secret;

#[derive(Debug, Clone)]
pub struct ImConfig {
    pub sdkappid: u64,
    pub secret_key: Secret,
    pub admin_user: String,
    pub api_base: String,
    pub callback_token: Option<Secret>,
    pub callback_window_secs: i64,
    pub agents: Vec<String>,
}
