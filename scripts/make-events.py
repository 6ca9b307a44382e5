#!/usr/bin/env python3
"""Regenerates events/: one API Gateway (HTTP API, payload v2) event per case, signed for the
sample configuration in events/sample.env with `wxim sign`, plus events/expected.json, the
documented outcome of each file that the tests check.

Usage: cargo build -p wxim-local --bin wxim && .venv/bin/python scripts/make-events.py
(the .venv of scripts/pyenv.sh has `cryptography`, used for the one deliberately broken ciphertext)
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
WXIM = ROOT / "target" / "debug" / "wxim"

MP_USER = "otFpruAK8D-E6EfStSYonYSBZ8_4"
OA_USER = "oUSER_openid_0001"
MP_GH = "gh_123456789abc"
OA_GH = "gh_abcdef123456"
TPL1 = "VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc"
TPL2 = "9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI"
TS = 1700000000


def sample_env():
    env = {}
    for line in (EVENTS / "sample.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
                v = v[1:-1]
            env[k] = v
    return env


def base_event(method, path, route, body="", content_type=None, path_params=None):
    headers = {
        "host": "example.execute-api.ap-east-1.amazonaws.com",
        "user-agent": "Mozilla/4.0",
        "x-forwarded-for": "203.0.113.10",
        "x-forwarded-proto": "https",
    }
    if content_type:
        headers["content-type"] = content_type
    return {
        "version": "2.0",
        "routeKey": f"{method} {route}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "pathParameters": path_params or {},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "example",
            "domainName": "example.execute-api.ap-east-1.amazonaws.com",
            "domainPrefix": "example",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.10",
                "userAgent": "Mozilla/4.0",
            },
            "requestId": "sample-" + hashlib.sha1(path.encode() + body.encode()).hexdigest()[:12],
            "routeKey": f"{method} {route}",
            "stage": "$default",
            "time": "14/Nov/2023:22:13:20 +0000",
            "timeEpoch": TS * 1000,
        },
        "body": body,
        "isBase64Encoded": False,
    }


def wechat_event(method, app, body=""):
    ctype = None
    if body:
        ctype = "application/json" if body.lstrip().startswith("{") else "text/xml"
    return base_event(method, f"/wechat/{app}", "/wechat/{app}", body, ctype, {"app": app})


def sign(event, mode, nonce, env_overrides=None, ts=TS):
    env = dict(os.environ)
    env.update(sample_env())
    env.pop("TABLE_NAME", None)
    env.update(env_overrides or {})
    args = [str(WXIM), "sign", "-", "--timestamp", str(ts), "--nonce", nonce]
    if mode:
        args += ["--mode", mode]
    out = subprocess.run(args, input=json.dumps(event), capture_output=True, text=True, env=env, cwd="/")
    if out.returncode != 0:
        sys.exit(f"wxim sign failed: {out.stderr}")
    return json.loads(out.stdout)


def bad_padding_ciphertext(key43, appid, msg):
    """A correctly encrypted message whose 32-byte PKCS#7 padding is invalid (last byte 0)."""
    import base64
    import struct

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = base64.b64decode(key43 + "=")
    body = b"0123456789abcdef" + struct.pack(">I", len(msg)) + msg + appid.encode()
    body += b"\0" * (32 - len(body) % 32)
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(enc.update(body) + enc.finalize()).decode()


def sha1_sig(*parts):
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def set_query(event, pairs):
    from urllib.parse import urlencode

    event["rawQueryString"] = urlencode(pairs)
    event["queryStringParameters"] = dict(pairs)


