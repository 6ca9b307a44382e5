//! What the AWS SDK alone costs a cold start, for scripts/coldstart.py to set beside the floor
//! and the functions: no configuration, no handler, no records, only what admin-notify's first
//! event does with DynamoDB (a strongly consistent GetItem, then a two-item
//! TransactWriteItems), through the client the functions create (`client_from_env`: the same
//! SDK features, the same reqwest/rustls stack) on the same single-threaded runtime. A
//! function's time over this one is its own code's; this one's over the floor is the SDK's.

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use common::store::DynamoStore;
use lambda_http::{Body, Error, Request, Response, run, service_fn};
use tokio::sync::OnceCell;

static CLIENT: OnceCell<aws_sdk_dynamodb::Client> = OnceCell::const_new();

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn put(table: &str, pk: &str, sk: &str) -> Result<TransactWriteItem, Error> {
    let put = Put::builder()
        .table_name(table)
        .item("pk", s(pk))
        .item("sk", s(sk))
        .item("body", s("a probe row of floor-sdk"))
        .condition_expression("attribute_not_exists(pk)")
        .build()?;
    Ok(TransactWriteItem::builder().put(put).build())
}

async fn handle(req: Request) -> Result<Response<Body>, Error> {
    let table = std::env::var("TABLE_NAME")?;
    let outbox = std::env::var("OUTBOX_TABLE_NAME").unwrap_or_else(|_| format!("{table}-outbox"));
    let client = CLIENT.get_or_init(DynamoStore::client_from_env).await;
    let id = lambda_http::RequestExt::lambda_context(&req).request_id;
    client
        .get_item()
        .table_name(&table)
        .key("pk", s("floor-sdk"))
        .key("sk", s("probe"))
        .consistent_read(true)
        .send()
        .await?;
    client
        .transact_write_items()
        .transact_items(put(&table, "floor-sdk", &id)?)
        .transact_items(put(&outbox, "floor-sdk", &id)?)
        .send()
        .await?;
    Ok(Response::new(Body::Text("ok".into())))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    run(service_fn(handle)).await
}
