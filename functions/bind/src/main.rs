//! Lambda: `POST /bind`. All logic is in `common::handlers::bind::bind`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let app = common::lambda::init("bind").await?;
    lambda_http::run(lambda_http::service_fn(move |req| async move {
        let resp = common::handlers::bind::bind(&common::lambda::request(req), app).await;
        Ok::<_, std::convert::Infallible>(common::lambda::respond(resp))
    }))
    .await
}
