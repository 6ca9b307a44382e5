//! Test support: a DynamoDB-compatible server on loopback (moto), fresh stores of both kinds,
//! and the sample configuration. The tests themselves live in `tests/tests/`.

pub mod counting;
pub mod dynamo;
pub mod harness;
pub mod outage;

use std::path::{Path, PathBuf};
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

/// The sample configuration (events/sample.env) with overrides. Its secrets, and every
/// credential-named override, are recorded for the log scan.
pub fn config(overrides: &[(&str, &str)]) -> Config {
    let config = sample::config(overrides).expect("sample configuration");
    let secrets = config.secrets();
    record_needles(
        secrets.iter().map(String::as_str).chain(
            overrides
                .iter()
                .filter(|(k, _)| is_secret_var(k))
                .map(|(_, v)| *v),
        ),
    );
    config
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

/// Where a test process leaves its whole log output and the credentials it used, for
/// `scripts/scan-logs.py` (which `./scripts/test` runs last): `$WXIM_TEST_LOG_DIR`, else
/// `target/test-logs/`.
pub fn log_dir() -> PathBuf {
    std::env::var_os("WXIM_TEST_LOG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target").join("test-logs"))
}

/// This process's name in `log_dir()`: the test binary and the process id.
fn process_tag() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe
        .as_deref()
        .and_then(|p| p.file_stem())
        .and_then(|s| s.to_str())
        .unwrap_or("tests");
    format!("{stem}-{}", std::process::id())
}

fn append_file(path: &Path) -> std::fs::File {
    std::fs::create_dir_all(path.parent().expect("a file in a directory"))
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

/// Every log and metric line the tests' handlers write, captured in memory (the process-wide
/// subscriber is installed once, by whichever test comes first) and appended, line by line, to
/// `log_dir()/<binary>-<pid>.log`.
pub fn logs() -> Arc<Mutex<Vec<u8>>> {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let file = append_file(&log_dir().join(format!("{}.log", process_tag())));
        common::obs::init(
            common::obs::Sink::Tee(buf.clone(), Arc::new(Mutex::new(file))),
            "wxim-tests",
        );
        buf
    })
    .clone()
}

static NEEDLES: OnceLock<Mutex<std::fs::File>> = OnceLock::new();

/// Records credentials a test configured or saw (one per line, in
/// `log_dir()/needles/<binary>-<pid>.txt`, which is not a log and not scanned as one) so that
/// the log scan looks for each of them.
pub fn record_needles<'a>(values: impl IntoIterator<Item = &'a str>) {
    use std::io::Write as _;
    let file = NEEDLES.get_or_init(|| {
        Mutex::new(append_file(
            &log_dir()
                .join("needles")
                .join(format!("{}.txt", process_tag())),
        ))
    });
    let mut text = String::new();
    for v in values {
        // Newlines would split a needle; no credential has one.
        if !v.is_empty() && !v.contains('\n') {
            text.push_str(v);
            text.push('\n');
        }
    }
    let _ = file
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .write_all(text.as_bytes());
}

/// The variables whose values are credentials, wherever a test sets them.
fn is_secret_var(name: &str) -> bool {
    name.ends_with("_SECRET")
        || name.ends_with("_TOKEN")
        || name.ends_with("_AES_KEY")
        || name.ends_with("_SECRET_KEY")
}

pub fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}
