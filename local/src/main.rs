//! `wxim`: the developer's command line. Reads the same environment variables as the Lambda
//! functions (and a `.env` file if present); uses the embedded store in `WXIM_DATA_DIR` unless
//! `TABLE_NAME` is set.

use std::io::Read as _;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use common::config::AppKind;
use common::im::usersig;
use common::obs;
use common::store::Table;
use local::routes::Function;
use local::{demo, httpd, sign, standin, wiring};

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
    /// A guided tour on the embedded store with the sample configuration: `wxim demo` (mini
    /// program notifications), `wxim demo oa` (official-account customer service).
    Demo {
        /// `oa` for the official-account customer-service story.
        scenario: Option<String>,
    },
    /// Print a UserSig for the configured IM app, or check one.
    Usersig {
        /// The IM user id (identifier) the sig is for.
        identifier: String,
        /// Validity in seconds.
        #[arg(long, default_value_t = 86_400)]
        expire: i64,
        /// Check this UserSig for <identifier> instead of generating one.
        #[arg(long, value_name = "SIG")]
        verify: Option<String>,
    },
    /// Bind an IM user to a WeChat openid (of NOTIFY_APP, default mp) in the store.
    Bind {
        user_id: String,
        openid: String,
        /// mp or oa (default: NOTIFY_APP, else mp).
        #[arg(long)]
        app: Option<String>,
    },
    /// Serve local stand-ins of the WeChat and IM APIs (for `wxim serve` without the internet).
    Standins {
        #[arg(long, default_value_t = 9101)]
        wechat_port: u16,
        #[arg(long, default_value_t = 9102)]
        im_port: u16,
    },
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
        Cmd::Demo { scenario } => {
            match scenario.as_deref() {
                None | Some("mp") => demo::run().await?,
                Some("oa") => demo::run_oa().await?,
                Some(other) => {
                    return Err(format!(
                        "unknown demo {other}; try `wxim demo` or `wxim demo oa`"
                    ));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Usersig {
            identifier,
            expire,
            verify,
        } => {
            let config = wiring::config()?;
            let im = config
                .im
                .as_ref()
                .ok_or("IM is not configured (set IM_SDKAPPID and IM_SECRET_KEY)")?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let key = im.secret_key.expose();
            match verify {
                None => {
                    if !(1..=10 * 365 * 86_400).contains(&expire) {
                        return Err("--expire must be from 1 second to 10 years".into());
                    }
                    println!(
                        "{}",
                        usersig::generate(im.sdkappid, key, &identifier, expire, now)
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Some(sig) => match usersig::verify(im.sdkappid, key, &sig, &identifier, now) {
                    Ok(info) => {
                        println!(
                            "valid: {} on SDKAppID {}, expires at {} (in {} s)",
                            info.identifier,
                            info.sdkappid,
                            info.expires_at(),
                            info.expires_at() - now
                        );
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(usersig::UserSigError::Expired { expired_at }) => {
                        println!(
                            "expired: the signature is genuine but expired at {expired_at} ({} s ago)",
                            now - expired_at
                        );
                        Ok(ExitCode::from(1))
                    }
                    Err(e) => {
                        println!("invalid: {e}");
                        Ok(ExitCode::from(2))
                    }
                },
            }
        }
        Cmd::Bind {
            user_id,
            openid,
            app,
        } => {
            let config = wiring::config()?;
            let kind = match app.as_deref() {
                Some(a) => AppKind::parse(a).ok_or("--app must be mp or oa")?,
                None => config.notify.as_ref().map(|n| n.app).unwrap_or(AppKind::Mp),
            };
            let app = wiring::app(config).await?;
            let previous =
                common::bindings::bind(&*app.store, &user_id, kind, &openid, None, app.now())
                    .await
                    .map_err(|e| e.to_string())?;
            match previous {
                Some(p) => println!(
                    "bound {user_id} to {kind} openid {openid} (was {})",
                    p.openid
                ),
                None => println!("bound {user_id} to {kind} openid {openid}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Standins {
            wechat_port,
            im_port,
        } => {
            let config = wiring::config()?;
            let apps: Vec<(String, String)> = [&config.mp, &config.oa]
                .into_iter()
                .flatten()
                .map(|a| (a.appid.clone(), a.secret.expose().to_owned()))
                .collect();
            let pairs: Vec<(&str, &str)> =
                apps.iter().map(|(a, s)| (a.as_str(), s.as_str())).collect();
            let wx = standin::StandIn::wechat(wechat_port, &pairs)
                .await
                .map_err(|e| format!("cannot listen on {wechat_port}: {e}"))?;
            wx.print_requests(true);
            eprintln!(
                "WeChat API stand-in: {} (set WECHAT_API_BASE to it)",
                wx.base
            );
            let _im = match &config.im {
                Some(im) => {
                    let agents: Vec<&str> = im.agents.iter().map(String::as_str).collect();
                    let s = standin::StandIn::im(
                        im_port,
                        im.sdkappid,
                        im.secret_key.expose(),
                        &im.admin_user,
                        &agents,
                    )
                    .await
                    .map_err(|e| format!("cannot listen on {im_port}: {e}"))?;
                    s.print_requests(true);
                    eprintln!("IM REST API stand-in: {} (set IM_API_BASE to it)", s.base);
                    Some(s)
                }
                None => None,
            };
            tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
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
    let cli = Cli::parse();
    // The demo narrates each step itself; its JSON log lines only show with RUST_LOG set.
    let quiet = matches!(cli.cmd, Cmd::Demo { .. }) && std::env::var_os("RUST_LOG").is_none();
    let sink = if quiet {
        obs::Sink::Buffer(Default::default())
    } else {
        obs::Sink::Stderr
    };
    obs::init(sink, "wxim");
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wxim: {e}");
            ExitCode::FAILURE
        }
    }
}
