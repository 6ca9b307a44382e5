//! Lambda: `POST /im/callback`. All logic is in `common::handlers::im::callback`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let app = common::lambda::init("im-callback").await?;
    common::lambda::serve(app, |req, app| async move {
        common::handlers::im::callback(&req, app).await
    })
    .await
}
