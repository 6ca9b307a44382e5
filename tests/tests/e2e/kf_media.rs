//! Pictures both ways, end to end: a user's image reaches the agent as an IM image element built
//! from its `PicUrl`; an agent's image is downloaded from IM's storage (the stand-in serves the
//! bytes behind the URL of its element), checked, uploaded with `media/upload` (multipart) and
//! sent as a picture; a picture that cannot go as one goes as its summary with the link.

use common::config::AppKind;
use common::protocol::wechat::push::Delivery;
use local::standin::Scripted;
use serde_json::json;
use wxim_tests::BACKENDS;
use wxim_tests::harness::{Options, World};

use super::oa::{CUSTOM, SENDMSG, T0, follow, say, xml};

const UPLOAD: &str = "/cgi-bin/media/upload";
const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

fn world(b: wxim_tests::Backend) -> Options<'static> {
    // The IM stand-in's pictures are on 127.0.0.1, as IM's are on its storage's hosts.
    Options::new(b)
        .at(T0)
        .set("IM_MEDIA_URL_HOSTS", "127.0.0.1")
}

fn image_elem(url: &str) -> serde_json::Value {
    json!([{"MsgType": "TIMImageElem", "MsgContent": {"UUID": "1400000000_agent_alice_1", "ImageFormat": 3,
        "ImageInfoArray": [
            {"Type": 1, "Size": PNG.len(), "Width": 1, "Height": 1, "URL": url},
            {"Type": 3, "Size": 100, "Width": 1, "Height": 1, "URL": format!("{url}?thumb")}]}}])
}

async fn agent_sends_picture(w: &World, to: &str, url: &str) {
    let mut m = w.c2c("agent_alice", to, "");
    m["From_Account"] = json!("agent_alice");
    m["MsgBody"] = image_elem(url);
    assert_eq!(w.im("C2C.CallbackAfterSendMsg", m).await.status, 200);
}

async fn ready(w: &World, who: &str) {
    follow(w, who).await;
    say(w, who, 1, "请看一下").await;
}

#[tokio::test]
async fn an_agents_picture_is_uploaded_and_sent_as_a_picture() {
    for b in BACKENDS {
        let w = World::new(world(b)).await;
        ready(&w, "oP1").await;
        let url = w.im.put_image("label.png", PNG, "image/png");
        agent_sends_picture(&w, "oP1", &url).await;
        let up = w.wechat.requests(UPLOAD);
        assert_eq!(up.len(), 1, "{b:?}");
        assert!(up[0].query.contains(&("type".into(), "image".into())));
        let uploaded = w.wechat.uploaded();
        assert_eq!(
            uploaded.get("MEDIA_ID_1"),
            Some(&PNG.len()),
            "{b:?}: the bytes, whole"
        );
        let sent = w.wechat.requests(CUSTOM);
        assert_eq!(
            sent[0].body,
            json!({"touser": "oP1", "msgtype": "image", "image": {"media_id": "MEDIA_ID_1"}}),
            "{b:?}"
        );
        let kf = &w.outbox_of("kf").await[0];
        assert_eq!((kf.s("status"), kf.s("reason")), (Some("sent"), None));
    }
}

