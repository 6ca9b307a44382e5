//! Lambda: `POST /notify` and `GET /notify/{id}` (IAM-authorised routes). All logic is in
//! `common::handlers::admin::notify`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let app = common::lambda::init("admin-notify").await?;
    common::lambda::serve(app, |req, app| async move {
        common::handlers::admin::notify(&req, app).await
    })
    .await
}
