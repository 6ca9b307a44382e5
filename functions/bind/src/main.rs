//! Lambda: `POST /bind`. All logic is in `common::handlers::bind::bind`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let app = common::lambda::init("bind").await?;
    common::lambda::serve(app, |req, app| async move {
        common::handlers::bind::bind(&req, app).await
    })
    .await
}
