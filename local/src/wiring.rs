//! Builds the same `App` the Lambda functions use, from the same variables (plus a `.env` file),
//! with the embedded store unless `TABLE_NAME` points at DynamoDB, and a spool for what the
//! store cannot take: the SQS queue of `SPOOL_QUEUE_URL`, else `spool.db` in `WXIM_DATA_DIR`.

use std::path::PathBuf;
use std::sync::Arc;

use common::App;
use common::clock::{Clock, SystemClock};
use common::config::Config;
use common::store::spool::{EmbeddedSpool, SqsSpool};
use common::store::{DynamoStore, EmbeddedStore, Spool, Store};

/// Loads `.env` from the working directory when present; variables already set win.
pub fn load_dotenv() {
    let _ = dotenvy::dotenv();
}

pub fn config() -> Result<Config, String> {
    Config::from_env().map_err(|e| format!("configuration error: {e}"))
}

pub fn db_path(config: &Config) -> PathBuf {
    PathBuf::from(&config.data_dir).join("wxim.db")
}

pub async fn store(config: &Config, clock: Arc<dyn Clock>) -> Result<Arc<dyn Store>, String> {
    match DynamoStore::from_config(config, clock.clone()).await {
        Some(store) => Ok(Arc::new(store)),
        None => {
            let path = db_path(config);
            EmbeddedStore::open(&path, clock)
                .map(|s| Arc::new(s) as Arc<dyn Store>)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))
        }
    }
}

pub fn spool_path(config: &Config) -> PathBuf {
    PathBuf::from(&config.data_dir).join("spool.db")
}

/// The spool: a file of its own, not the store's, so that it holds when the store does not.
pub fn spool(config: &Config, clock: Arc<dyn Clock>) -> Result<Arc<dyn Spool>, String> {
    if let Some(url) = &config.spool_queue_url {
        return Ok(Arc::new(SqsSpool::lazy(url.clone())));
    }
    let path = spool_path(config);
    EmbeddedSpool::open(&path, clock)
        .map(|s| Arc::new(s) as Arc<dyn Spool>)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

pub async fn app(config: Config) -> Result<App, String> {
    app_with_clock(config, Arc::new(SystemClock)).await
}

pub async fn app_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<App, String> {
    let store = store(&config, clock.clone()).await?;
    let spool = spool(&config, clock.clone())?;
    Ok(App::new(config, store, clock).with_spool(spool))
}

/// The system clock moved ahead by a number of seconds (`wxim sweep --advance`: what a sweep
/// that late would do, without waiting for it).
#[derive(Debug, Clone, Copy)]
pub struct AheadClock(pub i64);

impl Clock for AheadClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms() + self.0.saturating_mul(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ahead_clock_runs_that_far_ahead() {
        let ahead = AheadClock(900).now() - SystemClock.now();
        assert!((899..=901).contains(&ahead), "{ahead}");
    }
}
