//! The spool on Amazon SQS (`SPOOL_QUEUE_URL`): a standard queue whose redrive policy moves a
//! message to its dead-letter queue after [`MAX_RECEIVES`](super::MAX_RECEIVES) receives. The
//! client is configured as the DynamoDB one (the same variables, the same HTTP/TLS stack,
//! created on first use), with the endpoint override `AWS_ENDPOINT_URL_SQS`.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use tokio::sync::OnceCell;

use super::{MAX_RECEIVES, Received, Spool, SpoolError, VISIBILITY_SECS};
use crate::store::dynamo::{LambdaEnv, sdk_http_client};

#[derive(Clone)]
pub struct SqsSpool {
    client: Arc<OnceCell<Client>>,
    queue_url: String,
}

impl std::fmt::Debug for SqsSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsSpool")
            .field("queue_url", &self.queue_url)
            .finish()
    }
}

fn classify<E: ProvideErrorMetadata, R>(e: SdkError<E, R>, op: &str) -> SpoolError {
    match &e {
        SdkError::ServiceError(se) => SpoolError(format!(
            "{op}: {}",
            se.err().code().unwrap_or("unknown service error")
        )),
        SdkError::TimeoutError(_) => SpoolError(format!("{op}: timeout")),
        SdkError::DispatchFailure(_) => SpoolError(format!("{op}: unreachable")),
        _ => SpoolError(format!("{op}: request failed")),
    }
}

impl SqsSpool {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        SqsSpool {
            client: Arc::new(OnceCell::new_with(Some(client))),
            queue_url: queue_url.into(),
        }
    }

    /// The queue at `queue_url`, through a client from the AWS environment created by the first
    /// call (a function that never spools never builds it).
    pub fn lazy(queue_url: impl Into<String>) -> Self {
        SqsSpool {
            client: Arc::new(OnceCell::new()),
            queue_url: queue_url.into(),
        }
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    async fn client(&self) -> &Client {
        self.client.get_or_init(client_from_env).await
    }

    /// [`SqsSpool::ensure`] through a client from the AWS environment (`AWS_ENDPOINT_URL_SQS`).
    pub async fn ensure_from_env(name: &str) -> Result<(SqsSpool, String), SpoolError> {
        Self::ensure(client_from_env().await, name).await
    }

    /// Creates the queue `name` and its dead-letter queue `name-dlq` as template.yaml declares
    /// them (when they do not exist) and returns the spool and the dead-letter queue's URL; for
    /// tests and local runs against a server.
    pub async fn ensure(client: Client, name: &str) -> Result<(SqsSpool, String), SpoolError> {
        let dlq = client
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
            .send()
            .await
            .map_err(|e| classify(e, "CreateQueue"))?
            .queue_url
            .ok_or_else(|| SpoolError("CreateQueue: no queue URL".into()))?;
        let arn = client
            .get_queue_attributes()
            .queue_url(&dlq)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| classify(e, "GetQueueAttributes"))?
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .ok_or_else(|| SpoolError("GetQueueAttributes: no QueueArn".into()))?;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": arn,
            "maxReceiveCount": MAX_RECEIVES.to_string(),
        });
        let url = client
            .create_queue()
            .queue_name(name)
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                VISIBILITY_SECS.to_string(),
            )
            .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .send()
            .await
            .map_err(|e| classify(e, "CreateQueue"))?
            .queue_url
            .ok_or_else(|| SpoolError("CreateQueue: no queue URL".into()))?;
        Ok((SqsSpool::new(client, url), dlq))
    }
}

/// A client from the AWS environment, as [`crate::store::DynamoStore::client_from_env`] builds
/// the DynamoDB one.
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

#[cfg_attr(feature = "aws-default-chain", allow(dead_code))]
fn lambda_env_config(var: &dyn Fn(&str) -> Option<String>) -> aws_sdk_sqs::Config {
    use aws_sdk_sqs::config::BehaviorVersion;
    let env = LambdaEnv::read(var, "AWS_ENDPOINT_URL_SQS");
    let mut b = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(sdk_http_client());
    b.set_region(env.region);
    b.set_endpoint_url(env.endpoint);
    if let Some(c) = env.credentials {
        b = b.credentials_provider(c);
    }
    b.build()
}

#[async_trait]
impl Spool for SqsSpool {
    async fn send(&self, body: &str) -> Result<(), SpoolError> {
        self.client()
            .await
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| classify(e, "SendMessage"))?;
        Ok(())
    }

    async fn receive(&self, max: usize) -> Result<Vec<Received>, SpoolError> {
        let out = self
            .client()
            .await
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| classify(e, "ReceiveMessage"))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                Some(Received {
                    handle: m.receipt_handle?,
                    body: m.body?,
                    receive_count,
                })
            })
            .collect())
    }

    async fn delete(&self, handle: &str) -> Result<(), SpoolError> {
        self.client()
            .await
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(handle)
            .send()
            .await
            .map_err(|e| classify(e, "DeleteMessage"))?;
        Ok(())
    }

    async fn retry_after(&self, handle: &str, secs: u32) -> Result<(), SpoolError> {
        self.client()
            .await
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(handle)
            .visibility_timeout(secs as i32)
            .send()
            .await
            .map_err(|e| classify(e, "ChangeMessageVisibility"))?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("SQS queue {}", self.queue_url)
    }
}
