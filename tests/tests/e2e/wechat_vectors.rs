//! The published WeChat vectors (shared/reference/wechat.md §4) driven through the public
//! handlers in the direction they were published: inbound pushes through `POST /wechat/{app}`,
//! URL checks through `GET`. The reply vectors (V5, V7, V13) and the pure crypto vectors are unit
//! tests next to the code (common/src/wechat/{reply,crypto,signature}.rs).

use common::http::{Request, Response};
use common::store::Table;
use wxim_tests::{Backend, app, app_at};

const K43A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn official(appid: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("WECHAT_MP_APPID", appid),
        ("WECHAT_MP_TOKEN", "AAAAA"),
        ("WECHAT_MP_AES_KEY", K43A),
    ]
}

/// The push arrives at the time it was signed (vectors carry fixed timestamps, and pushes outside
/// the replay window are refused).
async fn post(overrides: &[(&str, &str)], query: &str, body: &str) -> (Response, common::App) {
    let ts = common::http::parse_query(query)
        .into_iter()
        .find(|(k, _)| k == "timestamp")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap();
    let (app, _) = app_at(Backend::Embedded, overrides, ts).await;
    let req =
        Request::new("POST", &format!("/wechat/mp?{query}")).with_body(body.as_bytes().to_vec());
    (common::handlers::wechat::event(&req, &app).await, app)
}

async fn get(overrides: &[(&str, &str)], query: &str) -> Response {
    let app = app(Backend::Embedded, overrides).await;
    common::handlers::wechat::verify(&Request::new("GET", &format!("/wechat/mp?{query}")), &app)
        .await
}

#[tokio::test]
async fn v1_url_check_and_its_flipped_digit() {
    let o = [("WECHAT_MP_TOKEN", "test")];
    let ok = get(&o, "signature=f21891de399b4e33a1a93c9a7b8a8fffb5a443ff&timestamp=1410685589&nonce=test&echostr=hi").await;
    assert_eq!((ok.status, ok.body_str()), (200, "hi"));
    let bad = get(&o, "signature=f21891de399b4e33a1a93c9a7b8a8fffb5a443fe&timestamp=1410685589&nonce=test&echostr=hi").await;
    assert_eq!(bad.status, 403);
    assert_ne!(bad.body_str(), "hi");
}

#[tokio::test]
async fn v2_official_url_check_echoes_raw_text() {
    let r = get(
        &official("wxba5fad812f8e6fb9"),
        "signature=f464b24fc39322e44b38aa78f5edd27bd1441696&timestamp=1714036504&nonce=1514711492&echostr=4375120948345356249",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "4375120948345356249");
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
}

#[tokio::test]
async fn v3_official_plaintext_push() {
    let body = r#"{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY","CreateTime":1714037059,"MsgType":"event","Event":"debug_demo","debug_str":"hello world"}"#;
    let (r, _) = post(
        &official("wxba5fad812f8e6fb9"),
        "signature=899cf89e464efb63f54ddac96b0a0a235f53aa78&timestamp=1714037059&nonce=486452656",
        body,
    )
    .await;
    assert_eq!((r.status, r.body_str()), (200, "success"));
    let (r, _) = post(
        &official("wxba5fad812f8e6fb9"),
        "signature=899cf89e464efb63f54ddac96b0a0a235f53aa79&timestamp=1714037059&nonce=486452656",
        body,
    )
    .await;
    assert_eq!(r.status, 403);
}

const V4_QUERY: &str = "signature=6c5c811b55cc85e0e1b54100749188c20beb3f5d&timestamp=1714112445&nonce=415670741&openid=o9AgO5Kd5ggOC-bXrbNODIiE3bGY&encrypt_type=aes&msg_signature=046e02f8204d34f8ba5fa3b1db94908f3df2e9b3";
const V4_BODY: &str = r#"{"ToUserName":"gh_97417a04a28d","Encrypt":"+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04="}"#;

#[tokio::test]
async fn v4_official_safe_mode_json_push() {
    let (r, _) = post(&official("wxba5fad812f8e6fb9"), V4_QUERY, V4_BODY).await;
    assert_eq!((r.status, r.body_str()), (200, "success"));
}

