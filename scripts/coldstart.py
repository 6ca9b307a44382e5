#!/usr/bin/env python3
"""Cold start of every function against the floor: a bare lambda_http function
(scripts/floor, same dependencies' features, same release profile), timed in the same run,
interleaved, under the same Runtime API stand-in.

For each run, in a shuffled order, every binary is started as Lambda starts it (the sample
configuration, a Runtime API on 127.0.0.1 played by this script) and handed its first real event:

    floor, wechat-verify   wechat-verify/mp.json               (the URL check; no I/O)
    floor-sdk              wechat-verify/mp.json               (scripts/floor-sdk: only the SDK
                           calls admin-notify makes, a GetItem then a TransactWriteItems, through
                           the functions' own client: what the SDK alone costs a start)
    floor-sigv4            wechat-verify/mp.json               (scripts/floor-sigv4: the same two
                           requests without the SDK, signed with aws-sigv4 and sent with the
                           functions' reqwest client: what leaving aws-sdk-dynamodb would buy)
    wechat-event           wechat-event/mp-safe-json-popup.json (safe mode, one DynamoDB transaction)
    im-callback            im-callback/c2c-after-send-offline.json (reads, then the outbox write)
    bind                   bind/ok.json (fresh UserSig)      (jscode2session, then the binding)
    admin-notify           admin-notify/send-to-user.json     (reads, then the outbox write)
    notify-dispatch        notify-dispatch/stream-insert.json (access token, the send, the result)

against moto and `wxim standins`, with each case's documented setup done first (not timed; by
the same release binaries), so that the DynamoDB client, the HTTP client and the token manager are
created where the first event needs them. Measured per start:

    exec→answer   spawn to the function's POST of the first response (what the floor's 3.6 ms is)
    stand-ins     time the event spent inside moto and the stand-ins (a timing proxy in front of
                  each): Python servers on this machine, not this code, and not what DynamoDB or
                  WeChat take in production
    own           exec→answer − stand-ins: the start, the lazy creation and the handler
    ratio         own / floor's exec→answer (medians); raw = exec→answer / floor's;
                  paired = the median of each start's own / the floor's start of the same round
    own − SDK floor  own minus floor-sdk's own: what the function's code adds to the SDK calls
    CPU           the process's CPU time (all threads, /proc/<pid>/task/*/schedstat) at its
                  answer, and its ratio to the floor's: the work, without the waits around it
    peak RSS      VmHWM after the answer (max over runs), and its ratio to the floor's
    minor faults  pages the process mapped that were already in memory (its own heap, stack and
                  relocated data, and the binary's pages in the page cache), at its answer: each
                  a trap into the kernel, on this VM 1.5 µs for an anonymous page and 3-4 µs for
                  a page of the binary (scripts/fault-cost.py)
    major faults  page faults that read from disk, summed over the runs (0 expected: each binary
                  and the shared libraries it maps are read into the page cache before its
                  start, the floor's too; see `one`)
    gaps          the first event's own time cut at its waits: event → first outbound request,
                  each answer → the next request, the last answer → the function's own answer
                  (a second table: what one more store round trip costs a cold process)

Usage: scripts/coldstart.py [runs]        (default 15; builds the release binaries first)

The same starts counted in instructions instead (repeatable to ~30 k, split by where they go):
scripts/coldstart-callgrind.py.
"""

import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import lambda_harness as h

CASES = {
    "floor": "wechat-verify/mp.json",
    "floor-sdk": "wechat-verify/mp.json",
    "floor-sigv4": "wechat-verify/mp.json",
    "wechat-verify": "wechat-verify/mp.json",
    "wechat-event": "wechat-event/mp-safe-json-popup.json",
    "im-callback": "im-callback/c2c-after-send-offline.json",
    "bind": "bind/ok.json",
    "admin-notify": "admin-notify/send-to-user.json",
    "notify-dispatch": "notify-dispatch/stream-insert.json",
}
API = ["wechat-verify", "wechat-event", "im-callback", "bind", "admin-notify"]
PKG = {"floor": "coldstart-floor", "floor-sdk": "coldstart-floor-sdk", "floor-sigv4": "coldstart-floor-sigv4"}
FLOORS = {"floor": "scripts/floor", "floor-sdk": "scripts/floor-sdk", "floor-sigv4": "scripts/floor-sigv4"}