#[tokio::test]
async fn a_picture_that_cannot_go_as_one_goes_as_its_link() {
    for b in BACKENDS {
        let w = World::new(world(b)).await;
        ready(&w, "oP2").await;
        let html =
            w.im.put_image("page.png", b"<html>login</html>", "text/html");
        let big = w.im.put_image(
            "big.png",
            &[PNG, &vec![0u8; 10 * 1024 * 1024]].concat(),
            "image/png",
        );
        let bmp = w.im.put_image("old.bmp", b"BM\0\0\0\0", "image/bmp");
        let elsewhere = "https://cdn.example.com/agent/label.png".to_owned();
        // A URL on IM's storage that redirects off it (here to `localhost`, not an allowed host).
        let ok = w.im.put_image("fine.png", PNG, "image/png");
        let moved =
            w.im.put_redirect("moved.png", &ok.replace("127.0.0.1", "localhost"));
        for url in [&html, &big, &bmp, &elsewhere, &moved] {
            w.advance(1);
            agent_sends_picture(&w, "oP2", url).await;
        }
        // WeChat refuses an upload too (the follower writes again first: five replies were the
        // allowance).
        say(&w, "oP2", 2, "再发一次").await;
        w.wechat.script(
            UPLOAD,
            vec![Scripted::Json(
                json!({"errcode": 40005, "errmsg": "invalid file type"}),
            )],
        );
        w.advance(1);
        agent_sends_picture(&w, "oP2", &ok).await;
        let texts: Vec<String> = w
            .wechat
            .requests(CUSTOM)
            .iter()
            .map(|r| {
                assert_eq!(r.body["msgtype"], "text", "{b:?}");
                r.body["text"]["content"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(
            texts,
            [&html, &big, &bmp, &elsewhere, &moved, &ok]
                .iter()
                .map(|u| format!("[图片] {u}"))
                .collect::<Vec<_>>(),
            "{b:?}"
        );
        let reasons: Vec<String> = w
            .outbox_of("kf")
            .await
            .iter()
            .map(|i| i.s("reason").unwrap_or("").to_owned())
            .collect();
        assert_eq!(
            reasons,
            [
                "not_an_image",
                "too_large",
                "unsupported_format",
                "host_not_allowed",
                "download_failed",
                "upload_failed"
            ]
            .iter()
            .map(|r| format!("image_sent_as_link: {r}"))
            .collect::<Vec<_>>(),
            "{b:?}"
        );
        assert_eq!(
            w.wechat.count(UPLOAD),
            1,
            "{b:?}: only the picture that passed the checks"
        );
    }
}

#[tokio::test]
async fn a_users_picture_reaches_the_agent_as_an_image_element() {
    for b in BACKENDS {
        let w = World::new(world(b)).await;
        follow(&w, "oP3").await;
        let pic = "https://mmbiz.qpic.cn/mmbiz_jpg/abc/0";
        let push = xml(
            "oP3",
            w.now(),
            &format!(
                "<MsgType>image</MsgType><PicUrl><![CDATA[{pic}]]></PicUrl><MediaId><![CDATA[media-1]]></MediaId><MsgId>5</MsgId>"
            ),
        );
        assert_eq!(w.push(AppKind::Oa, &push, Delivery::Safe).await.status, 200);
        let fwd =
            w.im.requests(SENDMSG)
                .into_iter()
                .find(|r| r.body["From_Account"] == "oP3")
                .expect("forwarded");
        let elem = &fwd.body["MsgBody"][0];
        assert_eq!(elem["MsgType"], "TIMImageElem", "{b:?}");
        let infos = elem["MsgContent"]["ImageInfoArray"].as_array().unwrap();
        assert_eq!(infos.len(), 3);
        assert!(infos.iter().all(|i| i["URL"] == pic), "{b:?}");
        assert_eq!(
            infos
                .iter()
                .map(|i| i["Type"].as_i64().unwrap())
                .collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(w.outbox_of("forward").await[0].s("status"), Some("sent"));
    }
}

#[tokio::test]
async fn a_picture_in_a_burst_goes_on_its_own_and_the_texts_together() {
    for b in BACKENDS {
        let w = World::new(world(b).set("KF_MERGE_SECS", "3")).await;
        ready(&w, "oP4").await;
        let url = w.im.put_image("l.png", PNG, "image/png");
        let text = |t: &str| {
            let mut m = w.c2c("agent_alice", "oP4", t);
            m["From_Account"] = json!("agent_alice");
            m
        };
        w.im("C2C.CallbackAfterSendMsg", text("单号如下")).await;
        agent_sends_picture(&w, "oP4", &url).await;
        w.im("C2C.CallbackAfterSendMsg", text("请查收")).await;
        w.advance(3);
        w.stream().await;
        let sent = w.wechat.requests(CUSTOM);
        let kinds: Vec<&str> = sent
            .iter()
            .map(|r| r.body["msgtype"].as_str().unwrap())
            .collect();
        assert_eq!(kinds.len(), 2, "{b:?}: {kinds:?}");
        assert!(kinds.contains(&"image"), "{b:?}");
        let merged = sent.iter().find(|r| r.body["msgtype"] == "text").unwrap();
        assert_eq!(merged.body["text"]["content"], "单号如下\n请查收", "{b:?}");
    }
}
