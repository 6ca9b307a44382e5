#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs (fuzz/seeds/<target>/) from the sample events in
events/ and the published vectors of the protocol references, in each target's input layout.
Deterministic (same files, same names), so re-running it changes nothing unless events/ did.
Safe-mode samples are decrypted with the sample keys when the `cryptography` package is there
(it is in ./scripts/test's .venv); without it those seeds are left out.

    fuzz/make-seeds.py          (scripts/fuzz runs it first)
"""

import base64
import glob
import json
import os
import shutil
import struct
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
OUT = os.path.join(ROOT, "fuzz", "seeds")
NOW = 1_700_000_000
MP_APPID = "wx1234567890abcdef"
KEYS = {
    "mp": ("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", MP_APPID),
    "oa": ("kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR", "wxfedcba0987654321"),
}
MAX_PER_TARGET = 24

# Plaintexts of the published vectors (reference/wechat.md V4, V10, V11; tencent-im.md V1).
V4 = '{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY","CreateTime":1714112445,"MsgType":"event","Event":"debug_demo","debug_str":"hello world"}'
V10 = "<xml><ToUserName><![CDATA[gh_abcdef123456]]></ToUserName><FromUserName><![CDATA[oUSER_openid_0001]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好 hello]]></Content><MsgId>24000000000000001</MsgId></xml>"
V11 = '{"ToUserName":"gh_123456789abc","FromUserName":"otFpruAK8D-E6EfStSYonYSBZ8_4","CreateTime":1700000001,"MsgType":"event","Event":"subscribe_msg_popup_event","List":[{"TemplateId":"VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc","SubscribeStatusString":"accept","PopupScene":"0"},{"TemplateId":"9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI","SubscribeStatusString":"reject","PopupScene":"0"}]}'
V13 = "\n".join([
    "<xml>", "<MsgType><![CDATA[text]]></MsgType>", "<Content><![CDATA[收到：hello]]></Content>",
    "<FromUserName><![CDATA[gh_abcdef123456]]></FromUserName>",
    "<ToUserName><![CDATA[oUSER_openid_0001]]></ToUserName>", "<CreateTime>1700000005</CreateTime>",
    "</xml>",
])
USERSIG_V1 = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkKjIT87NK82CSxSnZiQUFmSlAKUMTAyiAyqVWFGQWpYJkTE1NjRDiJZm5EFEzS0tDAyO4eHFmOsiGdP-81HBD42JDS7f0yjyLoPIc1xL9Ip-scuPyKp9CS1-t4EKnpIgQz7S8QFulWgAoqDP8"
USERSIG_V2 = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkElNyM-Myi0uKEkvyi2BKilOyEwsKMlOACgxNDKAAKpdaUZBZlAqUsTAzgQuWZOaChAxNzSwtDQ2M4OLFmekgS9yjgrUrTAJ8fEsLczKTKj3yg10NTLJyksoCghMDDNLCwlKMXE1dLJ3MMxxtlWoBSzQ1IA__"


def events(folder):
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "events", folder, "*.json"))):
        with open(path, encoding="utf-8") as f:
            out.append((os.path.basename(path)[:-5], f.read(), json.loads(open(path).read())))
    return out


def body_of(ev):
    body = ev.get("body") or ""
    return base64.b64decode(body) if ev.get("isBase64Encoded") else body.encode()


def decrypt(app, encrypt):
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    except ImportError:
        return None
    key_text, appid = KEYS[app]
    key = base64.b64decode(key_text + "=")
    try:
        raw = base64.b64decode(encrypt, validate=True)
        d = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
        plain = d.update(raw) + d.finalize()
        full = plain[: -plain[-1]]
        n = struct.unpack(">I", full[16:20])[0]
        return full[20:20 + n]
    except Exception:
        return None


def encrypt_field(body):
    text = body.decode("utf-8", errors="replace")
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text).get("Encrypt")
        except Exception:
            return None
    i = text.find("<Encrypt><![CDATA[")
    if i < 0:
        return None
    j = text.find("]]>", i)
    return text[i + len("<Encrypt><![CDATA["):j]


def layout(msg, appid=MP_APPID, random=b"0123456789abcdef"):
    """The decrypted buffer of reference §2.3: random ‖ len ‖ msg ‖ appid, PKCS#7 to 32."""
    full = random + struct.pack(">I", len(msg)) + msg + appid.encode()
    pad = 32 - len(full) % 32
    return full + bytes([pad]) * pad


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    seeds = {}

    def add(target, name, data):
        seeds.setdefault(target, {})
        if len(seeds[target]) < MAX_PER_TARGET and data not in seeds[target].values():
            seeds[target][name] = data

    # Message bodies: the plaintext samples, the decrypted safe/compat ones, the vectors.
    plaintexts = [("v4-json-debug", V4.encode()), ("v10-xml-text", V10.encode()),
                  ("v11-json-popup", V11.encode()), ("v13-xml-reply", V13.encode())]
    pushes = []
    envelopes = []
    for name, _, ev in events("wechat-event"):
        body = body_of(ev)
        if len(body) > 8192:
            continue
        app = "oa" if name.startswith("oa-") else "mp"
        enc = encrypt_field(body)
        plain = decrypt(app, enc) if enc else body
        if plain:
            plaintexts.append((name, plain))
        if enc and len(envelopes) < 3:
            envelopes.append((name + "-envelope", body))
        if app == "mp":
            pushes.append((name, (ev.get("rawQueryString") or "").encode(), body))
    for name, body in plaintexts + envelopes:
        add("wechat_message", name, body)
        if body.lstrip().startswith(b"<"):
            add("wechat_xml", name, body)

    # push_open: crafted mode (1), format byte, nonce (u32), the decrypted buffer.
    for name, body in plaintexts[:6]:
        fmt = b"\x00" if body.lstrip().startswith(b"{") else b"\x01"
        add("push_open", "crafted-" + name, b"\x01" + fmt + b"\x07\x00\x00\x00" + layout(body))
    add("push_open", "crafted-v12-pad32", b"\x01\x00\x07\x00\x00\x00" + layout(b"success" + b"x" * 51, random=b"A" * 16))

    # push_open: raw mode (0), flags 3 (plaintext allowed, 300 s window), query \n body.
    for name, query, body in pushes:
        add("push_open", "raw-" + name, b"\x00\x03" + query + b"\n" + body)
    # im_callback: choices (token, SdkAppid, RequestTime, Sign, command) = sample token, ours,
    # now + skew, right, from the body; window 300; skew 0; then the body.
    header = bytes([1, 0, 0, 0, 0]) + struct.pack("<H", 300) + struct.pack("<h", 0)
    for name, _, ev in events("im-callback"):
        add("im_callback", name, header + body_of(ev))

    # usersig_verify: raw mode (0), now (i64), the sig: the bind samples and the vectors.
    for name, _, ev in events("bind"):
        try:
            sig = json.loads(body_of(ev)).get("userSig")
        except Exception:
            sig = None
        if sig:
            add("usersig_verify", name, b"\x00" + struct.pack("<q", NOW) + sig.encode())
    add("usersig_verify", "vector-v1", b"\x00" + struct.pack("<q", 1569910200) + USERSIG_V1.encode())
    add("usersig_verify", "vector-v2", b"\x00" + struct.pack("<q", 1569910200) + USERSIG_V2.encode())

    # lambda_event: raw mode (even first byte), the event text.
    for folder in ("wechat-verify", "wechat-event", "im-callback", "bind", "admin-notify"):
        for name, text, ev in events(folder)[:3]:
            if len(text) < 8192:
                add("lambda_event", f"{folder}-{name}", b"\x00" + text.encode())

    total = 0
    for target, files in sorted(seeds.items()):
        for name, data in files.items():
            write(target, name, data)
            total += 1
    print(f"make-seeds: {total} seeds for {len(seeds)} targets in fuzz/seeds/"
          + ("" if _has_crypto() else " (cryptography missing: safe-mode samples not decrypted)"))


def _has_crypto():
    try:
        import cryptography  # noqa: F401
        return True
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
