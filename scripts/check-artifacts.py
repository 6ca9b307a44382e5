#!/usr/bin/env python3
"""The deployed artifacts, exercised: builds the six arm64 `bootstrap` binaries with cargo-lambda
as `sam build` does, each with its own package's features alone (sam runs `cargo lambda build
--release --arm64 --bin <Binary>` in each function's CodeUri, its package directory; here the
functions whose manifests ask for the same dependencies and features are built in one invocation,
which gives the same binaries, see `lambda_harness.feature_groups`), boots each under qemu-aarch64 against a
stand-in of the Lambda Runtime API, feeds it the samples of events/ and checks every answer
against events/expected.json, with moto as DynamoDB, `wxim standins` as WeChat and IM, and the
outbox table's stream replayed into notify-dispatch.

Every case gets fresh tables, fresh stand-ins and freshly booted functions; its documented
setup runs first (bindings with `wxim bind`, events through the arm64 functions themselves).
What is checked is what tests/tests/e2e/sample_events.rs checks through the handlers: status,
body, content type, error code, the decrypted passive reply, JSON members, stored and absent
items, nothing stored, the outbox's kinds and statuses, the sends the stand-ins received; and a
webhook retried (or an admin send with its Idempotency-Key) answers the same and changes nothing.

Run now rather than at their signing time, the samples are adjusted (lambda_harness.prepare):
IM callbacks re-signed, bind samples given a fresh UserSig, WeChat pushes run with
WECHAT_TIMESTAMP_WINDOW_SECS=0 except mp-safe-json-stale.json (default window); the scheduled
sweep's answer is compared without its cursor (the minute it ran at).

Needs: .venv (scripts/pyenv.sh: moto, cargo-lambda), the aarch64-unknown-linux-gnu target
(added), qemu-aarch64 and /usr/aarch64-linux-gnu (Debian: qemu-user libc6-arm64-cross, installed
with apt-get when missing and running as root).

Usage: scripts/check-artifacts.py [--no-build] [case-substring ...]
"""

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import lambda_harness as h

QEMU = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]
LAMBDA_DIR = h.ROOT / "target" / "lambda"

def ensure_tools():
    subprocess.run([str(h.ROOT / "scripts/pyenv.sh")], check=True)
    if not shutil.which("qemu-aarch64") or not Path("/usr/aarch64-linux-gnu/lib").is_dir():
        if os.geteuid() != 0:
            sys.exit("check-artifacts: needs qemu-aarch64 and /usr/aarch64-linux-gnu "
                     "(apt-get install qemu-user libc6-arm64-cross)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "qemu-user", "libc6-arm64-cross"], check=True,
                       env=env, stdout=subprocess.DEVNULL)
    targets = subprocess.run(["rustup", "target", "list", "--installed"], capture_output=True, text=True).stdout
    if "aarch64-unknown-linux-gnu" not in targets:
        subprocess.run(["rustup", "target", "add", "aarch64-unknown-linux-gnu"], check=True)


def build():
    env = {**os.environ, "PATH": f"{h.ROOT / '.venv/bin'}:{os.environ['PATH']}"}
    t0 = time.monotonic()
    for group in h.feature_groups({f: h.ROOT / "functions" / f for f in h.FUNCTIONS}):
        cmd = ["cargo", "lambda", "build", "--release", "--arm64", *(a for f in group for a in ("-p", f))]
        t = time.monotonic()
        subprocess.run(cmd, cwd=h.ROOT, check=True, env=env)
        print(f"check-artifacts: {' '.join(cmd)}: {time.monotonic() - t:.0f} s", flush=True)
    print(f"check-artifacts: the six builds: {time.monotonic() - t0:.0f} s", flush=True)
    subprocess.run(["cargo", "build", "-q", "-p", "wxim-local", "--bin", "wxim"], cwd=h.ROOT, check=True)


def bootstrap(name):
    return LAMBDA_DIR / name / "bootstrap"


def links_spool(f):
    """Whether functions/<f> enables the common crate's `spool` feature (its Cargo.toml)."""
    return "spool" in h.dependencies(h.ROOT / "functions" / f)["common"].get("features", [])


