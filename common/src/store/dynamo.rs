//! DynamoDB implementation: each [`Cond`]/[`Update`] becomes an expression with placeholder names
//! and values, so attribute names never collide with DynamoDB's reserved words.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, KeySchemaElement,
    KeyType, KeysAndAttributes, Put, ReturnValue, ScalarAttributeType, StreamSpecification,
    StreamViewType, TimeToLiveSpecification, TransactWriteItem, Update as DdbUpdate,
};
use tokio::sync::OnceCell;

use aws_sdk_dynamodb::config::{HttpClient, RuntimeComponents, SharedHttpClient};
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::http::HttpError;
use aws_smithy_types::body::SdkBody;

use super::{Attr, Cond, Item, Store, StoreError, TTL_ATTR, Table, Update, Write};
use crate::clock::Clock;
use crate::protocol::wechat::api::transport;

#[derive(Clone)]
pub struct DynamoStore {
    /// Created on the first store call (see [`DynamoStore::lazy`]), then shared by the clones.
    client: Arc<OnceCell<Client>>,
    state_table: String,
    outbox_table: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("state_table", &self.state_table)
            .field("outbox_table", &self.outbox_table)
            .field("client_created", &self.client.initialized())
            .finish()
    }
}

impl DynamoStore {
    pub fn new(
        client: Client,
        state_table: impl Into<String>,
        outbox_table: impl Into<String>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        DynamoStore {
            client: Arc::new(OnceCell::new_with(Some(client))),
            state_table: state_table.into(),
            outbox_table: outbox_table.into(),
            clock,
        }
    }

    /// A store whose client is created from the standard AWS environment on its first call
    /// (so that a cold start that never touches DynamoDB never pays for the client) and then
    /// reused for the life of the process.
    pub fn lazy(
        state_table: impl Into<String>,
        outbox_table: impl Into<String>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        DynamoStore {
            client: Arc::new(OnceCell::new()),
            state_table: state_table.into(),
            outbox_table: outbox_table.into(),
            clock,
        }
    }

    /// The tables the configuration names (`TABLE_NAME`, `OUTBOX_TABLE_NAME`), through a client
    /// from the standard AWS environment created on first use; `None` when no table is
    /// configured.
    pub async fn from_config(
        config: &crate::config::Config,
        clock: Arc<dyn Clock>,
    ) -> Option<Self> {
        let table = config.table_name.clone()?;
        let outbox = config
            .outbox_table_name
            .clone()
            .unwrap_or_else(|| format!("{table}-outbox"));
        Some(Self::lazy(table, outbox, clock))
    }

    /// A client from the AWS environment whose requests go through the process's one HTTP/TLS
    /// stack ([`sdk_http_client`]).
    ///
    /// With the `aws-default-chain` feature (the local command line and the tests) that is
    /// aws-config's whole default chain: profiles, SSO, web identity, container and instance
    /// credentials. Without it (the function binaries) it is what Lambda puts in every
    /// function's environment, read directly: `AWS_REGION` (or `AWS_DEFAULT_REGION`),
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, and the standard
    /// endpoint override `AWS_ENDPOINT_URL_DYNAMODB` (or `AWS_ENDPOINT_URL`, both ignored when
    /// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`); the other providers are never linked.
    pub async fn client_from_env() -> Client {
        #[cfg(feature = "aws-default-chain")]
        {
            let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .http_client(sdk_http_client())
                .load()
                .await;
            Client::new(&conf)
        }
        #[cfg(not(feature = "aws-default-chain"))]
        {
            Client::from_conf(lambda_env_config(&|k| std::env::var(k).ok()))
        }
    }

    async fn client(&self) -> &Client {
        self.client.get_or_init(Self::client_from_env).await
    }

    pub fn table_name(&self, t: Table) -> &str {
        match t {
            Table::State => &self.state_table,
            Table::Outbox => &self.outbox_table,
        }
    }

