//! A DynamoDB-compatible server on 127.0.0.1 for the tests: the one named by
//! `WXIM_TEST_DYNAMODB_ENDPOINT` (the test script starts one for every test binary), or else
//! `scripts/dynamodb-server.py` (moto, one request at a time; see there why) started here with
//! the `.venv` or system Python. Its lifetime is tied to this process through a pipe: when the
//! test binary exits, the pipe closes and the server stops.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use common::clock::Clock;
use common::store::DynamoStore;

static ENDPOINT: OnceLock<String> = OnceLock::new();
static CHILD: Mutex<Option<Child>> = Mutex::new(None);

/// The project's `.venv` first (the test script installs moto there), then the system Python.
fn pythons() -> Vec<String> {
    let venv = super::repo_root().join(".venv/bin/python");
    let mut v = vec![];
    if venv.exists() {
        v.push(venv.display().to_string());
    }
    v.push("python3".into());
    v
}

fn try_start(python: &str) -> Option<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .ok()?;
    let launcher = super::repo_root().join("scripts/dynamodb-server.py");
    let mut child = Command::new(python)
        .arg(launcher)
        .args([&port.to_string(), "--until-stdin-closes"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut line = String::new();
    let stdout = child.stdout.take()?;
    BufReader::new(stdout).read_line(&mut line).ok();
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    *CHILD.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
    Some(format!("http://127.0.0.1:{port}"))
}

fn start_moto() -> String {
    pythons().iter().find_map(|p| try_start(p)).unwrap_or_else(|| {
        panic!(
            "the DynamoDB-compatible test server (moto) did not start. Run the README's test \
             command (./scripts/test), which installs it into .venv, or `pip install 'moto[server]'`."
        )
    })
}

pub fn endpoint() -> &'static str {
    ENDPOINT.get_or_init(|| match std::env::var("WXIM_TEST_DYNAMODB_ENDPOINT") {
        Ok(e) if !e.is_empty() => e,
        _ => start_moto(),
    })
}

pub fn client() -> Client {
    client_at(endpoint())
}

/// A client of whatever speaks DynamoDB's wire format at `endpoint` (the test server, or a
/// stand-in scripting answers moto never gives).
pub fn client_at(endpoint: &str) -> Client {
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .endpoint_url(endpoint)
        .build();
    Client::from_conf(conf)
}

/// Two fresh tables (state and outbox) with a unique name, created as template.yaml declares.
pub async fn fresh_store(clock: Arc<dyn Clock>) -> DynamoStore {
    let name = format!("wxim-test-{}", super::random_suffix());
    let store = DynamoStore::new(client(), name.clone(), format!("{name}-outbox"), clock);
    store
        .ensure_tables()
        .await
        .expect("create tables on the test server");
    store
}

/// An SQS client of the test server (moto serves SQS on the same port as DynamoDB).
pub fn sqs_client() -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "static",
        ))
        .endpoint_url(endpoint())
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

/// A fresh spool queue (with its dead-letter queue, as template.yaml declares them) on the test
/// server's SQS, which the same moto process serves; and the dead-letter queue's URL.
pub async fn fresh_spool() -> (common::store::spool::SqsSpool, String) {
    let name = format!("wxim-test-spool-{}", super::random_suffix());
    common::store::spool::SqsSpool::ensure(sqs_client(), &name)
        .await
        .expect("create the spool queues on the test server")
}
