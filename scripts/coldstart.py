#!/usr/bin/env python3
"""Cold start, first event and memory of the release function binaries, timed as whole processes.

For each function it starts the stripped release binary as Lambda would (the same environment
variables and a Runtime API on 127.0.0.1 played by this script), and measures:
  - init: from spawn to the binary's first `GET /runtime/invocation/next` (configuration read,
    clients built: "ready for the first event");
  - first event: from handing it a sample event to its response (a URL check needs no I/O;
    a push to a store that is not there shows how fast a store failure is answered);
  - peak RSS (VmHWM) after the event; and the binary's size.

Usage: ./scripts/coldstart.py [runs]      (builds the release binaries first; default 20 runs)
"""

import http.server
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = {
    # function: sample event it is handed
    "wechat-verify": "events/wechat-verify/mp.json",
    "im-callback": "events/im-callback/group-after-send.json",
}


def sample_env():
    env = {}
    for line in (ROOT / "events/sample.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
                v = v[1:-1]
            env[k] = v
    return env


class RuntimeApi(http.server.BaseHTTPRequestHandler):
    """The Lambda Runtime API, just enough for one invocation."""

    event = b"{}"
    first_next = None
    response_at = None
    response = None
    served = False

    def log_message(self, *args):
        pass

    def do_GET(self):
        cls = type(self)
        if cls.first_next is None:
            cls.first_next = time.perf_counter()
        if cls.served:
            time.sleep(30)  # the next invocation never comes; the process is killed meanwhile
            return
        cls.served = True
        cls.handed_at = time.perf_counter()
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", "coldstart-1")
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 10_000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:x")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(cls.event)))
        self.end_headers()
        self.wfile.write(cls.event)

    def do_POST(self):
        cls = type(self)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        cls.response_at = time.perf_counter()
        cls.response = body
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()


def fresh(event_bytes):
    """IM callbacks carry RequestTime and its Sign; samples are signed at a fixed time, so sign anew."""
    import hashlib
    from urllib.parse import parse_qsl, urlencode

    event = json.loads(event_bytes)
    if event.get("rawPath") == "/im/callback":
        now = str(int(time.time()))
        token = sample_env()["IM_CALLBACK_TOKEN"]
        q = [(k, v) for k, v in parse_qsl(event["rawQueryString"]) if k not in ("RequestTime", "Sign")]
        q += [("RequestTime", now), ("Sign", hashlib.sha256((token + now).encode()).hexdigest())]
        event["rawQueryString"] = urlencode(q)
        event["queryStringParameters"] = dict(q)
    return json.dumps(event).encode()


def run_once(binary, event):
    handler = type("Api", (RuntimeApi,), {"event": event, "first_next": None, "response_at": None,
                                           "response": None, "served": False})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        "PATH": os.environ.get("PATH", ""),
        **sample_env(),
        "TABLE_NAME": "wxim-coldstart",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:9",
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}",
        "AWS_LAMBDA_FUNCTION_NAME": binary.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_STREAM_NAME": "coldstart",
        "AWS_LAMBDA_LOG_GROUP_NAME": "coldstart",
        "RUST_LOG": "warn",
    }
    start = time.perf_counter()
    proc = subprocess.Popen([str(binary)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = start + 10
        while handler.response_at is None and time.perf_counter() < deadline:
            time.sleep(0.0005)
        if handler.response_at is None:
            sys.exit(f"{binary.name}: no response within 10 s")
        status = Path(f"/proc/{proc.pid}/status").read_text()
        hwm_kb = int(next(l.split()[1] for l in status.splitlines() if l.startswith("VmHWM")))
    finally:
        proc.kill()
        proc.wait()
        server.shutdown()
    code = json.loads(handler.response).get("statusCode")
    return (handler.first_next - start) * 1000, (handler.response_at - handler.handed_at) * 1000, hwm_kb, code


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    bins = [a for f in FUNCTIONS for a in ("-p", f)]
    subprocess.run(["cargo", "build", "--release", "-q", *bins], cwd=ROOT, check=True)
    print(f"{'function':<15} {'size':>8} {'init (median)':>14} {'first event':>12} {'peak RSS':>9}  status")
    for name, event_file in FUNCTIONS.items():
        binary = ROOT / "target/release" / name
        results = [run_once(binary, fresh((ROOT / event_file).read_bytes())) for _ in range(runs)]
        init = statistics.median(r[0] for r in results)
        first = statistics.median(r[1] for r in results)
        rss = max(r[2] for r in results)
        size = binary.stat().st_size / 1e6
        print(f"{name:<15} {size:>6.1f}MB {init:>11.1f} ms {first:>9.2f} ms {rss / 1024:>6.1f}MB  {results[0][3]}")


if __name__ == "__main__":
    main()
