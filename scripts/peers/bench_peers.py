#!/usr/bin/env python3
"""Warm CPU per request against the peers, on the same inputs as common/benches/{wechat,im}.rs:

  safe mode   decrypt + parse + encrypted reply of the same 1 KB official-account text message
              (same token, EncodingAESKey, appid, timestamp, nonce, plaintext, reply text);
              wechatpy: WeChatCrypto.decrypt_message + parse_message + create_reply +
              encrypt_message; Node: the `wechat` middleware's path (xml2js + wechat-crypto)
  GET verify  the URL check; wechatpy.utils.check_signature; Node: the middleware's sha1 check
  IM callback SdkAppid, RequestTime window, Sign = sha256(token‖RequestTime), body parse; no
              library exists on either side: hashlib/json and node:crypto/JSON.parse, hand-written
  UserSig     generation with Tencent's official tls-sig-api-v2 (Python and Node)

Query strings are parsed before the clock starts everywhere (the criterion benches time a prebuilt
request). Rust figures are criterion's median point estimates (target/criterion/*/new/estimates.json,
written by the `cargo bench` run of scripts/bench-peers just before this); Python's are the median of
7 timeit repeats; Node's the median of 7 batches (scripts/peers/bench.js). Prints a Markdown table.

Usage: .venv/bin/python scripts/peers/bench_peers.py   (run by scripts/bench-peers)
"""

import base64
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path
from urllib.parse import parse_qsl

ROOT = Path(__file__).resolve().parents[2]
PEERS = Path(__file__).resolve().parent

TOKEN = "wxpushtoken2024"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wx1234567890abcdef"
REPLY = "Connecting you to an agent, please wait a moment."
CONTENT = "你好, this is a customer message. " * 24
PLAIN = (
    "<xml><ToUserName><![CDATA[gh_abcdef123456]]></ToUserName><FromUserName><![CDATA[oUSER_openid_0001]]>"
    "</FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA["
    + CONTENT
    + "]]></Content><MsgId>24000000000000001</MsgId></xml>"
)
IM_KEY = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
IM_BODY = (
    '{"CallbackCommand":"C2C.CallbackAfterSendMsg","From_Account":"jared","To_Account":"Jonh","MsgSeq":48374,'
    '"MsgRandom":2837546,"MsgTime":1557481126,"MsgKey":"48374_2837546_1557481126","OnlineOnlyFlag":1,'
    '"SendMsgResult":0,"ErrorInfo":"send msg succeed","UnreadMsgNum":7,"MsgBody":[{"MsgType":"TIMTextElem",'
    '"MsgContent":{"Text":"red packet"}}],"CloudCustomData":"your cloud custom data"}'
)
IM_QUERY = (
    "SdkAppid=1400000000&CallbackCommand=C2C.CallbackAfterSendMsg&contenttype=json&ClientIP=127.0.0.1"
    "&OptPlatform=iOS&RequestTime=1669872112&Sign=17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061"
)


def sign(*parts):
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def fixture():
    from wechatpy.crypto import WeChatCrypto

    assert 1000 <= len(PLAIN.encode()) < 1200, len(PLAIN.encode())
    crypto = WeChatCrypto(TOKEN, AES_KEY, APPID)
    sealed = crypto.encrypt_message(PLAIN, "1234567890", "1700000000")
    encrypt = sealed.split("<Encrypt><![CDATA[")[1].split("]]></Encrypt>")[0]
    body = f"<xml><ToUserName><![CDATA[gh_abcdef123456]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    vts, vnonce, echostr = "1714036504", "1514711492", "4375120948345356249"
    return {
        "token": TOKEN, "aes_key": AES_KEY, "appid": APPID, "timestamp": "1700000000", "nonce": "1234567890",
        "msg_signature": sign(TOKEN, "1700000000", "1234567890", encrypt), "body": body, "reply": REPLY,
        "verify_query": f"signature={sign(TOKEN, vts, vnonce)}&timestamp={vts}&nonce={vnonce}&echostr={echostr}",
        "echostr": echostr,
        "im_query": IM_QUERY, "im_body": IM_BODY, "im_token": "xxxxyyyy", "im_sdkappid": 1400000000,
        "im_now": 1669872113, "im_key": IM_KEY,
    }


