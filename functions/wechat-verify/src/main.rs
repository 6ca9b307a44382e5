//! Lambda: `GET /wechat/{app}`. All logic is in `common::handlers::wechat::verify`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let app = common::lambda::init_stateless("wechat-verify")?;
    lambda_http::run(lambda_http::service_fn(move |req| async move {
        let resp = common::handlers::wechat::verify(&common::lambda::request(req), app).await;
        Ok::<_, std::convert::Infallible>(common::lambda::respond(resp))
    }))
    .await
}