def popup_json(user, items, ts=TS):
    lst = [{"TemplateId": t, "SubscribeStatusString": s, "PopupScene": "0"} for t, s in items]
    return json.dumps(
        {
            "ToUserName": MP_GH,
            "FromUserName": user,
            "CreateTime": ts,
            "MsgType": "event",
            "Event": "subscribe_msg_popup_event",
            "List": lst[0] if len(lst) == 1 else lst,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def xml(fields, gh=OA_GH, user=OA_USER, ts=TS):
    inner = "".join(
        f"<{k}>{v}</{k}>" if isinstance(v, int) or v.startswith("<") else f"<{k}><![CDATA[{v}]]></{k}>"
        for k, v in fields
    )
    return (
        f"<xml><ToUserName><![CDATA[{gh}]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName>"
        f"<CreateTime>{ts}</CreateTime>{inner}</xml>"
    )


def oa_msg(msg_type, fields, msg_id):
    return xml([("MsgType", msg_type)] + fields + [("MsgId", msg_id)])


def oa_event(event, fields=()):
    return xml([("MsgType", "event"), ("Event", event)] + list(fields))


CASES = []


def case(path, event, expect, doc):
    CASES.append((path, event, expect, doc))


def sub(app, user, tpl):
    return {"pk": f"sub#{app}#{user}", "sk": f"tpl#{tpl}"}


def build():
    # --- URL verification -------------------------------------------------------------------
    e = sign(wechat_event("GET", "mp") | {"rawQueryString": "echostr=4375120948345356249"}, None, "1514711492")
    case("wechat-verify/mp.json", e, {"function": "wechat-verify", "status": 200, "body": "4375120948345356249",
         "content_type": "text/plain"}, "Mini program URL check: answers the raw echostr as text/plain.")
    e = sign(wechat_event("GET", "oa") | {"rawQueryString": "echostr=7326051234567890123"}, None, "2093847561")
    case("wechat-verify/oa.json", e, {"function": "wechat-verify", "status": 200, "body": "7326051234567890123",
         "content_type": "text/plain"}, "Official account URL check.")
    e = sign(wechat_event("GET", "mp") | {"rawQueryString": "echostr=4375120948345356249"}, None, "1514711492")
    e["queryStringParameters"]["signature"] = "0" * 40
    set_query(e, list(e["queryStringParameters"].items()))
    case("wechat-verify/bad-signature.json", e, {"function": "wechat-verify", "status": 403, "error": "bad_signature"},
         "A forged URL check: 403, the echostr is not echoed.")
    e = wechat_event("GET", "xx")
    set_query(e, [("signature", "0" * 40), ("timestamp", str(TS)), ("nonce", "1"), ("echostr", "1")])
    case("wechat-verify/unknown-app.json", e, {"function": "wechat-verify", "status": 404, "error": "unknown_app"},
         "Only /wechat/mp and /wechat/oa exist.")

    # --- Mini program subscribe-message events ---------------------------------------------
    body = popup_json(MP_USER, [(TPL1, "accept")])
    case("wechat-event/mp-plain-json-popup-accept.json", sign(wechat_event("POST", "mp", body), "plain", "100001"),
         {"function": "wechat-event", "status": 200, "body": "success",
          "items": [sub("mp", MP_USER, TPL1) | {"credits": 1, "status": "accept"}]},
         "Plaintext JSON popup accept: one credit.")
    body = popup_json(MP_USER, [(TPL1, "accept"), (TPL2, "reject")], TS + 1)
    case("wechat-event/mp-safe-json-popup.json", sign(wechat_event("POST", "mp", body), "safe", "100002"),
         {"function": "wechat-event", "status": 200, "body": "success",
          "items": [sub("mp", MP_USER, TPL1) | {"credits": 1, "status": "accept"},
                    sub("mp", MP_USER, TPL2) | {"credits": 0, "status": "reject"}]},
         "Safe-mode JSON popup with List as an array: accept adds a credit, reject is recorded.")
    body = xml([("MsgType", "event"), ("Event", "subscribe_msg_popup_event"),
                ("SubscribeMsgPopupEvent",
                 f"<List><TemplateId><![CDATA[{TPL1}]]></TemplateId><SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>0</PopupScene></List>"
                 f"<List><TemplateId><![CDATA[{TPL1}]]></TemplateId><SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>0</PopupScene></List>")],
               gh=MP_GH, user=MP_USER, ts=TS + 2)
    case("wechat-event/mp-safe-xml-popup.json", sign(wechat_event("POST", "mp", body), "safe", "100003"),
         {"function": "wechat-event", "status": 200, "body": "success",
          "items": [sub("mp", MP_USER, TPL1) | {"credits": 2, "status": "accept"}]},
         "Safe-mode XML popup, repeated <List> inside the wrapper: two accepts, two credits.")
    body = xml([("MsgType", "event"), ("Event", "subscribe_msg_popup_event"),
                ("List", f"<TemplateId><![CDATA[{TPL2}]]></TemplateId><SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString><PopupScene>0</PopupScene>")],
               gh=MP_GH, user=MP_USER, ts=TS + 3)
    case("wechat-event/mp-compat-xml-popup.json", sign(wechat_event("POST", "mp", body), "compat", "100004"),
         {"function": "wechat-event", "status": 200, "body": "success",
          "items": [sub("mp", MP_USER, TPL2) | {"credits": 1, "status": "accept"}]},
         "Compatible mode (plaintext fields plus Encrypt): only the decrypted payload counts.")
    body = popup_json(MP_USER, [(TPL2, "accept")], TS + 9)
    case("wechat-event/mp-compat-json-popup.json", sign(wechat_event("POST", "mp", body), "compat", "100010"),
         {"function": "wechat-event", "status": 200, "body": "success",
          "items": [sub("mp", MP_USER, TPL2) | {"credits": 1, "status": "accept"}]},
         "Compatible mode with a JSON body (the plaintext fields plus Encrypt; WeChat's exact JSON shape for "
         "this mode is not published, so any object carrying Encrypt is read): only the decrypted payload counts.")
    body = json.dumps({"ToUserName": MP_GH, "FromUserName": MP_USER, "CreateTime": str(TS + 4), "MsgType": "event",
                       "Event": "subscribe_msg_change_event",
                       "List": [{"TemplateId": TPL1, "SubscribeStatusString": "reject"}]}, separators=(",", ":"))
    case("wechat-event/mp-safe-json-change-reject.json", sign(wechat_event("POST", "mp", body), "safe", "100005"),
         {"function": "wechat-event", "status": 200, "body": "success",
          "items": [sub("mp", MP_USER, TPL1) | {"credits": 0, "status": "reject"}]},
         "The user turns the template off in 服务通知 settings: credits zeroed.")
    body = json.dumps({"ToUserName": MP_GH, "FromUserName": MP_USER, "CreateTime": TS + 5, "MsgType": "event",
                       "Event": "subscribe_msg_sent_event",
                       "List": {"TemplateId": TPL1, "MsgID": "1700000000000000001", "ErrorCode": "0",
                                "ErrorStatus": "success"}}, separators=(",", ":"))
    case("wechat-event/mp-safe-json-sent.json", sign(wechat_event("POST", "mp", body), "safe", "100006"),
         {"function": "wechat-event", "status": 200, "body": "success",
          "items": [{"pk": "wxmsg#mp#1700000000000000001", "sk": "-", "delivery_status": "success",
                     "delivery_errcode": 0}]},
         "Delivery result of a send, recorded against its msgid.")
    body = xml([("MsgType", "event"), ("Event", "subscribe_msg_sent_event"),
                ("SubscribeMsgSentEvent",
                 f"<List><TemplateId><![CDATA[{TPL2}]]></TemplateId><MsgID>1700000000000000002</MsgID><ErrorCode>10002</ErrorCode><ErrorStatus><![CDATA[failed]]></ErrorStatus></List>")],
               gh=MP_GH, user=MP_USER, ts=TS + 6)
    case("wechat-event/mp-plain-xml-sent.json", sign(wechat_event("POST", "mp", body), "plain", "100007"),
         {"function": "wechat-event", "status": 200, "body": "success",
          "items": [{"pk": "wxmsg#mp#1700000000000000002", "sk": "-", "delivery_status": "failed",
                     "delivery_errcode": 10002}]},
         "Plaintext XML sent event with its wrapper: a failed asynchronous delivery is recorded.")
    body = json.dumps({"ToUserName": MP_GH, "FromUserName": MP_USER, "CreateTime": TS + 7, "MsgType": "miniprogrampage",
                       "MsgId": 24000000000000007, "Title": "Order 42", "AppId": "wx1234567890abcdef",
                       "PagePath": "pages/order?id=42", "ThumbUrl": "https://example.com/t.jpg",
                       "ThumbMediaId": "media-1"}, separators=(",", ":"))
    case("wechat-event/mp-safe-json-miniprogrampage.json", sign(wechat_event("POST", "mp", body), "safe", "100008"),
         {"function": "wechat-event", "status": 200, "body": "success"},
         "A mini-program card sent in the customer-service chat: accepted.")
    mp_kf = {"IM_AGENT_ACCOUNTS_MP": "agent_bob"}
    mp_conv = {"pk": f"conv#mp#{MP_USER}", "sk": "-"}
    body = json.dumps({"ToUserName": MP_GH, "FromUserName": MP_USER, "CreateTime": TS,
                       "MsgType": "event", "Event": "user_enter_tempsession",
                       "SessionFrom": "order:42"}, separators=(",", ":"))
    case("wechat-event/mp-safe-json-enter-session.json", sign(wechat_event("POST", "mp", body), "safe", "100010"),
         {"function": "wechat-event", "status": 200, "body": "success", "config": mp_kf,
          "items": [mp_conv | {"status": "active", "agent": "agent_bob", "openid": MP_USER,
                               "allowance_by": "mp_session", "allowance_left": 2,
                               "session_from": "order:42"}],
          "outbox": [{"kind": "im_import", "status": "sent"}]},
         "With IM_AGENT_ACCOUNTS_MP=agent_bob: a mini-program user taps <button open-type=\"contact\" "
         "session-from=\"order:42\">. The conversation starts (agent_bob assigned; the unbound user's IM "
         "account, their openid, imported), WeChat's allowance of 2 replies within 1 minute is recorded, and "
         "SessionFrom is kept for the agent until the user's first message.")
    body = json.dumps({"ToUserName": MP_GH, "FromUserName": MP_USER, "CreateTime": TS, "MsgType": "text",
                       "Content": "我的订单还没到", "MsgId": 24000000000000011}, separators=(",", ":"))
    case("wechat-event/mp-safe-json-kf-text.json", sign(wechat_event("POST", "mp", body), "safe", "100011"),
         {"function": "wechat-event", "status": 200, "body": "success", "config": mp_kf,
          "setup": [{"invoke": "wechat-event/mp-safe-json-enter-session.json"}],
          "items": [mp_conv | {"allowance_by": "mp_message", "allowance_left": 5}],
          "outbox": [{"kind": "im_import", "status": "sent"}, {"kind": "forward", "status": "sent"}],
          "im_sends": 1},
         "The user's first message in the session: forwarded to agent_bob in IM from the user's IM account, "
         "as \"[SessionFrom: order:42] 我的订单还没到\"; WeChat now allows 5 replies within 48 hours. "
         "Setup: the user entered the session (mp-safe-json-enter-session.json).")
    body = json.dumps({"ToUserName": "gh_97417a04a28d", "FromUserName": MP_USER, "CreateTime": TS + 8,
                       "MsgType": "event", "Event": "debug_demo", "debug_str": "hello world"}, separators=(",", ":"))
    case("wechat-event/mp-plain-json-unknown-event.json", sign(wechat_event("POST", "mp", body), "plain", "100009"),
         {"function": "wechat-event", "status": 200, "body": "success", "nothing_stored": True},
         "An event this service does not handle (the console's debug_demo): accepted and logged, nothing stored.")

    # --- Official account -------------------------------------------------------------------
    welcome = "Welcome! Send us a message and one of our agents will answer you here."
    connecting = "Connecting you to an agent, please wait a moment."
    conv = {"pk": f"conv#oa#{OA_USER}", "sk": "-"}
    case("wechat-event/oa-safe-xml-subscribe.json",
         sign(wechat_event("POST", "oa", oa_event("subscribe", [("EventKey", "qrscene_campaign42"), ("Ticket", "gQH47joAAAAAAAAAASxodHRw")])), "safe", "200100"),
         {"function": "wechat-event", "status": 200, "reply_text": welcome,
          "items": [conv | {"status": "active", "agent": "agent_alice"},
                    {"pk": f"bind#im#{OA_USER}", "sk": "oa", "openid": OA_USER, "status": "active"}],
          "outbox": [{"kind": "im_import", "status": "sent"}]},
         "A follow (from a parametric QR code): the follower is imported into IM (their IM id is the openid), "
         "given an agent, and welcomed with an encrypted passive reply.")
    case("wechat-event/oa-safe-xml-unsubscribe.json",
         sign(wechat_event("POST", "oa", oa_event("unsubscribe")), "safe", "200101"),
         {"function": "wechat-event", "status": 200, "body": "success",
          "setup": [{"invoke": "wechat-event/oa-safe-xml-subscribe.json"}],
          "items": [conv | {"status": "ended"}, {"pk": f"bind#im#{OA_USER}", "sk": "oa", "status": "ended"}],
          "outbox": [{"kind": "im_import", "status": "sent"},
                     {"kind": "im_delete", "status": "skipped", "reason": "kept_inactive_71000"}]},
         "An unfollow: conversation and binding end; the IM account is deleted where the edition allows it "
         "(the stand-in, like most editions, answers 71000, so it is kept and marked inactive).")
    case("wechat-event/oa-safe-xml-scan.json",
         sign(wechat_event("POST", "oa", oa_event("SCAN", [("EventKey", "campaign42"), ("Ticket", "gQH47joAAAAAAAAAASxodHRw")])), "safe", "200102"),
         {"function": "wechat-event", "status": 200, "body": "success",
          "items": [conv | {"allowance_by": "scan", "allowance_left": 3}],
          "outbox": []},
         "An existing follower scans a parametric QR code: nothing is forwarded, but WeChat now allows 3 "
         "customer-service replies within 1 minute, recorded on the conversation (replacing the allowance in force).")
    case("wechat-event/oa-safe-xml-menu-click.json",
         sign(wechat_event("POST", "oa", oa_event("CLICK", [("EventKey", "V1001_CONTACT_US")])), "safe", "200103"),
         {"function": "wechat-event", "status": 200, "body": "success",
          "items": [conv | {"allowance_by": "menu", "allowance_left": 3}],
          "outbox": []},
         "A follower clicks a menu item (CLICK; scancode_push and scancode_waitmsg count the same): WeChat "
         "allows 3 customer-service replies within 1 minute, recorded on the conversation.")
    oa = [
        ("oa-safe-xml-text.json", oa_msg("text", [("Content", "你好 hello")], 24000000000000001), "safe",
         "A follower's text message."),
        ("oa-plain-xml-image.json", oa_msg("image", [("PicUrl", "https://mmbiz.example/pic.jpg"), ("MediaId", "media-image-1")], 24000000000000002), "plain",
         "An image (plaintext mode): forwarded to the agent as an IM image element (TIMImageElem) built from its PicUrl."),
        ("oa-safe-xml-voice.json", oa_msg("voice", [("MediaId", "media-voice-1"), ("Format", "amr"), ("Recognition", "语音识别结果")], 24000000000000003), "safe",
         "A voice message with speech recognition."),
        ("oa-safe-xml-video.json", oa_msg("video", [("MediaId", "media-video-1"), ("ThumbMediaId", "media-thumb-1")], 24000000000000004), "safe",
         "A video."),
        ("oa-safe-xml-shortvideo.json", oa_msg("shortvideo", [("MediaId", "media-video-2"), ("ThumbMediaId", "media-thumb-2")], 24000000000000005), "safe",
         "A short video."),
        ("oa-safe-xml-location.json", oa_msg("location", [("Location_X", "23.134521"), ("Location_Y", "113.358803"), ("Scale", "20"), ("Label", "广州市天河区")], 24000000000000006), "safe",
         "A location."),
        ("oa-safe-xml-link.json", oa_msg("link", [("Title", "Docs"), ("Description", "Read this"), ("Url", "https://example.com/docs")], 24000000000000007), "safe",
         "A link."),
    ]
    for i, (name, body, mode, doc) in enumerate(oa):
        case(f"wechat-event/{name}", sign(wechat_event("POST", "oa", body), mode, f"2000{i:02d}"),
             {"function": "wechat-event", "status": 200, "reply_text": connecting,
              "items": [conv | {"status": "active", "agent": "agent_alice"}],
              "outbox": [{"kind": "im_import", "status": "sent"}, {"kind": "forward", "status": "sent"}],
              "im_sends": 1},
             doc + " Forwarded to the follower's agent in IM (from the follower's own IM account); "
                   "the passive reply says \"connecting you\" (once per conversation window).")

    # --- Bad input ----------------------------------------------------------------------------
    e = sign(wechat_event("POST", "mp", popup_json(MP_USER, [(TPL1, "accept")], TS + 20)), "safe", "300001")
    q = dict(e["queryStringParameters"])
    q["msg_signature"] = q["signature"]  # the classic peer bug: checking signature instead
    set_query(e, list(q.items()))
    case("wechat-event/mp-safe-json-bad-signature.json", e,
         {"function": "wechat-event", "status": 403, "error": "bad_signature", "nothing_stored": True},
         "Safe mode signed with the URL signature instead of msg_signature: refused.")
    e = sign(wechat_event("POST", "mp", popup_json(MP_USER, [(TPL1, "accept")], TS + 21)), "safe", "300002",
             {"WECHAT_MP_APPID": "wx0000000000000000"})
    case("wechat-event/mp-safe-json-wrong-appid.json", e,
         {"function": "wechat-event", "status": 403, "error": "appid_mismatch", "nothing_stored": True},
         "Correctly signed and encrypted, but for another appid: refused.")
    env = sample_env()
    enc = "not*base64!"
    e = wechat_event("POST", "mp", json.dumps({"ToUserName": MP_GH, "Encrypt": enc}))
    set_query(e, [("signature", sha1_sig(env["WECHAT_MP_TOKEN"], str(TS), "300003")), ("timestamp", str(TS)),
                  ("nonce", "300003"), ("encrypt_type", "aes"),
                  ("msg_signature", sha1_sig(env["WECHAT_MP_TOKEN"], str(TS), "300003", enc))])
    case("wechat-event/mp-safe-json-bad-base64.json", e,
         {"function": "wechat-event", "status": 400, "error": "bad_ciphertext", "nothing_stored": True},
         "Signed, but the ciphertext is not base64: 400.")
    doctype = '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><ToUserName>gh</ToUserName><FromUserName>&xxe;</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>x</Content></xml>'
    e = wechat_event("POST", "oa", doctype)
    set_query(e, [("signature", sha1_sig(env["WECHAT_OA_TOKEN"], str(TS), "300004")), ("timestamp", str(TS)),
                  ("nonce", "300004")])
    case("wechat-event/oa-plain-xml-doctype.json", e,
         {"function": "wechat-event", "status": 400, "error": "doctype_refused", "nothing_stored": True},
         "XML with a DTD (an XXE attempt): refused before anything is read.")
    e = wechat_event("POST", "mp", '{"ToUserName":"gh_123456789abc","FromUserName":')
    set_query(e, [("signature", sha1_sig(env["WECHAT_MP_TOKEN"], str(TS), "300005")), ("timestamp", str(TS)),
                  ("nonce", "300005")])
    case("wechat-event/mp-plain-json-malformed.json", e,
         {"function": "wechat-event", "status": 400, "error": "malformed_message", "nothing_stored": True},
         "Truncated JSON: 400 with a clear message.")
    enc = bad_padding_ciphertext(env["WECHAT_MP_AES_KEY"], env["WECHAT_MP_APPID"],
                                 popup_json(MP_USER, [(TPL1, "accept")]).encode())
    e = wechat_event("POST", "mp", json.dumps({"ToUserName": MP_GH, "Encrypt": enc}))
    set_query(e, [("signature", sha1_sig(env["WECHAT_MP_TOKEN"], str(TS), "300008")), ("timestamp", str(TS)),
                  ("nonce", "300008"), ("encrypt_type", "aes"),
                  ("msg_signature", sha1_sig(env["WECHAT_MP_TOKEN"], str(TS), "300008", enc))])
    case("wechat-event/mp-safe-json-bad-padding.json", e,
         {"function": "wechat-event", "status": 400, "error": "bad_ciphertext", "nothing_stored": True},
         "Signed and encrypted with the right key, but its PKCS#7 padding is invalid: 400.")
    e = sign(wechat_event("POST", "mp", popup_json(MP_USER, [(TPL1, "accept")], TS + 22)), "plain", "300009")
    case("wechat-event/mp-plain-json-downgrade.json", e,
         {"function": "wechat-event", "status": 403, "error": "plaintext_refused", "nothing_stored": True,
          "config": {"WECHAT_MP_ALLOW_PLAINTEXT": ""}},
         "A correctly signed plaintext push to an app with an EncodingAESKey and WECHAT_MP_ALLOW_PLAINTEXT unset "
         "(the production default): refused, since the plaintext signature does not cover the body.")
    e = sign(wechat_event("POST", "mp", popup_json(MP_USER, [(TPL1, "accept")], TS - 3600)), "safe", "300010",
             ts=TS - 3600)
    case("wechat-event/mp-safe-json-stale.json", e,
         {"function": "wechat-event", "status": 403, "error": "stale_timestamp", "nothing_stored": True},
         "A genuine push signed an hour before the time it arrives (a replay): outside WECHAT_TIMESTAMP_WINDOW_SECS, "
         "refused.")
    e = wechat_event("POST", "mp", popup_json(MP_USER, [(TPL1, "accept")]))
    set_query(e, [("signature", sha1_sig(env["WECHAT_MP_TOKEN"], str(TS), "300006")), ("nonce", "300006")])
    case("wechat-event/mp-missing-timestamp.json", e,
         {"function": "wechat-event", "status": 400, "error": "missing_parameter", "nothing_stored": True},
         "A push without timestamp: 400.")
    big = json.dumps({"ToUserName": MP_GH, "FromUserName": MP_USER, "CreateTime": TS, "MsgType": "text",
                      "Content": "x" * (64 * 1024), "MsgId": 1}, separators=(",", ":"))
    e = wechat_event("POST", "mp", big)
    set_query(e, [("signature", sha1_sig(env["WECHAT_MP_TOKEN"], str(TS), "300007")), ("timestamp", str(TS)),
                  ("nonce", "300007")])
    case("wechat-event/mp-oversized.json", e,
         {"function": "wechat-event", "status": 413, "error": "body_too_large", "nothing_stored": True},
         "A body over 64 KiB: 413 before any parsing.")
    e = wechat_event("POST", "zz", popup_json(MP_USER, [(TPL1, "accept")]))
    case("wechat-event/unknown-app.json", e,
         {"function": "wechat-event", "status": 404, "error": "unknown_app", "nothing_stored": True},
         "No such app.")


def im_event(command, body, token_time=TS, sign_with="xxxxyyyy", sdkappid="1400000000"):
    e = base_event("POST", "/im/callback", "/im/callback", json.dumps(body, ensure_ascii=False, separators=(",", ":")),
                   "application/json")
    q = [("SdkAppid", sdkappid), ("CallbackCommand", command), ("contenttype", "json"), ("ClientIP", "203.0.113.20"),
         ("OptPlatform", "Web"), ("RequestTime", str(token_time)),
         ("Sign", hashlib.sha256((sign_with + str(token_time)).encode()).hexdigest())]
    set_query(e, q)
    return e


def c2c(command, frm, to, seq, text):
    return {"CallbackCommand": command, "From_Account": frm, "To_Account": to, "MsgSeq": seq, "MsgRandom": 2837546 + seq,
            "MsgTime": TS, "MsgKey": f"{seq}_{2837546 + seq}_{TS}", "OnlineOnlyFlag": 0, "SendMsgResult": 0,
            "ErrorInfo": "send msg succeed", "UnreadMsgNum": 1,
            "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}], "CloudCustomData": ""}


IM_OK = '{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}'


def build_im():
    customer, seller = "customer_lin", "shop_support"
    state = lambda action, reason, t: {"CallbackCommand": "State.StateChange", "EventTime": t * 1000,
                                        "Info": {"Action": action, "To_Account": customer, "Reason": reason}}
    case("im-callback/state-login.json", im_event("State.StateChange", state("Login", "Register", TS)),
         {"function": "im-callback", "status": 200, "body": IM_OK,
          "items": [{"pk": f"bind#im#{customer}", "sk": "presence#web", "state": "online"}]},
         "State.StateChange Login: presence online (per platform, ordered by EventTime).")
    case("im-callback/state-disconnect.json", im_event("State.StateChange", state("Disconnect", "LinkClose", TS)),
         {"function": "im-callback", "status": 200, "body": IM_OK,
          "items": [{"pk": f"bind#im#{customer}", "sk": "presence#web", "state": "disconnected"}]},
         "State.StateChange Disconnect: the user is away.")
    notify_setup = [{"bind": [customer, MP_USER]}, {"invoke": "wechat-event/mp-plain-json-popup-accept.json"},
                    {"invoke": "im-callback/state-disconnect.json"}]
    case("im-callback/c2c-after-send-offline.json",
         im_event("C2C.CallbackAfterSendMsg", c2c("C2C.CallbackAfterSendMsg", seller, customer, 1, "您的订单已发货")),
         {"function": "im-callback", "status": 200, "body": IM_OK, "setup": notify_setup,
          "outbox": [{"kind": "notify", "status": "sent"}], "sends": 1,
          "items": [sub("mp", MP_USER, TPL1) | {"credits": 0}]},
         "A message to a user who is bound, offline and has a credit: one subscribe message, one credit spent. "
         "Setup: customer_lin bound to the sample openid, a popup accept, a disconnect.")
    case("im-callback/c2c-after-send-no-credit.json",
         im_event("C2C.CallbackAfterSendMsg", c2c("C2C.CallbackAfterSendMsg", seller, customer, 2, "还在吗？")),
         {"function": "im-callback", "status": 200, "body": IM_OK,
          "setup": [{"bind": [customer, MP_USER]}, {"invoke": "im-callback/state-disconnect.json"}],
          "outbox": [], "sends": 0},
         "The same without a credit: nothing is queued or sent (logged as no_credit).")
    case("im-callback/c2c-before-send.json",
         im_event("C2C.CallbackBeforeSendMsg", c2c("C2C.CallbackBeforeSendMsg", seller, customer, 3, "hello")),
         {"function": "im-callback", "status": 200, "body": IM_OK, "setup": notify_setup, "outbox": [], "sends": 0},
         "Before-send callback: always allowed (never blocks delivery); with the default after-send trigger it queues nothing.")
    case("im-callback/c2c-agent-reply-oa.json",
         im_event("C2C.CallbackAfterSendMsg", c2c("C2C.CallbackAfterSendMsg", "agent_alice", OA_USER, 4, "您好，请问有什么可以帮您？")),
         {"function": "im-callback", "status": 200, "body": IM_OK,
          "setup": [{"invoke": "wechat-event/oa-safe-xml-text.json"}],
          "outbox": [{"kind": "im_import", "status": "sent"}, {"kind": "forward", "status": "sent"},
                     {"kind": "kf", "status": "sent"}], "custom_sends": 1},
         "An agent answers an official-account follower in IM: delivered as a customer-service message. "
         "Setup: the follower wrote first (oa-safe-xml-text.json).")
    image = c2c("C2C.CallbackAfterSendMsg", "agent_alice", OA_USER, 5, "")
    image["MsgBody"] = [{"MsgType": "TIMImageElem", "MsgContent": {
        "UUID": "1400000000_agent_alice_7f3c", "ImageFormat": 1,
        "ImageInfoArray": [{"Type": 1, "Size": 204800, "Width": 1080, "Height": 1440,
                            "URL": "https://im.example.com/agent_alice/label-original.jpg"},
                           {"Type": 3, "Size": 8192, "Width": 198, "Height": 264,
                            "URL": "https://im.example.com/agent_alice/label-thumb.jpg"}]}}]
    case("im-callback/c2c-agent-reply-oa-image.json", im_event("C2C.CallbackAfterSendMsg", image),
         {"function": "im-callback", "status": 200, "body": IM_OK,
          "setup": [{"invoke": "wechat-event/oa-safe-xml-text.json"}],
          "outbox": [{"kind": "im_import", "status": "sent"}, {"kind": "forward", "status": "sent"},
                     {"kind": "kf", "status": "sent", "reason": "image_sent_as_link: host_not_allowed"}],
          "custom_sends": 1,
          "custom_texts": ["[图片] https://im.example.com/agent_alice/label-original.jpg"]},
         "An agent answers with a photo whose URL is not on IM's storage hosts (IM_MEDIA_URL_HOSTS: im.example.com "
         "is not one), so it is not downloaded: the follower receives its summary with the original image's URL "
         "(\"[图片] https://…/label-original.jpg\"; reason image_sent_as_link: host_not_allowed). A picture on "
         "IM's storage is uploaded with media/upload and sent as a picture (tests/tests/e2e/kf_media.rs). "
         "Setup: the follower wrote first (oa-safe-xml-text.json).")
    case("im-callback/c2c-agent-reply-oa-allowance-expired.json",
         im_event("C2C.CallbackAfterSendMsg", c2c("C2C.CallbackAfterSendMsg", "agent_alice", OA_USER, 7, "欢迎关注！有什么可以帮您？")),
         {"function": "im-callback", "status": 200, "body": IM_OK,
          "setup": [{"invoke": "wechat-event/oa-safe-xml-subscribe.json"}, {"advance": 61}],
          "outbox": [{"kind": "im_import", "status": "sent"},
                     {"kind": "kf", "status": "skipped", "reason": "undeliverable: allowance_expired; no_fallback_credit"},
                     {"kind": "agent_notice", "status": "sent"}],
          "custom_sends": 0, "sends": 0, "im_sends": 1},
         "An agent answers a new follower 61 s after the follow: the follow opened 3 replies for 1 minute, so "
         "the reply is not sent to WeChat (which would refuse it with 45015); the follower has no credit for "
         "the fallback notification, and agent_alice is told in IM what happened and that 5 replies within "
         "48 hours open when the follower next writes. Setup: the follow (oa-safe-xml-subscribe.json), then "
         "61 seconds.")
    case("im-callback/c2c-agent-reply-oa-burst.json",
         im_event("C2C.CallbackAfterSendMsg", c2c("C2C.CallbackAfterSendMsg", "agent_alice", OA_USER, 8, "您的订单今天下午发货。")),
         {"function": "im-callback", "status": 200, "body": IM_OK, "config": {"KF_MERGE_SECS": "3"},
          "setup": [{"invoke": "wechat-event/oa-safe-xml-text.json"},
                    {"handler": "im-callback/c2c-agent-reply-oa.json"}],
          "advance_after": 3,
          "outbox": [{"kind": "im_import", "status": "sent"}, {"kind": "forward", "status": "sent"},
                     {"kind": "kf", "status": "sent"}, {"kind": "kf", "status": "sent"}],
          "custom_sends": 1,
          "custom_texts": ["您好，请问有什么可以帮您？\n您的订单今天下午发货。"]},
         "An agent's burst (KF_MERGE_SECS=3): agent_alice answers in two IM messages in quick succession "
         "(c2c-agent-reply-oa.json, then this one); both are held for the rest of the burst, and 3 s later "
         "go as one customer-service message, spending one of the follower's 5 replies. Setup: the "
         "follower wrote (oa-safe-xml-text.json), the first reply's callback (handler only).")
    case("im-callback/c2c-agent-reply-mp.json",
         im_event("C2C.CallbackAfterSendMsg", c2c("C2C.CallbackAfterSendMsg", "agent_bob", MP_USER, 9, "已经发货了，单号 SF100")),
         {"function": "im-callback", "status": 200, "body": IM_OK, "config": {"IM_AGENT_ACCOUNTS_MP": "agent_bob"},
          "setup": [{"invoke": "wechat-event/mp-safe-json-enter-session.json"},
                    {"invoke": "wechat-event/mp-safe-json-kf-text.json"}],
          "outbox": [{"kind": "im_import", "status": "sent"}, {"kind": "forward", "status": "sent"},
                     {"kind": "kf", "status": "sent"}],
          "custom_sends": 1, "custom_texts": ["已经发货了，单号 SF100"]},
         "agent_bob answers the mini-program user in IM: delivered with the mini program's access token as a "
         "customer-service message, spending one of the 5 replies. Setup: the user entered the session and "
         "wrote (mp-safe-json-enter-session.json, mp-safe-json-kf-text.json).")
    typing = c2c("C2C.CallbackAfterSendMsg", "agent_alice", OA_USER, 10, "")
    typing["OnlineOnlyFlag"] = 1
    typing["MsgBody"] = [{"MsgType": "TIMCustomElem", "MsgContent": {
        "Data": "{\"businessID\":\"user_typing_status\",\"typingStatus\":1,\"version\":1,\"userAction\":14,\"actionParam\":\"EIMAMSG_InputStatus_Ing\"}",
        "Desc": "", "Ext": ""}}]
    case("im-callback/c2c-agent-typing-oa.json", im_event("C2C.CallbackAfterSendMsg", typing),
         {"function": "im-callback", "status": 200, "body": IM_OK,
          "setup": [{"invoke": "wechat-event/oa-safe-xml-text.json"},
                    {"invoke": "im-callback/c2c-agent-reply-oa.json"}],
          "outbox": [{"kind": "im_import", "status": "sent"}, {"kind": "forward", "status": "sent"},
                     {"kind": "kf", "status": "sent"}, {"kind": "kf_typing", "status": "sent"}],
          "custom_sends": 1},
         "agent_alice types in TUIKit (an online-only TIMCustomElem, businessID user_typing_status): the follower "
         "sees WeChat's typing state (custom/typing), asked for because a message was exchanged within 30 s and "
         "none was asked for within 15 s; never a customer-service message. Setup: the follower wrote, "
         "agent_alice answered.")
    recalled = c2c("C2C.CallbackAfterSendMsg", "agent_alice", OA_USER, 4, "")
    case("im-callback/c2c-agent-recall-oa.json",
         im_event("C2C.CallbackAfterMsgWithDraw", {"CallbackCommand": "C2C.CallbackAfterMsgWithDraw",
                                                     "From_Account": "agent_alice", "To_Account": OA_USER,
                                                     "MsgKey": recalled["MsgKey"], "UnreadMsgNum": 0,
                                                     "EventTime": TS * 1000 + 500}),
         {"function": "im-callback", "status": 200, "body": IM_OK,
          "setup": [{"invoke": "wechat-event/oa-safe-xml-text.json"},
                    {"invoke": "im-callback/c2c-agent-reply-oa.json"}],
          "outbox": [{"kind": "im_import", "status": "sent"}, {"kind": "forward", "status": "sent"},
                     {"kind": "kf", "status": "sent"}, {"kind": "agent_notice", "status": "sent"}],
          "custom_sends": 1, "im_sends": 2},
         "agent_alice recalls in IM the answer already delivered (c2c-agent-reply-oa.json): WeChat cannot recall a "
         "customer-service message, so she is told so in IM, once. A message recalled before it was sent (held "
         "for its burst, or recalled before its own callback) is not sent: skipped, recalled_before_sent "
         "(tests/tests/e2e/kf_recall.rs). Setup: the follower wrote, agent_alice answered.")
    case("im-callback/c2c-agent-reply-oa-unfollowed.json",
         im_event("C2C.CallbackAfterSendMsg", c2c("C2C.CallbackAfterSendMsg", "agent_alice", OA_USER, 6, "还有其他问题吗？")),
         {"function": "im-callback", "status": 200, "body": IM_OK,
          "setup": [{"invoke": "wechat-event/oa-safe-xml-text.json"},
                    {"invoke": "wechat-event/oa-safe-xml-unsubscribe.json"}],
          "outbox": [{"kind": "im_import", "status": "sent"}, {"kind": "forward", "status": "sent"},
                     {"kind": "im_delete", "status": "skipped", "reason": "kept_inactive_71000"},
                     {"kind": "kf", "status": "skipped", "reason": "follower_unfollowed"},
                     {"kind": "agent_notice", "status": "sent"}],
          "custom_sends": 0, "sends": 0, "im_sends": 2},
         "An agent answers a follower who has unfollowed: nothing is sent to WeChat; the reply is recorded "
         "(skipped, follower_unfollowed) and agent_alice is told in IM by the admin account that the follower "
         "has left. Setup: the follower wrote (oa-safe-xml-text.json), then unfollowed "
         "(oa-safe-xml-unsubscribe.json).")
    group = lambda seq, text, at: {"CallbackCommand": "Group.CallbackAfterSendMsg", "GroupId": "@TGS#2J4SZEAEL",
                                   "Type": "Public", "From_Account": seller, "Operator_Account": seller,
                                   "Random": 123456 + seq, "MsgSeq": seq, "MsgTime": TS, "OnlineOnlyFlag": 0,
                                   "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}],
                                   "CloudCustomData": "", "EventTime": "1670574414123", **({"GroupAtInfo": at} if at else {})}
    case("im-callback/group-after-send.json",
         im_event("Group.CallbackAfterSendMsg", group(123, "@customer_lin hi", None)),
         {"function": "im-callback", "status": 200, "body": IM_OK, "nothing_stored": True},
         "A group message that @-mentions nobody (no GroupAtInfo; an \"@name\" in the text is not a mention): "
         "acknowledged with the OK body, nobody notified, nothing stored.")
    members = {"group": {"id": "@TGS#2J4SZEAEL", "type": "Public", "name": "周末徒步群",
                         "members": [seller, customer, "member_003"]}}
    case("im-callback/group-at-mention.json",
         im_event("Group.CallbackAfterSendMsg",
                  group(124, "@林 请确认收货地址", [{"GroupAtAllFlag": 0, "GroupAt_Account": customer}])),
         {"function": "im-callback", "status": 200, "body": IM_OK, "setup": notify_setup + [members],
          "outbox": [{"kind": "notify", "status": "sent"}], "sends": 1,
          "send_data": {"thing1": {"value": f"{seller}（周末徒步群）"}, "thing2": {"value": "@林 请确认收货地址"}}},
         "A group message that @-mentions customer_lin (GroupAtInfo's GroupAt_Account): notified like a "
         "one-to-one message from the sender (bound, offline, a credit), named with the group's name from "
         "get_group_info (the callback carries none). Setup as c2c-after-send-offline.json, and the IM "
         "stand-in knows the group.")
    at_all = group(125, "@all 今晚八点直播", [{"GroupAtAllFlag": 1}])
    case("im-callback/group-at-all-off.json", im_event("Group.CallbackAfterSendMsg", at_all),
         {"function": "im-callback", "status": 200, "body": IM_OK, "setup": notify_setup + [members],
          "outbox": [], "sends": 0},
         "@all (GroupAtAllFlag 1) with NOTIFY_GROUP_AT_ALL off (the default): nobody is notified "
         "(logged as at_all_off) and IM is not asked for the members.")
    case("im-callback/group-at-all.json", im_event("Group.CallbackAfterSendMsg", dict(at_all, MsgSeq=126)),
         {"function": "im-callback", "status": 200, "body": IM_OK, "setup": notify_setup + [members],
          "config": {"NOTIFY_GROUP_AT_ALL": "true"},
          "outbox": [{"kind": "notify", "status": "sent"}], "sends": 1},
         "@all with NOTIFY_GROUP_AT_ALL=true: the members IM lists (get_group_member_info) are notified "
         "under the usual rules; here only customer_lin is bound (the sender is never notified, "
         "member_003 is not bound). Setup also gives the IM stand-in the group's members.")
    push = lambda seq, text, info: c2c("C2C.CallbackAfterSendMsg", seller, customer, seq, text) | {"OfflinePushInfo": info}
    case("im-callback/c2c-push-flag-off.json",
         im_event("C2C.CallbackAfterSendMsg", push(7, "内部备注", {"PushFlag": 1})),
         {"function": "im-callback", "status": 200, "body": IM_OK, "setup": notify_setup, "outbox": [], "sends": 0},
         "A message whose sender set OfflinePushInfo.PushFlag 1 (no offline push): nothing is queued "
         "(logged as push_disabled_by_sender).")
    case("im-callback/c2c-push-desc.json",
         im_event("C2C.CallbackAfterSendMsg",
                  push(8, "订单 SO-2023-1114 的完整明细……", {"PushFlag": 0, "Title": "新消息", "Desc": "您有一条订单消息"})
                  | {"CloudCustomData": "{\"orderId\":\"SO-2023-1114\"}"}),
         {"function": "im-callback", "status": 200, "body": IM_OK, "setup": notify_setup,
          "outbox": [{"kind": "notify", "status": "sent"}], "sends": 1,
          "send_data": {"thing2": {"value": "您有一条订单消息"}}},
         "OfflinePushInfo.Desc is the preview instead of the text (still shaped by the keyword's type); "
         "CloudCustomData is never shown.")
    queued_setup = notify_setup + [{"handler": "im-callback/c2c-after-send-offline.json"}]
    case("im-callback/c2c-read-report.json",
         im_event("C2C.CallbackAfterMsgReport",
                  {"CallbackCommand": "C2C.CallbackAfterMsgReport", "Report_Account": customer,
                   "Peer_Account": seller, "LastReadTime": TS, "EventTime": TS * 1000, "UnreadMsgNum": 0}),
         {"function": "im-callback", "status": 200, "body": IM_OK, "setup": queued_setup,
          "outbox": [{"kind": "notify", "status": "skipped", "reason": "read"}], "sends": 0},
         "A read report (C2C.CallbackAfterMsgReport): customer_lin read the conversation with shop_support up "
         "to LastReadTime on another device, so the notification c2c-after-send-offline.json queued (setup runs "
         "that callback's handler alone) ends skipped (read) and nothing is sent.")
    case("im-callback/c2c-recall.json",
         im_event("C2C.CallbackAfterMsgWithDraw",
                  {"CallbackCommand": "C2C.CallbackAfterMsgWithDraw", "From_Account": seller, "To_Account": customer,
                   "MsgKey": f"1_2837547_{TS}", "EventTime": TS * 1000, "UnreadMsgNum": 0}),
         {"function": "im-callback", "status": 200, "body": IM_OK, "setup": queued_setup,
          "outbox": [{"kind": "notify", "status": "skipped", "reason": "recalled"}], "sends": 0},
         "A recall (C2C.CallbackAfterMsgWithDraw) of the message c2c-after-send-offline.json carries (its MsgKey): "
         "the notification it queued (setup runs that handler alone) ends skipped (recalled), nothing is sent.")
    push_online = [{"bind": [customer, MP_USER]}, {"invoke": "wechat-event/mp-plain-json-popup-accept.json"},
                   {"online": [customer, "PushOnline"]}]
    case("im-callback/c2c-push-online.json",
         im_event("C2C.CallbackAfterSendMsg", c2c("C2C.CallbackAfterSendMsg", seller, customer, 9, "到货了")),
         {"function": "im-callback", "status": 200, "body": IM_OK, "setup": push_online,
          "outbox": [{"kind": "notify", "status": "skipped", "reason": "recipient_online"}], "sends": 0},
         "No presence from callbacks, and query_online_status says PushOnline (a native app the vendor push "
         "channel reaches): with NOTIFY_PUSH_ONLINE=online (the default) that counts as online, so no WeChat "
         "notification (IM's own offline push tells them).")
    case("im-callback/c2c-push-online-as-offline.json",
         im_event("C2C.CallbackAfterSendMsg", c2c("C2C.CallbackAfterSendMsg", seller, customer, 10, "到货了")),
         {"function": "im-callback", "status": 200, "body": IM_OK, "setup": push_online,
          "config": {"NOTIFY_PUSH_ONLINE": "offline"},
          "outbox": [{"kind": "notify", "status": "sent"}], "sends": 1},
         "The same with NOTIFY_PUSH_ONLINE=offline: PushOnline counts as offline and the subscribe message is sent.")
    case("im-callback/bad-sign.json", im_event("State.StateChange", state("Login", "Register", TS), sign_with="wrong"),
         {"function": "im-callback", "status": 401, "error": "bad_sign", "nothing_stored": True},
         "Sign made with another token: 401, nothing stored.")
    case("im-callback/wrong-sdkappid.json", im_event("State.StateChange", state("Login", "Register", TS), sdkappid="1400000001"),
         {"function": "im-callback", "status": 401, "error": "wrong_sdkappid", "nothing_stored": True},
         "Another application's callback: 401.")
    e = im_event("C2C.CallbackAfterSendMsg", {})
    e["body"] = '{"CallbackCommand":"C2C.CallbackAfterSendMsg","From_Account":'
    case("im-callback/malformed.json", e,
         {"function": "im-callback", "status": 400, "error": "malformed_callback", "nothing_stored": True},
         "Truncated JSON: 400.")
    # The stream: the outbox item the after-send sample queues, as its INSERT record.
    out_id = hashlib.sha1(b"notify\0" + f"{seller}|{customer}|1_2837547_{TS}".encode() + b"\0").hexdigest()[:32]
    stream = {"Records": [{
        "eventID": "c4ca4238a0b923820dcc509a6f75849b", "eventName": "INSERT", "eventVersion": "1.1",
        "eventSource": "aws:dynamodb", "awsRegion": "ap-east-1",
        "dynamodb": {"ApproximateCreationDateTime": TS, "Keys": {"pk": {"S": f"out#{out_id}"}, "sk": {"S": "-"}},
                     "NewImage": {"pk": {"S": f"out#{out_id}"}, "sk": {"S": "-"}, "kind": {"S": "notify"},
                                  "status": {"S": "queued"}},
                     "SequenceNumber": "111100000000000000001", "SizeBytes": 120, "StreamViewType": "NEW_IMAGE"},
        "eventSourceARN": "arn:aws:dynamodb:ap-east-1:123456789012:table/wxim-outbox/stream/2023-11-14T22:13:20.000"}]}
    case("notify-dispatch/stream-insert.json", stream,
         {"function": "notify-dispatch", "body": '{"batchItemFailures":[]}',
          "setup": notify_setup + [{"handler": "im-callback/c2c-after-send-offline.json"}],
          "outbox": [{"kind": "notify", "status": "sent"}], "sends": 1},
         "The outbox stream's INSERT record for the item c2c-after-send-offline.json queues (setup runs that "
         "callback's handler alone, without the local dispatch): the subscribe message is sent, no retry requested.")

    # The schedule: what EventBridge sends notify-dispatch every minute (the template's schedule
    # sends {"action":"sweep"} as its input instead; both run the sweep).
    scheduled = {"version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
                 "source": "aws.events", "account": "123456789012", "time": "2023-11-14T22:13:20Z",
                 "region": "ap-east-1",
                 "resources": ["arn:aws:events:ap-east-1:123456789012:rule/wxim-bridge-NotifyDispatchFunctionSweep"],
                 "detail": {}}
    case("notify-dispatch/scheduled-sweep.json", scheduled,
         {"function": "notify-dispatch",
          "body": '{"caught_up":true,"cursor":"202311142212","followups":0,"minutes":60,"records":0,'
                  '"redriven":0,"rescheduled":0}',
          "outbox": [], "sends": 0},
         "The scheduled sweep of deferred work on an empty store: a first sweep looks back an hour of due "
         "records (follow-ups of held notifications, parked sends, outbox items the stream lost), finds none, "
         "and leaves its cursor at the first minute not yet over by 30 s.")


def spooled(path, function):
    """The spool's message for a case's signed request (common/src/handlers/spool.rs `Spooled`):
    what wechat-event or im-callback keeps when the store cannot take it, received at TS."""
    import base64
    from urllib.parse import parse_qsl

    event = next(e for p, e, _, _ in CASES if p == path)
    body = event["body"].encode()
    if event.get("isBase64Encoded"):
        body = base64.b64decode(event["body"])
    return json.dumps({
        "v": 1, "function": function, "path": event["rawPath"],
        "path_params": sorted(event.get("pathParameters", {}).items()),
        "query": parse_qsl(event["rawQueryString"], keep_blank_values=True),
        "body": base64.b64encode(body).decode(), "received_at": TS,
        "request_id": event["requestContext"]["requestId"],
    }, separators=(",", ":"), ensure_ascii=False)


def sqs_event(*messages):
    """The spool's messages as the SQS event source hands them to notify-dispatch."""
    records = []
    for n, (body, receives) in enumerate(messages, 1):
        records.append({
            "messageId": f"059f36b4-87a3-44ab-83d2-66197{n:07d}",
            "receiptHandle": f"AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a-sample-receipt-handle-{n}",
            "body": body,
            "attributes": {"ApproximateReceiveCount": str(receives), "SentTimestamp": str(TS * 1000),
                           "SenderId": "AROAEXAMPLEROLEID:wxim-bridge-ImCallbackFunction",
                           "ApproximateFirstReceiveTimestamp": str(TS * 1000 + 30000)},
            "messageAttributes": {}, "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:ap-east-1:123456789012:wxim-bridge-SpoolQueue",
            "awsRegion": "ap-east-1",
        })
    return {"Records": records}


def build_spool():
    """Store down, then spooled and applied: webhooks that passed their checks while DynamoDB was
    throttled or unreachable were kept in the spool and answered as accepted; once the store is
    back, the SQS event source hands them to notify-dispatch, which replays each through its
    handler (checks as of when it was received, the same dedupe markers)."""
    customer = "customer_lin"
    setup = [{"bind": [customer, MP_USER]}, {"invoke": "wechat-event/mp-plain-json-popup-accept.json"},
             {"invoke": "im-callback/state-disconnect.json"}]
    case("notify-dispatch/spool-im-after-send.json",
         sqs_event((spooled("im-callback/c2c-after-send-offline.json", "im-callback"), 2)),
         {"function": "notify-dispatch", "body": '{"batchItemFailures":[]}', "setup": setup,
          "outbox": [{"kind": "notify", "status": "sent"}], "sends": 1,
          "items": [sub("mp", MP_USER, TPL1) | {"credits": 0}], "idempotent": True},
         "Store down, then spooled and applied: the after-send callback of c2c-after-send-offline.json arrived "
         "while DynamoDB was unreachable (IM never retries it), was spooled and answered OK; its second receive "
         "from the spool's queue, once the store is back, queues and sends the notification (one credit spent). "
         "Delivered again (SQS is at least once), it changes nothing. Setup as for that callback.")
    case("notify-dispatch/spool-oa-follow.json",
         sqs_event((spooled("wechat-event/oa-safe-xml-subscribe.json", "wechat-event"), 1)),
         {"function": "notify-dispatch", "body": '{"batchItemFailures":[]}',
          "outbox": [{"kind": "im_import", "status": "sent"}, {"kind": "late_reply", "status": "sent"}],
          "custom_sends": 1,
          "custom_texts": ["Welcome! Send us a message and one of our agents will answer you here."],
          "items": [{"pk": "conv#oa#" + OA_USER, "sk": "-", "status": "active", "agent": "agent_alice"}],
          "idempotent": True},
         "Store down, then spooled and applied, for the official account: a follow (safe mode) spooled during "
         "the outage was answered `success`, without the welcome. Replayed: the follower is imported and "
         "assigned an agent, and the welcome that could not be the passive reply is sent as a customer-service "
         "message (late_reply). Delivered again, nothing changes.")

LOGIN_CODE = "0c3Sample0LoginCode0CustomerLin1"  # local/src/sample.rs LOGIN_CODES
NEW_PHONE_CODE = "0c3Sample0LoginCode0NewPhone0002"
NEW_PHONE_OPENID = "otFpruNEWPHONE-8D3kQ2mZ0Xy7wA"
IAM = {"accessKey": "ASIAEXAMPLEACCESSKEY", "accountId": "123456789012", "callerId": "AIDAEXAMPLECALLERID01",
       "principalOrgId": None, "userArn": "arn:aws:iam::123456789012:user/ops-console",
       "userId": "AIDAEXAMPLECALLERID01"}


def bind_event(user, code, sig_time=TS, env_overrides=None, sig_user=None):
    """A POST /bind whose userSig `wxim sign` makes for sig_user (default: user) at sig_time."""
    body = {"code": code, "userId": sig_user or user, "userSig": ""}
    e = sign(base_event("POST", "/bind", "/bind", json.dumps(body), "application/json"), None, "0", env_overrides,
             ts=sig_time)
    body = json.loads(e["body"])
    body["userId"] = user
    e["body"] = json.dumps({"code": code, "userId": user, "userSig": body["userSig"]}, separators=(",", ":"))
    return e


def binding(user, openid):
    return [{"pk": f"bind#im#{user}", "sk": "mp", "openid": openid, "user_id": user},
            {"pk": f"bind#mp#{openid}", "sk": "-", "user_id": user}]


def build_bind():
    customer, seller = "customer_lin", "shop_support"
    case("bind/ok.json", bind_event(customer, LOGIN_CODE),
         {"function": "bind", "status": 200, "json": {"bound": True, "userId": customer, "app": "mp"},
          "items": binding(customer, MP_USER)},
         "The mini program posts its wx.login code with the user's IM UserSig: the sig is verified with the IM "
         "secret key, the code exchanged with jscode2session (the stand-in knows this code), and the binding stored "
         "both ways.")
    case("bind/rebind-new-phone.json", bind_event(customer, NEW_PHONE_CODE),
         {"function": "bind", "status": 200, "setup": [{"invoke": "bind/ok.json"}],
          "items": binding(customer, NEW_PHONE_OPENID), "absent": [{"pk": f"bind#mp#{MP_USER}", "sk": "-"}]},
         "The same IM user binds again from a WeChat account with another openid: the binding moves, the old "
         "openid is released. Setup: bind/ok.json.")
    case("bind/code-used-twice.json", bind_event(seller, LOGIN_CODE),
         {"function": "bind", "status": 409, "error": "code_used", "setup": [{"invoke": "bind/ok.json"}],
          "items": binding(customer, MP_USER)[1:], "absent": [{"pk": f"bind#im#{seller}", "sk": "mp"}]},
         "A login code replayed (here for another IM user): 409, the first binding stands. Setup: bind/ok.json.")
    case("bind/expired-usersig.json", bind_event(customer, LOGIN_CODE, sig_time=TS - 200 * 86400),
         {"function": "bind", "status": 401, "error": "usersig_expired", "nothing_stored": True},
         "A UserSig past its validity: 401 before WeChat is asked, nothing stored.")
    case("bind/forged-usersig.json",
         bind_event(customer, LOGIN_CODE, env_overrides={"IM_SECRET_KEY": "0123456789abcdef" * 4}),
         {"function": "bind", "status": 401, "error": "invalid_usersig", "nothing_stored": True},
         "A UserSig made with another key: 401, nothing stored.")
    case("bind/usersig-of-another-user.json", bind_event(customer, LOGIN_CODE, sig_user=seller),
         {"function": "bind", "status": 401, "error": "invalid_usersig", "nothing_stored": True},
         "A genuine UserSig of another IM user: 401, nothing stored.")
    case("bind/invalid-code.json", bind_event(customer, "0c3Unknown0LoginCode000000000000"),
         {"function": "bind", "status": 400, "error": "invalid_code", "nothing_stored": True},
         "A login code WeChat does not know (40029): 400, nothing stored.")
    e = base_event("POST", "/bind", "/bind", json.dumps({"code": LOGIN_CODE, "userId": customer}), "application/json")
    case("bind/missing-usersig.json", e,
         {"function": "bind", "status": 400, "error": "missing_field", "nothing_stored": True},
         "No userSig: 400 naming the field.")


def admin_event(method, path, route, body=None, key=None, iam=True, path_params=None):
    e = base_event(method, path, route, json.dumps(body, ensure_ascii=False, separators=(",", ":")) if body else "",
                   "application/json" if body else None, path_params)
    if iam:
        e["requestContext"]["authorizer"] = {"iam": IAM}
    if key:
        e["headers"]["idempotency-key"] = key
    return e


def build_admin():
    customer = "customer_lin"
    done = {"thing1": "工单已完成", "character_string2": "WO-2024-0001", "time3": "2023年11月15日 06:13"}
    send = {"to": {"userId": customer}, "templateId": TPL1, "data": done, "page": "pages/order/index?id=WO-2024-0001"}
    ready = [{"bind": [customer, MP_USER]}, {"invoke": "wechat-event/mp-plain-json-popup-accept.json"}]
    key = "wo-2024-0001-done"
    case("admin-notify/send-to-user.json", admin_event("POST", "/notify", "/notify", send, key),
         {"function": "admin-notify", "status": 202, "setup": ready, "idempotent": True,
          "outbox": [{"kind": "send", "status": "sent"}], "sends": 1,
          "items": [sub("mp", MP_USER, TPL1) | {"credits": 0}]},
         "An operator's subscribe message to an IM user (IAM-signed; an Idempotency-Key makes a retried POST queue "
         "nothing new): 202 with an id, sent through the outbox, one credit spent. Setup: a binding and a popup "
         "accept.")
    out_id = hashlib.sha1(b"send\0" + key.encode() + b"\0").hexdigest()[:32]
    case("admin-notify/status.json",
         admin_event("GET", f"/notify/{out_id}", "/notify/{id}", path_params={"id": out_id}),
         {"function": "admin-notify", "status": 200, "setup": ready + [{"invoke": "admin-notify/send-to-user.json"}],
          "json": {"id": out_id, "status": "sent", "msgid": "3000000000000000001", "to": {"userId": customer}}},
         "GET /notify/{id} of the message above: sent, with WeChat's msgid.")
    case("admin-notify/send-no-credit.json",
         admin_event("POST", "/notify", "/notify", send | {"to": {"openid": MP_USER}}),
         {"function": "admin-notify", "status": 202, "outbox": [{"kind": "send", "status": "skipped",
                                                                  "reason": "no_credit"}], "sends": 0},
         "To an openid that accepted nothing: queued, then skipped (no_credit) without calling WeChat.")
    bad = send | {"data": done | {"thing1": "您提交的售后工单已经全部处理完成，请查收。"}}
    case("admin-notify/invalid-data.json", admin_event("POST", "/notify", "/notify", bad),
         {"function": "admin-notify", "status": 400, "error": "invalid_data", "nothing_stored": True},
         "A thing value over 20 characters: 400 naming the keyword (never silently cut), nothing queued.")
    case("admin-notify/not-bound.json",
         admin_event("POST", "/notify", "/notify", send | {"to": {"userId": "nobody_here"}}),
         {"function": "admin-notify", "status": 422, "error": "not_bound", "nothing_stored": True},
         "An IM user with no binding: 422, nothing queued.")
    case("admin-notify/unsigned.json", admin_event("POST", "/notify", "/notify", send, iam=False),
         {"function": "admin-notify", "status": 401, "error": "unauthorized", "nothing_stored": True},
         "No IAM principal and no bearer token: 401, nothing queued.")


def write_readme():
    env = (EVENTS / "sample.env").read_text()
    lines = [
        "# Sample events",
        "",
        "One API Gateway (HTTP API, payload v2) event per case, or a DynamoDB Stream, SQS (the spool) or",
        "scheduled event for `notify-dispatch`. Every file is signed for the sample configuration below (`sample.env`), and",
        "`expected.json` records what each produces; `cargo test` checks every file against it.",
        "Regenerate everything with `python3 scripts/make-events.py` (after `cargo build -p wxim-local`).",
        "",
        "```sh",
        "cp events/sample.env .env",
        "cargo run -p wxim-local --bin wxim -- invoke wechat-event events/wechat-event/mp-safe-json-popup.json",
        "# IM callbacks are signed at a fixed RequestTime; refresh it, or the replay window refuses them:",
        "cargo run -p wxim-local --bin wxim -- sign events/im-callback/state-login.json | cargo run -p wxim-local --bin wxim -- invoke im-callback -",
        "```",
        "",
        "Some cases need state first (\"setup\"): a binding (`wxim bind customer_lin " + MP_USER + "`) or other",
        "events delivered before them. `wxim invoke` dispatches what a handler queued right away, against",
        "`WECHAT_API_BASE`/`IM_API_BASE` (run `wxim standins` for local stand-ins of both APIs; it knows the",
        "login codes of `bind/`, each good for one exchange, as on WeChat).",
        "",
        "The `bind/` samples carry UserSigs issued at the signing time below, valid 180 days; refresh one",
        "with `wxim sign events/bind/ok.json`. The `admin-notify/` samples carry the IAM principal API",
        "Gateway's `AWS_IAM` authorizer adds, as Lambda receives them.",
        "",
        "## The sample configuration (`sample.env`)",
        "",
        "```",
        env.strip(),
        "```",
        "",
        "## Cases",
        "",
        "| File | Function | Outcome | What it shows |",
        "|---|---|---|---|",
    ]
    for path, _event, expect, doc in CASES:
        status = expect.get("status", "")
        outcome = str(status) if status else ""
        if expect.get("error"):
            outcome += f" `{expect['error']}`"
        elif expect.get("body") and len(expect["body"]) < 40:
            outcome += f" `{expect['body']}`"
        if expect.get("reply_text"):
            outcome += " + passive reply"
        lines.append(f"| `{path}` | {expect['function']} | {outcome.strip()} | {doc} |")
    (EVENTS / "README.md").write_text("\n".join(lines) + "\n")


def main():
    if not WXIM.exists():
        sys.exit("build first: cargo build -p wxim-local --bin wxim")
    build()
    build_im()
    build_spool()
    build_bind()
    build_admin()
    expected = {}
    for path, event, expect, doc in CASES:
        target = EVENTS / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(event, indent=2, ensure_ascii=False) + "\n")
        expected[path] = expect | {"doc": doc}
    (EVENTS / "expected.json").write_text(json.dumps(expected, indent=2, ensure_ascii=False) + "\n")
    write_readme()
    print(f"wrote {len(CASES)} events and events/expected.json")


if __name__ == "__main__":
    main()
