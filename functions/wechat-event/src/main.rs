//! Lambda: `POST /wechat/{app}`. All logic is in `common::handlers::wechat::event`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let app = common::lambda::init("wechat-event").await?;
    lambda_http::run(lambda_http::service_fn(move |req| async move {
        let resp = common::handlers::wechat::event(&common::lambda::request(req), app).await;
        Ok::<_, std::convert::Infallible>(common::lambda::respond(resp))
    }))
    .await
}
