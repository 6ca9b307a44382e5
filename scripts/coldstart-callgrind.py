#!/usr/bin/env python3
"""Where each function's cold start goes, in instructions: every case of scripts/coldstart.py
(the floors too) started once under `valgrind --tool=callgrind`, with the same harness, the same
setup and the same first event, and its whole process (loader, init, first event) counted.

Timing a 3 ms start moves by ±0.3 ms from run to run on this machine; an instruction count moves
by about 30 k (the floor gave 0.64-0.67 M), so a change to the start shows here at once.
Instructions are not time: the floor's 0.65 M take 2.8 ms, most of it the kernel (exec, page
faults, loopback TCP); what a function adds over the floor is mostly instructions. One column
shows what valgrind's virtual CPU inflates: it has no SHA extensions, so SigV4's SHA-256 runs in
software under it and counts far more instructions than on a CPU with SHA-NI.

Columns (inclusive counts of the functions named, the largest of each across its call sites):

    total          the whole process, from the loader's first instruction to the answer
    loader         ld.so before main: relocations and symbol binding
    config         Config::from_lookup (every variable checked at init)
    SDK client     building the aws-sdk-dynamodb client (from the environment), of which
    partitions       the SDK's partition table (JSON and a regex per partition), once a process
    store calls    the Store methods (floor-sdk: its handler), the client's creation taken out
    SigV4 SHA-256  sha2's compression inside the signing (software here, see above)
    user agent     the SDK's user-agent interceptor, per request
    rest           everything else: the Lambda runtime, the handler, logs, other HTTP calls

Usage: scripts/coldstart-callgrind.py [case ...]   (default: all; needs valgrind:
       apt-get install valgrind). Builds unstripped release binaries into target/callgrind
       (the same profile, with line tables and symbols) beside coldstart.py's release build.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import coldstart as c
import lambda_harness as h

TARGET = h.ROOT / "target" / "callgrind"
PARTS = {
    "loader": [r"_dl_start$"],
    "config": [r"common::config::Config::from_lookup$"],
    # Client::from_conf is inlined into DynamoStore::client in some binaries: the larger of the two.
    "client": [r"aws_sdk_dynamodb::client::Client::from_conf$",
               r"common::store::dynamo::DynamoStore::client::\{\{closure\}\}$"],
    "partitions": [r"PartitionResolver::new_from_json$"],
    "sha256": [r"sha2::sha256::compress256$"],
    "ua": [r"UserAgentInterceptor as .*Intercept>::modify_before_signing$"],
}
# The functions reach DynamoDB through the Store methods; floor-sdk calls the SDK from its handler,
# floor-sigv4 its own signed requests.
STORE = re.compile(r"<common::store::dynamo::DynamoStore as common::store::Store>::\w+::\{\{closure\}\}$"
                   r"|coldstart_floor_sdk::handle::\{\{closure\}\}$"
                   r"|coldstart_floor_sigv4::handle::\{\{closure\}\}$")


def inclusive(out_file):
    """Function name -> its largest inclusive count, from callgrind_annotate."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(out_file)],
                          capture_output=True, text=True, check=True).stdout
    best, total = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.*)$", line)
        if not m:
            continue
        n = int(m.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in m.group(2):
            total = n
            continue
        name = re.sub(r" \[[^\]]*\]$", "", m.group(2))
        name = re.sub(r" \(\d+x\)$", "", name.split(":", 1)[1] if ":" in name else name)
        best[name] = max(best.get(name, 0), n)
    return total, best


def measure(moto, name, expected, out_file):
    file = c.CASES[name]
    world = h.World(moto, c.binary, proxied=False)
    try:
        exp = expected[file]
        world.setup(exp)
        world.stop_running()
        event = h.prepare(file, world.env, world.wxim_env)
        valgrind = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}")
        f = h.Function(name, TARGET / "release" / c.PKG.get(name, name), world.env, valgrind)
        try:
            kind, body, _, _ = f.invoke(event, timeout=120)
            # callgrind writes its counts when the process ends by a signal it can catch.
            f.proc.terminate()
            f.proc.wait(timeout=60)
        finally:
            f.stop()
        c.check_answer(name, file, exp, kind, body)
    finally:
        world.close()


def main():
    if not shutil.which("valgrind"):
        sys.exit("needs valgrind (Debian: apt-get install valgrind)")
    names = sys.argv[1:] or list(c.CASES)
    unknown = [n for n in names if n not in c.CASES]
    if unknown:
        sys.exit(f"unknown case {unknown}; cases: {', '.join(c.CASES)}")
    subprocess.run([str(h.ROOT / "scripts/pyenv.sh")], check=True)
    c.build()  # the setups' binaries (target/release) and wxim
    # The measured ones: the same profile with symbols and line tables, in a target of their own.
    c.build(names, {**os.environ, "CARGO_TARGET_DIR": str(TARGET), "CARGO_PROFILE_RELEASE_STRIP": "none",
                    "CARGO_PROFILE_RELEASE_DEBUG": "line-tables-only"}, wxim=False)
    expected = h.expected()
    moto = h.Moto()
    rows = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in names:
                out = Path(tmp) / f"{name}.callgrind"
                measure(moto, name, expected, out)
                total, best = inclusive(out)
                part = {k: max((n for f, n in best.items() if any(re.search(p, f) for p in pats)), default=0)
                        for k, pats in PARTS.items()}
                calls = sum(n for f, n in best.items() if STORE.search(f))
                part["store"] = max(calls - part["client"], 0)
                rows[name] = (total, part)
    finally:
        moto.stop()
    m = lambda n: f"{n / 1e6:.2f}"
    print("Instructions of one cold start (millions; valgrind --tool=callgrind, whole process)\n")
    print("| Case | total | loader | config | SDK client | of it partitions | store calls | SigV4 SHA-256 | user agent | rest |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, (total, p) in rows.items():
        rest = total - p["loader"] - p["config"] - p["client"] - p["store"]
        print(f"| {name} | {m(total)} | {m(p['loader'])} | {m(p['config'])} | {m(p['client'])} | "
              f"{m(p['partitions'])} | {m(p['store'])} | {m(p['sha256'])} | {m(p['ua'])} | {m(rest)} |")
    floor = rows.get("floor", (None,))[0]
    if floor and len(rows) > 1:
        print(f"\nover the floor ({m(floor)} M): " + ", ".join(
            f"{n} +{m(t - floor)}" for n, (t, _) in rows.items() if n != "floor"))


if __name__ == "__main__":
    main()
