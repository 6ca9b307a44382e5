//! Lambda: `GET /wechat/{app}`. All logic is in `common::handlers::wechat::verify`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let app = common::lambda::init_stateless("wechat-verify")?;
    common::lambda::serve(app, |req, app| async move {
        common::handlers::wechat::verify(&req, app).await
    })
    .await
}

#[cfg(test)]
mod tests {
    use common::app::{App, Built};
    use common::http::Request;

    /// The configuration a deployed wechat-verify gets (the sample stack's variables), with
    /// the official GET vector's token (reference V2).
    fn var(k: &str) -> Option<String> {
        let v = match k {
            "TABLE_NAME" => "wxim-state",
            "WECHAT_MP_APPID" => "wx1234567890abcdef",
            "WECHAT_MP_SECRET" => "mp-secret",
            "WECHAT_MP_TOKEN" => "AAAAA",
            "WECHAT_MP_AES_KEY" => "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
            "IM_SDKAPPID" => "1400000000",
            "IM_SECRET_KEY" => "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e",
            "WECHAT_API_BASE" | "IM_API_BASE" => "http://127.0.0.1:9",
            _ => return None,
        };
        Some(v.to_owned())
    }

    /// This test binary holds only this test, so the process-wide TLS configuration is built
    /// only if wechat-verify's own code builds it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_start_and_its_url_checks_build_no_client() {
        let app = App::from_lookup_stateless("wechat-verify", &var).expect("sample configuration");
        assert_eq!(app.built(), Built::default(), "built at start");

        let ok = Request::new(
            "GET",
            "/wechat/mp?signature=f464b24fc39322e44b38aa78f5edd27bd1441696&timestamp=1714036504&nonce=1514711492&echostr=4375120948345356249",
        );
        let resp = common::handlers::wechat::verify(&ok, &app).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"4375120948345356249");
        let forged = Request::new(
            "GET",
            "/wechat/mp?signature=f464b24fc39322e44b38aa78f5edd27bd1441697&timestamp=1714036504&nonce=1514711492&echostr=1",
        );
        assert_eq!(
            common::handlers::wechat::verify(&forged, &app).await.status,
            403
        );

        assert_eq!(app.built(), Built::default(), "built by the URL checks");
    }
}