    /// Creates both tables as template.yaml declares them (keys, on-demand billing, TTL, the
    /// outbox stream) when they do not exist; used by tests and local runs against a server.
    pub async fn ensure_tables(&self) -> Result<(), StoreError> {
        let existing = self
            .client()
            .await
            .list_tables()
            .send()
            .await
            .map_err(|e| classify(e, "ListTables"))?
            .table_names
            .unwrap_or_default();
        for t in Table::ALL {
            let name = self.table_name(t).to_owned();
            if existing.contains(&name) {
                continue;
            }
            let mut req = self
                .client()
                .await
                .create_table()
                .table_name(&name)
                .billing_mode(BillingMode::PayPerRequest);
            for (attr, kind) in [("pk", KeyType::Hash), ("sk", KeyType::Range)] {
                req = req
                    .attribute_definitions(
                        AttributeDefinition::builder()
                            .attribute_name(attr)
                            .attribute_type(ScalarAttributeType::S)
                            .build()
                            .map_err(build_err)?,
                    )
                    .key_schema(
                        KeySchemaElement::builder()
                            .attribute_name(attr)
                            .key_type(kind)
                            .build()
                            .map_err(build_err)?,
                    );
            }
            if t == Table::Outbox {
                req = req.stream_specification(
                    StreamSpecification::builder()
                        .stream_enabled(true)
                        .stream_view_type(StreamViewType::NewImage)
                        .build()
                        .map_err(build_err)?,
                );
            }
            req.send().await.map_err(|e| classify(e, "CreateTable"))?;
            self.client()
                .await
                .update_time_to_live()
                .table_name(&name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(TTL_ATTR)
                        .enabled(true)
                        .build()
                        .map_err(build_err)?,
                )
                .send()
                .await
                .map_err(|e| classify(e, "UpdateTimeToLive"))?;
        }
        Ok(())
    }

    fn key(pk: &str, sk: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("pk".to_owned(), AttributeValue::S(pk.to_owned())),
            ("sk".to_owned(), AttributeValue::S(sk.to_owned())),
        ])
    }

    fn now(&self) -> i64 {
        self.clock.now()
    }

    fn live(&self, item: Option<Item>) -> Option<Item> {
        let now = self.now();
        item.filter(|i| !i.is_expired(now))
    }
}

fn build_err(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Invalid(e.to_string())
}

/// Maps SDK errors onto the store's three outcomes. Messages carry the operation and DynamoDB's
/// error code only: never item contents.
fn classify<E: ProvideErrorMetadata + std::fmt::Debug>(e: SdkError<E>, op: &str) -> StoreError {
    match &e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            let code = err.code().unwrap_or("Unknown");
            match code {
                "ConditionalCheckFailedException" => StoreError::ConditionFailed { index: 0 },
                "ValidationException" | "SerializationException" => {
                    StoreError::Invalid(format!("{op}: {code}: {}", err.message().unwrap_or("")))
                }
                _ => StoreError::Unavailable(format!("{op}: {code}")),
            }
        }
        SdkError::TimeoutError(_) => StoreError::Unavailable(format!("{op}: timeout")),
        SdkError::DispatchFailure(_) => StoreError::Unavailable(format!("{op}: connection failed")),
        SdkError::ResponseError(_) => StoreError::Unavailable(format!("{op}: unreadable response")),
        _ => StoreError::Unavailable(format!("{op}: request not sent")),
    }
}

fn to_av(a: &Attr) -> AttributeValue {
    match a {
        Attr::S(s) => AttributeValue::S(s.clone()),
        Attr::N(n) => AttributeValue::N(n.to_string()),
        Attr::Bool(b) => AttributeValue::Bool(*b),
    }
}

