//! `wxim`: the developer's command line. Reads the same environment variables as the Lambda
//! functions (and a `.env` file if present); uses the embedded store in `WXIM_DATA_DIR` unless
//! `TABLE_NAME` is set.

use std::io::Read as _;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use common::config::AppKind;
use common::obs;
use common::protocol::im::usersig;
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
        /// Exit when stdin reaches its end (so that a parent process, e.g. `wxim storm`, never
        /// leaves the server behind).
        #[arg(long)]
        until_stdin_closes: bool,
    },
    /// Run one sweep of deferred work now (what the schedule runs in AWS): follow-ups of held
    /// notifications, parked sends whose time has come, outbox items the stream lost.
    Sweep {
        /// Instead, read the whole outbox (a DynamoDB Scan) and re-drive every unfinished item,
        /// whether or not a due record points at it (items queued before watch records existed).
        #[arg(long)]
        scan_outbox: bool,
        /// Run as if the clock were this many seconds ahead: due records, stale claims and
        /// watch records fall due as they would by then (for rehearsals such as `wxim storm`;
        /// never against a store others use).
        #[arg(long, default_value_t = 0, value_name = "SECS")]
        advance: i64,
    },
    /// A bounded storm against `wxim serve` on moto with local stand-ins, every event delivered
    /// three times at once, then exactly-once checks (`scripts/storm` runs it; see the README).
    Storm {
        /// Distinct events per kind (popups, official-account messages, IM callbacks).
        #[arg(long, default_value_t = 200)]
        n: usize,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 24)]
        concurrency: usize,
        /// Inject faults: stop and restart the DynamoDB server, WeChat HTTP 500 / timeouts /
        /// errcode -1, IM HTTP 503, each for a stretch.
        #[arg(long)]
        faults: bool,
        /// The Python with moto (scripts/pyenv.sh makes .venv).
        #[arg(long, default_value = ".venv/bin/python")]
        python: String,
        /// The moto launcher.
        #[arg(long, default_value = "scripts/dynamodb-server.py")]
        moto: String,
        /// Where logs and the DynamoDB snapshot go.
        #[arg(long, default_value = "target/storm")]
        out: String,
        /// Give up after this long, whatever is left.
        #[arg(long, default_value_t = 540)]
        max_secs: u64,
    },
    /// Inspect the store.
    State {
        #[command(subcommand)]
        cmd: StateCmd,
    },
    /// Manage the DynamoDB tables named by TABLE_NAME / OUTBOX_TABLE_NAME.
    Tables {
        #[command(subcommand)]
        cmd: TablesCmd,
    },
    /// Re-sign an event for the configured apps and print it: a WeChat push or URL check (fresh
    /// timestamp, nonce, signatures; the body re-encrypted in compat/safe mode), an IM callback
    /// (RequestTime and Sign), or a /bind request (a fresh UserSig for its userId).
    Sign {
        event: String,
        /// plain, compat or safe (default: the event's current mode).
        #[arg(long)]
        mode: Option<String>,
        #[arg(long)]
        timestamp: Option<String>,
        #[arg(long)]
        nonce: Option<String>,
        /// Also give the message a new CreateTime (and MsgId), so that it is a new delivery,
        /// not a retry that deduplication answers without applying.
        #[arg(long)]
        fresh: bool,
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
    /// Queue a subscribe message through the admin API (POST /notify), or read its state
    /// (GET /notify/{id}), as the local operator.
    Notify {
        #[command(subcommand)]
        cmd: NotifyCmd,
    },
    /// Serve local stand-ins of the WeChat and IM APIs (for `wxim serve` without the internet).
    Standins {
        #[arg(long, default_value_t = 9101)]
        wechat_port: u16,
        #[arg(long, default_value_t = 9102)]
        im_port: u16,
        /// A `wx.login` code the WeChat stand-in will exchange (once) for an openid of the mini
        /// program, as CODE=OPENID; repeatable. The codes of events/bind/ are always accepted.
        #[arg(long = "code", value_name = "CODE=OPENID")]
        codes: Vec<String>,
    },
}

