#!/usr/bin/env python3
"""No secret in any log: scans the whole log output of a test run (and of `scripts/fuzz` runs,
when there are any) for every configured secret and every credential the stand-ins issued.

What is scanned (every file, recursively, except the needle lists):
    target/test-logs/     ./scripts/test's own capture of `cargo test` (cargo-test.out) and each
                          test process's log and metric lines (<binary>-<pid>.log, written by
                          tests/support as the lines are logged)
    target/fuzz-logs/     the output of `scripts/fuzz` runs, if present

What is looked for:
    1. the values of every credential variable in events/sample.env (*_SECRET, *_TOKEN,
       *_AES_KEY, *_SECRET_KEY), read here, independently of the Rust configuration code;
    2. every needle the tests recorded in target/test-logs/needles/: the secrets of every
       configuration a test built (Config::secrets() and every credential-named override) and
       every credential the stand-ins issued or received (access tokens, session keys, app
       secrets, admin UserSigs, login codes);
    3. the shapes of stand-in credentials (ISSUED_PATTERNS in local/src/standin.rs), so that a
       token nobody recorded is still found;
    4. anything that decodes as a UserSig (base64 → zlib → a TLS document with a TLS.sig).
Each needle is also looked for JSON-escaped and percent-encoded, and a long one (> 32 chars) by
its first and last 32 characters as well (a log line may cut it). Needles shorter than 8
characters are reported and not searched: they would match ordinary words.

It never passes vacuously: it fails when there is no log, when the logs are empty, when no test
process log or no recorded needle is found, and it prints how much it scanned and for how many
needles. A hit prints the file, the line number and the needle's first 4 characters and length,
never the whole secret.

    scripts/scan-logs.py [ROOT]         (ROOT defaults to the repository)
    scripts/scan-logs.py --self-test    (plants needles in temporary copies; each must fail)
"""

import base64
import json
import os
import re
import shutil
import sys
import tempfile
import urllib.parse
import zlib

MIN_NEEDLE = 8
SECRET_SUFFIXES = ("_SECRET", "_TOKEN", "_AES_KEY", "_SECRET_KEY")
SIG_CANDIDATE = re.compile(r"[A-Za-z0-9*_+/=-]{60,}")


def is_secret_var(name):
    return name.endswith(SECRET_SUFFIXES)


def sample_env_needles(root):
    out = []
    with open(os.path.join(root, "events", "sample.env"), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            k, v = line.split("=", 1)
            v = v.strip().strip("'\"")
            if is_secret_var(k.strip()) and v:
                out.append(v)
    return out


def recorded_needles(log_dir):
    out = []
    d = os.path.join(log_dir, "needles")
    if os.path.isdir(d):
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), encoding="utf-8", errors="replace") as f:
                out.extend(line.rstrip("\n") for line in f if line.strip())
    return out


def issued_patterns(root):
    src = open(os.path.join(root, "local", "src", "standin.rs"), encoding="utf-8").read()
    block = re.search(r"pub const ISSUED_PATTERNS: \[&str; \d+\] = \[(.*?)\];", src, re.S)
    if not block:
        raise SystemExit("scan-logs: ISSUED_PATTERNS not found in local/src/standin.rs")
    pats = re.findall(r'r"([^"]+)"', block.group(1))
    if not pats:
        raise SystemExit("scan-logs: ISSUED_PATTERNS is empty")
    return pats


def probes_of(needle):
    """The strings that betray `needle`: itself, escaped and cut forms."""
    forms = {needle, json.dumps(needle)[1:-1], urllib.parse.quote(needle, safe="")}
    out = set()
    for f in forms:
        out.add(f)
        if len(f) > 32:
            out.add(f[:32])
            out.add(f[-32:])
    return out


def decodes_as_usersig(s):
    std = s.replace("*", "+").replace("-", "/").replace("_", "=")
    std = std.rstrip("=")
    std += "=" * (-len(std) % 4)
    try:
        raw = base64.b64decode(std, validate=True)
        doc = json.loads(zlib.decompress(raw))
    except Exception:
        return False
    return isinstance(doc, dict) and "TLS.sig" in doc


