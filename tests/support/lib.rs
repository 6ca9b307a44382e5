//! Test support: a DynamoDB-compatible server on loopback (moto), fresh stores of both kinds,
//! and the sample configuration. The tests themselves live in `tests/tests/`.

pub mod counting;
pub mod dynamo;
pub mod harness;

use std::sync::{Arc, Mutex, OnceLock};

use common::App;
use common::clock::{Clock, ManualClock, SystemClock};
use common::config::Config;
use common::store::{EmbeddedStore, Store};

pub use local::sample;

/// Which backend a test runs on; conformance and end-to-end tests run on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Dynamo,
}

pub const BACKENDS: [Backend; 2] = [Backend::Embedded, Backend::Dynamo];

pub async fn store(backend: Backend, clock: Arc<dyn Clock>) -> Arc<dyn Store> {
    match backend {
        Backend::Embedded => Arc::new(EmbeddedStore::in_memory(clock).expect("in-memory store")),
        Backend::Dynamo => Arc::new(dynamo::fresh_store(clock).await),
    }
}

/// The sample configuration (events/sample.env) with overrides.
pub fn config(overrides: &[(&str, &str)]) -> Config {
    sample::config(overrides).expect("sample configuration")
}

pub async fn app(backend: Backend, overrides: &[(&str, &str)]) -> App {
    logs();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    App::new(
        config(overrides),
        store(backend, clock.clone()).await,
        clock,
    )
}

/// An app whose clock only moves when the test says so.
pub async fn app_at(
    backend: Backend,
    overrides: &[(&str, &str)],
    secs: i64,
) -> (App, Arc<ManualClock>) {
    logs();
    let clock = Arc::new(ManualClock::at(secs));
    let dynclock: Arc<dyn Clock> = clock.clone();
    let app = App::new(
        config(overrides),
        store(backend, dynclock.clone()).await,
        dynclock,
    );
    (app, clock)
}

/// The repository root, for reading `events/`.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

pub fn random_suffix() -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).expect("random");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

/// Every log and metric line the tests' handlers write, captured in memory (the process-wide
/// subscriber is installed once, by whichever test comes first).
pub fn logs() -> Arc<Mutex<Vec<u8>>> {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        common::obs::init(common::obs::Sink::Buffer(buf.clone()), "wxim-tests");
        buf
    })
    .clone()
}

pub fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}
