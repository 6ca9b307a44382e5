"""Runs the function binaries as Lambda does, with no AWS and no Docker: a stand-in of the Lambda
Runtime API per process, a DynamoDB-compatible server (moto), the WeChat and IM stand-ins
(`wxim standins`), and the DynamoDB Stream of the outbox replayed into notify-dispatch.

Used by scripts/coldstart.py (native release binaries, timed) and scripts/check-artifacts.py
(the arm64 bootstrap binaries under qemu-aarch64, checked against events/expected.json).
Standard library only, plus boto3 (in .venv with moto) for the stream and the checks.
"""

import base64
import hashlib
import http.client
import http.server
import json
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
WXIM = ROOT / "target" / "debug" / "wxim"
PYTHON = ROOT / ".venv" / "bin" / "python"

FUNCTIONS = ["wechat-verify", "wechat-event", "im-callback", "notify-dispatch", "bind", "admin-notify"]


def dependencies(package_dir):
    """The `[dependencies]` table of the package in `package_dir` (its Cargo.toml)."""
    return tomllib.loads((Path(package_dir) / "Cargo.toml").read_text())["dependencies"]


def feature_groups(package_dirs):
    """The packages (name -> directory) in groups whose manifests ask for exactly the same
    dependencies and features. Cargo unifies features over the packages one invocation selects,
    so a group built together (`-p` each) gets what each of its packages gets built alone, which
    is what `sam build` does, one package directory at a time, while its fat-LTO links run side
    by side on the machine's cores."""
    groups = {}
    for name, directory in package_dirs.items():
        groups.setdefault(json.dumps(dependencies(directory), sort_keys=True), []).append(name)
    return list(groups.values())


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


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


def expected():
    return json.loads((EVENTS / "expected.json").read_text())


def wait_http(url, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except Exception:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up within {timeout:.0f} s")
            time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# The Lambda Runtime API, one server per function process.


# Linux's SO_TIMESTAMPNS (and its control message, SCM_TIMESTAMPNS: a 64-bit timespec); Python
# 3.11's socket module does not name it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


class StampedServer(http.server.ThreadingHTTPServer):
    """A threaded HTTP server whose every request carries the kernel's arrival time of its first
    byte (`handler.arrived`, `time.time()`'s clock). The option is set on the listening socket:
    accepted connections inherit it, so a request that arrives before Python has accepted its
    connection is stamped too (a socket enabling it only after accept() finds its first segment
    unstamped whenever no other socket had time stamping on)."""

    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        super().server_bind()


class StampedHandler(http.server.BaseHTTPRequestHandler):
    """Keep-alive handler that records when each request's first byte reached the machine, so
    that Python's accept, thread start and header parsing (a few hundred µs, more when the GIL
    is busy) are not counted as the function's time."""

    protocol_version = "HTTP/1.1"
    # The answer's headers and body go out in two writes; with Nagle's algorithm on, the body
    # waits for the client's delayed ACK of the headers (40 ms on Linux) and every request after
    # a connection's first would seem to cost the function 40 ms.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def handle_one_request(self):
        self.arrived = None
        try:
            _, ancdata, _, _ = self.connection.recvmsg(1, socket.CMSG_SPACE(16), socket.MSG_PEEK)
        except OSError:
            ancdata = []
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                sec, nsec = struct.unpack("qq", data[:16])
                self.arrived = sec + nsec / 1e9
        super().handle_one_request()

    def arrival(self):
        return self.arrived if self.arrived is not None else time.time()


class RuntimeApi:
    """GET /2018-06-01/runtime/invocation/next hands out queued events one at a time; the
    function's POST …/response (or …/error, or /runtime/init/error) completes the invocation."""

    def __init__(self):
        self.events = queue.Queue()
        self.lock = threading.Condition()
        self.results = {}
        self.init_error = None
        self.first_next = None
        self.handed = {}
        self.seq = 0
        api = self

        class Handler(StampedHandler):
            def do_GET(self):
                if not self.path.startswith("/2018-06-01/runtime/invocation/next"):
                    self.send_error(404)
                    return
                with api.lock:
                    if api.first_next is None:
                        api.first_next = self.arrival()
                    api.lock.notify_all()
                rid, body = api.events.get()
                if rid is None:  # shutting down: leave the function waiting
                    time.sleep(3600)
                    return
                with api.lock:
                    api.handed[rid] = time.time()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", rid)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30_000))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn",
                                 "arn:aws:lambda:us-east-1:123456789012:function:harness")
                self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

            def do_POST(self):
                at = self.arrival()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                parts = self.path.split("/")
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with api.lock:
                    if self.path.startswith("/2018-06-01/runtime/init/error"):
                        api.init_error = body
                    elif len(parts) >= 6 and parts[3] == "invocation":
                        api.results[parts[4]] = (parts[5], body, at)
                    api.lock.notify_all()

        self.server = StampedServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def invoke(self, event, timeout=30.0, alive=lambda: True):
        """Hands `event` (bytes) to the function; returns (kind, body bytes, handed_at, answered_at)
        where kind is "response" or "error"."""
        with self.lock:
            self.seq += 1
            rid = f"harness-{self.seq}"
        self.events.put((rid, event))
        deadline = time.monotonic() + timeout
        with self.lock:
            while rid not in self.results:
                if self.init_error is not None:
                    raise RuntimeError(f"init failed: {self.init_error.decode(errors='replace')}")
                if not alive():
                    raise RuntimeError("the function exited")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no answer within {timeout:.0f} s")
                self.lock.wait(0.05)
            kind, body, at = self.results.pop(rid)
            return kind, body, self.handed.pop(rid, at), at

    def close(self):
        self.events.put((None, b""))
        self.server.shutdown()
        self.server.server_close()