def binary(name):
    return h.ROOT / "target/release" / PKG.get(name, name)


def build(names=CASES, env=None, wxim=True):
    """The release binaries of `names` (cases), and (`wxim`) the CLI the setups run. `env`
    replaces the environment (coldstart-callgrind.py builds unstripped ones into a target of
    their own)."""
    # Each with its own package's features, as sam builds them: one invocation for all would
    # unify them and give admin-notify and bind the spool (aws-sdk-sqs) they never use.
    dirs = {PKG.get(n, n): h.ROOT / FLOORS.get(n, f"functions/{n}") for n in names}
    for group in h.feature_groups(dirs):
        pkgs = [a for p in group for a in ("-p", p)]
        subprocess.run(["cargo", "build", "--release", "-q", *pkgs], cwd=h.ROOT, env=env, check=True)
    if wxim:
        subprocess.run(["cargo", "build", "-q", "-p", "wxim-local", "--bin", "wxim"], cwd=h.ROOT, env=env, check=True)


def check_answer(name, file, exp, kind, body):
    """The first event's answer is the one events/expected.json gives (the floors and
    notify-dispatch, whose answer is a batch report, only have to answer)."""
    if kind != "response":
        raise RuntimeError(f"{name}: {kind} {body[:300]!r}")
    status = h.json.loads(body).get("statusCode")
    if name not in (*FLOORS, "notify-dispatch") and status != exp.get("status"):
        raise RuntimeError(f"{name}: answered {status}, {file} expects {exp.get('status')}: {body[:300]!r}")


_LIBS = {}


def shared_libraries(path):
    """The shared objects `path` loads (ldd's resolved paths), asked once per binary."""
    if path not in _LIBS:
        out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=True).stdout
        _LIBS[path] = [Path(p) for p in re.findall(r"(/\S+) \(0x", out)]
    return _LIBS[path]


