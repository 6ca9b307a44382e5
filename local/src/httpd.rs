//! A minimal HTTP/1.1 server on loopback, shared by `wxim serve` and the local stand-ins of the
//! WeChat and IM APIs, so both speak real HTTP through the same few lines.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use common::http::{Request, Response, parse_query};
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub type BoxFuture = Pin<Box<dyn Future<Output = Response> + Send>>;
pub type Handler = Arc<dyn Fn(Request) -> BoxFuture + Send + Sync>;

/// Bodies above this are cut off by the server itself (the handlers refuse smaller ones first).
const MAX_BODY: usize = 1024 * 1024;

/// Binds 127.0.0.1:`port` (0 = any free port) and serves until the task is dropped.
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await
}

pub async fn serve(listener: TcpListener, handler: Handler) {
    let mut counter: u64 = 0;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        counter += 1;
        let conn_id = counter;
        let handler = handler.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let handler = handler.clone();
                async move {
                    let resp = match to_request(req, conn_id).await {
                        Ok(r) => handler(r).await,
                        Err(resp) => resp,
                    };
                    Ok::<_, Infallible>(to_hyper(resp))
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn to_request(
    req: hyper::Request<hyper::body::Incoming>,
    conn_id: u64,
) -> Result<Request, Response> {
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|_| Response::error(413, "body_too_large", "request body too large"))?
        .to_bytes();
    Ok(Request {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(parse_query).unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        path_params: vec![],
        body: body.to_vec(),
        request_id: format!("local-{conn_id}-{}", random_suffix()),
        // Nothing on a local socket vouches for the caller: admin routes need the bearer token.
        principal: None,
    })
}

fn random_suffix() -> String {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn to_hyper(resp: Response) -> hyper::Response<Full<Bytes>> {
    let mut builder = hyper::Response::builder().status(resp.status);
    for (k, v) in &resp.headers {
        builder = builder.header(k, v);
    }
    builder
        .body(Full::new(Bytes::from(resp.body)))
        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())))
}
