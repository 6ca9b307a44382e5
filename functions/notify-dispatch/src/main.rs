//! Lambda: the outbox table's DynamoDB Stream (INSERT records), answered with a partial-batch
//! response so that only what failed is retried; and the scheduled sweep of deferred work
//! (EventBridge). All logic is in `common::flows::dispatch` and `common::flows::sweep`.

use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let app = common::lambda::init("notify-dispatch").await?;
    lambda_runtime::run(service_fn(
        move |ev: LambdaEvent<serde_json::Value>| async move {
            let resp =
                common::handlers::dispatch::handle(&ev.payload, app, &ev.context.request_id).await;
            Ok::<_, std::convert::Infallible>(resp)
        },
    ))
    .await
}
