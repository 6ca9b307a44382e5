//! `wxim demo`: the whole story on the embedded store with the sample configuration, printing
//! what each step did. Every request goes through the same handlers as in Lambda; WeChat and IM
//! are local stand-ins that speak their wire format, and the WeChat one prints what it receives.

use std::sync::Arc;

use common::App;
use common::clock::{Clock, SystemClock};
use common::config::AppKind;
use common::http::{Request, Response};
use common::protocol::im::usersig;
use common::protocol::wechat::push::{self, Delivery};
use common::protocol::wechat::signature;
use common::records::keys;
use common::records::outbox;
use common::store::{EmbeddedStore, Table};
use serde_json::json;

use crate::routes::{Function, call};
use crate::sample;
use crate::standin::StandIn;

const USER_OPENID: &str = "otFpruAK8D-E6EfStSYonYSBZ8_4";
const TEMPLATE: &str = "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc";
const CUSTOMER: &str = "customer_lin";
const SELLER: &str = "shop_support";

pub(crate) struct Demo {
    pub app: App,
    step: usize,
}

pub(crate) fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

impl Demo {
    pub fn title(&mut self, t: &str) {
        self.step += 1;
        println!("\n{}. {t}", self.step);
    }

    fn show_request(req: &Request) {
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
    }

    fn show_response(resp: &Response) {
        println!(
            "   ← {} {} {:?}",
            resp.status,
            resp.header("content-type").unwrap_or(""),
            short(resp.body_str(), 110)
        );
    }

    /// Through the local router: the handler, then the outbox stream, as in AWS.
    pub async fn send(&self, f: Function, req: Request) -> Response {
        Self::show_request(&req);
        let resp = call(f, &req, &self.app).await;
        Self::show_response(&resp);
        resp
    }

    /// The handler alone: its outbox writes wait for the next stream batch.
    async fn send_no_dispatch(&self, req: Request) -> Response {
        Self::show_request(&req);
        let resp = common::handlers::im::callback(&req, &self.app).await;
        Self::show_response(&resp);
        resp
    }

