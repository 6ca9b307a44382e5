//! The floor scripts/coldstart.py compares every function with: the smallest lambda_http
//! function there is, with the same dependencies' features and the same release profile.

use lambda_http::{Body, Error, Request, Response, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(|_req: Request| async {
        Ok::<_, Error>(Response::new(Body::Text("ok".into())))
    }))
    .await
}