#[tokio::test]
async fn v4_negative_cases() {
    // Another appid: decrypts, but the tail is not ours.
    let (r, _) = post(&official("wx0000000000000000"), V4_QUERY, V4_BODY).await;
    assert_eq!(r.status, 403);
    assert!(r.body_str().contains("appid_mismatch"));
    // The URL signature used as msg_signature (the classic peer bug) must fail.
    let q = V4_QUERY.replace(
        "msg_signature=046e02f8204d34f8ba5fa3b1db94908f3df2e9b3",
        "msg_signature=6c5c811b55cc85e0e1b54100749188c20beb3f5d",
    );
    let (r, _) = post(&official("wxba5fad812f8e6fb9"), &q, V4_BODY).await;
    assert_eq!(r.status, 403);
    assert!(r.body_str().contains("bad_signature"));
    // Whitespace around the ciphertext changes what is signed.
    let body = V4_BODY.replace(r#""Encrypt":""#, r#""Encrypt":" "#);
    let (r, _) = post(&official("wxba5fad812f8e6fb9"), V4_QUERY, &body).await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn v6_official_safe_mode_xml_push() {
    let body = "<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName><Encrypt><![CDATA[D7yzvUNAL930rd28wf21s4hvXhz0L6Uit/p2Di6C5DHyYGpEgdBRnKjBec34JwoQXicwaZC7fOVihW80F4VtsdvE//1vr7oAbqjDv8KenVp+ajKYpJnyQ4zMRhIC+a31fCVOMC03FfzV/QuC94kBP55a+Za3sJgvAn+ZbsNqZI5DkyuzkhQN8OBqCzFhizGmy0xpM0MEA4agpvE+RuNO1rhHTtuJB5yltw1FiYzecSXJ+y/D2r81VkRn2eYjh2ltsoyfbDR7Is6ookXIFxTfyeNyeHxMeT4KN5WpCDmSbTcUYrbBUlkGLJ9n/rU8YOywma6G7aTb7KZKOqCxgfoUlYEZPk4FUL/TK7ShriFDMVCLyjQJ15Ob++agDWtcxhfUfe6HIoIpRW8mKNBQiY/Jd1svvuskA1wLef1RTtzKfMpagSCX/laZINmdnX4zrF6kIaR9P4xQrWXbsTFHTYe0Mg==]]></Encrypt></xml>";
    let q = "signature=cc0c594499c1634947d5b502f158ee518947db27&timestamp=1715943329&nonce=1590219412&encrypt_type=aes&msg_signature=6c12a4205838198b8fa631b3220723bb07f1015c";
    // V6's trailing id is the open platform's appid.
    let (r, _) = post(&official("wx134c8103faa5a59e"), q, body).await;
    assert_eq!((r.status, r.body_str()), (200, "success"));
}

#[tokio::test]
async fn v10_safe_mode_xml_text_with_chinese_content() {
    let body = "<xml><ToUserName><![CDATA[gh_abcdef123456]]></ToUserName><Encrypt><![CDATA[Q3stYC6hdFzMh9T8HCvyDPW++0NimYftA4VGyWArLGls2dVk5OQx/YcERDGWIg8ILOgfa3ycbWvSqc+em+8o/pgkd4Xhmt4cIaD8hbZwWSLaaaUyIzszj6UDQIm/VBIYkaTLfLLdi6CmYMK/hlsLow64snWLaPBa4AcDfXzrj1L38hQ69PBsGhzz1AowPbeAqXftL4f9BR4miQ0PFBeRhcubW4MI/QK0A5H1sjvZpWYoIrtCqoq864hZM+DM9RcLPXmYWVl3CzI6OnOwhAJdjbeMWPD4GkYx8sTWYYoYRvPi/r1r8HTP/XiuVNvgI10H31fRcoEB3uJkW5eYUSNwcDDkxXYuQhD7tZip6kQVRbsxQnhjifunMtaCvrv2n63+Ox19bBF+emE/QS43k3tOmHx+DTVD18SoVLuInWjQLns=]]></Encrypt></xml>";
    let q = "timestamp=1700000000&nonce=1234567890&encrypt_type=aes&msg_signature=feffc9c7f861167e471fb6c4416f40e3abb9b606";
    // The sample configuration's mini program is V10's token, key and appid.
    let (r, _) = post(&[], q, body).await;
    assert_eq!((r.status, r.body_str()), (200, "success"));
}

#[tokio::test]
async fn v11_safe_mode_json_popup_updates_the_ledger() {
    let body = r#"{"ToUserName":"gh_123456789abc","Encrypt":"DpQeJfnf/MGZ/+GTIspwVFZJtr+nwnzYHcT1h0IQqW4H2VJX3x1W+RovfD1nSvIzBXvyTe2nwil97pKShsZvaBHja/bD9PBXBqloqQNEEM5Tq+Jz2UcMUTal9HuuNbXR7pL+/iNIRxGBxUAJePRBCwcwKnx9s8mERJvSz8dOlYkW6recc/8lveGyUg3mz2HIruQn+9zlS+TU+XOFPQxYc8i6IK/PX1shs/V325XsppWCrPkzok4JnaKDEKRSqAcDHhAOZqMKrTFzEZXzpHPZJ9G7B03vHpn/A60IqYilVC/cJ4MoVU5D9IJI0SL+glT1naiZeyPR8uPKTDDRkvzrkaJFlqQUbg/Zkz4YOOiCHRjCHpienaZeW1XPG1YpsGt0VR/xaEDTslkNkWRmpf41e2c/zIWqzEzaAls4FFRTbLs+PF1tYsaJQSDg5D6yyD+WmB6luMFt2YYg+CVN6ZqBEXMxmxoR9H4AJCzbPisQayF5R6XROa8cWBxyTOTs/lVulK7sBXLNLdFxfq7Kyw3YyzMCcGBu/v1DBEHKs3whV7/zzzJ/grGaMEPv2c436qnufWEQsukLlZnFF348rD48jQ=="}"#;
    let q = "signature=7ea570c7201ecf98783a56920b00d8f6209609a0&timestamp=1700000001&nonce=987654321&encrypt_type=aes&msg_signature=b77c82b354ae02de7760b7802795f597c97fb744";
    let (r, app) = post(&[], q, body).await;
    assert_eq!((r.status, r.body_str()), (200, "success"));
    let accepted = app
        .store
        .get(
            Table::State,
            "sub#mp#otFpruAK8D-E6EfStSYonYSBZ8_4",
            "tpl#VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc",
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(accepted.n("credits"), Some(1));
    let rejected = app
        .store
        .get(
            Table::State,
            "sub#mp#otFpruAK8D-E6EfStSYonYSBZ8_4",
            "tpl#9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI",
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (rejected.n("credits"), rejected.s("status")),
        (Some(0), Some("reject"))
    );
}