#[derive(Subcommand)]
enum NotifyCmd {
    /// POST /notify: queue a subscribe message, dispatch it as the stream would, print its state.
    Send {
        /// The recipient's IM user id (bound with POST /bind or `wxim bind`).
        #[arg(long, conflicts_with = "openid", required_unless_present = "openid")]
        user_id: Option<String>,
        /// The recipient's openid.
        #[arg(long)]
        openid: Option<String>,
        #[arg(long)]
        template: String,
        /// Template data as JSON: {"thing1":"工单已完成"} or {"thing1":{"value":"…"}}.
        #[arg(long)]
        data: String,
        #[arg(long)]
        page: Option<String>,
        /// developer, trial or formal (mini program only).
        #[arg(long)]
        state: Option<String>,
        /// zh_CN, en_US, zh_HK or zh_TW.
        #[arg(long)]
        lang: Option<String>,
        /// mp or oa (default: NOTIFY_APP, else mp).
        #[arg(long)]
        app: Option<String>,
        /// Idempotency-Key: the same key and request queue one message however often sent.
        #[arg(long)]
        key: Option<String>,
    },
    /// GET /notify/{id}: the state of a queued message.
    Status { id: String },
}

#[derive(Subcommand)]
enum TablesCmd {
    /// Create both tables (keys, TTL, the outbox stream) as template.yaml declares them, at the
    /// configured endpoint (AWS_ENDPOINT_URL_DYNAMODB: a local DynamoDB-compatible server);
    /// existing tables are left as they are. Also the spool's queue and its dead-letter queue
    /// (`<TABLE_NAME>-spool`) where the endpoint serves SQS (AWS_ENDPOINT_URL_SQS).
    Create,
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
            let previous = common::records::binding::bind(
                &*app.store,
                &user_id,
                kind,
                &openid,
                None,
                app.now(),
            )
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
        Cmd::Notify { cmd } => {
            let app = wiring::app(wiring::config()?).await?;
            let id = match cmd {
                NotifyCmd::Send {
                    user_id,
                    openid,
                    template,
                    data,
                    page,
                    state,
                    lang,
                    app: kind,
                    key,
                } => {
                    let data: serde_json::Value = serde_json::from_str(&data)
                        .map_err(|e| format!("--data is not JSON: {e}"))?;
                    let to = match (user_id, openid) {
                        (Some(u), _) => serde_json::json!({ "userId": u }),
                        (None, Some(o)) => serde_json::json!({ "openid": o }),
                        (None, None) => return Err("give --user-id or --openid".into()),
                    };
                    let mut body =
                        serde_json::json!({ "to": to, "templateId": template, "data": data });
                    for (k, v) in [
                        ("page", page),
                        ("miniprogramState", state),
                        ("lang", lang),
                        ("app", kind),
                    ] {
                        if let Some(v) = v {
                            body[k] = serde_json::Value::String(v);
                        }
                    }
                    let mut req = local::routes::operator_request("POST", "/notify")
                        .with_body(body.to_string());
                    if let Some(k) = key {
                        req = req.with_header("idempotency-key", &k);
                    }
                    // The handler, then the local stream: the message is sent (or not) by now.
                    let resp = local::routes::call(Function::AdminNotify, &req, &app).await;
                    println!("{}", resp.body_str());
                    if resp.status >= 400 {
                        return Ok(ExitCode::FAILURE);
                    }
                    serde_json::from_slice::<serde_json::Value>(&resp.body)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_owned))
                        .ok_or("the answer carries no id")?
                }
                NotifyCmd::Status { id } => id,
            };
            let req = local::routes::operator_request("GET", &format!("/notify/{id}"));
            let resp = local::routes::call(Function::AdminNotify, &req, &app).await;
            println!("{}", resp.body_str());
            Ok(if resp.status < 400 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Standins {
            wechat_port,
            im_port,
            codes,
        } => {
            let config = wiring::config()?;
            let wx = standin::StandIn::wechat_for(wechat_port, &config)
                .await
                .map_err(|e| format!("cannot listen on {wechat_port}: {e}"))?;
            wx.print_requests(true);
            if let Some(mp) = &config.mp {
                for (code, openid) in local::sample::LOGIN_CODES {
                    wx.add_code(code, &mp.appid, openid, None);
                }
                for c in &codes {
                    let (code, openid) = c
                        .split_once('=')
                        .filter(|(c, o)| !c.is_empty() && !o.is_empty())
                        .ok_or("--code takes CODE=OPENID")?;
                    wx.add_code(code, &mp.appid, openid, None);
                }
            } else if !codes.is_empty() {
                return Err("--code needs the mini program (WECHAT_MP_APPID)".into());
            }
            eprintln!(
                "WeChat API stand-in: {} (set WECHAT_API_BASE to it)",
                wx.base
            );
            let _im = standin::StandIn::im_for(im_port, &config, &[])
                .await
                .map_err(|e| format!("cannot listen on {im_port}: {e}"))?;
            if let Some(s) = &_im {
                s.print_requests(true);
                eprintln!("IM REST API stand-in: {} (set IM_API_BASE to it)", s.base);
            }
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
        Cmd::Storm {
            n,
            concurrency,
            faults,
            python,
            moto,
            out,
            max_secs,
        } => {
            let passed = local::storm::run(local::storm::Options {
                n,
                concurrency,
                faults,
                python: python.into(),
                moto: moto.into(),
                out: out.into(),
                max_secs,
            })
            .await?;
            Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Serve {
            port,
            until_stdin_closes,
        } => {
            if until_stdin_closes {
                std::thread::spawn(|| {
                    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
                    std::process::exit(0);
                });
            }
            // The outbox stream: one dispatcher fed by the store's outbox inserts.
            let (app, dispatcher) = local::stream::start(wiring::app(wiring::config()?).await?);
            let listener = httpd::bind(port)
                .await
                .map_err(|e| format!("cannot listen on 127.0.0.1:{port}: {e}"))?;
            eprintln!(
                "wxim serve: listening on http://127.0.0.1:{port} ({})",
                local::routes::summary(&app.config)
            );
            let sweeper = tokio::spawn(local::routes::sweep_every(app.clone()));
            // The spool's consumer: webhooks the store could not take, applied once it can.
            let spooled = tokio::spawn(local::routes::spool_every(app.clone()));
            httpd::serve(listener, local::routes::handler(app)).await;
            sweeper.abort();
            spooled.abort();
            dispatcher.abort();
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Sweep {
            scan_outbox,
            advance,
        } => {
            let app = if advance == 0 {
                wiring::app(wiring::config()?).await?
            } else {
                wiring::app_with_clock(wiring::config()?, Arc::new(wiring::AheadClock(advance)))
                    .await?
            };
            let report = if scan_outbox {
                local::routes::rescan(&app).await?
            } else {
                local::routes::sweep(&app).await?
            };
            println!("{}", report.to_json());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Tables {
            cmd: TablesCmd::Create,
        } => {
            let config = wiring::config()?;
            let store = common::store::DynamoStore::from_config(
                &config,
                Arc::new(common::clock::SystemClock),
            )
            .await
            .ok_or("set TABLE_NAME (and AWS_ENDPOINT_URL_DYNAMODB for a local server)")?;
            store
                .ensure_tables()
                .await
                .map_err(|e| format!("cannot create the tables: {e}"))?;
            println!(
                "tables ready: {} and {}",
                store.table_name(Table::State),
                store.table_name(Table::Outbox)
            );
            // The spool's queue, where the endpoint serves SQS too (moto does, on the same port).
            let name = format!("{}-spool", store.table_name(Table::State));
            match common::store::spool::SqsSpool::ensure_from_env(&name).await {
                Ok((spool, dlq)) => println!(
                    "spool queue ready: {} (dead-letter queue {dlq}); set SPOOL_QUEUE_URL to it to spool there instead of spool.db",
                    spool.queue_url()
                ),
                Err(e) => {
                    eprintln!("no spool queue ({e}): wxim spools to spool.db in WXIM_DATA_DIR")
                }
            }
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
            fresh,
        } => {
            let config = wiring::config()?;
            let delivery = match mode.as_deref() {
                None => None,
                Some(m) => Some(
                    common::protocol::wechat::push::Delivery::parse(m)
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
                    fresh,
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
    let quiet = matches!(cli.cmd, Cmd::Demo { .. } | Cmd::Storm { .. })
        && std::env::var_os("RUST_LOG").is_none();
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
