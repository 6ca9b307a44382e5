//! Observability: JSON log lines through `tracing`, and CloudWatch Embedded Metric Format (EMF)
//! lines. EMF must be a log event on its own (not a field inside a tracing line) for CloudWatch to
//! extract the metric, so metrics go through their own sink.

use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

/// Where log and metric lines go.
#[derive(Clone)]
pub enum Sink {
    /// Lambda: CloudWatch Logs reads stdout.
    Stdout,
    /// Command line: stdout is reserved for results.
    Stderr,
    /// Tests: lines are kept for inspection.
    Buffer(Arc<Mutex<Vec<u8>>>),
    /// Tests: kept for inspection and also appended to a file, so that the whole run's log
    /// output can be scanned afterwards (for secrets, by `scripts/scan-logs.py`).
    Tee(Arc<Mutex<Vec<u8>>>, Arc<Mutex<std::fs::File>>),
}

impl Sink {
    fn write_all(&self, bytes: &[u8]) {
        // A log line that cannot be written must not fail the request.
        let _ = match self {
            Sink::Stdout => std::io::stdout().lock().write_all(bytes),
            Sink::Stderr => std::io::stderr().lock().write_all(bytes),
            Sink::Buffer(b) => {
                b.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(bytes);
                Ok(())
            }
            Sink::Tee(b, file) => {
                b.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(bytes);
                // One write per line under the lock, so concurrent tests never interleave.
                file.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .write_all(bytes)
            }
        };
    }
}

pub struct SinkWriter(Sink);

impl std::io::Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = SinkWriter;
    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter(self.clone())
    }
}

static METRIC_SINK: OnceLock<Sink> = OnceLock::new();
static SERVICE: OnceLock<String> = OnceLock::new();

/// Installs the JSON log subscriber and the metric sink once per process; later calls are no-ops
/// (tests call it from every test). `RUST_LOG` tunes the level (default `info`), per target too.
pub fn init(sink: Sink, service: &str) {
    let _ = SERVICE.set(service.to_owned());
    let _ = METRIC_SINK.set(sink.clone());
    // `RUST_LOG` as a level and per-target levels ("info,wxim_common=debug"): tracing's
    // `Targets` filter reads that syntax without `EnvFilter`'s span and field matchers, whose
    // regex engine would add about half a megabyte to every function binary.
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    let layer = tracing_subscriber::fmt::layer()
        .json()
        .with_writer(sink)
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_target(false)
        .with_filter(filter);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// One EMF line: a count metric with its dimensions, under the `wxim-bridge` namespace.
pub fn metric(name: &str, dims: &[(&str, &str)], value: f64) {
    let service = SERVICE.get().map(String::as_str).unwrap_or("wxim");
    let mut dim_names: Vec<&str> = vec!["Service"];
    dim_names.extend(dims.iter().map(|(k, _)| *k));
    let mut line = serde_json::json!({
        "_aws": {
            "Timestamp": now_ms(),
            "CloudWatchMetrics": [{
                "Namespace": "wxim-bridge",
                "Dimensions": [dim_names],
                "Metrics": [{ "Name": name, "Unit": "Count" }],
            }],
        },
        "Service": service,
        name: value,
    });
    if let Some(obj) = line.as_object_mut() {
        for (k, v) in dims {
            obj.insert((*k).to_owned(), serde_json::Value::String((*v).to_owned()));
        }
    }
    let mut bytes = line.to_string().into_bytes();
    bytes.push(b'\n');
    METRIC_SINK.get().unwrap_or(&Sink::Stdout).write_all(&bytes);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A short, single-line preview of user text for logs and notifications: enough to recognise a
/// message, not enough to leak it.
pub fn preview(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}
