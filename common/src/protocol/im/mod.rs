//! Tencent Cloud IM: UserSig, callbacks and the REST API.

pub mod callback;
mod loose;
pub mod rest;
pub mod usersig;

use crate::protocol::secret::Secret;
use crate::protocol::wechat::app::AppKind;

#[derive(Debug, Clone)]
pub struct ImConfig {
    pub sdkappid: u64,
    pub secret_key: Secret,
    pub admin_user: String,
    pub api_base: String,
    pub callback_token: Option<Secret>,
    pub callback_window_secs: i64,
    /// The official account's customer-service agents (`IM_AGENT_ACCOUNTS_OA`, or
    /// `IM_AGENT_ACCOUNTS`).
    pub agents: Vec<String>,
    /// The mini program's (`IM_AGENT_ACCOUNTS_MP`).
    pub agents_mp: Vec<String>,
}

impl ImConfig {
    /// The agents who answer `app`'s users.
    pub fn agents_of(&self, app: AppKind) -> &[String] {
        match app {
            AppKind::Oa => &self.agents,
            AppKind::Mp => &self.agents_mp,
        }
    }
}
