//! What a handler needs: configuration (read and checked once per cold start), the store, the
//! clock and the outbound API clients. Only the configuration is built at start: the DynamoDB
//! client, the HTTP client of the WeChat and IM APIs and the access-token machinery are created
//! by their first use and then kept for the life of the instance, so a function pays only for
//! what its events use (wechat-verify, which stores nothing and calls nothing, creates none).

use std::future::Future;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;

use crate::clock::{Clock, SystemClock};
use crate::config::{AppKind, Config, ConfigError};
use crate::protocol::im::rest::ImApi;
use crate::protocol::wechat::api::{ApiError, ErrorClass, WechatApi};
use crate::records::outbox::Queueing;
use crate::records::token::{TokenError, TokenManager};
use crate::store::{DynamoStore, Item, Spool, Store, StoreError, Table, Write};

pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// Its HTTP client is created by the first WeChat or IM call (shared by both).
    pub wechat: WechatApi,
    /// Created by the first access-token use.
    pub tokens: LazyLock<TokenManager>,
    pub im: Option<ImApi>,
    /// Where a verified webhook goes when the store cannot take it (`None`: it is answered 503).
    pub spool: Option<Arc<dyn Spool>>,
}

/// See [`App::built`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Built {
    /// The store's backend client (DynamoDB's; an embedded store has none).
    pub store_client: bool,
    /// The HTTP client the WeChat and IM API clients share.
    pub http_client: bool,
    /// The access-token manager.
    pub tokens: bool,
    /// The process's one rustls configuration (and with it the root set): shared by every
    /// outbound client, so it exists once any of them has been built.
    pub tls: bool,
}

fn table_required() -> ConfigError {
    ConfigError::new(
        "TABLE_NAME",
        "is required (the DynamoDB table of this stack)",
    )
}

/// The store of a function that keeps no state: every call is refused as a bug (never retried),
/// naming the function.
#[derive(Debug)]
struct Stateless(&'static str);

impl Stateless {
    fn refuse<T>(&self) -> Result<T, StoreError> {
        Err(StoreError::Invalid(format!("{} keeps no state", self.0)))
    }
}

#[async_trait]
impl Store for Stateless {
    async fn get(&self, _: Table, _: &str, _: &str) -> Result<Option<Item>, StoreError> {
        self.refuse()
    }
    async fn query(&self, _: Table, _: &str, _: &str) -> Result<Vec<Item>, StoreError> {
        self.refuse()
    }
    async fn scan(&self, _: Table) -> Result<Vec<Item>, StoreError> {
        self.refuse()
    }
    async fn write(&self, _: Write) -> Result<Option<Item>, StoreError> {
        self.refuse()
    }
    async fn transact(&self, _: Vec<Write>) -> Result<(), StoreError> {
        self.refuse()
    }
}

/// A WeChat call that failed, through the token or the call itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl CallError {
    pub fn class(&self) -> ErrorClass {
        match self {
            // A token WeChat refused twice in a row will not get better by retrying now.
            CallError::Api(e) => match e.class() {
                ErrorClass::TokenInvalid => ErrorClass::Permanent,
                c => c,
            },
            // On the token endpoint, 40001/40013/40125/40164 mean configuration (wrong secret,
            // IP not whitelisted): retrying cannot fix them.
            CallError::Token(TokenError::Api(e)) => match e.class() {
                ErrorClass::TokenInvalid => ErrorClass::Permanent,
                c => c,
            },
            CallError::Token(TokenError::Store(_)) | CallError::Token(TokenError::Busy) => {
                ErrorClass::Retryable { after_secs: 1 }
            }
        }
    }

    /// Whether the request may have reached WeChat although no answer came back (see
    /// [`ApiError::may_have_been_delivered`]).
    pub fn may_have_been_delivered(&self) -> bool {
        matches!(self, CallError::Api(e) if e.may_have_been_delivered())
    }

    pub fn errcode(&self) -> Option<i64> {
        match self {
            CallError::Api(e) | CallError::Token(TokenError::Api(e)) => e.errcode(),
            _ => None,
        }
    }

    pub fn reason(&self) -> String {
        match self {
            CallError::Api(e) => e.reason(),
            CallError::Token(TokenError::Api(e)) => format!("token_{}", e.reason()),
            CallError::Token(TokenError::Store(_)) => "token_store".into(),
            CallError::Token(TokenError::Busy) => "token_busy".into(),
        }
    }
}

