//! Lambda: `POST /im/callback`. All logic is in `common::handlers::im::callback`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let app = common::lambda::init("im-callback").await?;
    lambda_http::run(lambda_http::service_fn(move |req| async move {
        let resp = common::handlers::im::callback(&common::lambda::request(req), app).await;
        Ok::<_, std::convert::Infallible>(common::lambda::respond(resp))
    }))
    .await
}
