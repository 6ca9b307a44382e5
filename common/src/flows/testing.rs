//! A flow's own test bench: an `App` on the embedded store (in memory) with a `ManualClock` and
//! the sample configuration, its WeChat and IM base URLs on a closed loopback port so that any
//! outbound call fails as a refused connection (nothing was sent, retryable).

use std::collections::HashMap;
use std::sync::Arc;

use crate::app::App;
use crate::clock::ManualClock;
use crate::config::{AppKind, Config};
use crate::protocol::im::callback::{C2cMessage, Element};
use crate::protocol::wechat::message::{Message, parse_message};
use crate::records::binding;
use crate::records::outbox::{self, OutboxItem};
use crate::store::{EmbeddedStore, Table, Write};

pub const T0: i64 = 1_700_000_000;
pub const TEMPLATE: &str = "tpl_notify";

pub struct Bench {
    pub app: App,
    pub clock: Arc<ManualClock>,
}

fn vars() -> HashMap<String, String> {
    [
        ("WECHAT_MP_APPID", "wx1234567890abcdef"),
        ("WECHAT_MP_SECRET", "mp-secret"),
        ("WECHAT_MP_TOKEN", "mptoken"),
        ("WECHAT_OA_APPID", "wxfedcba0987654321"),
        ("WECHAT_OA_SECRET", "oa-secret"),
        ("WECHAT_OA_TOKEN", "oatoken"),
        ("IM_SDKAPPID", "1400000000"),
        (
            "IM_SECRET_KEY",
            "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e",
        ),
        ("IM_AGENT_ACCOUNTS", "agent_alice,agent_bob"),
        ("NOTIFY_TEMPLATE_ID", TEMPLATE),
        (
            "NOTIFY_DATA",
            r#"{"thing1":"{sender}","thing2":"{preview}","number4":"{count}"}"#,
        ),
        ("NOTIFY_DEBOUNCE_SECS", "300"),
        ("WECHAT_API_BASE", "http://127.0.0.1:9"),
        ("IM_API_BASE", "http://127.0.0.1:9"),
        ("HTTP_TIMEOUT_MS", "2000"),
        ("DISPATCH_BACKOFF_MS", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The sample configuration with `overrides` (an empty value removes a variable).
pub fn bench(overrides: &[(&str, &str)]) -> Bench {
    let mut v = vars();
    for (k, val) in overrides {
        if val.is_empty() {
            v.remove(*k);
        } else {
            v.insert((*k).to_owned(), (*val).to_owned());
        }
    }
    let config = Config::from_lookup(&|k| v.get(k).cloned()).expect("test configuration");
    let clock = Arc::new(ManualClock::at(T0));
    let store = EmbeddedStore::in_memory(clock.clone()).expect("in-memory store");
    let app = App::new(config, Arc::new(store), clock.clone());
    Bench { app, clock }
}

impl Bench {
    pub async fn bind(&self, user: &str, openid: &str) {
        binding::bind(&*self.app.store, user, AppKind::Mp, openid, None, T0)
            .await
            .unwrap();
    }

    pub async fn credits(&self, openid: &str, n: usize) {
        let items: Vec<_> = (0..n)
            .map(|_| crate::protocol::wechat::message::SubscribeItem {
                template_id: TEMPLATE.into(),
                status: "accept".into(),
                popup_scene: None,
            })
            .collect();
        let ws = crate::records::subscription::popup_writes(AppKind::Mp, openid, &items, T0);
        self.app.store.transact(ws).await.unwrap();
    }

    pub async fn commit(&self, ws: impl IntoIterator<Item = Write>) {
        self.app
            .store
            .transact(ws.into_iter().collect())
            .await
            .unwrap();
    }

    pub async fn outbox(&self) -> Vec<OutboxItem> {
        let mut v: Vec<OutboxItem> = self
            .app
            .store
            .scan(Table::Outbox)
            .await
            .unwrap()
            .iter()
            .map(|i| OutboxItem::from_item(i).unwrap())
            .collect();
        v.sort_by_key(|i| i.created_at);
        v
    }

    pub async fn item(&self, id: &str) -> OutboxItem {
        outbox::read(&*self.app.store, id).await.unwrap().unwrap()
    }
}

pub fn c2c(from: &str, to: &str, text: &str, seq: u64) -> C2cMessage {
    C2cMessage {
        from: from.into(),
        to: to.into(),
        msg_seq: seq,
        msg_random: 7,
        msg_time: T0,
        msg_key: format!("{seq}_7_{T0}"),
        online_only: false,
        send_result: Some(0),
        unread: Some(1),
        body: vec![Element::Text(text.into())],
        cloud_custom_data: None,
        push: Default::default(),
    }
}

pub fn oa_text(from: &str, text: &str, msg_id: u64) -> Message {
    parse_message(format!(
        "<xml><ToUserName>gh_test</ToUserName><FromUserName>{from}</FromUserName><CreateTime>{T0}</CreateTime><MsgType>text</MsgType><Content>{text}</Content><MsgId>{msg_id}</MsgId></xml>"
    ).as_bytes())
    .unwrap()
}

pub fn event(from: &str, event: &str, at: i64) -> Message {
    parse_message(format!(
        "<xml><ToUserName>gh_test</ToUserName><FromUserName>{from}</FromUserName><CreateTime>{at}</CreateTime><MsgType>event</MsgType><Event>{event}</Event></xml>"
    ).as_bytes())
    .unwrap()
}
