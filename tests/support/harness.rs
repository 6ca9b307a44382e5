//! A test world: the sample configuration pointed at fresh stand-ins of the WeChat and IM APIs,
//! a fresh store (SQLite or moto), and helpers that deliver real, signed webhooks through the
//! public handlers.

use std::sync::Arc;

use common::App;
use common::clock::{Clock, ManualClock, SystemClock};
use common::config::AppKind;
use common::http::{Request, Response};
use common::protocol::im::usersig;
use common::protocol::wechat::push::{self, Delivery};
use common::store::{Item, Table};
use local::routes::{self, Function};
use local::standin::StandIn;
use serde_json::{Value, json};

use crate::counting::{CountingStore, Counts};
use crate::outage::{Outage, RecordingSpool};
use crate::{Backend, config, store};

pub const MP_OPENID: &str = "otFpruAK8D-E6EfStSYonYSBZ8_4";
pub const TEMPLATE: &str = "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc";
pub const CUSTOMER: &str = "customer_lin";
pub const SELLER: &str = "shop_support";
pub const OA_OPENID: &str = "oUSER_openid_0001";
pub const OA_GH: &str = "gh_abcdef123456";

pub struct World {
    pub app: App,
    pub wechat: StandIn,
    pub im: StandIn,
    pub clock: Option<Arc<ManualClock>>,
    seq: std::sync::atomic::AtomicU64,
    counter: Option<Arc<CountingStore>>,
    pub needles: NeedleRecorder,
    /// With [`Options::spooled`]: the store's switchable outage and the spool.
    pub outage: Option<Arc<Outage>>,
    pub spool: Option<Arc<RecordingSpool>>,
    /// The spool's dead-letter queue on moto's SQS (the Dynamo backend).
    pub dead_letter_queue: Option<String>,
}

pub struct Options<'a> {
    pub backend: Backend,
    pub overrides: Vec<(&'a str, &'a str)>,
    /// A manual clock at this time (seconds), or the system clock.
    pub at: Option<i64>,
    /// Count the store's requests (see [`World::counts`]).
    pub counted: bool,
    /// A store that fails on demand ([`World::outage`]) and a spool (in memory on the embedded
    /// backend, moto's SQS on the Dynamo one).
    pub spooled: bool,
}

impl<'a> Options<'a> {
    pub fn new(backend: Backend) -> Self {
        Options {
            backend,
            overrides: vec![],
            at: None,
            counted: false,
            spooled: false,
        }
    }

    pub fn spooled(mut self) -> Self {
        self.spooled = true;
        self
    }
    pub fn set(mut self, k: &'a str, v: &'a str) -> Self {
        self.overrides.push((k, v));
        self
    }
    pub fn counted(mut self) -> Self {
        self.counted = true;
        self
    }

    pub fn at(mut self, t: i64) -> Self {
        self.at = Some(t);
        self
    }
}

impl World {
    pub async fn new(opts: Options<'_>) -> World {
        crate::logs();
        let base = config(&[]);
        let wechat = StandIn::wechat_for(0, &base).await.unwrap();
        // The codes of events/bind/, as `wxim standins` knows them.
        for (code, openid) in crate::sample::LOGIN_CODES {
            wechat.add_code(code, &base.mp.as_ref().unwrap().appid, openid, None);
        }
        let imstand = StandIn::im_for(0, &base, &[CUSTOMER, SELLER])
            .await
            .unwrap()
            .expect("the sample configuration has IM");
        let mut overrides = vec![
            ("WECHAT_API_BASE", wechat.base.as_str()),
            ("IM_API_BASE", imstand.base.as_str()),
            ("DISPATCH_BACKOFF_MS", "5"),
            ("HTTP_TIMEOUT_MS", "400"),
        ];
        overrides.extend(opts.overrides.iter().copied());
        let (clock, manual): (Arc<dyn Clock>, _) = match opts.at {
            Some(t) => {
                let m = Arc::new(ManualClock::at(t));
                (m.clone(), Some(m))
            }
            None => (Arc::new(SystemClock), None),
        };
        imstand.use_clock(clock.clone());
        wechat.use_clock(clock.clone());
        let mut store = store(opts.backend, clock.clone()).await;
        let counter = opts.counted.then(|| CountingStore::new(store.clone()));
        if let Some(c) = &counter {
            store = c.clone();
        }
        let (mut outage, mut spool, mut dead_letter_queue) = (None, None, None);
        if opts.spooled {
            let o = Outage::new(store);
            store = o.clone();
            outage = Some(o);
            let inner: Arc<dyn common::store::Spool> = match opts.backend {
                Backend::Embedded => {
                    Arc::new(common::store::spool::EmbeddedSpool::in_memory(clock.clone()).unwrap())
                }
                Backend::Dynamo => {
                    let (s, dlq) = crate::dynamo::fresh_spool().await;
                    dead_letter_queue = Some(dlq);
                    Arc::new(s)
                }
            };
            spool = Some(RecordingSpool::new(inner));
        }
        let mut app = App::new(config(&overrides), store, clock);
        if let Some(s) = &spool {
            app = app.with_spool(s.clone());
        }
        World {
            needles: NeedleRecorder {
                wechat: wechat.clone(),
                im: imstand.clone(),
            },
            app,
            wechat,
            im: imstand,
            clock: manual,
            seq: std::sync::atomic::AtomicU64::new(1),
            counter,
            outage,
            spool,
            dead_letter_queue,
        }
    }