def log_files(dirs):
    files = []
    for d in dirs:
        for dp, dns, fns in os.walk(d):
            dns[:] = sorted(n for n in dns if n != "needles")
            for fn in sorted(fns):
                files.append(os.path.join(dp, fn))
    return files


def scan(root, log_dir, extra_dirs=(), quiet=False):
    """Returns (ok, report lines)."""
    report = []
    problems = []
    if not os.path.isdir(log_dir):
        return False, [f"no log directory {log_dir}: run ./scripts/test"]
    dirs = [log_dir] + [d for d in extra_dirs if os.path.isdir(d)]
    files = log_files(dirs)
    process_logs = [f for f in files if os.path.dirname(f) == log_dir and f.endswith(".log")]
    if not files:
        problems.append("no log file found")
    if not process_logs:
        problems.append(f"no test process log (<binary>-<pid>.log) in {log_dir}")

    env = sample_env_needles(root)
    rec = recorded_needles(log_dir)
    if len(env) < 6:
        problems.append(f"only {len(env)} secrets found in events/sample.env")
    if not rec:
        problems.append("the tests recorded no needle (tests/support writes them)")
    needles = sorted(set(env) | set(rec))
    short = [n for n in needles if len(n) < MIN_NEEDLE]
    needles = [n for n in needles if len(n) >= MIN_NEEDLE]
    probe_to_needle = {}
    for n in needles:
        for p in probes_of(n):
            probe_to_needle.setdefault(p, n)
    literal = re.compile("|".join(re.escape(p) for p in sorted(probe_to_needle, key=len, reverse=True)))
    patterns = issued_patterns(root)
    shaped = re.compile("|".join(f"(?:{p})" for p in patterns))

    lines = nbytes = candidates = 0
    hits = []
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        nbytes += len(data)
        text = data.decode("utf-8", errors="replace")
        for no, line in enumerate(text.splitlines(), 1):
            lines += 1
            rel = os.path.relpath(path, root)
            for m in literal.finditer(line):
                n = probe_to_needle[m.group(0)]
                hits.append(f"{rel}:{no}: a secret ({n[:4]}…, {len(n)} chars)")
            for m in shaped.finditer(line):
                hits.append(f"{rel}:{no}: a stand-in credential ({m.group(0)[:4]}…, {len(m.group(0))} chars)")
            for m in SIG_CANDIDATE.finditer(line):
                candidates += 1
                if decodes_as_usersig(m.group(0)):
                    hits.append(f"{rel}:{no}: a UserSig ({len(m.group(0))} chars)")
    if nbytes == 0 or lines == 0:
        problems.append("the logs are empty")
    report.append(
        f"scan-logs: {len(files)} files ({len(process_logs)} test process logs), {lines} lines, "
        f"{nbytes} bytes; looked for {len(needles)} needles ({len(set(env))} from events/sample.env, "
        f"{len(set(rec))} recorded by the tests; {len(probe_to_needle)} probes with their escaped "
        f"and cut forms), {len(patterns)} stand-in credential patterns, and UserSigs "
        f"({candidates} candidates decoded)"
    )
    if short:
        report.append(
            f"scan-logs: {len(short)} needles shorter than {MIN_NEEDLE} characters not searched "
            "(test-only values such as a 4-letter token would match ordinary words)"
        )
    for h in hits[:50]:
        report.append("scan-logs: FOUND " + h)
    if len(hits) > 50:
        report.append(f"scan-logs: … and {len(hits) - 50} more")
    for p in problems:
        report.append("scan-logs: " + p)
    ok = not hits and not problems
    report.append(f"scan-logs: {len(hits)} hits" + ("" if ok else " — FAILED"))
    return ok, report


def main_scan(root):
    log_dir = os.path.join(root, "target", "test-logs")
    fuzz_dir = os.path.join(root, "target", "fuzz-logs")
    ok, report = scan(root, log_dir, [fuzz_dir])
    print("\n".join(report))
    return 0 if ok else 1


def make_usersig():
    doc = {"TLS.ver": "2.0", "TLS.identifier": "planted", "TLS.sdkappid": 1400000000,
           "TLS.expire": 86400, "TLS.time": 1700000000,
           "TLS.sig": base64.b64encode(b"\x01" * 32).decode()}
    z = zlib.compress(json.dumps(doc).encode(), 0)
    return base64.b64encode(z).decode().replace("+", "*").replace("/", "-").replace("=", "_")


