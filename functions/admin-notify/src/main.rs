//! Lambda: `POST /notify` and `GET /notify/{id}` (IAM-authorised routes). All logic is in
//! `common::handlers::admin::notify`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let app = common::lambda::init("admin-notify").await?;
    lambda_http::run(lambda_http::service_fn(move |req| async move {
        let resp = common::handlers::admin::notify(&common::lambda::request(req), app).await;
        Ok::<_, std::convert::Infallible>(common::lambda::respond(resp))
    }))
    .await
}
