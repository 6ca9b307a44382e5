// The Node stack on the fixture scripts/peers/bench_peers.py writes: the `wechat` middleware's
// path (xml2js for the envelope and the message, wechat-crypto for the signature and AES, a
// template for the reply), the URL check as that middleware does it, an IM callback's auth and
// parse (no library exists: node:crypto and JSON.parse), and Tencent's tls-sig-api-v2 UserSig.
// Prints {name: nanoseconds per call (median of 7 batches)} as JSON.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const xml2js = require('xml2js');
const WXBizMsgCrypt = require('wechat-crypto');
const TLSSigAPIv2 = require('tls-sig-api-v2');

const fx = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));

function parseXml(xml) {
  // xml2js calls back synchronously unless `async: true`.
  let out, err;
  xml2js.parseString(xml, { trim: true, explicitArray: true }, (e, r) => { err = e; out = r; });
  if (err) throw err;
  return out;
}

// The middleware's formatMessage: single-element arrays flattened.
function formatMessage(result) {
  const message = {};
  for (const key of Object.keys(result)) {
    const item = result[key];
    if (!Array.isArray(item) || item.length === 0) continue;
    if (item.length === 1) {
      const val = item[0];
      message[key] = typeof val === 'object' ? formatMessage(val) : String(val).trim();
    } else {
      message[key] = item.map((v) => (typeof v === 'object' ? formatMessage(v) : v));
    }
  }
  return message;
}

const cryptor = new WXBizMsgCrypt(fx.token, fx.aes_key, fx.appid);

function safeMode() {
  const env = parseXml(fx.body).xml;
  const encrypt = env.Encrypt[0];
  if (cryptor.getSignature(fx.timestamp, fx.nonce, encrypt) !== fx.msg_signature) throw new Error('signature');
  const d = cryptor.decrypt(encrypt);
  if (d.id !== fx.appid) throw new Error('appid');
  const msg = formatMessage(parseXml(d.message).xml);
  const now = 1700000001;
  const reply = `<xml><ToUserName><![CDATA[${msg.FromUserName}]]></ToUserName><FromUserName><![CDATA[${msg.ToUserName}]]></FromUserName><CreateTime>${now}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[${fx.reply}]]></Content></xml>`;
  const wrap = cryptor.encrypt(reply);
  const sig = cryptor.getSignature(String(now), fx.nonce, wrap);
  return `<xml><Encrypt><![CDATA[${wrap}]]></Encrypt><MsgSignature><![CDATA[${sig}]]></MsgSignature><TimeStamp>${now}</TimeStamp><Nonce><![CDATA[${fx.nonce}]]></Nonce></xml>`;
}

// Query strings are parsed before the clock starts, as in the criterion benches (a prebuilt
// request): what is timed is the same work on both sides.
const verifyQuery = new URLSearchParams(fx.verify_query);
const imQuery = new URLSearchParams(fx.im_query);

function getVerify() {
  const q = verifyQuery;
  const sig = crypto.createHash('sha1')
    .update([fx.token, q.get('timestamp'), q.get('nonce')].sort().join(''))
    .digest('hex');
  if (sig !== q.get('signature')) throw new Error('signature');
  return q.get('echostr');
}

function imCallback() {
  const q = imQuery;
  if (q.get('SdkAppid') !== String(fx.im_sdkappid)) throw new Error('sdkappid');
  const t = Number(q.get('RequestTime'));
  if (!(Math.abs(fx.im_now - t) <= 300)) throw new Error('window');
  const want = crypto.createHash('sha256').update(fx.im_token + q.get('RequestTime')).digest('hex');
  const got = Buffer.from(q.get('Sign') || '');
  if (got.length !== want.length || !crypto.timingSafeEqual(got, Buffer.from(want))) throw new Error('sign');
  const cb = JSON.parse(fx.im_body);
  if (cb.CallbackCommand !== 'C2C.CallbackAfterSendMsg') throw new Error('command');
  return cb;
}

const tls = new TLSSigAPIv2.Api(fx.im_sdkappid, fx.im_key);
function usersig() {
  return tls.genSig('administrator', 604800);
}

function bench(fn) {
  for (let i = 0; i < 3000; i++) fn();
  // Batches of ~50 ms.
  let n = 100;
  for (;;) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn();
    if (Number(process.hrtime.bigint() - t) > 50e6) break;
    n *= 2;
  }
  const per = [];
  for (let b = 0; b < 7; b++) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn();
    per.push(Number(process.hrtime.bigint() - t) / n);
  }
  per.sort((a, b) => a - b);
  return per[3];
}

// The answers must be right before their time means anything.
const check = parseXml(safeMode()).xml;
const inner = cryptor.decrypt(check.Encrypt[0]).message;
if (!inner.includes(fx.reply)) throw new Error('reply');
if (getVerify() !== fx.echostr) throw new Error('echostr');
imCallback();

console.log(JSON.stringify({
  safe_mode: bench(safeMode),
  get_verify: bench(getVerify),
  im_callback: bench(imCallback),
  usersig_generate: bench(usersig),
}));