def python_peers(fx):
    import hmac

    from TLSSigAPIv2 import TLSSigAPIv2
    from wechatpy import create_reply, parse_message
    from wechatpy.crypto import WeChatCrypto
    from wechatpy.utils import check_signature

    crypto = WeChatCrypto(fx["token"], fx["aes_key"], fx["appid"])

    def safe_mode():
        xml = crypto.decrypt_message(fx["body"], fx["msg_signature"], fx["timestamp"], fx["nonce"])
        msg = parse_message(xml)
        reply = create_reply(fx["reply"], msg).render()
        return crypto.encrypt_message(reply, fx["nonce"], 1700000001)

    vq = dict(parse_qsl(fx["verify_query"]))

    def get_verify():
        check_signature(fx["token"], vq["signature"], vq["timestamp"], vq["nonce"])
        return vq["echostr"]

    iq = dict(parse_qsl(fx["im_query"]))

    def im_callback():
        if iq["SdkAppid"] != str(fx["im_sdkappid"]):
            raise ValueError("sdkappid")
        if abs(fx["im_now"] - int(iq["RequestTime"])) > 300:
            raise ValueError("window")
        want = hashlib.sha256((fx["im_token"] + iq["RequestTime"]).encode()).hexdigest()
        if not hmac.compare_digest(want, iq.get("Sign", "")):
            raise ValueError("sign")
        cb = json.loads(fx["im_body"])
        if cb["CallbackCommand"] != "C2C.CallbackAfterSendMsg":
            raise ValueError("command")
        return cb

    tls = TLSSigAPIv2(fx["im_sdkappid"], fx["im_key"])

    def usersig():
        return tls.gen_sig("administrator", 604800)

    # The answers must be right before their time means anything.
    out = safe_mode()
    enc = out.split("<Encrypt><![CDATA[")[1].split("]]></Encrypt>")[0]
    from wechatpy.crypto import PrpCrypto

    plain = PrpCrypto(crypto.key).decrypt(enc, fx["appid"])
    assert REPLY in (plain.decode() if isinstance(plain, bytes) else plain)
    assert get_verify() == fx["echostr"]
    im_callback()

    def per_call(fn):
        t = timeit.Timer(fn)
        n, _ = t.autorange()
        n = max(n, 10)
        return statistics.median(x / n for x in t.repeat(repeat=7, number=n)) * 1e9

    return {"safe_mode": per_call(safe_mode), "get_verify": per_call(get_verify),
            "im_callback": per_call(im_callback), "usersig_generate": per_call(usersig)}


def node_peers(fixture_path):
    out = subprocess.run(["node", str(PEERS / "bench.js"), str(fixture_path)], check=True, capture_output=True,
                         text=True, cwd=PEERS)
    return json.loads(out.stdout)


def criterion(name):
    est = ROOT / "target" / "criterion" / name / "new" / "estimates.json"
    return json.loads(est.read_text())["median"]["point_estimate"]


def fmt(ns):
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"


def main():
    fx = fixture()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(fx, f)
    try:
        node = node_peers(f.name)
    finally:
        os.unlink(f.name)
    py = python_peers(fx)
    rows = [
        ("safe mode: decrypt + parse + encrypted reply, 1 KB", "safe_mode_decrypt_parse_encrypted_reply_1kb", "safe_mode",
         "wechatpy 1.8.18", "wechat-crypto 0.0.2 + xml2js 0.6.2"),
        ("GET verify", "get_verify_handler", "get_verify", "wechatpy check_signature", "node:crypto (as the wechat middleware)"),
        ("IM callback auth + parse (C2C after-send)", "im_callback_parse_and_auth", "im_callback",
         "hashlib + json (no library)", "node:crypto + JSON.parse (no library)"),
        ("UserSig generation", "usersig_generate", "usersig_generate", "tls-sig-api-v2 1.1", "tls-sig-api-v2 1.0.2"),
    ]
    print(f"Node {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}, "
          f"Python {sys.version.split()[0]}; medians on this machine\n")
    print("| What | wxim-bridge (criterion) | Python peer | Python | × | Node peer | Node | × |")
    print("|---|---|---|---|---|---|---|---|")
    for what, bench, key, pyname, nodename in rows:
        rust = criterion(bench)
        print(f"| {what} | {fmt(rust)} | {pyname} | {fmt(py[key])} | {py[key] / rust:.0f}× | {nodename} | "
              f"{fmt(node[key])} | {node[key] / rust:.0f}× |")
    rust = criterion("safe_mode_decrypt_parse_encrypted_reply_1kb")
    ok = rust <= 5000 and py["safe_mode"] / rust >= 20 and node["safe_mode"] / rust >= 20
    print(f"\nsafe-mode goal (≤ 5 µs, ≥ 20× wechatpy and the Node stack): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
