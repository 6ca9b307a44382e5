//! What a handler needs, built once per cold start: configuration, the store, the clock and the
//! outbound API clients.

use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigError};
use crate::store::{DynamoStore, Store};

pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
}

impl App {
    pub fn new(config: Config, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> App {
        App {
            config,
            store,
            clock,
        }
    }

    /// The production wiring: configuration from the environment and DynamoDB through the
    /// standard AWS environment (`AWS_ENDPOINT_URL_DYNAMODB` points it at a local server).
    pub async fn from_env() -> Result<App, ConfigError> {
        let config = Config::from_env()?;
        let table = config.table_name.clone().ok_or_else(|| {
            ConfigError::new(
                "TABLE_NAME",
                "is required (the DynamoDB table of this stack)",
            )
        })?;
        let outbox = config
            .outbox_table_name
            .clone()
            .unwrap_or_else(|| format!("{table}-outbox"));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let client = DynamoStore::client_from_env().await;
        let store = Arc::new(DynamoStore::new(client, table, outbox, clock.clone()));
        Ok(App::new(config, store, clock))
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }
}