    /// The store requests since the last call (the world must be [`Options::counted`]).
    pub fn counts(&self) -> Counts {
        self.counter
            .as_ref()
            .expect("a counted world (Options::counted)")
            .take()
    }

    pub fn now(&self) -> i64 {
        self.app.now()
    }

    pub fn advance(&self, secs: i64) {
        self.clock.as_ref().expect("a manual clock").advance(secs);
    }

    /// A WeChat push for `app`, signed (and encrypted in safe mode) as WeChat sends it, through
    /// the router (handler, then the local stream).
    pub async fn push(&self, app: AppKind, plaintext: &str, delivery: Delivery) -> Response {
        let wapp = self.app.config.app(app).unwrap();
        let ts = self.now().to_string();
        let signed = push::seal(wapp, plaintext.as_bytes(), delivery, &ts, "123456").unwrap();
        let req = Request::new("POST", &format!("/wechat/{app}?{}", signed.query_string()))
            .with_body(signed.body);
        routes::call(Function::WechatEvent, &req, &self.app).await
    }

    /// The push handler alone: what it queued waits for [`World::stream`] (or a test's own
    /// order of dispatch).
    pub async fn push_only(&self, app: AppKind, plaintext: &str, delivery: Delivery) -> Response {
        let wapp = self.app.config.app(app).unwrap();
        let ts = self.now().to_string();
        let signed = push::seal(wapp, plaintext.as_bytes(), delivery, &ts, "123456").unwrap();
        let req = Request::new("POST", &format!("/wechat/{app}?{}", signed.query_string()))
            .with_body(signed.body);
        common::handlers::wechat::event(&req, &self.app).await
    }

