//! The access token, shared by every instance through the store: one refresh at a time across
//! all of them (a conditional-write lease), and an older token never overwrites a newer one
//! (the write is conditional on the stored expiry being earlier). Instances also keep it in
//! memory, so a warm instance reads the store once per token lifetime.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::WechatApp;
use crate::obs;
use crate::protocol::wechat::api::{ApiError, TOKEN_CALL_TIMEOUT, WechatApi};
use crate::records::keys;
use crate::store::{Cond, Store, StoreError, Table, Update, Write};

/// A token is renewed this long before it expires: stable_token hands out the next token in
/// the last 5 minutes of the current one, and the two overlap for 5 minutes.
const MARGIN_SECS: i64 = 300;
/// How long a refresher may hold the lease before another instance may take over: longer than
/// the token call can last ([`TOKEN_CALL_TIMEOUT`], whatever `HTTP_TIMEOUT_MS` is) plus the store
/// writes around it, so a lease never lapses while its holder is still fetching.
pub const LEASE_SECS: i64 = TOKEN_CALL_TIMEOUT.as_secs() as i64 + 10;
/// How long a caller waits for another instance's refresh before giving up for now: past the
/// longest token call, so a waiter normally sees the refresher's result.
const WAIT: Duration = Duration::from_secs(TOKEN_CALL_TIMEOUT.as_secs() + 2);
const _: () = assert!(LEASE_SECS > TOKEN_CALL_TIMEOUT.as_secs() as i64 + 5);
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("access token: {0}")]
    Api(#[from] ApiError),
    #[error("access token: {0}")]
    Store(#[from] StoreError),
    #[error("access token: another instance is refreshing; try again")]
    Busy,
}

pub struct TokenManager {
    memory: Mutex<HashMap<String, (String, i64)>>,
    owner: String,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("owner", &self.owner)
            .finish()
    }
}

impl Default for TokenManager {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenManager {
    pub fn new() -> Self {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        TokenManager {
            memory: Mutex::new(HashMap::new()),
            owner: hex::encode(b),
        }
    }

    fn remembered(&self, appid: &str, now: i64) -> Option<String> {
        let m = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        m.get(appid)
            .filter(|(_, exp)| exp - MARGIN_SECS > now)
            .map(|(t, _)| t.clone())
    }

    fn remember(&self, appid: &str, token: &str, expires_at: i64) {
        let mut m = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(appid.to_owned(), (token.to_owned(), expires_at));
    }

    /// A valid token for the app, refreshing it (once across all instances) when needed.
    pub async fn get(
        &self,
        app: &WechatApp,
        store: &dyn Store,
        api: &WechatApi,
        clock: &dyn Clock,
    ) -> Result<String, TokenError> {
        if let Some(t) = self.remembered(&app.appid, clock.now()) {
            return Ok(t);
        }
        let pk = keys::access_token(app.kind);
        let started = std::time::Instant::now();
        loop {
            let now = clock.now();
            let item = store.get(Table::State, &pk, keys::ONE).await?;
            if let Some(item) = &item
                && let (Some(t), Some(exp)) = (item.s("token"), item.n("token_expires_at"))
                && exp - MARGIN_SECS > now
            {
                self.remember(&app.appid, t, exp);
                return Ok(t.to_owned());
            }
            // The lease is only granted while the stored token needs refreshing, so an instance
            // that read before another's refresh landed cannot refresh a second time.
            if self.take_lease(store, &pk, now).await? {
                return self.refresh(app, store, api, clock, &pk).await;
            }
            if started.elapsed() > WAIT {
                return Err(TokenError::Busy);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn take_lease(&self, store: &dyn Store, pk: &str, now: i64) -> Result<bool, StoreError> {
        let w = Write::update(
            Table::State,
            pk,
            keys::ONE,
            vec![
                Update::set("lease_owner", self.owner.as_str()),
                Update::set("lease_until", now + LEASE_SECS),
            ],
        )
        .when(Cond::And(vec![
            Cond::Or(vec![
                Cond::lacks("lease_until"),
                Cond::lt("lease_until", now),
            ]),
            Cond::Or(vec![
                Cond::lacks("token_expires_at"),
                Cond::le("token_expires_at", now + MARGIN_SECS),
            ]),
        ]));
        match store.write(w).await {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn refresh(
        &self,
        app: &WechatApp,
        store: &dyn Store,
        api: &WechatApi,
        clock: &dyn Clock,
        pk: &str,
    ) -> Result<String, TokenError> {
        let fetched = api.stable_token(&app.appid, &app.secret).await;
        let now = clock.now();
        let (token, expires_in) = match fetched {
            Ok(t) => t,
            Err(e) => {
                warn!(app = app.kind.as_str(), decision = "token_refresh_failed", reason = %e.reason());
                obs::metric("TokenRefreshFailures", &[("App", app.kind.as_str())], 1.0);
                self.release(store, pk).await;
                return Err(e.into());
            }
        };
        let expires_at = now + expires_in;
        obs::metric("TokenRefreshes", &[("App", app.kind.as_str())], 1.0);
        let w = Write::update(
            Table::State,
            pk,
            keys::ONE,
            vec![
                Update::set("token", token.as_str()),
                Update::set("token_expires_at", expires_at),
                Update::set("fetched_at", now),
                Update::remove("lease_owner"),
                Update::remove("lease_until"),
            ],
        )
        .when(Cond::Or(vec![
            Cond::lacks("token_expires_at"),
            Cond::lt("token_expires_at", expires_at),
        ]));
        match store.write(w).await {
            Ok(_) => {
                info!(
                    app = app.kind.as_str(),
                    decision = "token_refreshed",
                    expires_in
                );
                self.remember(&app.appid, &token, expires_at);
                Ok(token)
            }
            // Someone stored a token that lives longer: theirs is the newer one, keep it.
            Err(StoreError::ConditionFailed { .. }) => {
                self.release(store, pk).await;
                let item = store.get(Table::State, pk, keys::ONE).await?;
                let stored = item
                    .as_ref()
                    .and_then(|i| Some((i.s("token")?.to_owned(), i.n("token_expires_at")?)));
                match stored {
                    Some((t, exp)) => {
                        self.remember(&app.appid, &t, exp);
                        Ok(t)
                    }
                    None => Ok(token),
                }
            }
            Err(e) => {
                self.release(store, pk).await;
                Err(e.into())
            }
        }
    }

    async fn release(&self, store: &dyn Store, pk: &str) {
        let w = Write::update(
            Table::State,
            pk,
            keys::ONE,
            vec![Update::remove("lease_owner"), Update::remove("lease_until")],
        )
        .when(Cond::eq("lease_owner", self.owner.as_str()));
        let _ = store.write(w).await;
    }

    /// WeChat refused `bad` (40001/40014/42001): forget it here and in the store, but only if it
    /// is still the stored token, so a newer token fetched meanwhile by another instance stays.
    pub async fn invalidate(
        &self,
        app: &WechatApp,
        store: &dyn Store,
        bad: &str,
    ) -> Result<(), StoreError> {
        {
            let mut m = self.memory.lock().unwrap_or_else(|p| p.into_inner());
            if m.get(&app.appid).is_some_and(|(t, _)| t == bad) {
                m.remove(&app.appid);
            }
        }
        let w = Write::update(
            Table::State,
            &keys::access_token(app.kind),
            keys::ONE,
            vec![Update::remove("token"), Update::set("token_expires_at", 0)],
        )
        .when(Cond::eq("token", bad));
        match store.write(w).await {
            Ok(_) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
