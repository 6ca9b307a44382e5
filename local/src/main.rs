//! `wxim`: the developer's command line. Reads the same environment variables as the Lambda
//! functions (and a `.env` file if present); uses the embedded store in `WXIM_DATA_DIR` unless
//! `TABLE_NAME` is set.

use std::io::Read as _;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use common::obs;
use common::store::Table;
use local::routes::Function;
use local::{demo, httpd, sign, wiring};

#[derive(Parser)]
#[command(name = "wxim", version, about = "wxim-bridge local command line")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a function's handler on an event file (or - for stdin) and print the response.
    Invoke {
        /// A folder name under functions/ (e.g. wechat-event).
        function: String,
        /// API Gateway HTTP API (payload v2) event JSON, or - for stdin.
        event: String,
    },
    /// Serve every configured route on 127.0.0.1 over HTTP.
    Serve {
        #[arg(long, default_value_t = 3000)]
        port: u16,
    },
    /// Inspect the store.
    State {
        #[command(subcommand)]
        cmd: StateCmd,
    },
    /// Re-sign a WeChat event for the configured app (fresh timestamp, nonce, signatures; the
    /// body re-encrypted in compat/safe mode) and print it.
    Sign {
        event: String,
        /// plain, compat or safe (default: the event's current mode).
        #[arg(long)]
        mode: Option<String>,
        #[arg(long)]
        timestamp: Option<String>,
        #[arg(long)]
        nonce: Option<String>,
    },
    /// A guided tour on the embedded store with the sample configuration.
    Demo,
}

#[derive(Subcommand)]
enum StateCmd {
    /// Every stored item as one JSON object per line.
    Dump,
}

fn read_input(path: &str) -> Result<String, String> {
    if path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))
    }
}

async fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.cmd {
        Cmd::Demo => {
            demo::run().await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Invoke { function, event } => {
            let f = Function::from_name(&function).ok_or_else(|| {
                format!("unknown function {function}; one of: {}", Function::names())
            })?;
            let raw = read_input(&event)?;
            let app = wiring::app(wiring::config()?).await?;
            let out = local::routes::invoke(f, &raw, &app).await?;
            println!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Serve { port } => {
            let app = Arc::new(wiring::app(wiring::config()?).await?);
            let listener = httpd::bind(port)
                .await
                .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
            eprintln!(
                "wxim serve: listening on http://127.0.0.1:{port} ({})",
                local::routes::summary(&app.config)
            );
            httpd::serve(listener, local::routes::handler(app)).await;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::State {
            cmd: StateCmd::Dump,
        } => {
            let app = wiring::app(wiring::config()?).await?;
            for t in Table::ALL {
                for item in app.store.scan(t).await.map_err(|e| e.to_string())? {
                    let mut v = item.to_json();
                    v["table"] = serde_json::Value::String(t.name().to_owned());
                    println!("{v}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Sign {
            event,
            mode,
            timestamp,
            nonce,
        } => {
            let config = wiring::config()?;
            let delivery = match mode.as_deref() {
                None => None,
                Some(m) => Some(
                    common::wechat::push::Delivery::parse(m)
                        .ok_or("--mode must be plain, compat or safe")?,
                ),
            };
            let mut v: serde_json::Value = serde_json::from_str(&read_input(&event)?)
                .map_err(|e| format!("{event} is not JSON: {e}"))?;
            let what = sign::sign_event(
                &config,
                &mut v,
                &sign::SignOptions {
                    delivery,
                    timestamp,
                    nonce,
                },
            )?;
            eprintln!("wxim sign: {what}");
            println!(
                "{}",
                serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    wiring::load_dotenv();
    obs::init(obs::Sink::Stderr, "wxim");
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wxim: {e}");
            ExitCode::FAILURE
        }
    }
}