    pub async fn accept(&self, openid: &str, template: &str) {
        let t = self.now() + self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst) as i64;
        let body = json!({
            "ToUserName": "gh_123456789abc", "FromUserName": openid, "CreateTime": t,
            "MsgType": "event", "Event": "subscribe_msg_popup_event",
            "List": {"TemplateId": template, "SubscribeStatusString": "accept", "PopupScene": "0"},
        });
        let r = self
            .push(AppKind::Mp, &body.to_string(), Delivery::Safe)
            .await;
        assert_eq!(r.status, 200, "{}", r.body_str());
    }

    /// The notification scene: CUSTOMER bound to MP_OPENID, with `credits` accepts of TEMPLATE,
    /// and offline.
    pub async fn ready_offline(&self, credits: usize) {
        self.bind(CUSTOMER, MP_OPENID).await;
        for _ in 0..credits {
            self.accept(MP_OPENID, TEMPLATE).await;
        }
        let r = self
            .state_change(CUSTOMER, "Logout", self.now() * 1000)
            .await;
        assert_eq!(r.status, 200, "{}", r.body_str());
    }

    pub async fn bind(&self, user: &str, openid: &str) {
        common::records::binding::bind(
            &*self.app.store,
            user,
            AppKind::Mp,
            openid,
            None,
            self.now(),
        )
        .await
        .unwrap();
    }

    /// An IM callback request as IM sends it, signed with the configured token at the clock's time.
    pub fn im_request(&self, command: &str, body: &Value) -> Request {
        let im = self.app.config.im.as_ref().unwrap();
        let now = self.now().to_string();
        let sign = usersig::callback_sign(im.callback_token.as_ref().unwrap().expose(), &now);
        Request::new(
            "POST",
            &format!(
                "/im/callback?SdkAppid={}&CallbackCommand={command}&contenttype=json&ClientIP=127.0.0.1&OptPlatform=Web&RequestTime={now}&Sign={sign}",
                im.sdkappid
            ),
        )
        .with_body(body.to_string())
    }

    /// Through the router: handler, then the local stream (dispatch).
    pub async fn im(&self, command: &str, body: Value) -> Response {
        routes::call(
            Function::ImCallback,
            &self.im_request(command, &body),
            &self.app,
        )
        .await
    }

    /// The handler alone: queued items wait for [`World::stream`].
    pub async fn im_only(&self, command: &str, body: Value) -> Response {
        common::handlers::im::callback(&self.im_request(command, &body), &self.app).await
    }

    pub async fn stream(&self) {
        routes::stream(&self.app).await;
    }

    /// One sweep of deferred work (the schedule in AWS), then the local stream over what it
    /// queued, as `wxim sweep` runs it.
    pub async fn sweep(&self) -> common::flows::sweep::Report {
        routes::sweep(&self.app).await.unwrap()
    }

    /// The sweep alone, without the local stream after it: for items whose stream records were
    /// lost (the local stream stand-in would otherwise deliver every queued item itself).
    pub async fn sweep_only(&self) -> common::flows::sweep::Report {
        common::flows::sweep::sweep(&self.app).await.unwrap()
    }

    /// The due records (deferred work) in the store, as (minute bucket, outbox id, why).
    pub async fn due_records(&self) -> Vec<(String, String, String)> {
        self.app
            .store
            .scan(Table::State)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|i| {
                // `due#<hour>#<shard>` and `<mm>#<id>`: the minute is what the tests reason about.
                let hour = i.pk.strip_prefix("due#")?.split('#').next()?;
                let (mm, id) = i.sk.split_once('#')?;
                Some((
                    format!("{hour}{mm}"),
                    id.to_owned(),
                    i.s("why").unwrap_or("").to_owned(),
                ))
            })
            .collect()
    }

    pub async fn state_change(&self, user: &str, action: &str, event_time_ms: i64) -> Response {
        self.im(
            "State.StateChange",
            json!({"CallbackCommand": "State.StateChange", "EventTime": event_time_ms,
                   "Info": {"Action": action, "To_Account": user, "Reason": "test"}}),
        )
        .await
    }

    /// A one-to-one message from `from` to `to` (a fresh MsgSeq each call unless given).
    pub fn c2c(&self, from: &str, to: &str, text: &str) -> Value {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let t = self.now();
        json!({
            "CallbackCommand": "C2C.CallbackAfterSendMsg",
            "From_Account": from, "To_Account": to,
            "MsgSeq": seq, "MsgRandom": 1000 + seq, "MsgTime": t,
            "MsgKey": format!("{seq}_{}_{t}", 1000 + seq), "OnlineOnlyFlag": 0,
            "SendMsgResult": 0, "ErrorInfo": "send msg succeed", "UnreadMsgNum": 1,
            "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}],
        })
    }

    pub async fn outbox(&self) -> Vec<Item> {
        let mut items = self.app.store.scan(Table::Outbox).await.unwrap();
        items.sort_by_key(|i| (i.n("created_at").unwrap_or(0), i.n("msg_time").unwrap_or(0)));
        items
    }

    pub async fn outbox_of(&self, kind: &str) -> Vec<Item> {
        self.outbox()
            .await
            .into_iter()
            .filter(|i| i.s("kind") == Some(kind))
            .collect()
    }

    pub async fn credits(&self, openid: &str, template: &str) -> i64 {
        common::records::subscription::credits(&*self.app.store, AppKind::Mp, openid, template)
            .await
            .unwrap()
    }

    pub async fn state_item(&self, pk: &str, sk: &str) -> Option<Item> {
        self.app.store.get(Table::State, pk, sk).await.unwrap()
    }

    pub fn sends(&self) -> Vec<local::standin::Recorded> {
        self.wechat.requests("/cgi-bin/message/subscribe/send")
    }
}

/// On drop (with its World), every credential the stand-ins issued (access tokens, session
/// keys) or received (app secrets, UserSigs, login codes) goes to the needles the log scan looks
/// for. A field of its own, so that a test may still take a World apart.
pub struct NeedleRecorder {
    wechat: StandIn,
    im: StandIn,
}

impl Drop for NeedleRecorder {
    fn drop(&mut self) {
        let mut values = self.wechat.issued();
        values.extend(self.wechat.credentials_seen());
        values.extend(self.im.credentials_seen());
        crate::record_needles(values.iter().map(String::as_str));
    }
}