def one(moto, name, expected):
    file = CASES[name]
    exp = expected[file]
    world = h.World(moto, binary, proxied=True)
    try:
        world.setup(exp)
        # No process of the setup may outlive it: a live process mapping the same binary makes
        # the next start of that binary 0.35-0.55 ms faster on this machine (measured: floor
        # 2.52 -> 1.96 ms to its first /next, every function alike), and production never has
        # such a sibling (im-callback's setup, its Logout, would otherwise leave one).
        world.stop_running()
        event = h.prepare(file, world.env, world.wxim_env)
        world.standin_time()  # forget the setup's share
        # The binary's pages into the page cache first, the floor's as any function's. This VM
        # runs DAMON with a `pageout` scheme for pages no process maps, so a binary not run in
        # the last minute or so is partly back on disk, and its start then waits for reads
        # (1-2 major faults, ~1 ms) that have nothing to do with what it does: without this,
        # whichever function the case's setup happened to leave running started fastest. The
        # shared libraries it maps too (libgcc_s and libm are mapped by few other processes):
        # the floor's run of 15 on 7 December still had 2 major faults.
        for path in [binary(name), *shared_libraries(binary(name))]:
            path.read_bytes()
        f = world.boot(name)
        try:
            kind, body, handed, answered = f.invoke(event)
            rss = f.peak_rss_kb()
            cpu = f.cpu_ms()
            minflt, majflt = f.faults()
        finally:
            f.stop()
        intervals = world.standin_intervals()
        standins = world.standin_time()
        check_answer(name, file, exp, kind, body)
        # The function's own time between its waits: event handed → first outbound request,
        # each answer → the next request, the last answer → its own answer to the Runtime API.
        marks = [handed] + [t for pair in intervals for t in pair] + [answered]
        gaps = [(marks[2 * i + 1] - marks[2 * i]) * 1000 for i in range(len(intervals) + 1)]
        return {
            "gaps": gaps,
            "total": (answered - f.started) * 1000,
            "init": (f.api.first_next - f.started) * 1000,
            "event": (answered - handed) * 1000,
            "standins": standins * 1000,
            "rss": rss,
            "cpu": cpu,
            "minflt": minflt,
            "majflt": majflt,
        }
    finally:
        world.close()


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    subprocess.run([str(h.ROOT / "scripts/pyenv.sh")], check=True)
    build()
    expected = h.expected()
    moto = h.Moto()
    results = {n: [] for n in CASES}
    try:
        for name in CASES:  # one unmeasured start each: page cache, moto's first requests
            one(moto, name, expected)
        for r in range(runs):
            order = list(CASES)
            random.shuffle(order)
            for name in order:
                results[name].append(one(moto, name, expected))
            print(f"run {r + 1}/{runs}", file=sys.stderr, end="\r")
    finally:
        moto.stop()
    med = {n: {k: statistics.median(x[k] for x in rs) for k in rs[0] if k != "gaps"}
           for n, rs in results.items()}
    floor = med["floor"]["total"]
    floor_rss = max(x["rss"] for x in results["floor"])
    print(f"{runs} runs, interleaved; medians in ms; floor = scripts/floor (bare lambda_http)\n")
    print(f"| Function | Stripped binary | exec→answer | init | first event | in stand-ins | own | own / floor | paired | raw / floor | own − SDK floor | CPU | CPU / floor | Peak RSS | RSS / floor | minor faults | major faults |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    worst = worst_paired = 0.0
    sdk_own = med["floor-sdk"]["total"] - med["floor-sdk"]["standins"]
    for name in CASES:
        m = med[name]
        own = m["total"] - m["standins"]
        rss = max(x["rss"] for x in results[name])
        size = binary(name).stat().st_size / 1e6
        ratio = own / floor
        # The same ratio start by start against the floor's start of the same round: the
        # machine's drift over a run (the floor itself moves by 0.5 ms) cancels out of it.
        paired = statistics.median(
            (x["total"] - x["standins"]) / (f["total"] - f["standins"]) for x, f in zip(results[name], results["floor"]))
        if name in API:
            worst, worst_paired = max(worst, ratio), max(worst_paired, paired)
        print(f"| {name} | {size:.2f} MB | {m['total']:.2f} | {m['init']:.2f} | {m['event']:.2f} | "
              f"{m['standins']:.2f} | {own:.2f} | {ratio:.2f}× | {paired:.2f}× | {m['total'] / floor:.2f}× | "
              f"{own - sdk_own:+.2f} | {m['cpu']:.2f} | {m['cpu'] / med['floor']['cpu']:.2f}× | "
              f"{rss / 1024:.1f} MB | {rss / floor_rss:.2f}× | {m['minflt']:.0f} | "
              f"{sum(x['majflt'] for x in results[name])} |")
    print(f"\nworst API function, own / floor: {worst:.2f}× by the medians, {worst_paired:.2f}× paired "
          f"(goal ≤ 1.3×); the SDK floor alone: {sdk_own / floor:.2f}×")
    print("\nThe first event's own time, between the waits on moto and the stand-ins (medians, ms):\n")
    print("| Function | outbound requests | event → first request | each answer → next request | last answer → own answer |")
    print("|---|---|---|---|---|")
    for name in CASES:
        if name == "floor":
            continue
        gaps = [x["gaps"] for x in results[name]]
        n = statistics.mode(len(g) for g in gaps)
        gaps = [g for g in gaps if len(g) == n]
        if n == 1:
            print(f"| {name} | 0 | — | — | {statistics.median(g[0] for g in gaps):.2f} (the whole event) |")
            continue
        middle = [x for g in gaps for x in g[1:-1]]
        between = f"{statistics.median(middle):.2f}" if middle else "—"
        print(f"| {name} | {n - 1} | {statistics.median(g[0] for g in gaps):.2f} | {between} | "
              f"{statistics.median(g[-1] for g in gaps):.2f} |")


if __name__ == "__main__":
    main()
