//! `wxim demo`: the whole story on the embedded store with the sample configuration, printing
//! what each step did. Every request goes through the same handlers as in Lambda.

use std::sync::Arc;

use common::App;
use common::clock::{Clock, SystemClock};
use common::config::AppKind;
use common::http::{Request, Response};
use common::store::{EmbeddedStore, Table};
use common::wechat::push::{self, Delivery};
use common::wechat::signature;

use crate::routes::{Function, call};
use crate::sample;

const USER_OPENID: &str = "otFpruAK8D-E6EfStSYonYSBZ8_4";
const TEMPLATE: &str = "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc";

struct Demo {
    app: App,
    step: usize,
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

impl Demo {
    fn title(&mut self, t: &str) {
        self.step += 1;
        println!("\n{}. {t}", self.step);
    }

    async fn send(&self, f: Function, req: Request) -> Response {
        let q = req
            .query
            .iter()
            .map(|(k, v)| format!("{k}={}", short(v, 12)))
            .collect::<Vec<_>>()
            .join("&");
        println!("   → {} {}?{q}", req.method, req.path);
        if !req.body.is_empty() {
            println!(
                "     body: {}",
                short(&String::from_utf8_lossy(&req.body), 110)
            );
        }
        let resp = call(f, &req, &self.app).await;
        println!(
            "   ← {} {} {:?}",
            resp.status,
            resp.header("content-type").unwrap_or(""),
            short(resp.body_str(), 110)
        );
        resp
    }

    async fn ledger_line(&self) -> String {
        match common::ledger::get(&*self.app.store, AppKind::Mp, USER_OPENID, TEMPLATE).await {
            Ok(Some(i)) => format!(
                "ledger: credits {} (status {})",
                i.n("credits").unwrap_or(0),
                i.s("status").unwrap_or("-")
            ),
            Ok(None) => "ledger: no entry".into(),
            Err(e) => format!("ledger unreadable: {e}"),
        }
    }

    fn push(&self, json: &str, delivery: Delivery, ts: i64) -> Result<Request, String> {
        let mp = self
            .app
            .config
            .app(AppKind::Mp)
            .ok_or("sample config lacks mp")?;
        let signed = push::seal(mp, json.as_bytes(), delivery, &ts.to_string(), "415670741")?;
        Ok(
            Request::new("POST", &format!("/wechat/mp?{}", signed.query_string()))
                .with_body(signed.body),
        )
    }
}

fn popup(status: &str, ts: i64) -> String {
    serde_json::json!({
        "ToUserName": "gh_123456789abc",
        "FromUserName": USER_OPENID,
        "CreateTime": ts,
        "MsgType": "event",
        "Event": "subscribe_msg_popup_event",
        "List": {"TemplateId": TEMPLATE, "SubscribeStatusString": status, "PopupScene": "0"},
    })
    .to_string()
}

fn change(ts: i64) -> String {
    serde_json::json!({
        "ToUserName": "gh_123456789abc",
        "FromUserName": USER_OPENID,
        "CreateTime": ts,
        "MsgType": "event",
        "Event": "subscribe_msg_change_event",
        "List": [{"TemplateId": TEMPLATE, "SubscribeStatusString": "reject"}],
    })
    .to_string()
}

pub async fn run() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("wxim-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_s = dir.display().to_string();
    let config = sample::config(&[("WXIM_DATA_DIR", &dir_s)]).map_err(|e| e.to_string())?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store =
        EmbeddedStore::open(&dir.join("wxim.db"), clock.clone()).map_err(|e| e.to_string())?;
    let mut d = Demo {
        app: App::new(config, Arc::new(store), clock.clone()),
        step: 0,
    };
    println!("wxim demo: the WeChat endpoint, end to end, on the embedded store");
    println!("  store: {}/wxim.db (removed at the end)", dir_s);
    println!("  configuration: events/sample.env (mini program wx1234567890abcdef, safe mode)");
    let now = clock.now();

    d.title("WeChat checks the URL when you press Submit in the console (GET, signature over token/timestamp/nonce)");
    let mp = d
        .app
        .config
        .app(AppKind::Mp)
        .ok_or("sample config lacks mp")?;
    let ts = now.to_string();
    let sig = signature::sign(&[mp.token.expose(), &ts, "1514711492"]);
    let r = d
        .send(
            Function::WechatVerify,
            Request::new(
                "GET",
                &format!("/wechat/mp?signature={sig}&timestamp={ts}&nonce=1514711492&echostr=4375120948345356249"),
            ),
        )
        .await;
    println!(
        "   the raw echostr, as text/plain: WeChat accepts the URL ({})",
        r.status
    );

    d.title(
        "The user taps Allow on the subscribe popup: subscribe_msg_popup_event, safe mode, JSON",
    );
    let req = d.push(&popup("accept", now), Delivery::Safe, now)?;
    d.send(Function::WechatEvent, req.clone()).await;
    println!("   msg_signature checked, decrypted (appid tail checked), one credit added");
    println!("   {}", d.ledger_line().await);

    d.title("WeChat did not hear back within 5 s and delivers the same push again");
    d.send(Function::WechatEvent, req).await;
    println!("   the dedupe marker (written in the same transaction) says it was applied");
    println!("   {}", d.ledger_line().await);

    d.title("The user turns the template off in the 服务通知 settings: subscribe_msg_change_event reject");
    let req = d.push(&change(now + 1), Delivery::Safe, now + 1)?;
    d.send(Function::WechatEvent, req).await;
    println!("   {}", d.ledger_line().await);

    d.title("A forged push (signature made with the wrong token) is refused and nothing is stored");
    let mut forged = d.push(&popup("accept", now + 2), Delivery::Safe, now + 2)?;
    for (k, v) in forged.query.iter_mut() {
        if k == "msg_signature" {
            *v = signature::sign(&["not-the-token", "1", "2", "3"]);
        }
    }
    d.send(Function::WechatEvent, forged).await;
    println!("   {}", d.ledger_line().await);

    println!("\nStored items (what `wxim state dump` prints):");
    for t in Table::ALL {
        for item in d.app.store.scan(t).await.map_err(|e| e.to_string())? {
            println!("  {}", item.to_json());
        }
    }
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "\nDone. Next: `cp events/sample.env .env && cargo run -p wxim-local --bin wxim -- serve` and post the files in events/."
    );
    Ok(())
}
