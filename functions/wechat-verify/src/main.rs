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

    /// events/sample.env, with the table a deployed stack names.
    fn var(k: &str) -> Option<String> {
        if k == "TABLE_NAME" {
            return Some("wxim-state".into());
        }
        local::sample::vars()
            .into_iter()
            .find_map(|(n, v)| (n == k).then_some(v))
    }

    fn sample(file: &str) -> (common::http::Request, serde_json::Value) {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/");
        let event = std::fs::read_to_string(format!("{root}wechat-verify/{file}")).unwrap();
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{root}expected.json")).unwrap())
                .unwrap();
        let want = expected[format!("wechat-verify/{file}")].clone();
        (common::lambda::parse_event(&event).unwrap(), want)
    }

    /// The function's start (the wiring its `main` runs) and its sample events, a good URL check
    /// and a forged one, build no client. This test binary holds only this test, so the
    /// process-wide TLS configuration exists only if wechat-verify's own code built it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_start_and_its_url_checks_build_no_client() {
        let app = App::from_lookup_stateless("wechat-verify", &var).expect("sample configuration");
        assert_eq!(app.built(), Built::default(), "built at start");

        for file in ["mp.json", "bad-signature.json"] {
            let (req, want) = sample(file);
            let resp = common::handlers::wechat::verify(&req, &app).await;
            assert_eq!(u64::from(resp.status), want["status"], "{file}");
            if let Some(body) = want["body"].as_str() {
                assert_eq!(resp.body, body.as_bytes(), "{file}");
            }
        }

        assert_eq!(app.built(), Built::default(), "built by the URL checks");
    }
}