fn from_item(mut m: HashMap<String, AttributeValue>) -> Result<Item, StoreError> {
    let mut take_key = |name: &str| match m.remove(name) {
        Some(AttributeValue::S(s)) => Ok(s),
        _ => Err(StoreError::Invalid(format!("item without string {name}"))),
    };
    let pk = take_key("pk")?;
    let sk = take_key("sk")?;
    let mut item = Item::new(pk, sk);
    for (k, v) in m {
        let a = match v {
            AttributeValue::S(s) => Attr::S(s),
            AttributeValue::N(n) => Attr::N(
                n.parse()
                    .map_err(|_| StoreError::Invalid(format!("attribute {k} is not an integer")))?,
            ),
            AttributeValue::Bool(b) => Attr::Bool(b),
            // Attributes of other types are not ours (someone edited the table); skip them
            // rather than failing every read of the item.
            _ => continue,
        };
        item.attrs.insert(k, a);
    }
    Ok(item)
}

fn to_item(item: &Item) -> HashMap<String, AttributeValue> {
    let mut m = DynamoStore::key(&item.pk, &item.sk);
    for (k, v) in &item.attrs {
        m.insert(k.clone(), to_av(v));
    }
    m
}

/// Collects placeholders while expressions are built.
#[derive(Default)]
struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    fn name(&mut self, n: &str) -> String {
        if let Some((k, _)) = self.names.iter().find(|(_, v)| v.as_str() == n) {
            return k.clone();
        }
        let k = format!("#n{}", self.names.len());
        self.names.insert(k.clone(), n.to_owned());
        k
    }

    fn value(&mut self, v: AttributeValue) -> String {
        let k = format!(":v{}", self.values.len());
        self.values.insert(k.clone(), v);
        k
    }

    fn cond(&mut self, c: &Cond, now: i64) -> String {
        match c {
            Cond::NotExists => {
                let pk = self.name("pk");
                let ttl = self.name(TTL_ATTR);
                let now = self.value(AttributeValue::N(now.to_string()));
                format!("(attribute_not_exists({pk}) OR {ttl} < {now})")
            }
            Cond::Exists => {
                let pk = self.name("pk");
                let ttl = self.name(TTL_ATTR);
                let now = self.value(AttributeValue::N(now.to_string()));
                format!(
                    "(attribute_exists({pk}) AND (attribute_not_exists({ttl}) OR {ttl} >= {now}))"
                )
            }
            Cond::Has(n) => format!("attribute_exists({})", self.name(n)),
            Cond::Lacks(n) => format!("attribute_not_exists({})", self.name(n)),
            Cond::Eq(n, v) => {
                let n = self.name(n);
                let v = self.value(to_av(v));
                format!("{n} = {v}")
            }
            Cond::Ne(n, v) => {
                let n = self.name(n);
                let v = self.value(to_av(v));
                format!("(attribute_not_exists({n}) OR {n} <> {v})")
            }
            Cond::Lt(n, v) => self.cmp(n, "<", *v),
            Cond::Le(n, v) => self.cmp(n, "<=", *v),
            Cond::Gt(n, v) => self.cmp(n, ">", *v),
            Cond::Ge(n, v) => self.cmp(n, ">=", *v),
            Cond::And(cs) => self.join(cs, " AND ", now),
            Cond::Or(cs) => self.join(cs, " OR ", now),
        }
    }

    fn cmp(&mut self, n: &str, op: &str, v: i64) -> String {
        let n = self.name(n);
        let v = self.value(AttributeValue::N(v.to_string()));
        format!("{n} {op} {v}")
    }

    fn join(&mut self, cs: &[Cond], sep: &str, now: i64) -> String {
        if cs.is_empty() {
            // An empty AND is true and an empty OR false; express both with the always-present key.
            let pk = self.name("pk");
            return if sep.contains("AND") {
                format!("(attribute_exists({pk}) OR attribute_not_exists({pk}))")
            } else {
                format!("(attribute_exists({pk}) AND attribute_not_exists({pk}))")
            };
        }
        let parts: Vec<String> = cs.iter().map(|c| self.cond(c, now)).collect();
        format!("({})", parts.join(sep))
    }

    fn update(&mut self, us: &[Update]) -> Option<String> {
        let (mut set, mut add, mut remove) = (vec![], vec![], vec![]);
        for u in us {
            match u {
                Update::Set(n, v) => {
                    let n = self.name(n);
                    let v = self.value(to_av(v));
                    set.push(format!("{n} = {v}"));
                }
                Update::SetIfAbsent(n, v) => {
                    let n = self.name(n);
                    let v = self.value(to_av(v));
                    set.push(format!("{n} = if_not_exists({n}, {v})"));
                }
                Update::Add(n, d) => {
                    let n = self.name(n);
                    let v = self.value(AttributeValue::N(d.to_string()));
                    add.push(format!("{n} {v}"));
                }
                Update::Remove(n) => remove.push(self.name(n)),
            }
        }
        let mut parts = vec![];
        if !set.is_empty() {
            parts.push(format!("SET {}", set.join(", ")));
        }
        if !add.is_empty() {
            parts.push(format!("ADD {}", add.join(", ")));
        }
        if !remove.is_empty() {
            parts.push(format!("REMOVE {}", remove.join(", ")));
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }

    fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

#[async_trait]
impl Store for DynamoStore {
    fn client_created(&self) -> bool {
        self.client.initialized()
    }

    async fn get(&self, table: Table, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        super::validate_key(pk, sk)?;
        let out = self
            .client()
            .await
            .get_item()
            .table_name(self.table_name(table))
            .set_key(Some(Self::key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(e, "GetItem"))?;
        Ok(self.live(out.item.map(from_item).transpose()?))
    }

    async fn get_many(
        &self,
        table: Table,
        keys: &[(&str, &str)],
    ) -> Result<Vec<Option<Item>>, StoreError> {
        super::validate_batch_get(keys)?;
        if keys.is_empty() {
            return Ok(vec![]);
        }
        let name = self.table_name(table);
        let mut pending: Vec<_> = keys.iter().map(|(pk, sk)| Self::key(pk, sk)).collect();
        let mut found = HashMap::with_capacity(keys.len());
        // DynamoDB may answer part of a batch (throttling, its 16 MB limit) and name the rest
        // in `UnprocessedKeys`; those are asked again after a pause that doubles, as its
        // documentation asks, and a batch still unfinished then is an outage like any other.
        for pause_ms in [25, 50, 100, 200, 400, 0] {
            let ask = KeysAndAttributes::builder()
                .set_keys(Some(pending))
                .consistent_read(true)
                .build()
                .map_err(build_err)?;
            let out = self
                .client()
                .await
                .batch_get_item()
                .request_items(name, ask)
                .send()
                .await
                .map_err(|e| classify(e, "BatchGetItem"))?;
            for m in out
                .responses
                .and_then(|mut r| r.remove(name))
                .unwrap_or_default()
            {
                let item = from_item(m)?;
                found.insert((item.pk.clone(), item.sk.clone()), item);
            }
            pending = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(name))
                .map(|k| k.keys)
                .unwrap_or_default();
            if pending.is_empty() {
                return Ok(keys
                    .iter()
                    .map(|&(pk, sk)| self.live(found.remove(&(pk.to_owned(), sk.to_owned()))))
                    .collect());
            }
            if pause_ms > 0 {
                tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            }
        }
        Err(StoreError::Unavailable(format!(
            "BatchGetItem: {} of {} keys still unprocessed",
            pending.len(),
            keys.len()
        )))
    }

    async fn query(
        &self,
        table: Table,
        pk: &str,
        sk_prefix: &str,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = vec![];
        let mut start = None;
        loop {
            let mut e = Expr::default();
            let pkn = e.name("pk");
            let pkv = e.value(AttributeValue::S(pk.to_owned()));
            let mut kce = format!("{pkn} = {pkv}");
            if !sk_prefix.is_empty() {
                let skn = e.name("sk");
                let skv = e.value(AttributeValue::S(sk_prefix.to_owned()));
                kce.push_str(&format!(" AND begins_with({skn}, {skv})"));
            }
            let page = self
                .client()
                .await
                .query()
                .table_name(self.table_name(table))
                .key_condition_expression(kce)
                .set_expression_attribute_names(e.names())
                .set_expression_attribute_values(e.values())
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| classify(e, "Query"))?;
            for m in page.items.unwrap_or_default() {
                if let Some(i) = self.live(Some(from_item(m)?)) {
                    out.push(i);
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn scan(&self, table: Table) -> Result<Vec<Item>, StoreError> {
        let mut out = vec![];
        let mut start = None;
        loop {
            let page = self
                .client()
                .await
                .scan()
                .table_name(self.table_name(table))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| classify(e, "Scan"))?;
            for m in page.items.unwrap_or_default() {
                if let Some(i) = self.live(Some(from_item(m)?)) {
                    out.push(i);
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        out.sort_by(|a, b| (&a.pk, &a.sk).cmp(&(&b.pk, &b.sk)));
        Ok(out)
    }

    async fn write(&self, w: Write) -> Result<Option<Item>, StoreError> {
        let (_, pk, sk) = w.key();
        super::validate_key(pk, sk)?;
        let now = self.now();
        let mut e = Expr::default();
        let cond = w.cond().map(|c| e.cond(c, now));
        match w {
            Write::Put { table, item, .. } => {
                self.client()
                    .await
                    .put_item()
                    .table_name(self.table_name(table))
                    .set_item(Some(to_item(&item)))
                    .set_condition_expression(cond)
                    .set_expression_attribute_names(e.names())
                    .set_expression_attribute_values(e.values())
                    .send()
                    .await
                    .map_err(|e| classify(e, "PutItem"))?;
                Ok(None)
            }
            Write::Update {
                table,
                pk,
                sk,
                updates,
                ..
            } => {
                let ue = e.update(&updates);
                let out = self
                    .client()
                    .await
                    .update_item()
                    .table_name(self.table_name(table))
                    .set_key(Some(Self::key(&pk, &sk)))
                    .set_update_expression(ue)
                    .set_condition_expression(cond)
                    .set_expression_attribute_names(e.names())
                    .set_expression_attribute_values(e.values())
                    .return_values(ReturnValue::AllNew)
                    .send()
                    .await
                    .map_err(|e| classify(e, "UpdateItem"))?;
                // An update of a key-only item with no expression returns nothing; the item is
                // then exactly its key.
                let attrs = out.attributes.unwrap_or_else(|| Self::key(&pk, &sk));
                Ok(Some(from_item(attrs)?))
            }
            Write::Delete { table, pk, sk, .. } => {
                self.client()
                    .await
                    .delete_item()
                    .table_name(self.table_name(table))
                    .set_key(Some(Self::key(&pk, &sk)))
                    .set_condition_expression(cond)
                    .set_expression_attribute_names(e.names())
                    .set_expression_attribute_values(e.values())
                    .send()
                    .await
                    .map_err(|e| classify(e, "DeleteItem"))?;
                Ok(None)
            }
            Write::Check { .. } => Err(StoreError::Invalid(
                "a condition check is only valid inside a transaction".into(),
            )),
        }
    }

    async fn transact(&self, ws: Vec<Write>) -> Result<(), StoreError> {
        super::validate_transaction(&ws)?;
        let now = self.now();
        let mut items = Vec::with_capacity(ws.len());
        for w in &ws {
            let (table, pk, sk) = w.key();
            super::validate_key(pk, sk)?;
            let mut e = Expr::default();
            let cond = w.cond().map(|c| e.cond(c, now));
            let name = self.table_name(table).to_owned();
            let ti = match w {
                Write::Put { item, .. } => TransactWriteItem::builder().put(
                    Put::builder()
                        .table_name(name)
                        .set_item(Some(to_item(item)))
                        .set_condition_expression(cond)
                        .set_expression_attribute_names(e.names())
                        .set_expression_attribute_values(e.values())
                        .build()
                        .map_err(build_err)?,
                ),
                Write::Update { updates, .. } => {
                    let ue = e.update(updates).ok_or_else(|| {
                        StoreError::Invalid("a transactional update needs an action".into())
                    })?;
                    TransactWriteItem::builder().update(
                        DdbUpdate::builder()
                            .table_name(name)
                            .set_key(Some(Self::key(pk, sk)))
                            .update_expression(ue)
                            .set_condition_expression(cond)
                            .set_expression_attribute_names(e.names())
                            .set_expression_attribute_values(e.values())
                            .build()
                            .map_err(build_err)?,
                    )
                }
                Write::Delete { .. } => TransactWriteItem::builder().delete(
                    Delete::builder()
                        .table_name(name)
                        .set_key(Some(Self::key(pk, sk)))
                        .set_condition_expression(cond)
                        .set_expression_attribute_names(e.names())
                        .set_expression_attribute_values(e.values())
                        .build()
                        .map_err(build_err)?,
                ),
                Write::Check { .. } => TransactWriteItem::builder().condition_check(
                    ConditionCheck::builder()
                        .table_name(name)
                        .set_key(Some(Self::key(pk, sk)))
                        .set_condition_expression(cond)
                        .set_expression_attribute_names(e.names())
                        .set_expression_attribute_values(e.values())
                        .build()
                        .map_err(build_err)?,
                ),
            };
            items.push(ti.build());
        }
        match self
            .client()
            .await
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(se)) => {
                use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
                match se.err() {
                    E::TransactionCanceledException(tc) => {
                        let reasons = tc.cancellation_reasons();
                        if let Some(index) = reasons
                            .iter()
                            .position(|r| r.code() == Some("ConditionalCheckFailed"))
                        {
                            return Err(StoreError::ConditionFailed { index });
                        }
                        let codes: Vec<&str> = reasons.iter().filter_map(|r| r.code()).collect();
                        Err(StoreError::Unavailable(format!(
                            "TransactWriteItems cancelled: {}",
                            codes.join(",")
                        )))
                    }
                    other => {
                        let code = other.code().unwrap_or("Unknown");
                        if code == "ValidationException" {
                            Err(StoreError::Invalid(format!(
                                "TransactWriteItems: {code}: {}",
                                other.message().unwrap_or("")
                            )))
                        } else {
                            Err(StoreError::Unavailable(format!(
                                "TransactWriteItems: {code}"
                            )))
                        }
                    }
                }
            }
            Err(e) => Err(classify(e, "TransactWriteItems")),
        }
    }
}

/// What an SDK client of a Lambda function takes from the variables Lambda sets: the region,
/// the role's credentials, and an endpoint override (`AWS_ENDPOINT_URL_<SERVICE>`, else
/// `AWS_ENDPOINT_URL`, unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`). Blank counts as unset.
/// One reader for the DynamoDB and the SQS client.
#[cfg_attr(feature = "aws-default-chain", allow(dead_code))]
pub(crate) struct LambdaEnv {
    pub region: Option<aws_sdk_dynamodb::config::Region>,
    pub credentials: Option<aws_sdk_dynamodb::config::Credentials>,
    pub endpoint: Option<String>,
}

#[cfg_attr(feature = "aws-default-chain", allow(dead_code))]
impl LambdaEnv {
    pub fn read(var: &dyn Fn(&str) -> Option<String>, service_endpoint: &str) -> Self {
        use aws_sdk_dynamodb::config::{Credentials, Region};
        let var = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let ignore = var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        LambdaEnv {
            region: var("AWS_REGION")
                .or_else(|| var("AWS_DEFAULT_REGION"))
                .map(Region::new),
            credentials: match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
                (Some(id), Some(secret)) => Some(Credentials::new(
                    id,
                    secret,
                    var("AWS_SESSION_TOKEN"),
                    None,
                    "Environment",
                )),
                _ => None,
            },
            endpoint: if ignore {
                None
            } else {
                var(service_endpoint).or_else(|| var("AWS_ENDPOINT_URL"))
            },
        }
    }
}

/// The SDK configuration of a Lambda function ([`LambdaEnv`]; see
/// [`DynamoStore::client_from_env`]). Without credentials the client still builds, and its
/// calls fail as a store outage naming no secret.
#[cfg_attr(feature = "aws-default-chain", allow(dead_code))]
fn lambda_env_config(var: &dyn Fn(&str) -> Option<String>) -> aws_sdk_dynamodb::Config {
    use aws_sdk_dynamodb::config::BehaviorVersion;
    let env = LambdaEnv::read(var, "AWS_ENDPOINT_URL_DYNAMODB");
    let mut b = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(sdk_http_client());
    b.set_region(env.region);
    b.set_endpoint_url(env.endpoint);
    match env.credentials {
        Some(c) => b = b.credentials_provider(c),
        None => tracing::warn!(
            decision = "no_aws_credentials",
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not set: DynamoDB calls will fail"
        ),
    }
    b.build()
}

/// The AWS SDK's HTTP client: requests go through reqwest on the process's one rustls
/// configuration ([`transport::tls_config`]), so the SDK brings no second HTTP/TLS stack and
/// reads no certificate directory. One reqwest client per distinct connector setting (the SDK
/// asks with the same settings every time), created on the first request.
pub fn sdk_http_client() -> SharedHttpClient {
    SharedHttpClient::new(SdkHttp::default())
}

/// Connect and read timeouts, as the SDK asks for them.
type Timeouts = (Option<Duration>, Option<Duration>);

#[derive(Debug, Default)]
struct SdkHttp {
    connectors: Mutex<Vec<(Timeouts, SharedHttpConnector)>>,
}

impl HttpClient for SdkHttp {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key: Timeouts = (settings.connect_timeout(), settings.read_timeout());
        let mut cache = self.connectors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = cache.iter().find(|(k, _)| *k == key) {
            return c.clone();
        }
        let mut builder = reqwest::Client::builder();
        if let Some(t) = key.0 {
            builder = builder.connect_timeout(t);
        }
        if let Some(t) = key.1 {
            builder = builder.read_timeout(t);
        }
        let c = SharedHttpConnector::new(SdkConnector(transport::client(builder)));
        cache.push((key, c.clone()));
        c
    }
}

#[derive(Debug)]
struct SdkConnector(reqwest::Client);

impl HttpConnector for SdkConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.0.clone();
        HttpConnectorFuture::new(async move {
            let request = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::user(e.into()))?;
            let (parts, body) = request.into_parts();
            let body = match body.bytes() {
                Some(b) => reqwest::Body::from(b.to_vec()),
                None => reqwest::Body::wrap(body),
            };
            let request = reqwest::Request::try_from(http::Request::from_parts(parts, body))
                .map_err(|e| ConnectorError::user(e.into()))?;
            let resp = client.execute(request).await.map_err(sdk_transport)?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            // DynamoDB answers are small JSON documents: read whole, inside the timeouts.
            let bytes = resp.bytes().await.map_err(sdk_transport)?;
            let mut out = HttpResponse::new(
                status
                    .try_into()
                    .map_err(|e: HttpError| ConnectorError::other(e.into(), None))?,
                SdkBody::from(bytes),
            );
            for (name, value) in headers.iter() {
                if let Ok(v) = value.to_str() {
                    out.headers_mut()
                        .append(name.as_str().to_owned(), v.to_owned());
                }
            }
            Ok(out)
        })
    }
}

/// Timeouts and broken connections are transient for the SDK's retry policy; nothing was sent
/// on a refused connection.
fn sdk_transport(e: reqwest::Error) -> ConnectorError {
    if e.is_timeout() {
        ConnectorError::timeout(e.into())
    } else if e.is_connect() || e.is_request() || e.is_body() {
        ConnectorError::io(e.into())
    } else {
        ConnectorError::other(e.into(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn lambda_environment_gives_region_and_endpoint() {
        let c = lambda_env_config(&env(&[
            ("AWS_REGION", "ap-east-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "token"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
            ("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:8000"),
        ]));
        assert_eq!(c.region().map(|r| r.as_ref()), Some("ap-east-1"));
        assert!(
            c.http_client().is_some(),
            "the shared stack, not the SDK's own"
        );
        let c = lambda_env_config(&env(&[
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_REGION", " "),
        ]));
        assert_eq!(c.region().map(|r| r.as_ref()), Some("us-east-1"));
    }
}