def sizes():
    print("| Function | bootstrap (arm64, stripped) | zip (deflate, as sam deploy uploads it) |")
    print("|---|---|---|")
    for f in h.FUNCTIONS:
        b = bootstrap(f)
        data = b.read_bytes()
        if data[:4] != b"\x7fELF" or int.from_bytes(data[18:20], "little") != 183:  # EM_AARCH64
            raise SystemExit(f"check-artifacts: {b} is not an aarch64 ELF binary")
        # Each binary has its own package's features: built with another package's (one cargo
        # invocation for several), a function that never spools links the SQS spool, whose type
        # name the stripped binary still carries. Checked both ways, so that a renamed type
        # fails here instead of passing unnoticed.
        linked, enabled = b"SqsSpool" in data, links_spool(f)
        if linked != enabled:
            raise SystemExit(f"check-artifacts: {f} {'links' if linked else 'lacks'} the SQS spool, but its "
                             f"Cargo.toml {'enables' if enabled else 'does not enable'} the `spool` feature: "
                             "not built with its own features alone")
        z = Path(os.environ.get("TMPDIR", "/tmp")) / f"{f}-bootstrap.zip"
        with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(b, "bootstrap")
        print(f"| {f} | {b.stat().st_size / 1e6:.2f} MB | {z.stat().st_size / 1e6:.2f} MB |")
        z.unlink()


class Failure(Exception):
    pass


def want(cond, what):
    if not cond:
        raise Failure(what)


def subset(exp, got, what):
    """Every member of `exp` is in `got` with the same value (objects compared member-wise)."""
    if isinstance(exp, dict) and isinstance(got, dict):
        for k, v in exp.items():
            subset(v, got.get(k), f"{what}.{k}")
    else:
        want(exp == got, f"{what}: {got!r}, expected {exp!r}")


def outbox_view(world, exp_outbox):
    got = []
    for i in h.live(world.aws.scan(world.table + "-outbox")):
        i = h.attr_json(i)
        s = f"{i.get('kind', '')}:{i.get('status', '')}"
        if any(x["kind"] == i.get("kind") and "reason" in x for x in exp_outbox):
            s += f":{i.get('reason', '')}"
        got.append(s)
    want_ = [f"{x['kind']}:{x['status']}" + (f":{x['reason']}" if "reason" in x else "") for x in exp_outbox]
    return sorted(got), sorted(want_)


def state(world):
    return [sorted(json.dumps(i, sort_keys=True) for i in world.aws.scan(t))
            for t in (world.table, world.table + "-outbox")]


def check(world, file, exp, out, fn):
    if fn == "notify-dispatch":
        body = json.dumps(out, separators=(",", ":"))
    else:
        want("status" not in exp or out.get("statusCode") == exp["status"],
             f"status {out.get('statusCode')}, expected {exp.get('status')}: {json.dumps(out)[:400]}")
        body = out.get("body") or ""
        if out.get("isBase64Encoded"):
            import base64
            body = base64.b64decode(body).decode()
    if "body" in exp:
        if fn == "notify-dispatch":
            got, exp_body = json.loads(body), json.loads(exp["body"]) if exp["body"] else {}
            if file == "notify-dispatch/scheduled-sweep.json":
                # The sweep's cursor is the minute it ran at (the sample's is at signing time).
                cursor = got.pop("cursor", "")
                exp_body.pop("cursor", None)
                want(len(cursor) == 12 and cursor.isdigit(), f"cursor {cursor!r}")
            want(got == exp_body, f"body {got}, expected {exp_body}")
        else:
            want(body == exp["body"], f"body {body[:300]!r}, expected {exp['body'][:300]!r}")
    if "content_type" in exp:
        ct = {k.lower(): v for k, v in (out.get("headers") or {}).items()}.get("content-type", "")
        want(ct.startswith(exp["content_type"]), f"content-type {ct!r}")
    if "error" in exp:
        v = json.loads(body)
        want(v.get("error") == exp["error"] and v.get("message"), f"error body {body[:300]}")
    if "reply_text" in exp:
        text = h.reply_text(body, world.env["WECHAT_OA_AES_KEY"])
        want(text == exp["reply_text"], f"passive reply {text!r}")
    if "json" in exp:
        subset(exp["json"], json.loads(body), "body")
    for gone in exp.get("absent", []):
        item = world.aws.get(world.table, gone["pk"], gone["sk"])
        want(item is None or not h.live([item]), f"{gone['pk']}/{gone['sk']} should not exist")
    if exp.get("nothing_stored"):
        for t in (world.table, world.table + "-outbox"):
            items = h.live(world.aws.scan(t))
            want(not items, f"expected nothing stored in {t}, found {items[:3]}")
    for w in exp.get("items", []):
        item = world.aws.get(world.table, w["pk"], w["sk"])
        want(item is not None and h.live([item]), f"no item {w['pk']}/{w['sk']}")
        got = h.attr_json(item)
        for k, v in w.items():
            want(got.get(k) == v, f"attribute {k} of {w['pk']}/{w['sk']}: {got.get(k)!r}, expected {v!r}")
    if "outbox" in exp:
        got, exp_ob = outbox_view(world, exp["outbox"])
        want(got == exp_ob, f"outbox {got}, expected {exp_ob}")
    reqs = world.standins.requests()

    def count(*paths):
        return sum(1 for m, p, _ in reqs if p in paths)

    sendmsg = {(b.get("From_Account"), b.get("To_Account"), b.get("MsgRandom"))
               for m, p, b in reqs if p == "/v4/openim/sendmsg" and isinstance(b, dict)}
    counts = {
        "sends": count("/cgi-bin/message/subscribe/send", "/cgi-bin/message/subscribe/bizsend"),
        "custom_sends": count("/cgi-bin/message/custom/send"),
        "im_sends": len(sendmsg),
    }
    for k, n in counts.items():
        if k in exp:
            want(n == exp[k], f"{k}: {n}, expected {exp[k]}")
    if "custom_texts" in exp:
        texts = [b["text"]["content"] for m, p, b in reqs if p == "/cgi-bin/message/custom/send"]
        want(texts == exp["custom_texts"], f"customer-service texts {texts}")