def self_test(root):
    """Each planted needle must make the scan fail; the clean copy must pass."""
    real = os.path.join(root, "target", "test-logs")
    env = sample_env_needles(root)
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base")
        if os.path.isdir(real) and any(f.endswith(".log") for f in os.listdir(real)):
            shutil.copytree(real, base)
            origin = "a copy of target/test-logs"
        else:
            os.makedirs(os.path.join(base, "needles"))
            with open(os.path.join(base, "e2e-1.log"), "w") as f:
                for i in range(200):
                    f.write(json.dumps({"level": "INFO", "decision": "ok", "n": i}) + "\n")
            with open(os.path.join(base, "needles", "e2e-1.txt"), "w") as f:
                f.write("recorded-needle-0123456789\n")
            origin = "synthetic logs"
        rec = recorded_needles(base)
        ok, report = scan(root, base)
        if not ok:
            print("\n".join(report))
            failures.append(f"the clean copy ({origin}) does not pass")

        def planted(name, line, where="e2e-planted.log", record=None):
            d = os.path.join(tmp, name)
            shutil.copytree(base, d)
            with open(os.path.join(d, where), "a") as f:
                f.write(line + "\n")
            if record:
                with open(os.path.join(d, "needles", "planted.txt"), "w") as f:
                    f.write(record + "\n")
            ok, _ = scan(root, d)
            if ok:
                failures.append(f"{name}: the planted needle was not found")
            else:
                print(f"scan-logs self-test: {name}: found, the scan fails as it must")

        planted("sample-secret", json.dumps({"msg": f"key={env[0]}"}))
        planted("aes-key-cut", json.dumps({"msg": [n for n in env if len(n) > 32][0][:35]}))
        planted("recorded", json.dumps({"msg": rec[-1]}))
        special = 'pl/nt+d="s3cret"\\v'
        planted("json-escaped", json.dumps({"msg": special}), record=special)
        planted("url-encoded", "GET /x?secret=" + urllib.parse.quote(special, safe=""), record=special)
        planted("access-token", json.dumps({"token": "ACCESS_TOKEN_wx1234567890abcdef_17"}))
        planted("session-key", "session SESSION_KEY_wxfedcba0987654321_3 leaked")
        planted("usersig", json.dumps({"userSig": make_usersig()}))
        planted("in-cargo-output", f"thread 'x' panicked: {env[1]}", where="cargo-test.out")
        d = os.path.join(tmp, "fuzz-logs")
        os.makedirs(os.path.join(d, "t"))
        with open(os.path.join(d, "t", "fuzz-0.log"), "w") as f:
            f.write(f"#1 INITED {env[2]}\n")
        if scan(root, base, [d])[0]:
            failures.append("fuzz-log: the planted needle was not found")
        else:
            print("scan-logs self-test: fuzz-log: found, the scan fails as it must")
        # Vacuous inputs must fail too.
        empty = os.path.join(tmp, "empty")
        os.makedirs(os.path.join(empty, "needles"))
        open(os.path.join(empty, "e2e-1.log"), "w").close()
        shutil.copy(os.path.join(base, "needles", sorted(os.listdir(os.path.join(base, "needles")))[0]),
                    os.path.join(empty, "needles"))
        if scan(root, empty)[0]:
            failures.append("an empty log passed")
        if scan(root, os.path.join(tmp, "missing"))[0]:
            failures.append("a missing log directory passed")
        nodir = os.path.join(tmp, "no-needles")
        shutil.copytree(base, nodir)
        shutil.rmtree(os.path.join(nodir, "needles"))
        if scan(root, nodir)[0]:
            failures.append("logs without recorded needles passed")
    for f in failures:
        print("scan-logs self-test: FAILED: " + f)
    if not failures:
        print(f"scan-logs self-test: ok (clean {origin} passes; 10 planted needles, an empty log, "
              "a missing directory and missing needles all fail)")
    return 1 if failures else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    selftest = "--self-test" in args
    args = [a for a in args if a != "--self-test"]
    root = os.path.abspath(args[0] if args else os.path.join(os.path.dirname(__file__), ".."))
    sys.exit(self_test(root) if selftest else main_scan(root))