class Function:
    """One function process (a `bootstrap`) against its own Runtime API."""

    def __init__(self, name, binary, env, runner=(), log=None):
        self.name = name
        self.api = RuntimeApi()
        full = {
            "PATH": os.environ.get("PATH", ""),
            **env,
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{self.api.port}",
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_STREAM_NAME": "harness",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        }
        self.log = log or subprocess.DEVNULL
        self.started = time.time()
        self.proc = subprocess.Popen([*runner, str(binary)], env=full, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def alive(self):
        return self.proc.poll() is None

    def invoke(self, event, timeout=30.0):
        if isinstance(event, (dict, list)):
            event = json.dumps(event).encode()
        return self.api.invoke(event, timeout, self.alive)

    def peak_rss_kb(self):
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(l.split()[1] for l in status.splitlines() if l.startswith("VmHWM")))

    def cpu_ms(self):
        """CPU time the process has used so far, all its threads (the scheduler's nanoseconds)."""
        total = 0
        for stat in Path(f"/proc/{self.proc.pid}/task").glob("*/schedstat"):
            total += int(stat.read_text().split()[0])
        return total / 1e6

    def faults(self):
        """(minor, major) page faults so far (minflt and majflt of /proc/<pid>/stat): minor ones
        map a page already in memory (1.5-4 µs each on this VM: scripts/fault-cost.py), major
        ones wait for the disk."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[7]), int(fields[9])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.api.close()


# ---------------------------------------------------------------------------------------------
# Servers: moto, the WeChat/IM stand-ins, and a timing proxy in front of them.


class Moto:
    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([str(PYTHON), str(ROOT / "scripts/dynamodb-server.py"), str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(self.url + "/moto-api/")

    def reset(self):
        req = urllib.request.Request(self.url + "/moto-api/reset", data=b"", method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Standins:
    """`wxim standins` on free ports; what they received is parsed from their output."""

    def __init__(self, env):
        self.wechat_port, self.im_port = free_port(), free_port()
        self.out = open(os.devnull, "w")
        self.path = Path(os.environ.get("TMPDIR", "/tmp")) / f"wxim-standins-{os.getpid()}-{self.wechat_port}.log"
        self.out = open(self.path, "w+")
        self.proc = subprocess.Popen(
            [str(WXIM), "standins", "--wechat-port", str(self.wechat_port), "--im-port", str(self.im_port)],
            env={**os.environ, **env}, stdout=self.out, stderr=subprocess.DEVNULL, cwd="/",
        )
        self.wechat = f"http://127.0.0.1:{self.wechat_port}"
        self.im = f"http://127.0.0.1:{self.im_port}"
        wait_http(self.wechat + "/")
        wait_http(self.im + "/")

    def requests(self):
        """[(method, path, body)] in the order received."""
        self.out.flush()
        out = []
        for line in self.path.read_text().splitlines():
            if line.startswith("   [stand-in] "):
                method, path, *rest = line[len("   [stand-in] "):].split(" ", 2)
                out.append([method, path, rest[0] if rest else ""])
            elif line.startswith("      ") and out:
                out[-1][2] += "\n" + line
        return [(m, p, json.loads(b) if b.strip() else None) for m, p, b in out]

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.out.close()
        self.path.unlink(missing_ok=True)


class TimingProxy:
    """A keep-alive HTTP proxy in front of one upstream that adds up the time each request spends
    between arriving here and its answer leaving: the stand-ins' share of a function's time."""

    def __init__(self, upstream_port):
        self.spent = 0.0
        self.count = 0
        # (arrival, answered) of each request since the last `take`: where the function waited.
        self.intervals = []
        proxy = self

        class Handler(StampedHandler):
            def relay(self):
                t0 = self.arrival()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
                t1 = time.time()
                proxy.spent += t1 - t0
                proxy.count += 1
                proxy.intervals.append((t0, t1))
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = relay

        self.server = StampedServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self):
        spent, self.spent, self.count, self.intervals = self.spent, 0.0, 0, []
        return spent

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------------------
# Events: the samples are signed at a fixed time; these make them acceptable now.


def im_resign(event, token):
    """A fresh RequestTime and its Sign (IM callbacks are refused outside the replay window)."""
    now = str(int(time.time()))
    q = [(k, v) for k, v in parse_qsl(event["rawQueryString"]) if k not in ("RequestTime", "Sign")]
    q += [("RequestTime", now), ("Sign", hashlib.sha256((token + now).encode()).hexdigest())]
    event = dict(event)
    event["rawQueryString"] = urlencode(q)
    event["queryStringParameters"] = dict(q)
    return event


# Samples whose point is a signature or credential that re-signing would repair, or whose
# expected answer depends on when it was signed.
KEEP_AS_SIGNED = {
    "bind/expired-usersig.json",
    "bind/forged-usersig.json",
    "bind/usersig-of-another-user.json",
    "bind/missing-usersig.json",
}


def prepare(file, env, wxim_env):
    """The sample as it is sent now: IM callbacks re-signed at the current time (bad-sign with
    another token), bind samples with a fresh UserSig from `wxim sign`. WeChat pushes stay as
    signed; the harness runs them with WECHAT_TIMESTAMP_WINDOW_SECS=0 (the window itself is
    covered by mp-safe-json-stale.json, run with the default window)."""
    raw = (EVENTS / file).read_text()
    event = json.loads(raw)
    if file.startswith("im-callback/"):
        token = env["IM_CALLBACK_TOKEN"]
        if file == "im-callback/bad-sign.json":
            token = "not-" + token
        return im_resign(event, token)
    if file.startswith("bind/") and file not in KEEP_AS_SIGNED and "userSig" in raw:
        out = subprocess.run([str(WXIM), "sign", "-"], input=raw, capture_output=True, text=True,
                             env={**os.environ, **wxim_env}, cwd="/", check=True)
        return json.loads(out.stdout)
    return event


def wxim(args, env):
    subprocess.run([str(WXIM), *args], env={**os.environ, **env}, cwd="/", check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# ---------------------------------------------------------------------------------------------
# The outbox stream: what DynamoDB Streams would hand notify-dispatch.


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if hasattr(v, "timestamp"):
        return int(v.timestamp())
    return v


class Aws:
    """boto3 clients on the local server (moto)."""

    def __init__(self, endpoint):
        import boto3

        kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                  aws_secret_access_key="test")
        self.ddb = boto3.client("dynamodb", **kw)
        self.streams = boto3.client("dynamodbstreams", **kw)
        self.seen = set()

    def stream_inserts(self, table):
        """New INSERT records of `table`'s stream since the last call, as Lambda event records."""
        arn = self.ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
        out = []
        for shard in self.streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
            it = self.streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                                 ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            while it:
                page = self.streams.get_records(ShardIterator=it)
                for r in page["Records"]:
                    seq = r["dynamodb"]["SequenceNumber"]
                    if seq in self.seen:
                        continue
                    self.seen.add(seq)
                    if r["eventName"] == "INSERT":
                        r = _plain(r)
                        r["eventSourceARN"] = arn
                        out.append(r)
                if not page["Records"]:
                    break
                it = page.get("NextShardIterator")
        return out

    def scan(self, table):
        items, kw = [], {}
        while True:
            page = self.ddb.scan(TableName=table, ConsistentRead=True, **kw)
            items += page["Items"]
            if "LastEvaluatedKey" not in page:
                return items
            kw["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def get(self, table, pk, sk):
        return self.ddb.get_item(TableName=table, Key={"pk": {"S": pk}, "sk": {"S": sk}},
                                 ConsistentRead=True).get("Item")


def attr_json(item):
    """An item as the store's `to_json` shows it (S text, N integer, BOOL)."""
    out = {}
    for k, v in item.items():
        (t, x), = v.items()
        out[k] = int(x) if t == "N" else x
    return out


def live(items):
    now = time.time()
    return [i for i in items if "expires_at" not in i or int(i["expires_at"]["N"]) > now]


# ---------------------------------------------------------------------------------------------
# WeChat passive replies (for `reply_text`): AES-256-CBC, 32-byte PKCS#7, appid tail.


def wechat_decrypt(aes_key, b64):
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = base64.b64decode(aes_key + "=")
    d = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    plain = d.update(base64.b64decode(b64)) + d.finalize()
    plain = plain[: -plain[-1]]
    (n,) = struct.unpack(">I", plain[16:20])
    return plain[20 : 20 + n]


def reply_text(body, aes_key):
    import re

    m = re.search(r"<Encrypt><!\[CDATA\[(.*?)\]\]></Encrypt>", body) or re.search(r'"Encrypt"\s*:\s*"([^"]+)"', body)
    xml = wechat_decrypt(aes_key, m.group(1)).decode() if m else body
    t = re.search(r"<Content><!\[CDATA\[(.*?)\]\]></Content>", xml, re.S)
    return t.group(1) if t else None


# ---------------------------------------------------------------------------------------------
# A world: fresh tables and stand-ins, the function processes of one case, the outbox stream.


class World:
    """One case's surroundings on a shared moto: its tables reset, fresh stand-ins, and function
    processes booted on demand (`binary(name)` says where each bootstrap is, `runner` is the
    command prefix, e.g. qemu-aarch64). `proxied` puts a TimingProxy in front of moto and each
    stand-in, so that `standin_time()` tells how long the function waited on them."""

    def __init__(self, moto, binary, runner=(), extra_env=None, proxied=False, log=None):
        self.moto, self.binary, self.runner, self.log = moto, binary, runner, log
        moto.reset()
        self.standins = Standins(sample_env())
        self.proxies = []
        ddb, wx, im = moto.url, self.standins.wechat, self.standins.im
        if proxied:
            self.proxies = [TimingProxy(int(u.rsplit(":", 1)[1])) for u in (ddb, wx, im)]
            ddb, wx, im = (p.url for p in self.proxies)
        self.table = "wxim"
        self.env = {
            **sample_env(),
            "WECHAT_API_BASE": wx,
            "IM_API_BASE": im,
            "TABLE_NAME": self.table,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_ENDPOINT_URL_DYNAMODB": ddb,
            # The samples are signed at a fixed time (see `prepare`).
            "WECHAT_TIMESTAMP_WINDOW_SECS": "0",
            "RUST_LOG": "info",
            **(extra_env or {}),
        }
        self.wxim_env = {**self.env, "AWS_ENDPOINT_URL_DYNAMODB": moto.url,
                         "WECHAT_API_BASE": self.standins.wechat, "IM_API_BASE": self.standins.im}
        wxim(["tables", "create"], self.wxim_env)
        self.aws = Aws(moto.url)
        self.aws.stream_inserts(self.table + "-outbox")  # nothing yet; marks the start
        self.running = {}

    def boot(self, name, env=None):
        return Function(name, self.binary(name), {**self.env, **(env or {})}, self.runner, self.log)

    def function(self, name):
        if name not in self.running:
            self.running[name] = self.boot(name)
        return self.running[name]

    def invoke(self, name, event, stream=True):
        kind, body, _, _ = self.function(name).invoke(event)
        if stream:
            self.pump()
        return kind, body

    def pump(self):
        """Hands new outbox INSERT records to notify-dispatch, as the stream's event source
        mapping would (batch by batch, until nothing new is queued)."""
        for _ in range(20):
            records = self.aws.stream_inserts(self.table + "-outbox")
            if not records:
                return
            kind, body, _, _ = self.function("notify-dispatch").invoke({"Records": records})
            if kind != "response" or json.loads(body).get("batchItemFailures"):
                raise RuntimeError(f"notify-dispatch failed a stream batch: {kind} {body[:300]!r}")

    def setup(self, exp):
        for step in exp.get("setup", []):
            if "bind" in step:
                wxim(["bind", *step["bind"]], self.wxim_env)
            elif "invoke" in step:
                f = step["invoke"]
                self.invoke(f.split("/")[0], prepare(f, self.env, self.wxim_env))
            elif "handler" in step:
                f = step["handler"]
                # The handler alone: what it queued stays for the stream (the case feeds it).
                self.invoke(f.split("/")[0], prepare(f, self.env, self.wxim_env), stream=False)
                self.aws.stream_inserts(self.table + "-outbox")
            elif "online" in step or "group" in step:
                # What IM would report: set on the IM stand-in of `wxim standins`.
                req = urllib.request.Request(self.standins.im + "/__setup", data=json.dumps(step).encode(),
                                             headers={"Content-Type": "application/json"}, method="POST")
                urllib.request.urlopen(req, timeout=10).read()
            else:
                raise RuntimeError(f"unknown setup step {step}")

    def standin_time(self):
        return sum(p.take() for p in self.proxies)

    def standin_intervals(self):
        """(arrival, answered) of every request the stand-ins took since the last
        `standin_time()`, in order of arrival."""
        return sorted(i for p in self.proxies for i in p.intervals)

    def stop_running(self):
        """Stops the function processes the setup booted (the next `invoke` boots afresh)."""
        for f in self.running.values():
            f.stop()
        self.running = {}

    def close(self):
        self.stop_running()
        for p in self.proxies:
            p.stop()
        self.standins.stop()