def run_case(moto, file, exp, log):
    fn = file.split("/")[0]
    extra = dict(exp.get("config", {}))
    if file == "wechat-event/mp-safe-json-stale.json":
        extra["WECHAT_TIMESTAMP_WINDOW_SECS"] = "300"  # the replay window, as deployed
    world = h.World(moto, bootstrap, runner=QEMU, extra_env=extra, log=log)
    try:
        world.setup(exp)
        event = h.prepare(file, world.env, world.wxim_env)
        kind, body = world.invoke(fn, event)
        want(kind == "response", f"{kind}: {body[:300]!r}")
        out = json.loads(body)
        check(world, file, exp, out, fn)
        retried = exp.get("idempotent") or (out.get("statusCode") == 200 and fn in ("wechat-event", "im-callback"))
        if retried:
            before = state(world)
            kind, again = world.invoke(fn, event)
            again = json.loads(again)
            want(again.get("statusCode") == out.get("statusCode"), "retry: another status")
            if isinstance(exp.get("body"), str):
                want(again.get("body") == out.get("body"), "retry: another body")
            if "reply_text" in exp:
                want(h.reply_text(again["body"], world.env["WECHAT_OA_AES_KEY"]) == exp["reply_text"],
                     "retry: the passive reply is not replayed")
            want(state(world) == before, "retry: the state changed")
        return sorted(world.running)
    finally:
        world.close()


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    ensure_tools()
    t0 = time.monotonic()
    if "--no-build" not in sys.argv:
        build()
    sizes()
    expected = h.expected()
    cases = [(f, e) for f, e in expected.items() if not args or any(a in f for a in args)]
    # A case whose setup moves the clock on (e.g. a reply allowance expiring) needs the tests'
    # manual clock; the real processes here run on real time.
    timed = [f for f, e in cases
             if "advance_after" in e or any("advance" in s for s in e.get("setup", []))]
    for f in timed:
        print(f"skip  {f} (its setup advances the clock)", flush=True)
    cases = [(f, e) for f, e in cases if f not in timed]
    # Under ./scripts/test the functions' log joins the run's logs, which are scanned for secrets.
    keep = os.environ.get("WXIM_TEST_LOG_DIR")
    log_path = (Path(keep) / "check-artifacts.log" if keep
                else Path(os.environ.get("TMPDIR", "/tmp")) / f"check-artifacts-{os.getpid()}.log")
    failures, booted = [], set()
    moto = h.Moto()
    try:
        with open(log_path, "w") as log:
            for file, exp in cases:
                t = time.monotonic()
                try:
                    booted.update(run_case(moto, file, exp, log))
                    print(f"ok    {file} ({time.monotonic() - t:.1f} s)", flush=True)
                except (Failure, RuntimeError, subprocess.CalledProcessError) as e:
                    failures.append(file)
                    print(f"FAIL  {file}: {e}", flush=True)
    finally:
        moto.stop()
    missing = set(h.FUNCTIONS) - booted
    if not args and missing:
        failures.append(f"functions never booted: {sorted(missing)}")
    print(f"check-artifacts: {len(cases) - len(failures)}/{len(cases)} samples as expected, functions booted "
          f"under qemu-aarch64: {', '.join(sorted(booted))} ({time.monotonic() - t0:.0f} s in all)")
    if failures:
        print(f"check-artifacts: the functions' log is in {log_path}")
        sys.exit(1)
    if not keep:
        log_path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