    async fn ledger_line(&self) -> String {
        match common::records::subscription::get(
            &*self.app.store,
            AppKind::Mp,
            USER_OPENID,
            TEMPLATE,
        )
        .await
        {
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

    /// An IM callback as IM sends it: SdkAppid, RequestTime and Sign in the query.
    fn im_callback(&self, command: &str, body: serde_json::Value) -> Request {
        let im = self.app.config.im.as_ref().expect("sample config has IM");
        let now = self.app.now().to_string();
        let token = im.callback_token.as_ref().map(|t| t.expose()).unwrap_or("");
        let sign = usersig::callback_sign(token, &now);
        Request::new(
            "POST",
            &format!(
                "/im/callback?SdkAppid={}&CallbackCommand={command}&contenttype=json&ClientIP=127.0.0.1&OptPlatform=Web&RequestTime={now}&Sign={sign}",
                im.sdkappid
            ),
        )
        .with_body(body.to_string())
    }

    async fn outbox_lines(&self) -> Result<Vec<String>, String> {
        let mut items = self
            .app
            .store
            .scan(Table::Outbox)
            .await
            .map_err(|e| e.to_string())?;
        items.sort_by_key(|i| i.n("created_at").unwrap_or(0));
        Ok(items
            .iter()
            .map(|i| {
                format!(
                    "{} {:<12} {:<8} {}{}",
                    short(outbox::id_of(i), 8),
                    i.s("kind").unwrap_or(""),
                    i.s("status").unwrap_or(""),
                    i.s("reason").unwrap_or(""),
                    i.s("preview")
                        .map(|p| format!(" — \"{p}\""))
                        .unwrap_or_default()
                )
            })
            .collect())
    }
}

fn popup(status: &str, ts: i64) -> String {
    json!({
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
    json!({
        "ToUserName": "gh_123456789abc",
        "FromUserName": USER_OPENID,
        "CreateTime": ts,
        "MsgType": "event",
        "Event": "subscribe_msg_change_event",
        "List": [{"TemplateId": TEMPLATE, "SubscribeStatusString": "reject"}],
    })
    .to_string()
}

fn c2c(seq: u64, text: &str, now: i64) -> serde_json::Value {
    json!({
        "CallbackCommand": "C2C.CallbackAfterSendMsg",
        "From_Account": SELLER, "To_Account": CUSTOMER,
        "MsgSeq": seq, "MsgRandom": 7_000_000 + seq, "MsgTime": now,
        "MsgKey": format!("{seq}_{}_{now}", 7_000_000 + seq), "OnlineOnlyFlag": 0,
        "SendMsgResult": 0, "ErrorInfo": "send msg succeed", "UnreadMsgNum": seq,
        "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}],
    })
}

/// A fresh app on a temporary embedded store, with the sample configuration pointed at the
/// stand-ins.
pub(crate) async fn setup(
    name: &str,
    extra: &[(&str, &str)],
) -> Result<(Demo, StandIn, StandIn, std::path::PathBuf), String> {
    let dir = std::env::temp_dir().join(format!("wxim-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let base = sample::config(&[]).map_err(|e| e.to_string())?;
    let wechat = StandIn::wechat_for(0, &base)
        .await
        .map_err(|e| e.to_string())?;
    let imstand = StandIn::im_for(0, &base, &[CUSTOMER, SELLER])
        .await
        .map_err(|e| e.to_string())?
        .ok_or("sample config lacks IM")?;
    let dir_s = dir.display().to_string();
    let mut overrides = vec![
        ("WXIM_DATA_DIR", dir_s.as_str()),
        ("WECHAT_API_BASE", wechat.base.as_str()),
        ("IM_API_BASE", imstand.base.as_str()),
    ];
    overrides.extend_from_slice(extra);
    let config = sample::config(&overrides).map_err(|e| e.to_string())?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store =
        EmbeddedStore::open(&dir.join("wxim.db"), clock.clone()).map_err(|e| e.to_string())?;
    let demo = Demo {
        app: App::new(config, Arc::new(store), clock),
        step: 0,
    };
    Ok((demo, wechat, imstand, dir))
}

pub async fn run() -> Result<(), String> {
    let (mut d, wechat, im, dir) = setup("demo", &[("IM_AGENT_ACCOUNTS_MP", "agent_bob")]).await?;
    println!("wxim demo: WeChat and Tencent IM joined, end to end, on the embedded store");
    println!("  store: {}/wxim.db (removed at the end)", dir.display());
    println!(
        "  configuration: events/sample.env (mini program wx1234567890abcdef in safe mode, IM app 1400000000)"
    );
    println!(
        "  WeChat API stand-in {}, IM REST stand-in {}",
        wechat.base, im.base
    );
    let now = d.app.now();

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

    d.title(&format!(
        "The mini program binds IM user {CUSTOMER} to the WeChat user (here as `wxim bind` does)"
    ));
    common::records::binding::bind(&*d.app.store, CUSTOMER, AppKind::Mp, USER_OPENID, None, now)
        .await
        .map_err(|e| e.to_string())?;
    println!("   bind#im#{CUSTOMER} ↔ bind#mp#{USER_OPENID}");

    d.title("Later the user accepts the template on two occasions, then closes the mini program");
    for t in [now + 3, now + 4] {
        let req = d.push(&popup("accept", t), Delivery::Safe, t)?;
        d.send(Function::WechatEvent, req).await;
    }
    println!("   {}", d.ledger_line().await);
    let logout = json!({"CallbackCommand": "State.StateChange", "EventTime": (now + 4) * 1000,
        "Info": {"Action": "Disconnect", "To_Account": CUSTOMER, "Reason": "LinkClose"}});
    d.send(
        Function::ImCallback,
        d.im_callback("State.StateChange", logout),
    )
    .await;
    println!("   IM says the user's connection closed: presence offline");

    d.title(&format!("{SELLER} sends three IM messages while {CUSTOMER} is away (C2C.CallbackAfterSendMsg, signed)"));
    for (i, text) in [
        "您的订单已发货",
        "快递单号 SF1234567890",
        "有问题随时联系我们哦，祝您购物愉快！",
    ]
    .iter()
    .enumerate()
    {
        d.send_no_dispatch(d.im_callback(
            "C2C.CallbackAfterSendMsg",
            c2c(i as u64 + 1, text, now + 5 + i as i64),
        ))
        .await;
    }
    println!(
        "   each callback: recipient bound, offline, has a credit → one outbox item (idempotent on MsgKey)"
    );
    for l in d.outbox_lines().await? {
        println!("     {l}");
    }

    d.title("The outbox stream delivers the three records in one batch (its batching window): one merged notification");
    wechat.print_requests(true);
    crate::routes::stream(&d.app).await;
    wechat.print_requests(false);
    for l in d.outbox_lines().await? {
        println!("     {l}");
    }
    println!("   {}", d.ledger_line().await);

    d.title("A fourth message inside the debounce window is held, and counted for the next notification");
    d.send(
        Function::ImCallback,
        d.im_callback("C2C.CallbackAfterSendMsg", c2c(4, "还有一件事", now + 9)),
    )
    .await;
    let state = d
        .app
        .store
        .get(Table::State, &keys::notify_state(CUSTOMER), keys::ONE)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "   notify#{CUSTOMER}: {} waiting; when the window ends ({} s after the last notification) the sweep sends one follow-up saying so",
        state.and_then(|s| s.n("pending")).unwrap_or(0),
        d.app
            .config
            .notify
            .as_ref()
            .map(|n| n.debounce_secs)
            .unwrap_or(0)
    );
    println!(
        "   (the due#… items below: in AWS the sweep runs every minute on a schedule; locally `wxim serve` runs it, or `wxim sweep` once)"
    );
    println!("   {}", d.ledger_line().await);

    d.title("The same user taps the mini program's contact button (<button open-type=\"contact\" session-from=\"order:42\">): user_enter_tempsession; agent_bob (IM_AGENT_ACCOUNTS_MP) gets the conversation");
    let t = d.app.now();
    let enter = json!({"ToUserName": "gh_123456789abc", "FromUserName": USER_OPENID, "CreateTime": t,
        "MsgType": "event", "Event": "user_enter_tempsession", "SessionFrom": "order:42"});
    let req = d.push(&enter.to_string(), Delivery::Safe, t)?;
    d.send(Function::WechatEvent, req).await;
    println!("   WeChat now allows 2 customer-service replies within 1 minute");

    d.title("They write in the customer-service chat: forwarded to agent_bob from their bound IM account, customer_lin, with the SessionFrom");
    let text = json!({"ToUserName": "gh_123456789abc", "FromUserName": USER_OPENID, "CreateTime": t + 1,
        "MsgType": "text", "Content": "我的订单还没到", "MsgId": 24000000000000201u64});
    let req = d.push(&text.to_string(), Delivery::Safe, t + 1)?;
    d.send(Function::WechatEvent, req).await;
    for r in im.requests("/v4/openim/sendmsg").iter().rev().take(1) {
        println!(
            "   IM sendmsg {} → {}: {}",
            r.body["From_Account"].as_str().unwrap_or(""),
            r.body["To_Account"].as_str().unwrap_or(""),
            r.body["MsgBody"][0]["MsgContent"]["Text"]
        );
    }

    d.title("agent_bob answers in IM: a customer-service message with the mini program's access token (one of the 5 replies their message opened)");
    let mut body = c2c(40, "已经发货了，单号 SF100", d.app.now());
    body["From_Account"] = json!("agent_bob");
    body["To_Account"] = json!(CUSTOMER);
    d.send(
        Function::ImCallback,
        d.im_callback("C2C.CallbackAfterSendMsg", body),
    )
    .await;
    for r in wechat.requests("/cgi-bin/message/custom/send") {
        println!("   custom/send {}", r.body);
    }

    println!("\nStored items (what `wxim state dump` prints):");
    for t in Table::ALL {
        for item in d.app.store.scan(t).await.map_err(|e| e.to_string())? {
            let mut v = item.to_json();
            v["table"] = json!(t.name());
            println!("  {}", short(&v.to_string(), 220));
        }
    }
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "\nDone. Next: `cp events/sample.env .env`, `wxim standins` in one terminal, `wxim serve` in another,"
    );
    println!("and post the files in events/ (see README).");
    Ok(())
}

const FOLLOWER: &str = "oUSER_openid_0001";

impl Demo {
    /// An official-account push from the follower, through the router.
    async fn oa_push(&self, inner_xml: &str, ts: i64) -> Result<Response, String> {
        let oa = self
            .app
            .config
            .app(AppKind::Oa)
            .ok_or("sample config lacks oa")?;
        let xml = format!(
            "<xml><ToUserName><![CDATA[gh_abcdef123456]]></ToUserName><FromUserName><![CDATA[{FOLLOWER}]]></FromUserName><CreateTime>{ts}</CreateTime>{inner_xml}</xml>"
        );
        let signed = push::seal(
            oa,
            xml.as_bytes(),
            Delivery::Safe,
            &ts.to_string(),
            "20240511",
        )?;
        let req = Request::new("POST", &format!("/wechat/oa?{}", signed.query_string()))
            .with_body(signed.body);
        Ok(self.send(Function::WechatEvent, req).await)
    }

    /// The text of an encrypted passive reply, as the follower sees it.
    fn reply_text(&self, resp: &Response) -> String {
        let Some(oa) = self.app.config.app(AppKind::Oa) else {
            return String::new();
        };
        let env = common::protocol::wechat::message::parse_envelope(&resp.body).ok();
        let plain = match (env.and_then(|e| e.encrypt), &oa.crypto) {
            (Some(e), Some(c)) => c.decrypt(&e).unwrap_or_default(),
            _ => return resp.body_str().to_owned(),
        };
        match common::protocol::wechat::message::parse_message(&plain).map(|m| m.kind) {
            Ok(common::protocol::wechat::message::MessageKind::Text { content }) => content,
            _ => String::from_utf8_lossy(&plain).into_owned(),
        }
    }

    async fn agent_says(&self, agent: &str, seq: u64, text: &str) -> Response {
        let r = self.agent_writes(agent, seq, text).await;
        self.burst_ends().await;
        r
    }

    /// An agent's message, held with the rest of its burst (`KF_MERGE_SECS`).
    async fn agent_writes(&self, agent: &str, seq: u64, text: &str) -> Response {
        let now = self.app.now();
        let mut body = c2c(seq, text, now);
        body["From_Account"] = json!(agent);
        body["To_Account"] = json!(FOLLOWER);
        self.send(
            Function::ImCallback,
            self.im_callback("C2C.CallbackAfterSendMsg", body),
        )
        .await
    }

    /// Waits out the agent's burst, then dispatches it (what the stream's redelivery does).
    async fn burst_ends(&self) {
        let secs = self.app.config.oa_bridge.merge_secs;
        if secs > 0 {
            println!("   (held for the rest of the burst: {secs} s)");
            tokio::time::sleep(std::time::Duration::from_secs(secs as u64 + 1)).await;
            crate::routes::stream(&self.app).await;
        }
    }
}

pub async fn run_oa() -> Result<(), String> {
    let (mut d, wechat, im, dir) = setup("demo-oa", &[("KF_MERGE_SECS", "1")]).await?;
    wechat.print_requests(true);
    im.print_requests(true);
    println!("wxim demo oa: official-account followers talk to human agents who sit in IM");
    println!("  store: {}/wxim.db (removed at the end)", dir.display());
    println!(
        "  configuration: events/sample.env (official account wxfedcba0987654321 in safe mode; agents agent_alice, agent_bob)"
    );
    println!(
        "  WeChat API stand-in {}, IM REST stand-in {} (both print what they receive)",
        wechat.base, im.base
    );
    let now = d.app.now();

    d.title("A user follows the official account (subscribe event, safe mode)");
    let r = d.oa_push("<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[]]></EventKey>", now).await?;
    println!("   passive reply (decrypted): \"{}\"", d.reply_text(&r));
    println!("   imported into IM as {FOLLOWER}; assigned agent: agent_alice (round robin)");

    d.title("The follower asks a question: forwarded to their agent, \"connecting you\" as the passive reply");
    let r = d.oa_push("<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好，我的订单什么时候发货？]]></Content><MsgId>24000000000000101</MsgId>", now + 1).await?;
    println!("   passive reply (decrypted): \"{}\"", d.reply_text(&r));

    d.title("A photo right after: forwarded as a readable summary; no second \"connecting you\"");
    let r = d.oa_push("<MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[https://mmbiz.example/order.jpg]]></PicUrl><MediaId><![CDATA[media-image-1]]></MediaId><MsgId>24000000000000102</MsgId>", now + 2).await?;
    println!("   passive reply: {}", r.body_str());

    d.title("agent_alice answers in her IM client: delivered as a customer-service message");
    d.agent_says("agent_alice", 1, "您好！您的订单今天下午发货。")
        .await;

    d.title("She adds three short messages in quick succession (KF_MERGE_SECS=1 here): one customer-service message, one of the follower's 5 replies");
    d.agent_writes("agent_alice", 11, "快递单号 SF1234567890。")
        .await;
    d.agent_writes("agent_alice", 12, "预计明天送达。").await;
    d.agent_says("agent_alice", 13, "有问题随时找我。").await;

    d.title("The follower had also accepted the reply-waiting notification (订阅通知) once");
    d.oa_push(
        "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe_msg_popup_event]]></Event><SubscribeMsgPopupEvent><List><TemplateId><![CDATA[oa_reply_waiting_T0001]]></TemplateId><SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>2</PopupScene></List></SubscribeMsgPopupEvent>",
        now + 3,
    )
    .await?;

    d.title("Two days later agent_alice follows up: outside the 48-hour window (WeChat answers 45015), so the subscribe notification goes instead and she is told");
    wechat.script(
        "/cgi-bin/message/custom/send",
        vec![crate::standin::Scripted::Json(json!({"errcode": 45015, "errmsg": "response out of time limit or subscription is canceled"}))],
    );
    d.agent_says("agent_alice", 2, "包裹已签收，请确认。").await;

    d.title("Once more: the conversation now records WeChat's allowance as closed, so nothing goes to WeChat; no notification credit is left either: recorded, and agent_alice is told in IM");
    d.agent_says("agent_alice", 3, "还有其他问题吗？").await;

    d.title("The follower unfollows: conversation ended, IM account deleted where the edition allows (here 71000: kept, inactive)");
    d.oa_push(
        "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[unsubscribe]]></Event>",
        now + 4,
    )
    .await?;

    d.title("agent_alice, not yet aware, writes again: nothing goes to WeChat; the reply is recorded and she is told the follower has left");
    d.agent_says("agent_alice", 4, "您还在吗？").await;
    wechat.print_requests(false);
    im.print_requests(false);

    println!("\nThe outbox: every outbound call, and how it ended");
    for l in d.outbox_lines().await? {
        println!("  {l}");
    }
    let conv = d
        .app
        .store
        .get(Table::State, &keys::conversation(FOLLOWER), keys::ONE)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(c) = conv {
        println!("\nconv#oa#{FOLLOWER}: {}", c.to_json());
    }
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
    println!("\nDone.");
    Ok(())
}