impl App {
    /// Builds nothing but the handles: the API clients' HTTP client and the token manager are
    /// created on first use.
    pub fn new(config: Config, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> App {
        let http = WechatApi::http_client(config.http_timeout_ms);
        let wechat = WechatApi::new(http.clone(), &config.wechat_api_base);
        let im = config.im.as_ref().map(|im| ImApi::new(http, im));
        App {
            config,
            store,
            clock,
            wechat,
            tokens: LazyLock::new(TokenManager::new),
            im,
            spool: None,
        }
    }

    /// The same app, keeping what its store cannot take in `spool`.
    pub fn with_spool(mut self, spool: Arc<dyn Spool>) -> App {
        self.spool = Some(spool);
        self
    }

    /// The production wiring: configuration from the environment (checked now) and DynamoDB
    /// through the standard AWS environment (`AWS_ENDPOINT_URL_DYNAMODB` points it at a local
    /// server), its client created by the first store call.
    pub async fn from_env() -> Result<App, ConfigError> {
        Self::from_lookup(&|k| std::env::var(k).ok()).await
    }

    /// [`from_env`](Self::from_env) with the variables read through `get`.
    pub async fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<App, ConfigError> {
        let config = Config::from_lookup(get)?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = DynamoStore::from_config(&config, clock.clone())
            .await
            .ok_or_else(table_required)?;
        #[cfg(feature = "spool")]
        let spool = config
            .spool_queue_url
            .clone()
            .map(|url| Arc::new(crate::store::spool::SqsSpool::lazy(url)) as Arc<dyn Spool>);
        let app = App::new(config, Arc::new(store), clock);
        #[cfg(feature = "spool")]
        if let Some(s) = spool {
            return Ok(app.with_spool(s));
        }
        Ok(app)
    }

    /// The wiring of a function that keeps no state (wechat-verify): the same configuration,
    /// checked the same way (`TABLE_NAME` included, so that every function of a stack fails
    /// alike on a broken template), and a store that refuses every call. Nothing of DynamoDB
    /// is constructed, so nothing of it is linked into such a binary.
    pub fn from_env_stateless(function: &'static str) -> Result<App, ConfigError> {
        Self::from_lookup_stateless(function, &|k| std::env::var(k).ok())
    }

    /// [`from_env_stateless`](Self::from_env_stateless) with the variables read through `get`.
    pub fn from_lookup_stateless(
        function: &'static str,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<App, ConfigError> {
        let config = Config::from_lookup(get)?;
        if config.table_name.is_none() {
            return Err(table_required());
        }
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        Ok(App::new(config, Arc::new(Stateless(function)), clock))
    }

    /// What this instance has built so far beyond its configuration: a start builds none of it,
    /// and a function that never uses a client never builds it (asserted for wechat-verify by its
    /// own test, and for the stateful wiring's start by this module's).
    pub fn built(&self) -> Built {
        Built {
            store_client: self.store.client_created(),
            http_client: self.wechat.http().is_built(),
            tokens: LazyLock::get(&self.tokens).is_some(),
            tls: crate::protocol::wechat::api::transport::tls_config_built(),
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// How a job queued now is kept (retention, and when its watch falls due).
    pub fn queueing(&self) -> Queueing {
        Queueing {
            now: self.now(),
            retention_secs: self.config.outbox_retention_secs,
            watch_after_secs: self.config.sweep_stale_secs,
        }
    }

    /// Calls a WeChat API with the app's access token. When WeChat says the token is invalid
    /// (40001/40014/42001), the token is dropped (only if it is still the stored one), refreshed
    /// and the call retried once; never more, so a misbehaving token cannot loop.
    pub async fn wechat_call<T, F, Fut>(&self, kind: AppKind, call: F) -> Result<T, CallError>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let app = self.config.app(kind).ok_or_else(|| {
            CallError::Api(ApiError::Protocol(format!(
                "WeChat app {kind} is not configured"
            )))
        })?;
        let get = || {
            self.tokens
                .get(app, &*self.store, &self.wechat, &*self.clock)
        };
        let token = get().await?;
        match call(token.clone()).await {
            Err(e) if e.class() == ErrorClass::TokenInvalid => {
                tracing::warn!(app = kind.as_str(), decision = "token_rejected", reason = %e.reason(), "refreshing the access token and retrying once");
                self.tokens
                    .invalidate(app, &*self.store, &token)
                    .await
                    .map_err(TokenError::Store)?;
                let token = get().await?;
                Ok(call(token).await?)
            }
            other => Ok(other?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The least a stateful function starts with: its table and one app.
    fn var(k: &str) -> Option<String> {
        let v = match k {
            "TABLE_NAME" => "wxim-state",
            "WECHAT_MP_APPID" => "wx1234567890abcdef",
            "WECHAT_MP_SECRET" => "mp-secret",
            "WECHAT_MP_TOKEN" => "mptoken",
            _ => return None,
        };
        Some(v.to_owned())
    }

    /// The stateful functions' wiring (`common::lambda::init`) checks the configuration and
    /// builds no client: the DynamoDB one, the HTTP one and the token manager wait for their
    /// first use. (The process-wide TLS configuration is not asserted here: other tests in
    /// this binary build it; wechat-verify's own test does.)
    #[tokio::test(flavor = "current_thread")]
    async fn the_stateful_wiring_builds_no_client_at_start() {
        let app = App::from_lookup(&var).await.expect("sample configuration");
        let built = app.built();
        assert!(
            !built.store_client && !built.http_client && !built.tokens,
            "{built:?}"
        );
        let store = format!("{:?}", app.store);
        assert!(
            store.starts_with("DynamoStore") && store.contains("wxim-state"),
            "{store}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stateful_start_without_a_table_fails_naming_the_variable() {
        let err = App::from_lookup(&|k| if k == "TABLE_NAME" { None } else { var(k) })
            .await
            .err()
            .expect("refused");
        assert_eq!(err.var, "TABLE_NAME");
    }
}
