//! Lambda: `GET /wechat/{app}`. All logic is in `common::handlers::wechat::verify`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let app = common::lambda::init_stateless("wechat-verify")?;
    common::lambda::serve(app, |req, app| async move {
        common::handlers::wechat::verify(&req, app).await
    })
    .await
}
