//! Lambda: `POST /wechat/{app}`. All logic is in `common::handlers::wechat::event`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let app = common::lambda::init("wechat-event").await?;
    common::lambda::serve(app, |req, app| async move {
        common::handlers::wechat::event(&req, app).await
    })
    .await
}
