//! What the AWS SDK's client and orchestrator cost a cold start, for scripts/coldstart.py to set
//! beside floor-sdk: the same two requests (a strongly consistent GetItem, then a two-item
//! TransactWriteItems), written as DynamoDB's JSON protocol by hand, signed with aws-sigv4 (the
//! signer the SDK itself uses) and sent with the functions' reqwest client on their rustls
//! configuration, on the same single-threaded runtime. It has none of what a store needs (no
//! retries, no error model, no endpoint rules, no credential refresh): it measures what a
//! decision to leave aws-sdk-dynamodb for such a client would buy, nothing more.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use lambda_http::{Body, Error, Request, Response, run, service_fn};
use serde_json::json;
use tokio::sync::OnceCell;

static CLIENT: OnceCell<reqwest::Client> = OnceCell::const_new();

fn var(k: &str) -> Result<String, Error> {
    std::env::var(k).map_err(|_| format!("{k} is not set").into())
}

/// One DynamoDB call: `target` is the operation (`DynamoDB_20120810.GetItem`), `body` its JSON.
async fn call(target: &str, body: serde_json::Value) -> Result<(), Error> {
    let endpoint = var("AWS_ENDPOINT_URL_DYNAMODB")?;
    let region = var("AWS_REGION")?;
    let identity: Identity = Credentials::new(
        var("AWS_ACCESS_KEY_ID")?,
        var("AWS_SECRET_ACCESS_KEY")?,
        std::env::var("AWS_SESSION_TOKEN").ok(),
        None,
        "environment",
    )
    .into();
    let body = serde_json::to_vec(&body)?;
    let host = endpoint
        .split_once("://")
        .map_or(endpoint.as_str(), |(_, rest)| rest)
        .trim_end_matches('/');
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("{}/", endpoint.trim_end_matches('/')))
        .header("host", host)
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amz-target", target)
        .body(body)?;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name("dynamodb")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()?
        .into();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| Ok((k.as_str(), v.to_str()?)))
        .collect::<Result<Vec<_>, Error>>()?;
    let signable = SignableRequest::new(
        "POST",
        req.uri().to_string(),
        headers.into_iter(),
        SignableBody::Bytes(req.body()),
    )?;
    let (instructions, _) = sign(signable, &params)?.into_parts();
    instructions.apply_to_request_http1x(&mut req);
    let client = CLIENT
        .get_or_init(|| async {
            common::protocol::wechat::api::transport::client(reqwest::Client::builder())
        })
        .await;
    let req = reqwest::Request::try_from(req)?;
    let resp = client.execute(req).await?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        return Err(format!("{target}: {status}: {text}").into());
    }
    Ok(())
}

fn put(table: &str, sk: &str) -> serde_json::Value {
    json!({"Put": {
        "TableName": table,
        "Item": {"pk": {"S": "floor-sigv4"}, "sk": {"S": sk}, "body": {"S": "a probe row of floor-sigv4"}},
        "ConditionExpression": "attribute_not_exists(pk)",
    }})
}

async fn handle(req: Request) -> Result<Response<Body>, Error> {
    let table = var("TABLE_NAME")?;
    let outbox = std::env::var("OUTBOX_TABLE_NAME").unwrap_or_else(|_| format!("{table}-outbox"));
    let id = lambda_http::RequestExt::lambda_context(&req).request_id;
    call(
        "DynamoDB_20120810.GetItem",
        json!({"TableName": table, "Key": {"pk": {"S": "floor-sigv4"}, "sk": {"S": "probe"}}, "ConsistentRead": true}),
    )
    .await?;
    call(
        "DynamoDB_20120810.TransactWriteItems",
        json!({"TransactItems": [put(&table, &id), put(&outbox, &id)]}),
    )
    .await?;
    Ok(Response::new(Body::Text("ok".into())))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    run(service_fn(handle)).await
}
